//! `--append` and `--append-verify` against rsync between two local copies of the same trees:
//! the same itemized lines (in the same order) and the same final tree, with only the tails
//! of grown files on the wire.

use std::os::unix::fs::PermissionsExt;

use testkit::XorShift;

use super::*;

const OLD: i64 = 1_500_000_000;
const NEW: i64 = 1_600_000_000;

/// One file per case that --append tells apart, on the source and on the receiver. Every
/// grown file has a 100,000-byte receiver's copy and 300,000 bytes on the source; `bad`'s
/// receiver's copy is not the start of its source.
fn fixture(src: &Path, dst: &Path) {
    let grow = XorShift::new(31).bytes(300_000);
    write_at(&src.join("grow"), &grow, NEW);
    write_at(&dst.join("grow"), &grow[..100_000], OLD);
    write_at(&src.join("bad"), &XorShift::new(32).bytes(300_000), NEW);
    write_at(&dst.join("bad"), &XorShift::new(33).bytes(100_000), OLD);
    // Needs a transfer by the quick check, but has not grown: passed over, times and all.
    let same = XorShift::new(34).bytes(50_000);
    write_at(&src.join("same-size"), &same, NEW);
    write_at(&dst.join("same-size"), &same, OLD);
    write_at(&src.join("shorter"), &XorShift::new(35).bytes(1000), NEW);
    write_at(&dst.join("shorter"), &XorShift::new(36).bytes(2000), NEW);
    mode(&src.join("shorter"), 0o600);
    // Up to date by the quick check: only its mode is fixed.
    let up = XorShift::new(37).bytes(10_000);
    write_at(&src.join("uptodate"), &up, NEW);
    write_at(&dst.join("uptodate"), &up, NEW);
    mode(&dst.join("uptodate"), 0o600);
    write_at(&src.join("new"), b"a new file\n", NEW);
}

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

struct Case {
    tmp: tempfile::TempDir,
    remote: String,
    /// The remote directory as seen here, under the server's chroot.
    remote_local: PathBuf,
}

/// A fixture with the source on the side `push` says, and rsync's itemized lines for the same
/// run between local copies (whose result is left in `reference`).
fn case(server: &SftpOnlyServer, name: &str, push: bool, flags: &[&str]) -> (Case, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir(name);
    let local = tmp.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let (src, dst) = if push {
        (&local, &remote_local)
    } else {
        (&remote_local, &local)
    };
    fixture(src, dst);
    chown_tree(src, server.uid(), server.gid()).unwrap();
    chown_tree(dst, server.uid(), server.gid()).unwrap();
    let reference = tmp.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    copy_tree(dst, &reference);
    let want = rsync_itemize(src, &reference, flags);
    let c = Case {
        tmp,
        remote,
        remote_local,
    };
    (c, want)
}

impl Case {
    fn local(&self) -> PathBuf {
        self.tmp.path().join("local")
    }

    fn reference(&self) -> PathBuf {
        self.tmp.path().join("reference")
    }
}

/// The itemized lines at the top of an `-i --stats` output, as a local rsync writes them.
fn items(out: &str) -> Vec<String> {
    out.lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.replacen("<f", ">f", 1))
        .collect()
}

/// The tails of `grow` and `bad`, and the new file.
const TAILS: u64 = 200_000 + 200_000 + 11;

#[test]
fn append_push_sends_only_tails_and_passes_over_files_that_did_not_grow() {
    let server = SftpOnlyServer::shared();
    let (c, want) = case(server, "append-push", true, &["--append"]);
    let out = ok(&push(
        server,
        &["-ai", "--append", "--stats"],
        &c.local(),
        &c.remote,
    ));
    assert_eq!(items(&out), want, "{out}");
    // Including `bad`, whose receiver's start is wrong: --append does not look.
    assert_trees_match_checksum(&c.reference(), &c.remote_local);
    assert_eq!(stats_value(&out, "Literal data"), TAILS, "{out}");
    assert_eq!(stats_value(&out, "Matched data"), 0, "{out}");
    let sent = stats_value(&out, "Total bytes sent");
    assert!(sent < TAILS + 30_000, "the starts were sent too: {out}");
    assert!(!out.contains("Data read to check appends"), "{out}");
}

#[test]
fn append_pull_reads_only_tails_and_passes_over_files_that_did_not_grow() {
    let server = SftpOnlyServer::shared();
    let (c, want) = case(server, "append-pull", false, &["--append"]);
    let out = ok(&pull(
        server,
        &["-ai", "--append", "--stats"],
        &c.remote,
        &c.local(),
    ));
    assert_eq!(items(&out), want, "{out}");
    assert_trees_match_checksum(&c.reference(), &c.local());
    assert_eq!(stats_value(&out, "Literal data"), TAILS, "{out}");
    let received = stats_value(&out, "Total bytes received");
    assert!(received < TAILS + 30_000, "the starts were read too: {out}");
}

/// A grown file whose start matches gets its tail; `bad` gets its tail, fails the check and is
/// sent again whole after the others, with rsync's lines. With --trust-index the next check of
/// a file sftpsync wrote comes from the index instead of the server.
#[test]
fn append_verify_push_checks_starts_and_resends_a_file_that_differs() {
    let server = SftpOnlyServer::shared();
    let (c, want) = case(server, "append-verify-push", true, &["--append-verify"]);
    let out = push(
        server,
        &["-ai", "--append-verify", "--stats"],
        &c.local(),
        &c.remote,
    );
    let text = ok(&out);
    assert_eq!(items(&text), want, "{text}");
    assert_trees_match_checksum(&c.reference(), &c.remote_local);
    let bad = std::fs::read(c.local().join("bad")).unwrap();
    assert_eq!(std::fs::read(c.remote_local.join("bad")).unwrap(), bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"bad\" failed verification"), "{stderr}");
    assert_eq!(
        stats_value(&text, "Literal data"),
        TAILS + 300_000,
        "{text}"
    );
    // Both receivers' starts were read back from the server.
    assert_eq!(
        stats_value(&text, "Data read to check appends"),
        200_000,
        "{text}"
    );

    let grown = [
        std::fs::read(c.local().join("grow")).unwrap(),
        XorShift::new(38).bytes(70_000),
    ]
    .concat();
    write_at(&c.local().join("grow"), &grown, NEW + 100);
    chown_tree(&c.local(), server.uid(), server.gid()).unwrap();
    let flags = ["-a", "--append-verify", "--trust-index", "--stats"];
    let text = ok(&push(server, &flags, &c.local(), &c.remote));
    assert_eq!(std::fs::read(c.remote_local.join("grow")).unwrap(), grown);
    assert_eq!(stats_value(&text, "Literal data"), 70_000, "{text}");
    assert_eq!(
        stats_value(&text, "Appends checked from the delta index"),
        1,
        "{text}"
    );
    assert_eq!(
        stats_value(&text, "Data read to check appends"),
        0,
        "{text}"
    );
}

#[test]
fn append_verify_pull_checks_starts_and_resends_a_file_that_differs() {
    let server = SftpOnlyServer::shared();
    let (c, want) = case(server, "append-verify-pull", false, &["--append-verify"]);
    let text = ok(&pull(
        server,
        &["-ai", "--append-verify", "--stats"],
        &c.remote,
        &c.local(),
    ));
    assert_eq!(items(&text), want, "{text}");
    assert_trees_match_checksum(&c.reference(), &c.local());
    let bad = std::fs::read(c.remote_local.join("bad")).unwrap();
    assert_eq!(std::fs::read(c.local().join("bad")).unwrap(), bad);
    assert_eq!(
        stats_value(&text, "Literal data"),
        TAILS + 300_000,
        "{text}"
    );
    // The sources' starts came from the server only to be compared.
    assert_eq!(
        stats_value(&text, "Data read to check appends"),
        200_000,
        "{text}"
    );
}

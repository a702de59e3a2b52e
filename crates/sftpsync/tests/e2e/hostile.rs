//! Pulls from (and pushes to) the test kit's hostile SFTP server: every lie it tells must end in
//! a clear error and the right exit code, with nothing written outside the destination and no
//! deletion after a bad listing.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

/// A destination inside a parent that also holds an "outside" directory the server tries to
/// reach; the destination already has files a `--delete` run would remove.
struct Arena {
    _tmp: testkit::tempfile::TempDir,
    parent: PathBuf,
    dst: PathBuf,
    outside: PathBuf,
}

fn arena() -> Arena {
    let tmp = testkit::tempfile::tempdir().unwrap();
    let parent = tmp.path().join("parent");
    let dst = parent.join("dst");
    let outside = parent.join("outside");
    std::fs::create_dir_all(dst.join("stale-dir")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(dst.join("extraneous"), b"keep me\n").unwrap();
    std::fs::write(dst.join("stale-dir/old"), b"keep me too\n").unwrap();
    std::fs::write(outside.join("sentinel"), b"untouched\n").unwrap();
    Arena {
        _tmp: tmp,
        parent,
        dst,
        outside,
    }
}

/// Every entry below `root` (not following symlinks): kind, size, link target and contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let what = if m.file_type().is_symlink() {
                format!("link -> {:?}", std::fs::read_link(&path).unwrap())
            } else if m.is_dir() {
                walk(root, &path, out);
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&path).unwrap())
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The parent's snapshot without what is under the destination.
fn outside_dst(a: &Arena) -> BTreeMap<PathBuf, String> {
    let mut s = snapshot(&a.parent);
    s.retain(|p, _| !p.starts_with("dst/") && p.as_os_str() != "dst");
    s
}

/// Runs sftpsync over the hostile server in `scenario`, killing it if it hangs.
fn hostile_run(scenario: &str, outside: &Path, args: &[&str]) -> Output {
    let server = testkit::hostile_server_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .arg("--sftp-server")
        .arg(&server)
        // A server that hangs up is not reconnected to here: each lie is met once.
        .arg("--retries=0")
        .args(args)
        .env("HOSTILE_SCENARIO", scenario)
        .env("HOSTILE_OUTSIDE", outside)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sftpsync");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sftpsync hung against scenario {scenario}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Deletions wait for the end of the walk, so no lie found anywhere in it may cause one.
/// (With rsync's default, deletion during the walk, a directory listed cleanly before the
/// lie is found has its extras deleted, as rsync does.)
fn hostile_pull(scenario: &str, a: &Arena) -> Output {
    let dst = slash(&a.dst);
    hostile_run(
        scenario,
        &a.outside,
        &["-a", "--delete-after", "localhost:/src/", &dst],
    )
}

/// Pulls in `scenario` and checks what every hostile run must hold: the exit code, each
/// expected error line exactly once, no panic, nothing changed outside the destination, and
/// the files a clean run would have deleted still there.
fn pull_refused(scenario: &str, code: i32, expected: &[&str]) -> (Arena, String) {
    let a = arena();
    let before = outside_dst(&a);
    let out = hostile_pull(scenario, &a);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{scenario}: stderr: {stderr}"
    );
    for line in expected {
        let n = stderr.lines().filter(|l| l == line).count();
        assert_eq!(n, 1, "{scenario}: want the line {line:?} once in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{scenario}: {stderr}");
    assert_eq!(outside_dst(&a), before, "{scenario}: wrote outside dst");
    assert!(a.dst.join("extraneous").is_file(), "{scenario}: deleted");
    assert!(a.dst.join("stale-dir/old").is_file(), "{scenario}: deleted");
    (a, stderr)
}

fn listing_error(dir: &str, name: &str, why: &str) -> String {
    format!("sftpsync: readdir remote \"{dir}\" failed: invalid file name \"{name}\" ({why})")
}

#[test]
fn hostile_server_tells_the_truth_in_plain_scenario() {
    let a = arena();
    let out = hostile_pull("plain", &a);
    ok(&out);
    assert_eq!(std::fs::read(a.dst.join("ok")).unwrap(), b"fine\n");
    assert_eq!(std::fs::read(a.dst.join("sub/inner")).unwrap(), b"inner\n");
    assert!(!a.dst.join("extraneous").exists(), "a clean run deletes");
}

/// rsync's code 24: a file listed and then gone when it is opened is a warning, not an
/// error, and the rest (deletions included) goes on.
#[test]
fn file_vanished_before_transfer_exits_24() {
    let a = arena();
    let out = hostile_pull("vanish", &a);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(24), "{stderr}");
    assert!(stderr.contains("file has vanished: \"gone\""), "{stderr}");
    assert!(stderr.contains("(code 24)"), "{stderr}");
    assert!(!a.dst.join("gone").exists());
    assert_eq!(std::fs::read(a.dst.join("ok")).unwrap(), b"fine\n");
    assert!(
        !a.dst.join("extraneous").exists(),
        "a vanished file blocks no deletion"
    );
}

#[test]
fn hostile_control_bytes_in_names_are_printed_escaped() {
    let a = arena();
    let dst = slash(&a.dst);
    let out = hostile_run("plain", &a.outside, &["-ai", "localhost:/src/", &dst]);
    let stdout = ok(&out);
    assert!(
        stdout
            .lines()
            .any(|l| l == r">f+++++++++ ctl\#033]0;pwn\#007\#233"),
        "{stdout}"
    );
    assert!(
        !out.stdout.iter().any(|&b| b < 0x20 && b != b'\n'),
        "raw control bytes on stdout: {stdout}"
    );
    assert!(!out.stdout.contains(&0x9b), "raw C1 byte on stdout");
    let name = std::ffi::OsStr::from_bytes(b"ctl\x1b]0;pwn\x07\x9b");
    assert_eq!(std::fs::read(a.dst.join(name)).unwrap(), b"ctl\n");
}

#[test]
fn hostile_dotdot_names_are_refused_and_block_deletion() {
    let (a, _) = pull_refused(
        "dotdot",
        23,
        &[
            &listing_error(".", "../escape", "contains '/'"),
            &listing_error(".", "..", "is . or .."),
        ],
    );
    // Names that merely start with dots are fine.
    assert_eq!(std::fs::read(a.dst.join("..dots")).unwrap(), b"dots\n");
    assert_eq!(std::fs::read(a.dst.join("ok")).unwrap(), b"fine\n");
    assert!(!a.parent.join("escape").exists());
}

#[test]
fn hostile_slash_names_are_refused() {
    let (a, _) = pull_refused(
        "slash",
        23,
        &[
            &listing_error(".", "a/b", "contains '/'"),
            &listing_error(".", "/etc/passwd", "contains '/'"),
        ],
    );
    assert!(!a.dst.join("a").exists());
    assert!(!a.dst.join("etc").exists());
    assert!(a.dst.join("sub/inner").is_file());
}

#[test]
fn hostile_nul_name_is_refused_and_shown_escaped() {
    let (a, _) = pull_refused(
        "nul",
        23,
        &[
            &listing_error(".", "bad\\#000name", "contains a NUL byte"),
            "sftpsync: readlink remote \"badlink\" failed: invalid reply to readlink: \
             symlink target contains a NUL byte",
        ],
    );
    assert!(std::fs::symlink_metadata(a.dst.join("badlink")).is_err());
    let names: Vec<_> = std::fs::read_dir(&a.dst)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.as_bytes().starts_with(b"bad")),
        "{names:?}"
    );
}

#[test]
fn hostile_duplicate_name_is_dropped_in_every_copy() {
    let (a, _) = pull_refused(
        "duplicate",
        23,
        &[&listing_error(".", "dup", "listed 2 times")],
    );
    assert!(std::fs::symlink_metadata(a.dst.join("dup")).is_err());
    assert!(a.dst.join("ok").is_file());
}

#[test]
fn hostile_symlink_then_directory_of_same_name_writes_nothing_outside() {
    let (a, _) = pull_refused(
        "symlink-then-file",
        23,
        &[&listing_error(".", "evil", "listed 2 times")],
    );
    assert!(std::fs::symlink_metadata(a.dst.join("evil")).is_err());
    assert!(!a.outside.join("pwned").exists());
}

#[test]
fn hostile_swapped_directory_listing_with_slashes_is_refused() {
    let (a, _) = pull_refused(
        "swap",
        23,
        &[
            &listing_error("d", "../../pwned", "contains '/'"),
            &listing_error("d", "x/../../../pwned", "contains '/'"),
            &listing_error("d", "..", "is . or .."),
        ],
    );
    assert_eq!(std::fs::read(a.dst.join("d/fine")).unwrap(), b"fine\n");
    assert!(!a.parent.join("pwned").exists());
}

/// A protocol error: exit 12 with one line naming what the server did wrong.
fn protocol_refused(scenario: &str, what: &str) -> Arena {
    let (a, stderr) = pull_refused(scenario, 12, &[]);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(what)).collect();
    assert_eq!(
        lines.len(),
        1,
        "{scenario}: want one line with {what:?}: {stderr}"
    );
    assert!(lines[0].contains("protocol error"), "{stderr}");
    assert!(
        stderr.contains("error in SFTP protocol data stream (code 12)"),
        "{stderr}"
    );
    a
}

#[test]
fn hostile_oversized_packet_is_a_protocol_error() {
    protocol_refused("oversized", "exceeds the limit");
}

/// Ended inside a packet: a lost connection (exit 12), which a retry would reconnect.
#[test]
fn hostile_truncated_packet_is_a_lost_connection() {
    let (_, stderr) = pull_refused("truncated", 12, &[]);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("connection closed in the middle of a packet"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
}

#[test]
fn hostile_reply_to_unknown_id_is_a_protocol_error() {
    protocol_refused("wrong-id", "unknown request id");
}

#[test]
fn hostile_huge_name_count_is_a_protocol_error() {
    protocol_refused("huge-count", "claims 2147483648 entries");
}

#[test]
fn hostile_wrong_reply_type_is_a_protocol_error() {
    let a = protocol_refused("wrong-type", "a handle reply to read");
    assert!(!a.dst.join("data").exists());
}

#[test]
fn hostile_read_longer_than_asked_is_a_protocol_error_and_never_written() {
    let a = protocol_refused("lying-size", "in reply to a read of 10 bytes");
    // `small` never lands, not even cut to size; no temp file of it is left either.
    assert!(!a.dst.join("small").exists());
    for e in std::fs::read_dir(&a.dst).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.as_bytes().starts_with(b".small."), "{name:?} left");
    }
    // `big` was listed as 1 MiB and holds 10 bytes: what is there is what was read.
    if let Ok(m) = std::fs::metadata(a.dst.join("big")) {
        assert!(m.len() <= 10, "big is {} bytes", m.len());
    }
}

#[test]
fn push_to_hostile_server_never_touches_anything_local() {
    for scenario in [
        "dotdot",
        "slash",
        "duplicate",
        "symlink-then-file",
        "swap",
        "lying-size",
        "wrong-id",
        "huge-count",
    ] {
        let a = arena();
        let src = a.parent.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), b"a\n").unwrap();
        std::fs::write(src.join("sub/b"), b"b\n").unwrap();
        std::os::unix::fs::symlink(&a.outside, src.join("ln")).unwrap();
        let before = snapshot(&a.parent);
        let src_arg = slash(&src);
        let out = hostile_run(
            scenario,
            &a.outside,
            &["-a", "--delete", &src_arg, "localhost:/src/"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(12 | 23)),
            "{scenario}: {}: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{scenario}: {stderr}");
        assert_eq!(
            snapshot(&a.parent),
            before,
            "{scenario}: changed local files"
        );
    }
}

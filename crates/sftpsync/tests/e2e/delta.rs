//! Delta transfer on push: a changed file is rebuilt on the server from ranges of its old
//! version (copy-data) plus what changed, using the index of what the last run wrote; and
//! every fallback sends the whole file and still gets it right.

use super::*;

const SIZE: usize = 4 << 20;

/// Pseudo-random bytes that do not compress or repeat.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Bytes sent on the wire, from the summary line.
fn sent(out: &str) -> u64 {
    let line = out.lines().find(|l| l.starts_with("sent ")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    state: std::path::PathBuf,
    server: String,
}

fn setup(server_args: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), noise(SIZE, 1)).unwrap();
    std::fs::write(src.join("small"), b"small file").unwrap();
    let command = format!("{} {server_args}", testkit::sftp_server_path().display());
    let server = server_script(tmp.path(), "server", &command);
    Setup {
        src,
        dst: tmp.path().join("dst"),
        state: tmp.path().join("state"),
        server,
        _tmp: tmp,
    }
}

impl Setup {
    fn push(&self, extra: &[&str]) -> String {
        let (s, d) = (slash(&self.src), format!("localhost:{}", slash(&self.dst)));
        let mut args = vec!["-a", "--stats", "--sftp-server", &self.server];
        args.extend_from_slice(extra);
        args.push(&s);
        args.push(&d);
        let out = sftpsync_with_state(&args, &self.state);
        let text = ok(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        text + &err
    }

    /// Inserts a byte at the start of `big` and rewrites 4 KiB in its middle.
    fn edit_big(&self) {
        let mut data = std::fs::read(self.src.join("big")).unwrap();
        data.insert(0, b'!');
        let mid = data.len() / 2;
        data[mid..mid + 4096].copy_from_slice(&noise(4096, 9));
        std::fs::write(self.src.join("big"), data).unwrap();
    }
}

#[test]
fn changed_file_is_rebuilt_from_its_old_version() {
    let s = setup("");
    let first = s.push(&[]);
    assert_eq!(stats_value(&first, "Matched data"), 0);
    assert!(
        stats_value(&first, "Literal data") >= SIZE as u64,
        "{first}"
    );

    s.edit_big();
    let second = s.push(&[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    let literal = stats_value(&second, "Literal data");
    let matched = stats_value(&second, "Matched data");
    assert!(literal < 64 * 1024, "literal {literal}: {second}");
    assert!(
        matched > SIZE as u64 - 64 * 1024,
        "matched {matched}: {second}"
    );
    assert!(
        sent(&second) < 256 * 1024,
        "sent {}: {second}",
        sent(&second)
    );

    // The index now describes the new version: another edit is a delta again.
    s.edit_big();
    let third = s.push(&[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert!(stats_value(&third, "Literal data") < 64 * 1024, "{third}");
}

#[test]
fn whole_file_and_no_index_send_everything() {
    let s = setup("");
    s.push(&[]);
    s.edit_big();
    let whole = s.push(&["-W"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(stats_value(&whole, "Matched data"), 0, "{whole}");

    // -W kept the index current, so a delta works again; --no-index ignores it.
    s.edit_big();
    let no_index = s.push(&["--no-index"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(stats_value(&no_index, "Matched data"), 0, "{no_index}");
}

/// The remote file changed behind our back (same size, other mtime): the index entry is
/// stale and must not be used.
#[test]
fn stale_index_entry_sends_the_whole_file() {
    let s = setup("");
    s.push(&[]);
    // Someone else rewrites the remote copy: other contents, same size, a new mtime.
    std::fs::write(s.dst.join("big"), noise(SIZE, 77)).unwrap();
    testkit::set_mtime_nofollow(&s.dst.join("big"), 1_000_000_000).unwrap();
    s.edit_big();
    let out = s.push(&[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(stats_value(&out, "Matched data"), 0, "{out}");
}

#[test]
fn damaged_index_is_rebuilt_and_the_file_sent_whole() {
    let s = setup("");
    s.push(&[]);
    let index = s.state.join("sftpsync/index.sqlite");
    assert!(index.is_file());
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", index.display()));
    }
    std::fs::write(&index, b"garbage, not an index").unwrap();
    s.edit_big();
    let out = s.push(&[]);
    assert!(out.contains("was damaged"), "{out}");
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(stats_value(&out, "Matched data"), 0, "{out}");
    // The new index serves the next run.
    s.edit_big();
    let next = s.push(&[]);
    assert!(stats_value(&next, "Matched data") > 0, "{next}");
    assert_trees_match_checksum(&s.src, &s.dst);
}

#[test]
fn server_without_copy_data_gets_whole_files() {
    let s = setup("-P copy-data");
    s.push(&[]);
    s.edit_big();
    let out = s.push(&[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(stats_value(&out, "Matched data"), 0, "{out}");
}

/// The same through the real chrooted sshd, where the index is keyed by the ssh login.
#[test]
fn delta_push_through_sshd() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), noise(SIZE, 3)).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("delta");
    let state = tmp.path().join("state");
    let run = || {
        let ssh = server.ssh_command();
        let dest = server.remote_spec(&format!("{remote}/"));
        let out = sftpsync_with_state(&["-a", "--stats", "-e", &ssh, &slash(&src), &dest], &state);
        ok(&out)
    };
    run();
    let mut data = std::fs::read(src.join("big")).unwrap();
    data.splice(1000..1000, b"inserted".iter().copied());
    std::fs::write(src.join("big"), data).unwrap();
    let out = run();
    assert_trees_match_checksum(&src, &local);
    assert!(stats_value(&out, "Literal data") < 64 * 1024, "{out}");
}

/// `-c --trust-index` compares against the hash the index keeps of what was written,
/// instead of reading the file back from the server; plain `-c` reads, as rsync's does, and
/// `--stats` says which.
#[test]
fn checksum_uses_the_index_instead_of_reading_the_server() {
    let s = setup("");
    s.push(&[]);
    let plain = s.push(&["-c"]);
    assert_eq!(
        stats_value(&plain, "Checksums read from the server"),
        2,
        "{plain}"
    );
    // Only files of 64 KiB or more are in the index: `small` is read either way.
    let indexed = s.push(&["-c", "--trust-index"]);
    assert_eq!(
        stats_value(&indexed, "Checksums from the delta index"),
        1,
        "{indexed}"
    );
    assert_eq!(
        stats_value(&indexed, "Checksums read from the server"),
        1,
        "{indexed}"
    );
    assert!(
        stats_value(&indexed, "Total bytes received") < 64 * 1024,
        "{indexed}"
    );

    let read = s.push(&["-c", "--trust-index", "--no-index"]);
    assert_eq!(
        stats_value(&read, "Checksums read from the server"),
        2,
        "{read}"
    );
    assert!(
        stats_value(&read, "Total bytes received") > SIZE as u64,
        "{read}"
    );

    // A file changed behind our back (later, so its mtime moved) is read, not trusted.
    std::fs::write(s.dst.join("small"), b"other file").unwrap();
    testkit::set_mtime_nofollow(&s.dst.join("small"), 2_000_000_000).unwrap();
    let out = s.push(&["-c", "--trust-index", "-i"]);
    assert_eq!(
        stats_value(&out, "Checksums read from the server"),
        1,
        "{out}"
    );
    assert!(out.contains("small"), "{out}");
    assert_trees_match_checksum(&s.src, &s.dst);
}

/// A file of 16 MiB or more goes into the index with its signature and no whole-file hash:
/// `-c --trust-index` compares the source with it block by block.
#[test]
fn checksum_of_a_big_file_is_checked_against_its_indexed_blocks() {
    use std::os::unix::fs::MetadataExt;
    let s = setup("");
    let huge = s.src.join("huge");
    std::fs::write(&huge, noise(17 << 20, 5)).unwrap();
    s.push(&[]);
    {
        let (index, _) = sync_index::Index::open(&s.state.join("sftpsync/index.sqlite")).unwrap();
        let server = format!("sftp-server {}", s.server);
        let entry = |name: &str| {
            let key = format!("{}/{name}", s.dst.display());
            index.get(&server, key.as_bytes()).unwrap().expect(name)
        };
        assert_eq!(entry("huge").file_hash, None);
        assert!(entry("big").file_hash.is_some());
    }
    let same = s.push(&["-c", "--trust-index"]);
    assert_eq!(stats_value(&same, "Checksums from the delta index"), 2);
    assert_eq!(stats_value(&same, "Number of regular files transferred"), 0);

    // One byte changed, size and mtime kept: only -c sees it, and the blocks tell.
    let mtime = std::fs::metadata(&huge).unwrap().mtime();
    let mut data = std::fs::read(&huge).unwrap();
    data[9 << 20] ^= 1;
    std::fs::write(&huge, data).unwrap();
    testkit::set_mtime_nofollow(&huge, mtime).unwrap();
    let changed = s.push(&["-c", "--trust-index"]);
    assert_eq!(stats_value(&changed, "Checksums from the delta index"), 2);
    assert_eq!(
        stats_value(&changed, "Number of regular files transferred"),
        1
    );
    assert!(
        stats_value(&changed, "Literal data") < 64 * 1024,
        "{changed}"
    );
    assert_trees_match_checksum(&s.src, &s.dst);

    // The index now holds the new version's blocks, some reused from the old signature.
    let again = s.push(&["-c", "--trust-index"]);
    assert_eq!(
        stats_value(&again, "Number of regular files transferred"),
        0
    );
    assert_eq!(stats_value(&again, "Checksums read from the server"), 1);
}

/// `--inplace` on a server without copy-data: the file is rewritten where it is (same inode,
/// no temp), and with the index only the blocks that changed at their place are written.
#[test]
fn inplace_writes_only_changed_blocks_into_the_same_file() {
    use std::os::unix::fs::MetadataExt;
    let s = setup("-P copy-data");
    s.push(&["--inplace"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    let inode = std::fs::metadata(s.dst.join("big")).unwrap().ino();

    // 4 KiB rewritten in the middle: one or two blocks go.
    let mut data = std::fs::read(s.src.join("big")).unwrap();
    let mid = data.len() / 2;
    data[mid..mid + 4096].copy_from_slice(&noise(4096, 5));
    // Each version gets its own mtime: the same size in the same second would look unchanged.
    write_at(&s.src.join("big"), &data, 1_700_000_001);
    let out = s.push(&["--inplace"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert!(stats_value(&out, "Literal data") < 128 * 1024, "{out}");
    assert_eq!(std::fs::metadata(s.dst.join("big")).unwrap().ino(), inode);
    assert_eq!(
        std::fs::read_dir(&s.dst).unwrap().count(),
        2,
        "no temp file"
    );

    // Shorter: the old tail is cut off.
    data.truncate(SIZE / 3);
    write_at(&s.src.join("big"), &data, 1_700_000_002);
    let out = s.push(&["--inplace"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert!(stats_value(&out, "Literal data") < 128 * 1024, "{out}");

    // Shifted content cannot be matched in place: it is all written, and still right.
    data.insert(0, b'!');
    write_at(&s.src.join("big"), &data, 1_700_000_003);
    s.push(&["--inplace"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(std::fs::metadata(s.dst.join("big")).unwrap().ino(), inode);
}

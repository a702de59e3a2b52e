//! Pulls and `--checksum` against a server that hashes files itself (`check-file`, here
//! given to OpenSSH's sftp-server by the `sftp-filter` proxy): only changed blocks are
//! fetched, a server whose hashes are wrong is caught, and one without them still works.

use super::*;

const BIG: usize = 24 << 20;
const SMALL: usize = 1 << 20;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = testkit::XorShift::new(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

struct Setup {
    tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("big"), &noise(BIG, 1), 1_600_000_000);
    write_at(&src.join("small"), &noise(SMALL, 2), 1_600_000_000);
    Setup {
        dst: tmp.path().join("dst"),
        src,
        tmp,
    }
}

impl Setup {
    /// A server program: sftp-server behind the filter with `filter_args`.
    fn server(&self, name: &str, filter_args: &str) -> String {
        let command = format!(
            "{} {filter_args} -- {}",
            testkit::sftp_filter_path().display(),
            testkit::sftp_server_path().display()
        );
        server_script(self.tmp.path(), name, &command)
    }

    /// Pulls the server's `src/` into `dst/`; stdout and stderr together.
    fn pull(&self, server: &str, extra: &[&str]) -> String {
        let (s, d) = (format!("localhost:{}", slash(&self.src)), slash(&self.dst));
        let mut args = vec!["-a", "--stats", "--sftp-server", server];
        args.extend_from_slice(extra);
        args.push(&s);
        args.push(&d);
        let out = sftpsync(&args);
        let text = ok(&out);
        text + &String::from_utf8_lossy(&out.stderr)
    }

    /// Rewrites 4 KiB at each of `offsets` in `name` and moves its mtime on.
    fn edit(&self, name: &str, offsets: &[usize]) {
        let path = self.src.join(name);
        let mut data = std::fs::read(&path).unwrap();
        for (i, &at) in offsets.iter().enumerate() {
            data[at..at + 4096].copy_from_slice(&noise(4096, 100 + i as u64));
        }
        write_at(&path, &data, 1_700_000_000);
    }
}

fn received(out: &str) -> u64 {
    stats_value(out, "Total bytes received")
}

#[test]
fn pull_fetches_only_the_changed_blocks() {
    let s = setup();
    let server = s.server("hashing", "--check-file");
    let first = s.pull(&server, &[]);
    assert_eq!(stats_value(&first, "Matched data"), 0, "{first}");

    s.edit("big", &[0, 5 << 20, 17 << 20 | 1000, BIG - 4096]);
    s.edit("small", &[300_000]);
    let second = s.pull(&server, &[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    let literal = stats_value(&second, "Literal data");
    // Each 4 KiB change costs one or two 8 KiB blocks, plus one block fetched to check the
    // server's hashes against real bytes.
    assert!(literal <= 8 * 16 * 1024, "literal {literal}: {second}");
    assert_eq!(
        stats_value(&second, "Matched data") + literal,
        (BIG + SMALL) as u64,
        "{second}"
    );
    // The blocks plus their hashes, far from the 25 MiB a whole copy takes.
    assert!(received(&second) < 1 << 20, "{second}");
}

#[test]
fn a_server_whose_hashes_are_wrong_is_caught_and_whole_files_are_copied() {
    let s = setup();
    let server = s.server("lying", "--check-file-bad-tail");
    s.pull(&server, &[]);
    s.edit("small", &[4096]);
    let out = s.pull(&server, &[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert!(
        out.contains("check-file hashes do not match"),
        "no warning: {out}"
    );
    assert_eq!(stats_value(&out, "Literal data"), SMALL as u64, "{out}");
}

#[test]
fn pull_from_a_server_without_check_file_copies_whole_files() {
    let s = setup();
    let server = testkit::sftp_server_path();
    let server = server.to_str().unwrap();
    s.pull(server, &[]);
    s.edit("small", &[4096]);
    let out = s.pull(server, &[]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert_eq!(stats_value(&out, "Literal data"), SMALL as u64, "{out}");
    assert_eq!(stats_value(&out, "Matched data"), 0, "{out}");
}

#[test]
fn checksum_uses_the_servers_hashes_instead_of_reading_files() {
    let s = setup();
    let server = s.server("hashing", "--check-file");
    s.pull(&server, &[]);

    // Same content, only the time moved: compared by the server's hashes, nothing sent.
    testkit::set_mtime_nofollow(&s.src.join("small"), 1_650_000_000).unwrap();
    let same = s.pull(&server, &["-c", "-i"]);
    assert_eq!(stats_value(&same, "Checksums computed by the server"), 2);
    assert_eq!(stats_value(&same, "Literal data"), 0, "{same}");
    assert!(received(&same) < 64 * 1024, "{same}");

    // Changed content of the same size and time: -c finds it.
    let mut data = std::fs::read(s.src.join("big")).unwrap();
    data[123] ^= 1;
    write_at(&s.src.join("big"), &data, 1_600_000_000);
    testkit::set_mtime_nofollow(&s.dst.join("big"), 1_600_000_000).unwrap();
    let changed = s.pull(&server, &["-c", "-i"]);
    assert!(changed.contains(">fc"), "{changed}");
    assert_trees_match_checksum(&s.src, &s.dst);
}

#[test]
fn verify_compares_the_rebuilt_file_with_the_servers_hash() {
    let s = setup();
    let server = s.server("hashing", "--check-file");
    s.pull(&server, &[]);
    s.edit("big", &[1 << 20]);
    let out = s.pull(&server, &["--verify"]);
    assert_trees_match_checksum(&s.src, &s.dst);
    assert!(stats_value(&out, "Literal data") <= 32 * 1024, "{out}");
}

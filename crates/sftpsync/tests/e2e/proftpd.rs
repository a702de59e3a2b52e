//! Against a second real server, ProFTPD's mod_sftp: push, pull, re-sync and --delete come out
//! as rsync would have them.
//!
//! Three things of ProFTPD 1.3.8 shape these tests:
//! - it offers no lsetstat, so a symlink's own mtime stays whatever the server gave it, and
//!   the comparisons leave link times out (`-J`);
//! - READLINK answers a relative link's target as an absolute path (`sub/b` in `/d` comes back
//!   as `/d/sub/b`); sftpsync undoes that where the link's listed size allows, which it does
//!   not for a target with `..` (`relative_symlinks_are_written_verbatim`);
//! - mod_sftp reassembles SFTP requests in one buffer per connection, not per channel: two
//!   SFTP channels multiplexed over one SSH connection corrupt each other's requests as soon
//!   as one spans two SSH data messages. sftpsync tells ProFTPD by its VERSION reply and gives
//!   it a connection per channel (`multiplexed_channels_hang_proftpd`).

use super::*;

use testkit::{ProftpdServer, TreeBuilder};

/// Absolute, so READLINK gives it back unchanged; short, so ProFTPD's chroot-prefix stripping
/// cannot apply to it.
const ABSOLUTE_TARGET: &str = "/nowhere/abs-target";

fn compare(src: &Path, dst: &Path) {
    assert_trees_match_with(src, dst, &["-J"]);
    assert_trees_match_with(src, dst, &["-J", "-c"]);
}

/// A small tree of every kind ProFTPD round-trips, owned by the test user.
fn small_tree(server: &TestServer, root: &Path) {
    TreeBuilder::new(root)
        .file_with("a.txt", b"alpha\n", 0o644, 1_500_000_000)
        .file_with(".hidden", b"dot file", 0o600, 1_500_000_100)
        .file_with("run.sh", b"#!/bin/sh\nexit 0\n", 0o755, 1_500_000_200)
        .file_with("empty", b"", 0o640, 1_500_000_300)
        .file_with("sub/b.bin", patterned(700_000, 3), 0o644, 1_500_000_400)
        .file_with("sub/deeper/c", b"c", 0o604, 1_500_000_500)
        .dir("sub/deeper", 0o750, 1_500_001_000)
        .dir("sub", 0o755, 1_500_002_000)
        .symlink_with("abs-link", ABSOLUTE_TARGET, 1_500_003_000)
        .finish();
    chown_tree(root, server.uid(), server.gid()).unwrap();
}

/// `len` bytes that differ by `seed` and do not repeat within a write.
fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8 ^ seed)
        .collect()
}

#[test]
fn push_pull_resync_and_delete() {
    let server = ProftpdServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_tree(server, &src);
    let (remote, local) = server.fresh_remote_dir("roundtrip");
    let one = "--channels=1";

    let pushed = ok(&push(server, &["-ai", one], &src, &remote));
    assert!(pushed.contains("<f+++++++++ sub/b.bin"), "{pushed}");
    assert!(
        pushed.contains(&format!("cL+++++++++ abs-link -> {ABSOLUTE_TARGET}")),
        "{pushed}"
    );
    compare(&src, &local);
    assert_eq!(
        ok(&push(server, &["-ai", one], &src, &remote)),
        "",
        "a no-change re-run must not touch anything"
    );

    let back = tmp.path().join("back");
    ok(&pull(server, &["-a", one], &remote, &back));
    compare(&local, &back);
    compare(&src, &back);

    // Change, add and remove on the source; --delete takes the removals across.
    TreeBuilder::new(&src)
        .file_with("a.txt", b"alpha, longer now\n", 0o664, 1_600_000_000)
        .file_with("sub/b.bin", patterned(650_000, 9), 0o644, 1_600_000_100)
        .file_with("new/fresh", b"fresh", 0o644, 1_600_000_200)
        .finish();
    std::fs::remove_file(src.join("empty")).unwrap();
    std::fs::remove_dir_all(src.join("sub/deeper")).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let changed = ok(&push(server, &["-ai", "--delete", one], &src, &remote));
    for line in [
        "*deleting   empty",
        "*deleting   sub/deeper/c",
        "*deleting   sub/deeper/",
        "<f+++++++++ new/fresh",
    ] {
        assert!(
            changed.lines().any(|l| l == line),
            "missing {line:?} in:\n{changed}"
        );
    }
    assert!(
        changed
            .lines()
            .any(|l| l.starts_with("<f") && l.ends_with(" a.txt")),
        "{changed}"
    );
    compare(&src, &local);
    assert_eq!(
        ok(&push(server, &["-ai", "--delete", one], &src, &remote)),
        ""
    );

    // And the pulled copy follows, deletions included.
    ok(&pull(server, &["-a", "--delete", one], &remote, &back));
    compare(&src, &back);
    assert!(!back.join("sub/deeper").exists());
}

/// Regression: with channels multiplexed over one SSH connection, ProFTPD mixed up their
/// requests and the push hung. Seen in its VERSION reply, it now gets a connection per
/// channel. The generated tree (odd names, hard links, many modes, big files) goes over the
/// default channels through plain `ssh`, which would otherwise multiplex.
#[test]
fn multiplexed_channels_hang_proftpd() {
    let server = ProftpdServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 17, 400);
    let (remote, local) = server.fresh_remote_dir("mixed");
    let rsh = server.ssh_command();
    let (s, d) = (slash(&src), server.remote_spec(&format!("{remote}/")));
    let run = |flags: &[&str]| {
        // A hang ends as an I/O timeout (exit 30) instead of stopping the test run.
        let mut args = vec!["-e", &rsh, "--timeout=60"];
        args.extend_from_slice(flags);
        args.push(&s);
        args.push(&d);
        ok(&sftpsync(&args))
    };

    let out = run(&["-aHv", "--delete"]);
    assert!(
        out.contains("over separate connections (this server mixes up channels"),
        "{out}"
    );
    assert_trees_match_with(&src, &local, &["-J", "-H"]);
    assert_trees_match_with(&src, &local, &["-J", "-H", "-c"]);

    mutate_tree(&src, 5);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    run(&["-aH", "--delete"]);
    assert_trees_match_with(&src, &local, &["-J", "-H", "-c"]);
}

/// Relative symlinks reach the server exactly as written, and come back as written where
/// ProFTPD's absolute answer can be undone.
#[test]
fn relative_symlinks_are_written_verbatim() {
    let server = ProftpdServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    TreeBuilder::new(&src)
        .file("sub/target", b"t")
        .symlink("down", "sub/target")
        .symlink("sub/up", "../sub/target")
        .symlink("dangling", "no/such/thing")
        .finish();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("rel-links");

    ok(&push(server, &["-a", "--channels=1"], &src, &remote));
    assert_trees_match_with(&src, &local, &["-J"]);
    for (link, target) in [
        ("down", "sub/target"),
        ("sub/up", "../sub/target"),
        ("dangling", "no/such/thing"),
    ] {
        assert_eq!(
            std::fs::read_link(local.join(link)).unwrap(),
            Path::new(target)
        );
    }

    // ProFTPD reads them back as absolute paths; the links' own sizes tell the targets they
    // hold, except one with `..`, which the server resolved away.
    let again = ok(&push(server, &["-ai", "--channels=1"], &src, &remote));
    assert_eq!(
        again.trim(),
        "cLc........ sub/up -> ../sub/target",
        "{again}"
    );
    let back = tmp.path().join("back");
    let out = pull(server, &["-a", "--channels=1"], &remote, &back);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("relative symlink targets back as absolute"),
        "{stderr}"
    );
    for (link, target) in [("down", "sub/target"), ("dangling", "no/such/thing")] {
        assert_eq!(
            std::fs::read_link(back.join(link)).unwrap(),
            Path::new(target)
        );
    }
    let up = std::fs::read_link(back.join("sub/up")).unwrap();
    assert!(up.is_absolute(), "{up:?}");
}

/// ProFTPD hashes blocks for us (check-file, unannounced in v3): a pull over an old version
/// fetches only the blocks that changed, `-c` compares by its whole-file hash, and the
/// result is exact.
#[test]
fn pull_fetches_only_changed_blocks_by_proftpd_check_file() {
    let server = ProftpdServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, served) = server.fresh_remote_dir("hashed");
    let mut data = patterned(3 << 20, 5);
    TreeBuilder::new(&served)
        .file_with("big", &data, 0o644, 1_500_000_000)
        .finish();
    chown_tree(&served, server.uid(), server.gid()).unwrap();
    let back = tmp.path().join("back");
    ok(&pull(server, &["-a"], &remote, &back));

    for at in [100, 1 << 20, (3 << 20) - 10] {
        data[at] ^= 0xff;
    }
    TreeBuilder::new(&served)
        .file_with("big", &data, 0o644, 1_600_000_000)
        .finish();
    chown_tree(&served, server.uid(), server.gid()).unwrap();
    let out = ok(&pull(server, &["-a", "--stats"], &remote, &back));
    assert_eq!(std::fs::read(back.join("big")).unwrap(), data);
    // Three 8 KiB blocks of 3 MiB.
    assert_eq!(stats_value(&out, "Literal data"), 3 * 8192, "{out}");
    assert!(
        stats_value(&out, "Total bytes received") < 256 * 1024,
        "{out}"
    );

    // Same content, another mtime: -c asks ProFTPD for its hash instead of reading the file.
    testkit::set_mtime_nofollow(&back.join("big"), 1_700_000_000).unwrap();
    let out = ok(&pull(server, &["-a", "-c", "--stats"], &remote, &back));
    assert_eq!(
        stats_value(&out, "Checksums computed by the server"),
        1,
        "{out}"
    );
    assert_eq!(stats_value(&out, "Literal data"), 0, "{out}");
    compare(&served, &back);
}

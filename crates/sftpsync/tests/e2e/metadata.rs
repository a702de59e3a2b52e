//! Metadata safety: setuid/setgid/sticky bits and ownership land only when asked, as rsync
//! decides them (local rsync is the oracle); mtimes SFTP v3 cannot carry neither panic nor
//! resend forever; a server that ignores SETSTAT is noticed once.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs sftpsync with `args` under `umask`, with `env` set (e.g. the hostile scenario).
fn sftpsync_umask(umask: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask \"$0\" && exec \"$@\"")
        .arg(umask)
        .arg(env!("CARGO_BIN_EXE_sftpsync"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run sftpsync")
}

/// Runs local rsync (the oracle) with `flags` from `src/` into `dst/` under `umask`.
fn rsync_umask(umask: &str, flags: &str, src: &Path, dst: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask \"$0\" && exec rsync \"$@\"")
        .arg(umask)
        .arg(flags)
        .arg(slash(src))
        .arg(slash(dst))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync {flags}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mode bits (07777), uid and gid of everything below `root`, by relative path.
fn modes(root: &Path) -> BTreeMap<PathBuf, (String, u32, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (String, u32, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, (format!("{:o}", m.mode() & 0o7777), m.uid(), m.gid()));
            if m.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A file with `mode` owned by `owner`; chown first, since it clears setuid and setgid.
fn special_file(path: &Path, mode: u32, owner: (u32, u32)) {
    std::fs::write(path, b"special\n").unwrap();
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree the hostile server's `setuid` scenario lists, built locally for rsync.
fn setuid_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sdir")).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("sticky", 0o1777)] {
        special_file(&root.join(name), mode, (0, 0));
    }
    special_file(&root.join("owned"), 0o640, (4321, 4321));
    special_file(&root.join("sdir/f"), 0o6755, (0, 0));
    let sdir = root.join("sdir");
    std::fs::set_permissions(&sdir, std::fs::Permissions::from_mode(0o6777)).unwrap();
}

/// Pulling from an untrusted server: without -p no special bit lands and modes are masked by
/// the umask; with -p the bits land; -o/-g set ownership only when given. In every case the
/// result is what local rsync makes of the same tree.
#[test]
fn pull_special_bits_and_owners_only_when_asked_like_rsync() {
    if !running_as_root() {
        eprintln!("skipped: needs root to own files as others and to set setuid");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let oracle_src = tmp.path().join("oracle-src");
    setuid_tree(&oracle_src);
    let server = testkit::hostile_server_path();
    let server = server.to_str().unwrap();
    let cases = [
        ("-r", "022"),
        ("-r", "027"),
        ("-rp", "022"),
        ("-rp", "077"),
        ("-rpo", "022"),
        ("-rpog", "022"),
        ("-rog", "022"),
    ];
    for (i, (flags, umask)) in cases.iter().enumerate() {
        let dst = tmp.path().join(format!("dst{i}"));
        let expected = tmp.path().join(format!("rsync{i}"));
        let dst_arg = slash(&dst);
        let out = sftpsync_umask(
            umask,
            &["--sftp-server", server, flags, "localhost:/src/", &dst_arg],
            &[("HOSTILE_SCENARIO", "setuid")],
        );
        ok(&out);
        rsync_umask(umask, flags, &oracle_src, &expected);
        // The hostile server's plain files (`ok`, `sub/`, a control-character name) are
        // not in the oracle's tree; only the scenario's entries are compared.
        let mut got = modes(&dst);
        let want = modes(&expected);
        got.retain(|p, _| want.contains_key(p));
        assert_eq!(
            got, want,
            "sftpsync {flags} under umask {umask} differs from rsync"
        );
        let special = got.values().any(|(m, _, _)| m.len() > 3);
        assert_eq!(
            special,
            flags.contains('p'),
            "special bits land exactly when -p is given ({flags}): {got:?}"
        );
    }
}

/// Without -p an existing file keeps its own mode when its contents are replaced, special
/// bits included, as rsync does: the bits are the local user's choice, not the server's.
#[test]
fn pull_replacing_a_setuid_file_keeps_its_local_mode_like_rsync() {
    if !running_as_root() {
        eprintln!("skipped: needs root to set setuid");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (dst, expected, oracle_src) = (
        tmp.path().join("dst"),
        tmp.path().join("rsync"),
        tmp.path().join("oracle-src"),
    );
    std::fs::create_dir(&oracle_src).unwrap();
    std::fs::write(oracle_src.join("ok"), b"fine\n").unwrap();
    for d in [&dst, &expected] {
        std::fs::create_dir(d).unwrap();
        special_file(&d.join("ok"), 0o4755, (0, 0));
    }
    let server = testkit::hostile_server_path();
    let dst_arg = slash(&dst);
    let args = ["--sftp-server", server.to_str().unwrap(), "-r"];
    let out = sftpsync_umask(
        "022",
        &[&args[..], &["localhost:/src/", &dst_arg]].concat(),
        &[("HOSTILE_SCENARIO", "plain")],
    );
    ok(&out);
    rsync_umask("022", "-r", &oracle_src, &expected);
    assert_eq!(std::fs::read(dst.join("ok")).unwrap(), b"fine\n");
    let mode = |p: &Path| std::fs::metadata(p.join("ok")).unwrap().mode() & 0o7777;
    assert_eq!(mode(&dst), mode(&expected));
}

/// A wrapper script that runs sftp-server behind the test kit's filtering proxy.
fn filtered_server(dir: &Path, name: &str, filter_args: &str, server_args: &str) -> String {
    let command = format!(
        "{} {filter_args} -- {} {server_args}",
        testkit::sftp_filter_path().display(),
        testkit::sftp_server_path().display()
    );
    server_script(dir, name, &command)
}

/// Pushing: without -p no OPEN, MKDIR or SETSTAT carries a special bit (checked on the wire,
/// through the logging proxy); with -p and -a the bits arrive, also on files whose owner
/// changes (a chown on the server clears setuid and setgid). The server's tree always ends
/// as local rsync would make it.
#[test]
fn push_sends_special_bits_only_with_p_like_rsync() {
    if !running_as_root() {
        eprintln!("skipped: needs root to own files as others and to set setuid");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    setuid_tree(&src);
    special_file(&src.join("plain"), 0o644, (0, 0));
    for (i, flags) in ["-r", "-rp", "-a", "-rog", "-ro", "-rpg"]
        .iter()
        .enumerate()
    {
        let log = tmp.path().join(format!("wire{i}.log"));
        let server = filtered_server(
            tmp.path(),
            &format!("logged{i}"),
            &format!("--log {}", log.display()),
            "",
        );
        let dst = tmp.path().join(format!("dst{i}"));
        let expected = tmp.path().join(format!("rsync{i}"));
        ok(&push_through(&server, &[flags], &src, &dst));
        rsync_umask("022", flags, &src, &expected);
        assert_eq!(modes(&dst), modes(&expected), "sftpsync {flags} vs rsync");

        let wire = std::fs::read_to_string(&log).unwrap();
        let sent_special = wire
            .lines()
            .filter_map(|l| l.split(' ').find_map(|w| w.strip_prefix("perms=")))
            .filter_map(|p| u32::from_str_radix(p, 8).ok())
            .any(|p| p & 0o7000 != 0);
        assert_eq!(
            sent_special,
            flags.contains('p') || *flags == "-a",
            "special bits on the wire only with -p ({flags}):\n{wire}"
        );
    }
}

/// Source mtimes the SFTP v3 wire cannot carry (before 1970, after 2106, the i64 extremes the
/// file system accepts): no panic, exit 0 as rsync, the nearest representable time stored,
/// one warning; a re-run is a no-op, and a later real change is still seen.
#[test]
fn absurd_mtimes_clamp_once_and_rerun_is_noop() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    let cases: [(&str, i64); 7] = [
        ("minus-one", -1),
        ("epoch", 0),
        ("past-2038", (1 << 31) + 5),
        ("year-2242", 1 << 33),
        ("i64-min", i64::MIN),
        ("i64-max", i64::MAX),
        ("ordinary", 1_600_000_000),
    ];
    for (name, t) in cases {
        write_at(&src.join(name), name.as_bytes(), t);
    }
    std::fs::create_dir(src.join("old-dir")).unwrap();
    write_at(&src.join("old-dir/f"), b"f", 1_000);
    testkit::set_mtime_nofollow(&src.join("old-dir"), -86_400).unwrap();

    let out = pipe_push(&["-a"], &src, &dst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.matches("cannot carry modification times").count(),
        1,
        "one warning per run: {err}"
    );
    for (name, _) in cases {
        let local = std::fs::metadata(src.join(name)).unwrap().mtime();
        let remote = std::fs::metadata(dst.join(name)).unwrap().mtime();
        let clamped = local.clamp(0, u32::MAX as i64);
        assert_eq!(remote, clamped, "{name}: local mtime {local}");
    }
    assert_eq!(std::fs::metadata(dst.join("old-dir")).unwrap().mtime(), 0);
    assert_trees_match_with(&src, &dst, &["--no-t", "-c"]);

    let again = pipe_push(&["-ai"], &src, &dst);
    assert_eq!(ok(&again), "", "the clamped copies are up to date");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!err.contains("cannot carry"), "nothing was sent: {err}");

    // A time that moves into the representable range is a change like any other: sent again,
    // as rsync's quick check does.
    testkit::set_mtime_nofollow(&src.join("minus-one"), 1_600_000_000).unwrap();
    assert_eq!(
        ok(&pipe_push(&["-ai"], &src, &dst)),
        "<f..t...... minus-one\n"
    );
    assert_eq!(
        std::fs::metadata(dst.join("minus-one")).unwrap().mtime(),
        1_600_000_000
    );
}

/// Regression: the one-time read-back compared the server's (clamped) mtime with the
/// unclamped source time, took the difference for a server ignoring SETSTAT, warned so and
/// compared by size for the rest of the run.
#[test]
fn clamped_mtime_is_not_mistaken_for_a_server_ignoring_setstat() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    // The only file, so the read-back is of it.
    write_at(&src.join("year-2242"), b"far future", 1 << 33);
    let out = pipe_push(&["-a"], &src, &dst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("does not apply"), "{err}");
    assert_eq!(err.matches("cannot carry").count(), 1, "{err}");
    assert_eq!(ok(&pipe_push(&["-ai"], &src, &dst)), "");
}

/// Pulling, the ends of the wire's range are applied as they are, and a re-run is a no-op.
#[test]
fn pull_applies_mtime_zero_and_u32_max_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    let server = testkit::hostile_server_path();
    let (server, dst_arg) = (server.to_str().unwrap(), slash(&dst));
    let args = ["--sftp-server", server, "-ai", "localhost:/src/", &dst_arg];
    let env = [("HOSTILE_SCENARIO", "edge-times")];
    ok(&sftpsync_umask("022", &args, &env));
    let mtime = |n: &str| std::fs::metadata(dst.join(n)).unwrap().mtime();
    assert_eq!(mtime("epoch"), 0);
    assert_eq!(mtime("end"), u32::MAX as i64);
    let again = ok(&sftpsync_umask("022", &args, &env));
    assert!(
        !again
            .lines()
            .any(|l| l.contains("epoch") || l.contains("end")),
        "{again}"
    );
}

/// A server that answers SETSTAT and FSETSTAT with OK and does nothing: one warning names the
/// problem, the data and modes (given at creation) arrive, and by size a re-run sends nothing.
#[test]
fn setstat_ignored_warns_once_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    // The server's umask 0 lets the modes given with OPEN and MKDIR through as they are.
    let server = filtered_server(
        tmp.path(),
        "ignores-setstat",
        "--ignore setstat,fsetstat,lsetstat",
        "-u 000",
    );
    push_to_server_that_loses_times(tmp.path(), &server);
}

/// A server that applies modes but drops the times of SETSTAT and FSETSTAT: the same.
#[test]
fn setstat_without_times_warns_once_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let server = filtered_server(
        tmp.path(),
        "drops-times",
        "--strip-times setstat,fsetstat,lsetstat",
        "",
    );
    push_to_server_that_loses_times(tmp.path(), &server);
}

fn push_to_server_that_loses_times(tmp: &Path, server: &str) {
    let src = tmp.join("src");
    generate_mixed_tree(&src, 11, 300);
    let dst = tmp.join("dst");

    let out = push_through(server, &["-a", "--delete"], &src, &dst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("accepts but does not apply modification times")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "nothing else to say: {err}");
    assert_trees_match_with(&src, &dst, &["--no-t", "-c"]);

    let again = ok(&push_through(
        server,
        &["-ai", "--delete", "--size-only"],
        &src,
        &dst,
    ));
    assert!(
        !again.lines().any(|l| l.starts_with("<f")),
        "nothing to send by size: {again}"
    );
}

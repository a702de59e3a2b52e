//! Choosing what is sent: `-I`, `--max-size`/`--min-size`, `-m` and
//! `--ignore-missing-args`/`--delete-missing-args`. Each case runs real rsync locally and
//! sftpsync (pushing through sftp-server over pipes, or against the chrooted sshd) on copies
//! of the same trees, and compares exit codes, itemized lines and the trees left behind.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// How itemized lines are compared: in order, or as sets where rsync's own order is a race
/// between its generator (which prints deletions at once) and its receiver (which prints a
/// transfer when it is done).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lines {
    InOrder,
    AnyOrder,
}

/// One run's exit code, itemized lines (our pushes' `<f` shown as rsync's local `>f`, and
/// "created directory" dropped, which names the destination as each was given it) and
/// stderr.
struct Run {
    code: i32,
    lines: Vec<String>,
    stderr: String,
}

fn finish(out: Output) -> Run {
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("created directory "))
        .map(|l| match l.strip_prefix("<f") {
            Some(rest) => format!(">f{rest}"),
            None => l.to_string(),
        })
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        lines,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `rsync -i ARGS OPERANDS... DEST`, run in `cwd`.
fn rsync_in(cwd: &Path, args: &[&str], operands: &[&str], dest: &Path) -> Run {
    finish(
        Command::new("rsync")
            .current_dir(cwd)
            .arg("-i")
            .args(args)
            .args(operands)
            .arg(dest)
            .output()
            .expect("run rsync"),
    )
}

/// The same with sftpsync, through sftp-server over pipes (`localhost:DEST`).
fn ours_in(cwd: &Path, args: &[&str], operands: &[&str], dest: &Path) -> Run {
    let dest = format!("localhost:{}", dest.display());
    finish(
        Command::new(env!("CARGO_BIN_EXE_sftpsync"))
            .current_dir(cwd)
            .env("XDG_STATE_HOME", shared_state_dir())
            .env("SFTPSYNC_CONFIG", "")
            .arg("--sftp-server")
            .arg(testkit::sftp_server_path())
            .arg("-i")
            .args(args)
            .args(operands)
            .arg(dest)
            .stdin(Stdio::null())
            .output()
            .expect("run sftpsync"),
    )
}

/// Every path below `root`, directories with a trailing `/`; empty when `root` is missing.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.symlink_metadata().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Asserts that two results agree: code, lines (as `lines` says) and trees.
fn assert_same(case: &str, theirs: &Run, ours: &Run, lines: Lines) {
    assert_eq!(
        ours.code, theirs.code,
        "{case}: exit code\nrsync said: {}\nwe said: {}",
        theirs.stderr, ours.stderr
    );
    let (mut want, mut got) = (theirs.lines.clone(), ours.lines.clone());
    if lines == Lines::AnyOrder {
        want.sort();
        got.sort();
    }
    assert_eq!(
        got, want,
        "{case}: itemized lines\nour stderr: {}",
        ours.stderr
    );
}

fn assert_same_trees(case: &str, theirs: &Path, ours: &Path, compare: &[&str]) {
    assert_eq!(listing(ours), listing(theirs), "{case}: names");
    if theirs.is_dir() && ours.is_dir() {
        let diff = rsync_diff(theirs, ours, compare);
        assert!(diff.is_empty(), "{case}: trees differ:\n{diff}");
    }
}

/// Two fresh destinations below `base`, copies of `seed` when given.
fn destinations(base: &Path, seed: Option<&Path>) -> (PathBuf, PathBuf) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (theirs, ours) = (
        base.join(format!("rsync-{n}")),
        base.join(format!("ours-{n}")),
    );
    std::fs::create_dir_all(base).unwrap();
    if let Some(seed) = seed {
        copy_tree(seed, &theirs);
        copy_tree(seed, &ours);
    }
    (theirs, ours)
}

/// Runs one case both ways, in `cwd` with the same operands, into copies of `seed`, and
/// checks that everything agrees. `compare` are the flags the trees are compared with. The
/// destination operand gets `dest_tail` appended (e.g. "/" or a file name).
#[allow(clippy::too_many_arguments)]
fn case(
    cwd: &Path,
    seed: Option<&Path>,
    args: &[&str],
    operands: &[&str],
    dest_tail: &str,
    lines: Lines,
    compare: &[&str],
) -> Run {
    let (theirs, ours) = destinations(&cwd.join("dests"), seed);
    let with_tail = |p: &Path| PathBuf::from(format!("{}{dest_tail}", p.display()));
    let want = rsync_in(cwd, args, operands, &with_tail(&theirs));
    let got = ours_in(cwd, args, operands, &with_tail(&ours));
    let name = format!("{args:?} {operands:?} -> DEST{dest_tail}");
    assert_same(&name, &want, &got, lines);
    assert_same_trees(&name, &theirs, &ours, compare);
    got
}

/// Files and directories with fixed mtimes: `f` entries are (path, size).
fn build(root: &Path, dirs: &[&str], files: &[(&str, usize)]) {
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (f, size) in files {
        let path = root.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..*size).map(|i| b'a' + (i % 26) as u8).collect();
        write_at(&path, &data, 1_000_000_000);
    }
}

/// `-I` sends every file again, however well size and mtime match; `-c` and --size-only
/// still decide when given, as in rsync.
#[test]
fn ignore_times_resends_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let src = cwd.join("src");
    build(
        &src,
        &["sub/deeper"],
        &[("a", 10), ("same", 3), ("sub/b", 100), ("sub/deeper/c", 0)],
    );
    std::fs::hard_link(src.join("a"), src.join("sub/a-link")).unwrap();
    let seed = cwd.join("seed");
    copy_tree(&src, &seed);
    // Not linked on the receiver: a chmod of one name would show through the other.
    std::fs::remove_file(seed.join("sub/a-link")).unwrap();
    std::fs::copy(src.join("a"), seed.join("sub/a-link")).unwrap();
    testkit::set_mtime_nofollow(&seed.join("sub/a-link"), 1_000_000_000).unwrap();
    // One file with other permissions, one with another mtime, one with other bytes.
    std::fs::set_permissions(seed.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    write_at(&seed.join("sub/b"), &[b'a'; 100], 1_000_000_009);
    write_at(&seed.join("same"), b"xyz", 1_000_000_000);

    for args in [
        &["-aI"][..],
        &["-aHI"],
        &["-rI"],
        &["-aI", "--size-only"],
        &["-aIc"],
        &["-aI", "--existing"],
        &["-a", "--ignore-times", "-ii"],
    ] {
        let compare: &[&str] = if args.contains(&"-rI") {
            &["-c", "--no-t", "-O"]
        } else {
            &["-c", "-H"]
        };
        case(
            cwd,
            Some(&seed),
            args,
            &["src/"],
            "/",
            Lines::InOrder,
            compare,
        );
    }
}

/// On a push the file goes through the delta: what the server already has is copied there,
/// not sent again.
#[test]
fn ignore_times_push_moves_only_a_delta() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build(&src, &[], &[("big", 300_000), ("small", 10)]);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("ignore-times");
    ok(&push(server, &["-a"], &src, &remote));
    assert_eq!(ok(&push(server, &["-ai"], &src, &remote)), "");

    let out = ok(&push(server, &["-aiI", "--stats"], &src, &remote));
    assert!(
        out.starts_with("<f......... big\n<f......... small\n"),
        "{out}"
    );
    assert_eq!(stats_value(&out, "Number of regular files transferred"), 2);
    // The small file is below a block and goes whole.
    assert_eq!(stats_value(&out, "Matched data"), 300_000, "{out}");
    assert_eq!(stats_value(&out, "Literal data"), 10, "{out}");
    assert_trees_match_checksum(&src, &local);
}

#[test]
fn ignore_times_pull_like_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("ignore-times-pull");
    build(&remote_local, &["d"], &[("f", 5), ("d/g", 7)]);
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    let (theirs, ours) = (tmp.path().join("theirs"), tmp.path().join("ours"));
    rsync_itemize(&remote_local, &theirs, &[]);
    ok(&pull(server, &["-a"], &remote, &ours));

    let want = rsync_itemize(&remote_local, &theirs, &["-I"]);
    let got = ok(&pull(server, &["-aiI"], &remote, &ours));
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    assert_eq!(got, ">f......... f\n>f......... d/g\n");
    assert_trees_match_checksum(&remote_local, &ours);
}

/// Files over --max-size or under --min-size are passed over; they stay in rsync's file list,
/// so --delete leaves the receiver's copies alone and -m keeps their directories.
#[test]
fn size_limits_pass_over_files_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let src = cwd.join("src");
    build(
        &src,
        &["only-big", "nothing"],
        &[
            ("empty", 0),
            ("k-1", 1023),
            ("k", 1024),
            ("k+1", 1025),
            ("kb", 1000),
            ("kb+1", 1001),
            ("only-big/huge", 5000),
            ("sub/two-k", 2048),
            ("sub/tiny", 1),
        ],
    );
    let seed = cwd.join("seed");
    build(&seed, &[], &[("k+1", 7), ("only-big/huge", 1), ("gone", 3)]);

    for limits in [
        &["--max-size=1k"][..],
        &["--max-size=1k-1"],
        &["--max-size=1KB"],
        &["--max-size=0"],
        &["--min-size=1k"],
        &["--min-size=1KB+1"],
        &["--min-size=1", "--max-size=2k"],
        &["--min-size=1.5k", "--max-size=1k"],
        &["--max-size=1k", "--delete"],
        &["--max-size=1k", "-m"],
        &["--min-size=1k", "-m", "--delete"],
    ] {
        let mut args = vec!["-a"];
        args.extend_from_slice(limits);
        let lines = if limits.iter().any(|a| a.starts_with("--delete")) {
            Lines::AnyOrder
        } else {
            Lines::InOrder
        };
        case(cwd, Some(&seed), &args, &["src/"], "/", lines, &["-O"]);
    }

    // -vv tells why, in rsync's words.
    let (_, ours) = destinations(&cwd.join("dests"), None);
    let out = ours_in(
        cwd,
        &["-avv", "--max-size=1k", "--min-size=1"],
        &["src/"],
        &ours,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for line in [
        "empty is under min-size",
        "k+1 is over max-size",
        "sub/two-k is over max-size",
    ] {
        assert!(
            out.lines.iter().any(|l| l == line),
            "no {line:?} in {:?}",
            out.lines
        );
    }
    let out = ours_in(cwd, &["-av", "--max-size=1k"], &["src/"], &ours);
    assert!(
        !out.lines.iter().any(|l| l.contains("max-size")),
        "{:?}",
        out.lines
    );
}

#[test]
fn size_limits_pull_like_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("sizes-pull");
    build(
        &remote_local,
        &[],
        &[
            ("empty", 0),
            ("k", 1024),
            ("k+1", 1025),
            ("d/big", 3000),
            ("d/small", 9),
        ],
    );
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    let limits = ["--max-size=1k", "--min-size=1"];
    let (theirs, ours) = (tmp.path().join("theirs"), tmp.path().join("ours"));
    std::fs::create_dir(&theirs).unwrap();
    std::fs::create_dir(&ours).unwrap();
    let want = rsync_itemize(&remote_local, &theirs, &limits);
    let mut args = vec!["-ai"];
    args.extend(limits);
    let got = ok(&pull(server, &args, &remote, &ours));
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    assert_eq!(listing(&ours), ["d/", "d/small", "k"]);
    assert_trees_match_with(&theirs, &ours, &[]);
}

#[test]
fn bad_sizes_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (arg, message) in [
        ("--max-size=1x", "--max-size=1x is invalid"),
        ("--min-size=-1", "--min-size=-1 is too large"),
        ("--max-size=1k+2", "--max-size=1k+2 is invalid"),
    ] {
        let theirs = rsync_in(tmp.path(), &[arg], &["a"], Path::new("b"));
        let ours = ours_in(tmp.path(), &[arg], &["a"], Path::new("b"));
        assert_eq!((theirs.code, ours.code), (1, 1), "{arg}");
        assert!(theirs.stderr.contains(message), "{}", theirs.stderr);
        assert_eq!(
            ours.stderr.lines().next(),
            Some(&*format!("sftpsync: {message}"))
        );
    }
}

/// A source tree for -m: empty directories, chains of them, one with only excluded files, one
/// with only a symlink, one kept by a protect rule.
fn prune_source(src: &Path) {
    build(
        src,
        &[
            "empty",
            "chain/of/dirs",
            "p/q",
            "mixed/empty-too",
            "link-only",
        ],
        &[
            ("top", 1),
            ("a/b/c/file", 2),
            ("objs/x.o", 3),
            ("objs/deeper/y.o", 3),
            ("mixed/file", 4),
            ("mixed/sub/more", 5),
        ],
    );
    std::os::unix::fs::symlink("nowhere", src.join("link-only/link")).unwrap();
}

/// A receiver with directories -m leaves out of the list, so --delete removes them.
fn prune_seed(seed: &Path) {
    build(
        seed,
        &["empty/old-dir", "chain/of", "extra"],
        &[("objs/keep.o", 1), ("objs/deeper/y.o", 1), ("empty/old", 1)],
    );
}

#[test]
fn prune_empty_dirs_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    prune_source(&cwd.join("src"));
    let seed = cwd.join("seed");
    prune_seed(&seed);

    for (args, lines) in [
        (&["-a", "-m"][..], Lines::InOrder),
        (&["-a", "-m", "--exclude=*.o"], Lines::InOrder),
        (
            &["-a", "-m", "--exclude=*.o", "--filter=P q/"],
            Lines::InOrder,
        ),
        (
            &["-a", "-m", "--exclude=*.o", "--filter=P p/"],
            Lines::InOrder,
        ),
        (&["-rl", "-m", "--exclude=*.o"], Lines::InOrder),
        (
            &["-a", "-m", "--max-size=1", "--min-size=5"],
            Lines::InOrder,
        ),
        (&["-a", "-m", "--exclude=*.o", "--delete"], Lines::AnyOrder),
        (
            &["-a", "-m", "--exclude=*.o", "--delete-before"],
            Lines::InOrder,
        ),
        (
            &["-a", "-m", "--exclude=*.o", "--delete-after"],
            Lines::InOrder,
        ),
        (
            &["-a", "-m", "--exclude=*.o", "--delete", "--delete-excluded"],
            Lines::AnyOrder,
        ),
        (&["-a", "-m", "--no-m", "--exclude=*.o"], Lines::InOrder),
        // Without -r directories are only named as skipped.
        (&["-t", "-m"], Lines::InOrder),
    ] {
        // Without -t both sides stamp files with the time of the run: compare contents.
        let compare: &[&str] = if args.contains(&"-a") {
            &["-O"]
        } else {
            &["-c", "--no-t", "-O"]
        };
        case(cwd, Some(&seed), args, &["src/"], "/", lines, compare);
        // Named sources: the directory itself may be pruned too.
        case(
            cwd,
            Some(&seed),
            args,
            &["src/empty", "src/chain", "src/a"],
            "/",
            lines,
            compare,
        );
    }
}

/// Paths sent by name: rsync prunes the directories above them too, except those its list
/// holds twice (sent above one name and named, or sent again above a later name).
#[test]
fn prune_empty_dirs_with_named_paths_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    build(
        &cwd.join("src"),
        &["a/b/e", "x/y", "P/Q/z", "P/D/x"],
        &[("a/c/f", 1)],
    );
    let lists = [
        "a/b\na/b/e\nx\nx/y\na/c/f\n",
        "P/Q/z\nP/D\nP/D/x\n",
        "P/D\nP/D/x\n",
        "x/y\nx\n",
        "a/\nx/y\n",
    ];
    for (i, list) in lists.iter().enumerate() {
        let file = cwd.join(format!("list{i}"));
        std::fs::write(&file, list).unwrap();
        let from = format!("--files-from={}", file.display());
        for recursive in [false, true] {
            // -a alone does not recurse with --files-from; -r does.
            let mut args = vec!["-a", "-m", from.as_str()];
            if recursive {
                args.push("-r");
            }
            case(cwd, None, &args, &["src/"], "/", Lines::InOrder, &["-O"]);
        }
    }
    for operands in [
        &["src/./a/b"][..],
        &["src/./a/b", "src/./a/c"],
        &["src/./a/b", "src/./x/y", "src/./a/c"],
    ] {
        case(
            cwd,
            None,
            &["-aR", "-m"],
            operands,
            "/",
            Lines::InOrder,
            &["-O"],
        );
        case(
            cwd,
            None,
            &["-aR", "-m", "--no-implied-dirs"],
            operands,
            "/",
            Lines::InOrder,
            &["-O"],
        );
    }
}

/// -m with rsync's whole list first: -v announces it as rsync does.
#[test]
fn prune_empty_dirs_announces_a_whole_file_list() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    prune_source(&cwd.join("src"));
    for (args, header) in [
        (&["-av", "-m"][..], Some("building file list ... done")),
        (
            &["-av", "--delete-after"],
            Some("building file list ... done"),
        ),
        (&["-av"], Some("sending incremental file list")),
        (&["-v"], None),
    ] {
        let (theirs, ours) = destinations(&cwd.join("dests"), None);
        let want = rsync_in(cwd, args, &["src/"], &theirs);
        let got = ours_in(cwd, args, &["src/"], &ours);
        assert_eq!(
            want.lines.first().map(String::as_str),
            header.or(Some("skipping directory ."))
        );
        assert_eq!(
            got.lines.first(),
            want.lines.first(),
            "{args:?}: {:?}",
            got.lines
        );
    }
}

/// Over SSH both ways: pushing into the chroot and pulling from it.
#[test]
fn prune_empty_dirs_over_ssh_like_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    prune_source(&src);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let args = ["-ai", "-m", "--exclude=*.o", "--delete"];

    let (remote, remote_local) = server.fresh_remote_dir("prune-push");
    prune_seed(&remote_local);
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    let oracle = tmp.path().join("oracle-push");
    prune_seed(&oracle);
    chown_tree(&oracle, server.uid(), server.gid()).unwrap();
    let mut want = rsync_itemize(&src, &oracle, &args[1..]);
    let mut got: Vec<String> = ok(&push(server, &args, &src, &remote))
        .lines()
        .map(|l| l.replacen("<f", ">f", 1))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(listing(&remote_local), listing(&oracle));
    assert_trees_match_with(&oracle, &remote_local, &["-O"]);

    let (remote, remote_local) = server.fresh_remote_dir("prune-pull");
    std::fs::remove_dir(&remote_local).unwrap();
    copy_tree(&src, &remote_local);
    let (ours, oracle) = (tmp.path().join("pulled"), tmp.path().join("oracle-pull"));
    prune_seed(&ours);
    prune_seed(&oracle);
    let mut want = rsync_itemize(&remote_local, &oracle, &args[1..]);
    let mut got: Vec<String> = ok(&pull(server, &args, &remote, &ours))
        .lines()
        .map(str::to_owned)
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(listing(&ours), listing(&oracle));
    assert_trees_match_with(&oracle, &ours, &["-O"]);
}

/// A receiver for the missing-arguments cases: a file, an empty and a full directory, and
/// names below a directory the source has.
fn missing_seed(seed: &Path) {
    build(
        seed,
        &["emptyd"],
        &[
            ("miss", 1),
            ("gone/sub/f", 1),
            ("a/m", 1),
            ("x/y/n", 1),
            ("q", 1),
        ],
    );
}

/// A source operand that does not exist: an error (23, and deletions still happen), nothing
/// (--ignore-missing-args), or a deletion of the receiver's entry (--delete-missing-args; a
/// directory with contents only with --delete).
#[test]
fn missing_args_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    build(&cwd.join("src"), &["b"], &[("a/f", 1), ("top", 2)]);
    let seed = cwd.join("seed");
    missing_seed(&seed);
    let named = ["src/top", "src/miss", "src/gone", "src/emptyd"];

    for (args, lines) in [
        (&["-a"][..], Lines::InOrder),
        (&["-a", "--ignore-missing-args"], Lines::InOrder),
        (&["-a", "--delete-missing-args"], Lines::AnyOrder),
        (
            &["-a", "--delete-missing-args", "--ignore-missing-args"],
            Lines::AnyOrder,
        ),
        (
            &["-a", "--delete-missing-args", "--delete"],
            Lines::AnyOrder,
        ),
        (&["-a", "--delete-missing-args", "-n"], Lines::AnyOrder),
        (
            &["-a", "--delete-missing-args", "--max-delete=1"],
            Lines::AnyOrder,
        ),
        (
            &["-a", "--delete-missing-args", "--exclude=miss"],
            Lines::AnyOrder,
        ),
        (
            &["-a", "--delete-missing-args", "--filter=P miss"],
            Lines::AnyOrder,
        ),
        // A directory rule does not protect the name: rsync's entry for it has no type.
        (
            &["-a", "--delete-missing-args", "--filter=P emptyd/"],
            Lines::AnyOrder,
        ),
    ] {
        case(cwd, Some(&seed), args, &named, "/", lines, &["-O"]);
    }

    // A missing source is no I/O error: --delete still deletes in what is sent.
    case(
        cwd,
        Some(&seed),
        &["-a", "--delete"],
        &["src/a", "src/miss"],
        "/",
        Lines::AnyOrder,
        &["-O"],
    );

    // One missing source: rsync takes DEST as its name and makes no directory.
    for args in [
        &["-a"][..],
        &["-a", "--ignore-missing-args"],
        &["-a", "--delete-missing-args"],
    ] {
        for tail in ["/miss", "/gone", "/absent", "/"] {
            case(
                cwd,
                Some(&seed),
                args,
                &["src/miss"],
                tail,
                Lines::InOrder,
                &["-O"],
            );
        }
    }
}

#[test]
fn missing_files_from_names_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    build(&cwd.join("src"), &["b"], &[("a/f", 1), ("top", 2)]);
    let seed = cwd.join("seed");
    missing_seed(&seed);
    // x and nope are missing above the names too.
    let list = cwd.join("list");
    std::fs::write(&list, "a/m\nx/y/n\nq\nnope/deeper\na/f\ngone\n").unwrap();
    let from = format!("--files-from={}", list.display());

    for extra in [
        &[][..],
        &["--ignore-missing-args"],
        &["--delete-missing-args"],
        &["--delete-missing-args", "-r"],
        &["--delete-missing-args", "-r", "--delete"],
        &["--delete-missing-args", "-m"],
    ] {
        let mut args = vec!["-a", from.as_str()];
        args.extend_from_slice(extra);
        let lines = if extra.is_empty() || extra == ["--ignore-missing-args"] {
            Lines::InOrder
        } else {
            Lines::AnyOrder
        };
        case(cwd, Some(&seed), &args, &["src/"], "/", lines, &["-O"]);
    }
    for extra in [&["--ignore-missing-args"][..], &["--delete-missing-args"]] {
        let mut args = vec!["-aR"];
        args.extend_from_slice(extra);
        let operands = ["src/./a/m", "src/./a/f", "src/./q", "src/./x/y/n"];
        case(
            cwd,
            Some(&seed),
            &args,
            &operands,
            "/",
            Lines::AnyOrder,
            &["-O"],
        );
    }
}

/// Pulling: the names are looked up on the server.
#[test]
fn missing_args_pull_like_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("missing-pull");
    build(&remote_local, &[], &[("top", 2)]);
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    let ssh = server.ssh_command();
    for args in [
        &["-a"][..],
        &["-a", "--ignore-missing-args"],
        &["-a", "--delete-missing-args"],
        &["-a", "--delete-missing-args", "--delete"],
    ] {
        let (theirs, ours) = (tmp.path().join("theirs"), tmp.path().join("ours"));
        for d in [&theirs, &ours] {
            let _ = std::fs::remove_dir_all(d);
            missing_seed(d);
        }
        let local_operands: Vec<String> = ["top", "miss", "gone", "emptyd"]
            .iter()
            .map(|n| format!("{}/{n}", remote_local.display()))
            .collect();
        let operands: Vec<&str> = local_operands.iter().map(String::as_str).collect();
        let want = rsync_in(tmp.path(), args, &operands, Path::new(&slash(&theirs)));
        let first = server.remote_spec(&format!("{remote}/top"));
        let mut ours_args = vec!["-e", &ssh, "-i"];
        ours_args.extend_from_slice(args);
        let (miss, gone, emptyd) = (
            format!(":{remote}/miss"),
            format!(":{remote}/gone"),
            format!(":{remote}/emptyd"),
        );
        let dest = slash(&ours);
        ours_args.extend([first.as_str(), &miss, &gone, &emptyd, &dest]);
        let got = finish(sftpsync(&ours_args));
        assert_same(&format!("pull {args:?}"), &want, &got, Lines::AnyOrder);
        assert_eq!(listing(&ours), listing(&theirs), "{args:?}");
    }
}

//! rsync's options about what happens around the receiver's copy: `--remove-source-files`
//! (and `--remove-sent-files`), `--delay-updates`, `--mkpath`, `-O`/`-J` and `--force`, each
//! run by rsync local to local and by sftpsync as a push and as a pull (sftp-server over
//! pipes), with the trees, exit codes and itemized lines compared.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, MetadataExt};

use testkit::{CutProxy, Fault, Flow, XorShift};

use super::*;

/// A fixed time for the fixtures, far from the wall clock.
const T: i64 = 1_500_000_000;

/// Pulls `src/` (a local directory served by sftp-server over pipes) into `dst/`.
fn pipe_pull(extra: &[&str], src: &Path, dst: &Path) -> Output {
    let server = testkit::sftp_server_path();
    let mut args = vec!["--sftp-server", server.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (s, d) = (format!("localhost:{}", slash(src)), slash(dst));
    args.push(&s);
    args.push(&d);
    sftpsync(&args)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Push,
    Pull,
}

const WAYS: [Way; 2] = [Way::Push, Way::Pull];

fn ours(way: Way, flags: &[&str], src: &Path, dst: &Path) -> Output {
    match way {
        Way::Push => pipe_push(flags, src, dst),
        Way::Pull => pipe_pull(flags, src, dst),
    }
}

/// `rsync FLAGS SRC/ DST/`, local to local.
fn rsync(flags: &[&str], src: &Path, dst: &Path) -> Output {
    Command::new("rsync")
        .args(flags)
        .arg(slash(src))
        .arg(slash(dst))
        .output()
        .expect("run rsync")
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn itemized(out: &Output) -> Vec<String> {
    sorted_items(&stdout_of(out))
}

/// Every path below `root` with what it is (`/` for directories, `@` for symlinks).
fn entries(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                out.insert(format!("{rel}@"));
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Two copies of one starting point: `a/{src,dst}` for rsync and `b/{src,dst}` for us.
struct Pair {
    rsync_src: PathBuf,
    rsync_dst: PathBuf,
    our_src: PathBuf,
    our_dst: PathBuf,
}

fn pair(base: &Path, name: &str, fixture: impl Fn(&Path, &Path)) -> Pair {
    let p = Pair {
        rsync_src: base.join(format!("{name}-rsync/src")),
        rsync_dst: base.join(format!("{name}-rsync/dst")),
        our_src: base.join(format!("{name}-ours/src")),
        our_dst: base.join(format!("{name}-ours/dst")),
    };
    fixture(&p.rsync_src, &p.rsync_dst);
    fixture(&p.our_src, &p.our_dst);
    p
}

/// Runs rsync and sftpsync with `flags` on their copies and checks that both end with the
/// same exit code, the same itemized changes, the same destination (as `rsync -a` plus
/// `compare` sees it) and the same source tree. Returns (rsync's, ours) outputs.
fn same_as_rsync(
    base: &Path,
    name: &str,
    way: Way,
    flags: &[&str],
    compare: &[&str],
    fixture: impl Fn(&Path, &Path),
) -> (Output, Output) {
    same_as_rsync_but(base, name, way, flags, compare, fixture, true)
}

/// [`same_as_rsync`], with the itemized lines compared only when `items`.
fn same_as_rsync_but(
    base: &Path,
    name: &str,
    way: Way,
    flags: &[&str],
    compare: &[&str],
    fixture: impl Fn(&Path, &Path),
    items: bool,
) -> (Output, Output) {
    let p = pair(base, name, fixture);
    let theirs = rsync(flags, &p.rsync_src, &p.rsync_dst);
    let mine = ours(way, flags, &p.our_src, &p.our_dst);
    let what = format!("{way:?} {flags:?}");
    assert_eq!(
        mine.status.code(),
        theirs.status.code(),
        "{what}: exit codes differ\nrsync: {}\nours: {}",
        stderr_of(&theirs),
        stderr_of(&mine)
    );
    if items {
        assert_eq!(itemized(&mine), itemized(&theirs), "{what}: itemized lines");
    }
    assert_trees_match_with(&p.rsync_dst, &p.our_dst, compare);
    assert_eq!(
        entries(&p.our_src),
        entries(&p.rsync_src),
        "{what}: the sources left differ"
    );
    (theirs, mine)
}

/// A source and a receiver that differ in each way `--remove-source-files` looks at.
fn removal_fixture(src: &Path, dst: &Path) {
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::create_dir_all(dst).unwrap();
    write_at(&src.join("new"), b"new", T);
    write_at(&src.join("d/e/deep"), b"deep", T);
    write_at(&src.join("d/f"), b"f", T);
    // Up to date: equal, equal but for the mode, and same size and mtime with other bytes.
    for (name, data) in [("same", &b"same"[..]), ("perm", b"perm"), ("quiet", b"abc")] {
        write_at(&src.join(name), data, T);
        write_at(
            &dst.join(name),
            if name == "quiet" { b"xyz" } else { data },
            T,
        );
    }
    std::fs::set_permissions(dst.join("perm"), std::fs::Permissions::from_mode(0o600)).unwrap();
    write_at(&src.join("changed"), b"changed", T);
    write_at(&dst.join("changed"), b"old", T - 100);
    // -u keeps this one; --ignore-existing all that exist.
    write_at(&src.join("newer-there"), b"src", T);
    write_at(&dst.join("newer-there"), b"dst", T + 1000);
    // Two names of one file, for -H.
    write_at(&src.join("hard"), b"linked", T);
    std::fs::hard_link(src.join("hard"), src.join("hard2")).unwrap();
    for (name, target, there) in [
        ("link-new", "new", None),
        ("link-same", "same", Some("same")),
        ("link-changed", "x", Some("y")),
    ] {
        symlink(target, src.join(name)).unwrap();
        testkit::set_mtime_nofollow(&src.join(name), T).unwrap();
        if let Some(t) = there {
            symlink(t, dst.join(name)).unwrap();
            testkit::set_mtime_nofollow(&dst.join(name), T).unwrap();
        }
    }
    for d in ["d/e", "d", ""] {
        testkit::set_mtime_nofollow(&src.join(d), T).unwrap();
    }
}

#[test]
fn remove_source_files_removes_what_rsync_removes() {
    let tmp = tempfile::tempdir().unwrap();
    for way in WAYS {
        for (i, flags) in [
            &["-ai", "--remove-source-files"][..],
            &["-ai", "--remove-sent-files"],
            &["-ai", "--remove-source-files", "-u"],
            &["-ai", "--remove-source-files", "--ignore-existing"],
            &["-ai", "--remove-source-files", "-H"],
            &["-ai", "--remove-source-files", "-c"],
            // Symlinks skipped without -l stay where they are.
            &["-rpti", "--remove-source-files"],
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{way:?}-{i}");
            // With -H rsync sends the last name of a linked group and links the others to
            // it, we the first: the same tree, other lines.
            let items = !flags.contains(&"-H");
            same_as_rsync_but(tmp.path(), &name, way, flags, &[], removal_fixture, items);
        }
        // A dry run removes nothing, and shows the same changes.
        let name = format!("{way:?}-dry");
        let flags = ["-ain", "--remove-source-files"];
        let (_, mine) = same_as_rsync(tmp.path(), &name, way, &flags, &[], removal_fixture);
        assert!(!itemized(&mine).is_empty());
        let fresh = tmp.path().join(format!("{name}-fresh"));
        removal_fixture(&fresh.join("src"), &fresh.join("dst"));
        assert_eq!(
            entries(&tmp.path().join(format!("{name}-ours/src"))),
            entries(&fresh.join("src"))
        );
    }
}

/// `-vv` names each removed source as rsync's sender does.
#[test]
fn remove_source_files_says_what_it_removed_at_vv() {
    let tmp = tempfile::tempdir().unwrap();
    let removed = |out: &Output| -> BTreeSet<String> {
        stdout_of(out)
            .lines()
            .filter(|l| l.starts_with("sender removed "))
            .map(str::to_owned)
            .collect()
    };
    for way in WAYS {
        let p = pair(tmp.path(), &format!("{way:?}"), removal_fixture);
        let flags = ["-avv", "--remove-source-files"];
        let theirs = rsync(&flags, &p.rsync_src, &p.rsync_dst);
        let mine = ours(way, &flags, &p.our_src, &p.our_dst);
        ok(&mine);
        assert!(!removed(&theirs).is_empty());
        assert_eq!(removed(&mine), removed(&theirs), "{way:?}");
        let quiet = ours(
            way,
            &["-av", "--remove-source-files"],
            &p.our_src,
            &p.our_dst,
        );
        assert!(!stdout_of(&quiet).contains("sender removed"));
    }
}

/// A file whose copy fails stays in the source; the others go. Here a non-empty directory
/// is in the file's way on the receiver, and neither --force nor --delete is given.
#[test]
fn remove_source_files_keeps_a_source_whose_copy_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = |src: &Path, dst: &Path| {
        std::fs::create_dir_all(src).unwrap();
        std::fs::create_dir_all(dst.join("blocked/inside")).unwrap();
        write_at(&src.join("blocked"), b"cannot land", T);
        write_at(&src.join("fine"), b"lands", T);
        write_at(&dst.join("blocked/inside/x"), b"x", T);
    };
    for way in WAYS {
        let name = format!("{way:?}");
        let flags = ["-ai", "--remove-source-files"];
        let (_, mine) = same_as_rsync(tmp.path(), &name, way, &flags, &[], fixture);
        assert_eq!(mine.status.code(), Some(23));
        let src = tmp.path().join(format!("{name}-ours/src"));
        assert_eq!(std::fs::read(src.join("blocked")).unwrap(), b"cannot land");
        assert!(!src.join("fine").exists());
        let err = stderr_of(&mine);
        assert!(err.contains("\"blocked\""), "{err}");
    }
}

/// A push's source that cannot be removed (its directory is read-only to the user): an error
/// that names it, exit 23 as rsync's, and the file stays; the copy is made all the same.
#[test]
fn unremovable_local_source_is_an_error_and_stays() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = 65534;
    let fixture = |src: &Path, dst: &Path| {
        std::fs::create_dir_all(src.join("locked")).unwrap();
        std::fs::create_dir_all(dst).unwrap();
        write_at(&src.join("locked/kept"), b"kept", T);
        write_at(&src.join("free"), b"free", T);
        for p in [
            src.parent().unwrap(),
            src,
            &src.join("locked"),
            &src.join("locked/kept"),
        ] {
            std::os::unix::fs::chown(p, Some(nobody), Some(nobody)).unwrap();
        }
        std::os::unix::fs::chown(src.join("free"), Some(nobody), Some(nobody)).unwrap();
        std::os::unix::fs::chown(dst, Some(nobody), Some(nobody)).unwrap();
        std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
    };
    let p = pair(tmp.path(), "nobody", fixture);
    let as_nobody = |program: &Path, args: &[&str], src: &Path, dst: String| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program)
            .env("SFTPSYNC_CONFIG", "")
            .args(args)
            .arg(slash(src))
            .arg(dst)
            .stdin(Stdio::null())
            .output()
            .expect("run as nobody")
    };
    let theirs = as_nobody(
        Path::new("/usr/bin/rsync"),
        &["-rt", "--remove-source-files"],
        &p.rsync_src,
        slash(&p.rsync_dst),
    );
    let server = testkit::sftp_server_path();
    let mine = as_nobody(
        Path::new(env!("CARGO_BIN_EXE_sftpsync")),
        &[
            "-rt",
            "--remove-source-files",
            "--no-index",
            "--sftp-server",
            server.to_str().unwrap(),
        ],
        &p.our_src,
        format!("localhost:{}", slash(&p.our_dst)),
    );
    assert_eq!(theirs.status.code(), Some(23), "{}", stderr_of(&theirs));
    assert_eq!(mine.status.code(), Some(23), "{}", stderr_of(&mine));
    let err = stderr_of(&mine);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("failed")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("\"locked/kept\""), "{err}");
    assert!(lines[0].contains("Permission denied"), "{err}");
    assert_eq!(
        std::fs::read(p.our_src.join("locked/kept")).unwrap(),
        b"kept"
    );
    assert!(!p.our_src.join("free").exists());
    assert_eq!(entries(&p.our_src), entries(&p.rsync_src));
    assert_trees_match(&p.rsync_dst, &p.our_dst);
}

/// A pull's source on the server that the SFTP user may not remove: SFTP REMOVE is refused,
/// an error names it, exit 23, and it stays there.
#[test]
fn unremovable_remote_source_is_an_error_and_stays() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("remove-refused");
    std::fs::create_dir(remote_local.join("root-owned")).unwrap();
    write_at(&remote_local.join("root-owned/kept"), b"kept", T);
    write_at(&remote_local.join("free"), b"free", T);
    std::os::unix::fs::chown(
        remote_local.join("free"),
        Some(server.uid()),
        Some(server.gid()),
    )
    .unwrap();
    // The directory stays root's (mode 755): the SFTP user reads it but cannot unlink in it.
    let dst = tmp.path().join("dst");

    let out = pull(server, &["-rt", "--remove-source-files"], &remote, &dst);
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("failed")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("remote \"root-owned/kept\""), "{err}");
    assert!(
        lines[0].to_lowercase().contains("permission denied"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(remote_local.join("root-owned/kept")).unwrap(),
        b"kept"
    );
    assert!(!remote_local.join("free").exists());
    assert_eq!(std::fs::read(dst.join("root-owned/kept")).unwrap(), b"kept");
    assert_eq!(std::fs::read(dst.join("free")).unwrap(), b"free");
}

/// 200 small files (`a000`..) and three of 2 MiB (`b0`..), owned by the server's user; their
/// contents by name. The walk starts at most 128 entries per channel, so it reaches the big
/// ones only once 72 small ones are done: a cut after 2 MiB comes when those are whole and
/// none of the big ones is.
fn small_and_big_files(server: &SftpOnlyServer, dir: &Path, seed: u64) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = XorShift::new(seed);
    let small = (0..200).map(|i| (format!("a{i:03}"), 1024));
    let big = (0..3).map(|i| (format!("b{i}"), 2 << 20));
    let data: Vec<(String, Vec<u8>)> = small
        .chain(big)
        .map(|(name, len)| (name, rng.bytes(len)))
        .collect();
    for (name, d) in &data {
        write_at(&dir.join(name), d, T);
    }
    chown_tree(dir, server.uid(), server.gid()).unwrap();
    data
}

/// A push cut off in the middle: a source goes only once its copy is whole in place on the
/// server; the file being written when the cut came, and those after it, stay.
#[test]
fn remove_source_files_keeps_sources_a_cut_run_did_not_finish() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let data = small_and_big_files(server, &src, 31);
    let (remote, local) = server.fresh_remote_dir("remove-cut");
    let dest = server.remote_spec(&format!("{remote}/"));

    let proxy = CutProxy::start(
        server.port(),
        vec![Fault::Cut {
            flow: Flow::ToServer,
            after: 2 << 20,
        }],
    );
    let ssh = proxy.ssh_command(server);
    let args = [
        "-a",
        "--retries=0",
        "--channels=1",
        "--remove-source-files",
        "-e",
        &ssh,
        &slash(&src),
        &dest,
    ];
    let out = sftpsync(&args);
    assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
    let mut kept = 0;
    for (name, d) in &data {
        match std::fs::read(src.join(name)) {
            Ok(s) => {
                kept += 1;
                assert_eq!(&s, d, "{name} is changed in the source");
            }
            Err(_) => assert_eq!(
                &std::fs::read(local.join(name)).expect("a removed source has its copy"),
                d,
                "{name} was removed but its copy is not whole"
            ),
        }
    }
    // No big file can have gone through whole before the cut; the 72 small files that had
    // to finish before the walk could start one of them had their sources removed.
    assert!(kept >= 3, "{kept} kept");
    assert!(kept <= data.len() - 72, "{kept} kept");

    // The next run finishes the rest, and removes them too.
    ok(&push(
        server,
        &["-a", "--remove-source-files"],
        &src,
        &remote,
    ));
    assert!(names_in(&src).is_empty(), "{:?}", names_in(&src));
    for (name, d) in &data {
        assert_eq!(&std::fs::read(local.join(name)).unwrap(), d);
    }
}

/// A receiver tree with old versions of some files and extras, for --delay-updates.
fn delay_fixture(src: &Path, dst: &Path) {
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::create_dir_all(dst.join("d")).unwrap();
    std::fs::create_dir_all(dst.join(".~tmp~")).unwrap();
    write_at(&dst.join(".~tmp~/left-by-someone"), b"mine", T);
    write_at(&src.join("a"), b"new a", T);
    write_at(&dst.join("a"), b"old", T - 10);
    write_at(&src.join("d/b"), b"b", T);
    write_at(&src.join("d/e/c"), b"c", T);
    write_at(&src.join("same"), b"same", T);
    write_at(&dst.join("same"), b"same", T);
    write_at(&dst.join("d/extra"), b"extra", T);
    symlink("a", src.join("link")).unwrap();
    testkit::set_mtime_nofollow(&src.join("link"), T).unwrap();
    for d in ["d/e", "d", ""] {
        testkit::set_mtime_nofollow(&src.join(d), T).unwrap();
    }
}

#[test]
fn delay_updates_ends_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    for way in WAYS {
        for (i, flags) in [
            &["-ai", "--delay-updates"][..],
            &["-ai", "--delay-updates", "--delete"],
            &["-ai", "--delay-updates", "--partial-dir=.hold"],
            &["-ai", "--delay-updates", "--remove-source-files"],
            &["-ai", "--delay-updates", "-b"],
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{way:?}-{i}");
            // The fixture's .~tmp~ gets the time files went through it; checked below.
            // -b implies -O: directories keep the time of the run's changes, which the two
            // runs need not make in the same second.
            let compare: &[&str] = if flags.contains(&"-b") {
                &["--exclude=/.~tmp~/", "-O"]
            } else {
                &["--exclude=/.~tmp~/"]
            };
            same_as_rsync(tmp.path(), &name, way, flags, compare, delay_fixture);
            let dst = tmp.path().join(format!("{name}-ours/dst"));
            for d in ["d/.~tmp~", "d/e/.~tmp~", ".hold", "d/.hold"] {
                assert!(!dst.join(d).exists(), "{name}: {d} is left");
            }
            // Someone else's file in .~tmp~ is neither deleted nor taken for ours.
            assert_eq!(
                std::fs::read(dst.join(".~tmp~/left-by-someone")).unwrap(),
                b"mine"
            );
        }
    }
}

/// `--delay-updates` cut off before the end: every file on the server is still its old
/// version (the finished ones wait in .~tmp~), no source is removed, and the next run puts
/// everything in place and leaves no .~tmp~.
#[test]
fn delay_updates_cut_in_the_middle_leaves_the_old_files() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let data = small_and_big_files(server, &src, 47);
    let (remote, local) = server.fresh_remote_dir("delay-cut");
    for (name, _) in &data {
        write_at(&local.join(name), b"old version", T - 100);
    }
    chown_tree(&local, server.uid(), server.gid()).unwrap();
    let dest = server.remote_spec(&format!("{remote}/"));

    let proxy = CutProxy::start(
        server.port(),
        vec![Fault::Cut {
            flow: Flow::ToServer,
            after: 2 << 20,
        }],
    );
    let ssh = proxy.ssh_command(server);
    let args = [
        "-a",
        "--retries=0",
        "--channels=1",
        "--delay-updates",
        "--remove-source-files",
        "-e",
        &ssh,
        &slash(&src),
        &dest,
    ];
    let out = sftpsync(&args);
    assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
    for (name, _) in &data {
        assert_eq!(
            std::fs::read(local.join(name)).unwrap(),
            b"old version",
            "{name}"
        );
        assert!(
            src.join(name).exists(),
            "{name} removed before it was in place"
        );
    }
    // The first small files were finished: they wait, whole, in .~tmp~.
    assert_eq!(std::fs::read(local.join(".~tmp~/a000")).unwrap(), data[0].1);

    ok(&push(
        server,
        &["-a", "--delay-updates", "--remove-source-files"],
        &src,
        &remote,
    ));
    for (name, d) in &data {
        assert_eq!(&std::fs::read(local.join(name)).unwrap(), d);
    }
    assert!(!local.join(".~tmp~").exists());
    assert!(names_in(&src).is_empty());
}

#[test]
fn delay_updates_refuses_what_rsync_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    for (flag, message) in [
        ("--inplace", "--inplace cannot be used with --delay-updates"),
        ("--append", "--append cannot be used with --delay-updates"),
    ] {
        let out = pipe_push(&["-a", "--delay-updates", flag], &src, &dst);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr_of(&out).contains(message), "{}", stderr_of(&out));
        let theirs = rsync(&["-a", "--delay-updates", flag], &src, &dst);
        assert_eq!(theirs.status.code(), Some(1));
        assert!(stderr_of(&theirs).contains(message));
    }
}

#[test]
fn mkpath_makes_the_destination_path_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    write_at(&src.join("a"), b"a", T);
    write_at(&src.join("d/b"), b"b", T);
    testkit::set_mtime_nofollow(&src.join("d"), T).unwrap();
    let server = testkit::sftp_server_path();
    let s = |p: &str| src.join(p).display().to_string();
    // (sources, destination below the base, the "created" line)
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![slash(&src)],
            "x/y/",
            "created 2 directories for {D}x/y",
        ),
        (vec![slash(&src)], "x/y", "created 2 directories for {D}x/y"),
        (
            vec![src.display().to_string()],
            "x/y",
            "created 2 directories for {D}x/y",
        ),
        (vec![s("a")], "x/y", "created 1 directory for {D}x"),
        (vec![s("a")], "x/y/", "created 2 directories for {D}x/y"),
        (
            vec![s("a"), s("d")],
            "x/y",
            "created 2 directories for {D}x/y",
        ),
    ];
    for (i, (sources, dest, created)) in cases.iter().enumerate() {
        for way in WAYS {
            let base_r = tmp.path().join(format!("mk{i}-{way:?}-rsync"));
            let base_o = tmp.path().join(format!("mk{i}-{way:?}-ours"));
            std::fs::create_dir_all(&base_r).unwrap();
            std::fs::create_dir_all(&base_o).unwrap();
            let theirs = Command::new("rsync")
                .args(["-ai", "--mkpath"])
                .args(sources)
                .arg(format!("{}/{dest}", base_r.display()))
                .output()
                .unwrap();
            assert!(theirs.status.success(), "{}", stderr_of(&theirs));
            let (srcs, dst): (Vec<String>, String) = match way {
                Way::Push => (
                    sources.clone(),
                    format!("localhost:{}/{dest}", base_o.display()),
                ),
                Way::Pull => (
                    sources.iter().map(|s| format!("localhost:{s}")).collect(),
                    format!("{}/{dest}", base_o.display()),
                ),
            };
            let mut args = vec!["-ai", "--mkpath", "--sftp-server", server.to_str().unwrap()];
            args.extend(srcs.iter().map(String::as_str));
            args.push(&dst);
            let mine = ok(&sftpsync(&args));
            // The directories made have the time they were made.
            assert_trees_match_with(&base_r, &base_o, &["-O"]);
            let want = created.replace("{D}", &format!("{}/", base_o.display()));
            assert_eq!(
                mine.lines().next(),
                Some(want.as_str()),
                "{i} {way:?}: {mine}"
            );
            let theirs_line = stdout_of(&theirs).lines().next().unwrap().to_string();
            assert_eq!(
                theirs_line,
                created.replace("{D}", &format!("{}/", base_r.display())),
            );
        }
    }

    // Nothing to make: no line. Through a file: exit 11 as rsync.
    let base = tmp.path().join("exists");
    std::fs::create_dir_all(base.join("x")).unwrap();
    let out = ok(&pipe_push(&["-ai", "--mkpath"], &src, &base.join("x")));
    assert!(!out.contains("created"), "{out}");
    std::fs::write(base.join("file"), b"").unwrap();
    let out = pipe_push(&["-a", "--mkpath"], &src, &base.join("file/x"));
    assert_eq!(out.status.code(), Some(11), "{}", stderr_of(&out));
    let theirs = rsync(&["-a", "--mkpath"], &src, &base.join("file/x"));
    assert_eq!(theirs.status.code(), Some(11));
    // Without --mkpath only the last component is made, as before.
    let out = pipe_push(&["-a"], &src, &base.join("p/q"));
    assert_eq!(out.status.code(), Some(11), "{}", stderr_of(&out));
}

#[test]
fn omit_dir_and_link_times_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = |src: &Path, dst: &Path| {
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir_all(dst.join("d")).unwrap();
        write_at(&src.join("a"), b"a", T);
        write_at(&src.join("d/b"), b"b", T);
        symlink("a", src.join("l")).unwrap();
        testkit::set_mtime_nofollow(&src.join("l"), T).unwrap();
        std::fs::set_permissions(dst.join("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
        for d in ["d/e", "d", ""] {
            testkit::set_mtime_nofollow(&src.join(d), T).unwrap();
        }
        testkit::set_mtime_nofollow(&dst.join("d"), T + 50).unwrap();
    };
    let mtime = |p: &Path| std::fs::symlink_metadata(p).unwrap().mtime();
    for way in WAYS {
        for (i, (flags, dirs, links)) in [
            (&["-aiO"][..], false, true),
            (&["-aiJ"], true, false),
            (&["-aiOJ"], false, false),
            (&["-ai", "-OJ", "--no-O", "--no-J"], true, true),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{way:?}-{i}");
            // What is left out has the time it was given when made: compared below instead.
            same_as_rsync(tmp.path(), &name, way, flags, &["-O", "-J"], fixture);
            let dst = tmp.path().join(format!("{name}-ours/dst"));
            let rsync_dst = tmp.path().join(format!("{name}-rsync/dst"));
            for d in [&dst, &rsync_dst] {
                let what = format!("{name} {}", d.display());
                assert_eq!(mtime(&d.join("d")) == T, dirs, "{what}: existing dir");
                assert_eq!(mtime(&d.join("d/e")) == T, dirs, "{what}: new dir");
                assert_eq!(mtime(&d.join("l")) == T, links, "{what}: new link");
                assert_eq!(mtime(&d.join("a")), T, "{what}: files keep times");
            }
        }
    }
}

/// A non-empty directory in the way of a file or symlink: kept, with an error and exit 23,
/// unless --force or --delete, which delete its contents (itemized) as rsync 3 does.
#[test]
fn force_replaces_a_non_empty_directory_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = |src: &Path, dst: &Path| {
        std::fs::create_dir_all(src).unwrap();
        std::fs::create_dir_all(dst.join("x/sub")).unwrap();
        std::fs::create_dir_all(dst.join("lnk")).unwrap();
        std::fs::create_dir_all(dst.join("empty")).unwrap();
        write_at(&dst.join("x/sub/k"), b"k", T);
        write_at(&dst.join("x/k2"), b"k2", T);
        write_at(&dst.join("lnk/q"), b"q", T);
        // Directories that may stay (without --force) are compared, mtimes included.
        for dir in ["x/sub", "x", "lnk", "empty"] {
            testkit::set_mtime_nofollow(&dst.join(dir), T).unwrap();
        }
        write_at(&src.join("x"), b"file now", T);
        write_at(&src.join("empty"), b"was an empty dir", T);
        write_at(&src.join("y"), b"y", T);
        symlink("x", src.join("lnk")).unwrap();
        testkit::set_mtime_nofollow(&src.join("lnk"), T).unwrap();
        testkit::set_mtime_nofollow(src, T).unwrap();
    };
    for way in WAYS {
        for (i, flags) in [
            &["-ai"][..],
            &["-ai", "--force"],
            &["-ai", "--delete"],
            &["-ai", "--delete", "--no-force"],
            &["-ai", "--force", "--no-force"],
            &["-ain"],
            &["-ain", "--force"],
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{way:?}-{i}");
            let (_, mine) = same_as_rsync(tmp.path(), &name, way, flags, &[], fixture);
            let forced = flags.contains(&"--delete") || flags == ["-ai", "--force"];
            let forced = forced || flags == ["-ain", "--force"];
            assert_eq!(
                mine.status.code(),
                Some(if forced { 0 } else { 23 }),
                "{name}"
            );
            if !forced {
                let err = stderr_of(&mine);
                assert!(
                    err.contains("cannot delete non-empty directory: x"),
                    "{err}"
                );
                assert!(err.contains("\"x\""), "{err}");
            }
        }
    }
}

/// A lost connection is reconnected and the sync run again, as usual; but not when
/// `--delete` is given too, where the new attempt would take the sources removed before the
/// cut for deleted ones and delete their only copies.
#[test]
fn remove_source_files_reconnects_only_without_delete() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    for delete in [false, true] {
        let src = tmp.path().join(format!("src-{delete}"));
        let data = small_and_big_files(server, &src, 53);
        let (remote, local) = server.fresh_remote_dir("remove-retry");
        let dest = server.remote_spec(&format!("{remote}/"));
        let proxy = CutProxy::start(
            server.port(),
            vec![Fault::Cut {
                flow: Flow::ToServer,
                after: 2 << 20,
            }],
        );
        let ssh = proxy.ssh_command(server);
        let mut args = vec!["-a", "--retries=2", "--channels=1", "--remove-source-files"];
        if delete {
            args.push("--delete");
        }
        let s = slash(&src);
        args.extend(["-e", &ssh, &s, &dest]);
        let out = sftpsync(&args);
        if delete {
            assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
            assert!(
                stderr_of(&out).contains("not reconnecting"),
                "{}",
                stderr_of(&out)
            );
            assert!(!names_in(&src).is_empty());
        } else {
            ok(&out);
            assert!(names_in(&src).is_empty(), "{:?}", names_in(&src));
        }
        // Whatever left the source is whole on the server.
        for (name, d) in &data {
            if !src.join(name).exists() {
                assert_eq!(&std::fs::read(local.join(name)).unwrap(), d, "{name}");
            }
        }
    }
}

/// Where mtimes cannot be compared (a server that lists none), files of one size count as up
/// to date; but a source to be removed is not taken for synced on its size alone: it is sent
/// first, so its data is never lost.
#[test]
fn remove_source_files_does_not_trust_size_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} --no-reply-times -- {}",
        testkit::sftp_filter_path().display(),
        testkit::sftp_server_path().display()
    );
    let timeless = server_script(tmp.path(), "timeless", &command);
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    write_at(&src.join("f"), b"new", T);
    write_at(&dst.join("f"), b"old", T - 100);

    // Without removal, the size decides: nothing is sent.
    let text = ok(&push_through(&timeless, &["-ai"], &src, &dst));
    assert!(!text.contains("<f"), "{text}");
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"old");

    let text = ok(&push_through(
        &timeless,
        &["-ai", "--remove-source-files"],
        &src,
        &dst,
    ));
    assert!(text.contains("<f"), "{text}");
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"new");
    assert!(!src.join("f").exists());
}

//! rsync's options about how files land on the receiver beyond their bytes: `-E`
//! (executability), `-U` (access times) with `--open-noatime`, `-S` (sparse files) and
//! `--preallocate`. Each is run by rsync local to local and by sftpsync as a push and a pull
//! over sftp-server on pipes, with itemized lines, modes and times compared; holes are
//! checked by allocated blocks, on the chrooted sshd's side for a push.

use std::os::unix::fs::{symlink, MetadataExt};

use super::*;

/// Fixed times for the fixtures, far from the wall clock.
const T: i64 = 1_500_000_000;
const ACCESSED: i64 = 1_400_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Push,
    Pull,
}

const WAYS: [Way; 2] = [Way::Push, Way::Pull];

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

fn ours(way: Way, flags: &[&str], src: &Path, dst: &Path) -> Output {
    match way {
        Way::Push => pipe_push(flags, src, dst),
        Way::Pull => pipe_pull(flags, src, dst),
    }
}

/// `rsync FLAGS SRC/ DST/`, local to local; its itemized lines, sorted.
fn rsync_lines(flags: &[&str], src: &Path, dst: &Path) -> Vec<String> {
    let out = Command::new("rsync")
        .args(flags)
        .arg(slash(src))
        .arg(slash(dst))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync {flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sorted_items(&String::from_utf8_lossy(&out.stdout))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Sets a path's access time, not following a symlink, leaving its mtime.
fn set_atime(path: &Path, atime: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: atime as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat takes them.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

fn atime_of(path: &Path) -> i64 {
    std::fs::symlink_metadata(path).unwrap().atime()
}

/// A file with `data`, `mode`, mtime `mtime` and atime `ACCESSED`.
fn file(path: &Path, data: &[u8], mode: u32, mtime: i64) {
    write_at(path, data, mtime);
    chmod(path, mode);
    set_atime(path, ACCESSED);
}

/// The receiver's files for the -E cases, with their modes before the run.
fn executability_dest(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    // Same data and time as the source: only the mode can change.
    file(&dst.join("gets-x"), b"a", 0o640, T);
    file(&dst.join("loses-x"), b"c", 0o751, T);
    file(&dst.join("keeps-own-x"), b"d", 0o700, T);
    file(&dst.join("no-x-either"), b"e", 0o604, T);
    // Sent again: the new version keeps the receiver's mode, made executable as the source.
    file(&dst.join("sent-gets-x"), b"b", 0o600, T);
    file(&dst.join("sent-loses-x"), b"f", 0o755, T);
}

fn executability_src(src: &Path) {
    std::fs::create_dir_all(src).unwrap();
    file(&src.join("gets-x"), b"a", 0o755, T);
    file(&src.join("loses-x"), b"c", 0o644, T);
    file(&src.join("keeps-own-x"), b"d", 0o750, T);
    file(&src.join("no-x-either"), b"e", 0o640, T);
    file(&src.join("sent-gets-x"), b"bb", 0o711, T);
    file(&src.join("sent-loses-x"), b"ff", 0o600, T);
    file(&src.join("new-x"), b"g", 0o751, T);
    file(&src.join("new-plain"), b"h", 0o640, T);
    testkit::set_mtime_nofollow(src, T).unwrap();
}

#[test]
fn executability_follows_the_source_like_rsync_without_p() {
    for way in WAYS {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        executability_src(&src);
        let (theirs, mine) = (tmp.path().join("rsync"), tmp.path().join("ours"));
        executability_dest(&theirs);
        executability_dest(&mine);
        for d in [&theirs, &mine] {
            testkit::set_mtime_nofollow(d, T).unwrap();
        }
        let expected = rsync_lines(&["-rtEi"], &src, &theirs);
        // The oracle itself: p on both sides of the execute question, nothing for a file
        // whose bits are already executable.
        assert!(
            expected.contains(&".f...p..... gets-x".to_string()),
            "{expected:?}"
        );
        assert!(expected.contains(&">f.s.p..... sent-gets-x".to_string()));
        let out = ok(&ours(way, &["-rtEi"], &src, &mine));
        assert_eq!(sorted_items(&out), expected, "{way:?}: {out}");
        for name in names_in(&src) {
            assert_eq!(
                format!("{:o}", mode_of(&mine.join(&name))),
                format!("{:o}", mode_of(&theirs.join(&name))),
                "{way:?}: mode of {name}"
            );
        }
        assert_eq!(mode_of(&mine.join("gets-x")), 0o750);
        assert_eq!(mode_of(&mine.join("sent-gets-x")), 0o700);
        // Done: a second run has nothing to say.
        assert_eq!(
            sorted_items(&ok(&ours(way, &["-rtEi"], &src, &mine))),
            Vec::<String>::new()
        );
        // Without -E the execute bits are the receiver's business.
        chmod(&mine.join("gets-x"), 0o600);
        assert_eq!(
            sorted_items(&ok(&ours(way, &["-rti"], &src, &mine))),
            Vec::<String>::new()
        );
        assert_eq!(mode_of(&mine.join("gets-x")), 0o600);
        // With -p, -E adds nothing: the whole mode follows.
        let out = ok(&ours(way, &["-rtpEi"], &src, &mine));
        assert!(out.contains(".f...p..... gets-x"), "{out}");
        assert_eq!(mode_of(&mine.join("gets-x")), 0o755);
    }
}

/// The source for the -U cases: files and a symlink accessed at `ACCESSED`.
fn atimes_src(src: &Path) {
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for name in ["same", "older", "resized", "new", "sub/deep"] {
        file(&src.join(name), name.as_bytes(), 0o644, T);
    }
    symlink("same", src.join("link")).unwrap();
    testkit::set_mtime_nofollow(&src.join("link"), T).unwrap();
    set_atime(&src.join("link"), ACCESSED);
    for d in [src.join("sub"), src.to_path_buf()] {
        testkit::set_mtime_nofollow(&d, T).unwrap();
        set_atime(&d, ACCESSED);
    }
}

fn atimes_dest(dst: &Path) {
    std::fs::create_dir_all(dst.join("sub")).unwrap();
    // Only the atime differs.
    file(&dst.join("same"), b"same", 0o644, T);
    set_atime(&dst.join("same"), ACCESSED + 500);
    file(&dst.join("older"), b"older", 0o644, T - 60);
    set_atime(&dst.join("older"), ACCESSED + 500);
    // Sent again, but its atime already the source's: no `u`, though the new file gets it.
    file(&dst.join("resized"), b"resized!", 0o644, T);
    // An up-to-date file whose atime is already the source's: nothing to do.
    file(&dst.join("sub/deep"), b"sub/deep", 0o644, T);
    for d in [dst.join("sub"), dst.to_path_buf()] {
        testkit::set_mtime_nofollow(&d, T).unwrap();
        set_atime(&d, ACCESSED + 900);
    }
}

#[test]
fn atimes_are_kept_and_flagged_u_like_rsync() {
    for way in WAYS {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        atimes_src(&src);
        let (theirs, mine) = (tmp.path().join("rsync"), tmp.path().join("ours"));
        atimes_dest(&theirs);
        atimes_dest(&mine);
        let flags = ["-rltUi", "--open-noatime"];
        let expected = rsync_lines(&flags, &src, &theirs);
        assert!(
            expected.contains(&".f......u.. same".to_string()),
            "{expected:?}"
        );
        assert!(
            expected.contains(&">f..t...u.. older".to_string()),
            "{expected:?}"
        );
        assert!(expected.contains(&">f.s....... resized".to_string()));
        // Reading a symlink moves its atime whatever --open-noatime says (relatime does
        // when the atime is older than the mtime): rsync's run just did.
        set_atime(&src.join("link"), ACCESSED);
        let out = ok(&ours(way, &flags, &src, &mine));
        assert_eq!(sorted_items(&out), expected, "{way:?}: {out}");
        for name in ["same", "older", "resized", "new", "sub/deep", "link"] {
            assert_eq!(
                atime_of(&mine.join(name)),
                ACCESSED,
                "{way:?}: atime of {name}"
            );
            assert_eq!(
                atime_of(&theirs.join(name)),
                ACCESSED,
                "rsync: atime of {name}"
            );
            let m = std::fs::symlink_metadata(mine.join(name)).unwrap();
            assert_eq!(m.mtime(), T, "{way:?}: mtime of {name}");
        }
        if way == Way::Push {
            // --open-noatime: reading the sources left their atimes, so nothing is due again.
            assert_eq!(atime_of(&src.join("older")), ACCESSED);
            assert_eq!(
                sorted_items(&ok(&ours(way, &flags, &src, &mine))),
                Vec::<String>::new()
            );
        }
    }
}

#[test]
fn without_u_atimes_are_left_and_sources_read_without_open_noatime_move() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    atimes_src(&src);
    let dst = tmp.path().join("dst");
    atimes_dest(&dst);
    // -t alone over SFTP v3 sends both times: the atime must go back as it was.
    chmod(&dst.join("same"), 0o600);
    let out = ok(&pipe_push(&["-rlpti"], &src, &dst));
    assert!(out.contains(".f...p..... same"), "{out}");
    assert_eq!(atime_of(&dst.join("same")), ACCESSED + 500);
    // Nothing flags atimes without -U.
    assert!(!out.contains('u'), "{out}");
    // A local source read without --open-noatime gets a new atime (older than a day, so
    // even relatime moves it); with it, the atime stays.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    atimes_src(&a);
    ok(&pipe_push(&["-rU", "--open-noatime"], &a, &b));
    assert_eq!(atime_of(&a.join("older")), ACCESSED);
    let c = tmp.path().join("c");
    ok(&pipe_push(&["-rU"], &a, &c));
    assert_ne!(atime_of(&a.join("older")), ACCESSED);
}

/// 1 MiB of data, 4 MiB of zeros, 64 KiB of data, then 2 MiB of zeros to the end.
fn sparse_content() -> Vec<u8> {
    let mut data = Vec::new();
    let noise = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    };
    data.extend(noise(1 << 20, 3));
    data.extend(std::iter::repeat_n(0u8, 4 << 20));
    data.extend(noise(64 << 10, 7));
    data.extend(std::iter::repeat_n(0u8, 2 << 20));
    data
}

fn blocks_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

/// `data` written as a file with holes, for a source whose holes do not matter.
fn sparse_src(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    write_at(&root.join("holey"), &sparse_content(), T);
    write_at(&root.join("plain"), b"no zeros here", T);
}

#[test]
fn sparse_leaves_holes_on_push_and_pull() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sparse_src(&src);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let content = sparse_content();

    // Push over ssh to the chrooted sshd: holes made by writing past the zeros.
    let (dense_remote, dense_local) = server.fresh_remote_dir("sparse-dense");
    ok(&push(server, &["-rt"], &src, &dense_remote));
    let (remote, local) = server.fresh_remote_dir("sparse-push");
    ok(&push(server, &["-rtS"], &src, &remote));
    assert_eq!(std::fs::read(local.join("holey")).unwrap(), content);
    let (sparse, dense) = (
        blocks_of(&local.join("holey")),
        blocks_of(&dense_local.join("holey")),
    );
    assert!(
        sparse * 4 < dense,
        "push: {sparse} blocks with -S, {dense} without"
    );
    assert_trees_match_with(&src, &local, &["--no-o", "--no-g"]);

    // Pull into a local directory: holes by seeking.
    let dense_dst = tmp.path().join("dense");
    ok(&pull(server, &["-rt"], &dense_remote, &dense_dst));
    let dst = tmp.path().join("pulled");
    ok(&pull(server, &["-rtS"], &remote, &dst));
    assert_eq!(std::fs::read(dst.join("holey")).unwrap(), content);
    let (sparse, dense) = (
        blocks_of(&dst.join("holey")),
        blocks_of(&dense_dst.join("holey")),
    );
    assert!(
        sparse * 4 < dense,
        "pull: {sparse} blocks with -S, {dense} without"
    );
    assert_trees_match_with(&src, &dst, &["--no-o", "--no-g"]);

    // rsync itself, for scale: ours is no denser than its own -S copy.
    let theirs = tmp.path().join("rsync");
    rsync_lines(&["-rtS"], &src, &theirs);
    assert!(blocks_of(&dst.join("holey")) <= blocks_of(&theirs.join("holey")) + 16);
}

#[test]
fn sparse_in_place_punches_holes_where_old_data_was() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sparse_src(&src);
    let content = sparse_content();
    for way in WAYS {
        let dst = tmp.path().join(format!("{way:?}"));
        std::fs::create_dir_all(&dst).unwrap();
        // The old version: no zeros anywhere, the same size.
        write_at(&dst.join("holey"), &vec![0x55u8; content.len()], T - 60);
        let full = blocks_of(&dst.join("holey"));
        let out = ok(&ours(way, &["-rtSi", "--inplace"], &src, &dst));
        let lines = sorted_items(&out);
        assert!(
            lines.contains(&">f..t...... holey".to_string()),
            "{way:?}: {out}"
        );
        assert_eq!(std::fs::read(dst.join("holey")).unwrap(), content);
        let now = blocks_of(&dst.join("holey"));
        match way {
            // A local file gets its holes punched.
            Way::Pull => assert!(now * 4 < full, "{way:?}: {now} of {full} blocks"),
            // SFTP v3 cannot punch: the zeros are written, and the data is right.
            Way::Push => assert!(now > 0),
        }
    }
}

#[test]
fn preallocate_works_locally_and_is_noted_once_on_a_push() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sparse_src(&src);
    write_at(&src.join("second"), &vec![7u8; 300_000], T);
    let content = sparse_content();

    let dst = tmp.path().join("pulled");
    let out = ok(&pipe_pull(&["-rtv", "--preallocate"], &src, &dst));
    assert!(!out.contains("--preallocate"), "{out}");
    assert_eq!(std::fs::read(dst.join("holey")).unwrap(), content);
    assert_trees_match(&src, &dst);
    // With -S the allocated zeros are punched out again.
    let dst = tmp.path().join("pulled-sparse");
    ok(&pipe_pull(&["-rtS", "--preallocate"], &src, &dst));
    assert_eq!(std::fs::read(dst.join("holey")).unwrap(), content);
    let full = content.len() as u64 / 512;
    assert!(blocks_of(&dst.join("holey")) * 4 < full);

    let pushed = tmp.path().join("pushed");
    let out = ok(&pipe_push(&["-rtv", "--preallocate"], &src, &pushed));
    assert_eq!(
        out.matches("--preallocate has no effect").count(),
        1,
        "{out}"
    );
    assert_trees_match(&src, &pushed);
    // Quietly without -v.
    let out = ok(&pipe_push(
        &["-rt", "--preallocate"],
        &src,
        &tmp.path().join("p2"),
    ));
    assert_eq!(out, "");
}

//! Deleting: only inside the destination, never through a symlink, and at most --max-delete
//! entries, each checked against rsync on a local copy of the same trees.

use super::*;

/// A destination with extras: files, a directory with contents, and symlinks that lead to a
/// directory outside it, one as an extra entry and one inside an extra directory. Fixed
/// mtimes: extras that --max-delete spares are compared between two copies made apart.
fn destination_with_extras(dst: &Path, outside: &Path) {
    std::fs::create_dir_all(dst.join("gone/deeper")).unwrap();
    std::fs::create_dir_all(outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    for i in 1..=5 {
        write_at(&dst.join(format!("x{i}")), b"x", 1_500_000_000);
    }
    write_at(&dst.join("gone/deeper/file"), b"y", 1_500_000_000);
    for link in ["link-out", "gone/deeper/link-out"] {
        std::os::unix::fs::symlink(outside, dst.join(link)).unwrap();
        testkit::set_mtime_nofollow(&dst.join(link), 1_500_000_000).unwrap();
    }
}

fn rsync_code(flags: &[&str], src: &Path, dst: &Path) -> i32 {
    Command::new("rsync")
        .args(flags)
        .arg(slash(src))
        .arg(slash(dst))
        .output()
        .expect("run rsync")
        .status
        .code()
        .unwrap_or(-1)
}

#[test]
fn deletions_never_follow_symlinks_and_stop_at_max_delete() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("kept"), b"k").unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();

    for flags in [
        &["-a", "--delete"][..],
        &["-a", "--delete", "--max-delete=2"],
        &["-a", "--delete-after", "--max-delete=3"],
        &["-a", "--delete-before", "--max-delete=0"],
    ] {
        let (remote, remote_local) = server.fresh_remote_dir("deletes");
        let outside = remote_local.join("..").join(format!(
            "outside-{}",
            remote_local.file_name().unwrap().to_string_lossy()
        ));
        destination_with_extras(&remote_local, &outside);
        chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
        chown_tree(&outside, server.uid(), server.gid()).unwrap();
        let oracle = tmp.path().join(format!("oracle{}", flags.join("")));
        destination_with_extras(&oracle, &outside);

        let expected = rsync_code(flags, &src, &oracle);
        let out = push(server, flags, &src, &remote);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(expected), "{flags:?}: {err}");
        if expected == 25 {
            assert!(
                err.contains("Deletions stopped due to --max-delete limit"),
                "{err}"
            );
        }
        // The symlinks in the oracle point at the same outside directory; compare the links
        // themselves and what the outside directory still holds.
        // Directories that lost entries carry the time of the deletion, on both sides.
        assert_trees_match_with(&oracle, &remote_local, &["--no-o", "--no-g", "-O"]);
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    }
}

#[test]
fn pull_deletions_never_follow_symlinks() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, _remote_local) = server.fresh_remote_dir("pull-deletes");
    let dst = tmp.path().join("dst");
    let outside = tmp.path().join("outside");
    destination_with_extras(&dst, &outside);

    ok(&pull(server, &["-a", "--delete"], &remote, &dst));
    assert_eq!(names_in(&dst), Vec::<String>::new());
    assert_eq!(names_in(&outside), ["precious"]);
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
}

/// The destination's top level is only sent whole when a source is a directory's contents
/// (`src/`): a named source leaves what else is there, as rsync does.
#[test]
fn named_sources_leave_the_top_level_extras_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    write_at(&src.join("a/f"), b"f", 1_000_000_000);
    for (sources, dst_name) in [(&["a"][..], "named"), (&[""], "contents")] {
        let (ours, theirs) = (tmp.path().join(dst_name), tmp.path().join("oracle"));
        for d in [&ours, &theirs] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d.join("a")).unwrap();
            write_at(&d.join("other"), b"x", 1_000_000_000);
            write_at(&d.join("a/extra"), b"x", 1_000_000_000);
        }
        let operands: Vec<String> = sources
            .iter()
            .map(|s| format!("{}/{s}", src.display()))
            .collect();
        let mut rsync = Command::new("rsync");
        rsync
            .args(["-ri", "--delete"])
            .args(&operands)
            .arg(slash(&theirs));
        let want = String::from_utf8(rsync.output().unwrap().stdout).unwrap();
        let server = testkit::sftp_server_path();
        let dest = format!("localhost:{}", slash(&ours));
        let mut args = vec!["--sftp-server", server.to_str().unwrap(), "-ri", "--delete"];
        args.extend(operands.iter().map(String::as_str));
        args.push(&dest);
        let got = ok(&sftpsync(&args)).replace("<f", ">f");
        assert_eq!(got, want, "{sources:?}");
        assert_eq!(names_in(&ours), names_in(&theirs), "{sources:?}");
        assert_eq!(names_in(&ours.join("a")), ["f"], "{sources:?}");
    }
}

/// What the filters protect inside a directory that --delete removes stays, with the
/// directories that hold it and rsync's notes about them, in rsync's places.
#[test]
fn deleting_a_directory_keeps_what_filters_protect() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("kept"), b"k", 1_000_000_000);
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    for d in [&ours, &theirs] {
        std::fs::create_dir_all(d.join("extra/deeper")).unwrap();
        std::fs::create_dir_all(d.join("gone/empty")).unwrap();
        write_at(&d.join("kept"), b"k", 1_000_000_000);
        for f in [
            "extra/x",
            "extra/keep.o",
            "extra/deeper/y.o",
            "extra/deeper/z",
            "gone/w",
        ] {
            write_at(&d.join(f), b"x", 1_000_000_000);
        }
    }
    let flags = ["-ri", "--delete", "--exclude=*.o"];
    let want = Command::new("rsync")
        .args(flags)
        .arg(slash(&src))
        .arg(slash(&theirs))
        .output()
        .unwrap();
    let got = ok(&pipe_push(&flags, &src, &ours));
    assert_eq!(got, String::from_utf8_lossy(&want.stdout));
    assert!(
        got.contains("cannot delete non-empty directory: extra\n"),
        "{got}"
    );
    assert_eq!(names_in(&ours), ["extra", "kept"]);
    assert_eq!(names_in(&ours.join("extra")), ["deeper", "keep.o"]);
    assert_eq!(names_in(&ours.join("extra/deeper")), ["y.o"]);
}

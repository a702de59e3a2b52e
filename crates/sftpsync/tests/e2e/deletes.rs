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

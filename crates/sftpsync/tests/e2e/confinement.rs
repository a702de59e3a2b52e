//! Pulls never write outside the destination through a symlink found in it.

use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use super::*;

/// Names, modes, mtimes and contents below `dir`, to show nothing there changed.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            let body = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.push(format!(
                "{} {:o} {} {body:?}",
                p.display(),
                m.mode(),
                m.mtime()
            ));
        }
    }
    out.sort();
    out
}

fn remote_tree(server: &SftpOnlyServer, name: &str) -> (String, std::path::PathBuf) {
    let (remote, local) = server.fresh_remote_dir(name);
    std::fs::create_dir_all(local.join("sub/deeper")).unwrap();
    std::fs::write(local.join("sub/f"), b"from the server").unwrap();
    std::fs::write(local.join("sub/deeper/g"), b"deeper").unwrap();
    std::fs::write(local.join("top"), b"top").unwrap();
    chown_tree(&local, server.uid(), server.gid()).unwrap();
    (remote, local)
}

#[test]
fn pull_replaces_a_symlinked_destination_dir_and_writes_nothing_outside() {
    let server = SftpOnlyServer::shared();
    let (remote, remote_local) = remote_tree(server, "confine-symlinked-dir");
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("deeper")).unwrap();
    std::fs::write(outside.join("f"), b"outside, keep me").unwrap();
    std::fs::write(outside.join("deeper/g"), b"outside too").unwrap();
    let before = snapshot(&outside);
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    symlink(&outside, dst.join("sub")).unwrap();

    ok(&pull(server, &["-a", "--delete"], &remote, &dst));
    assert!(std::fs::symlink_metadata(dst.join("sub")).unwrap().is_dir());
    assert_trees_match(&remote_local, &dst);
    assert_eq!(
        snapshot(&outside),
        before,
        "the pull wrote outside the destination"
    );
}

#[test]
fn pull_into_a_destination_given_as_a_symlink_to_a_directory_follows_it_like_rsync() {
    let server = SftpOnlyServer::shared();
    let (remote, remote_local) = remote_tree(server, "confine-symlinked-root");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("real")).unwrap();
    let link = tmp.path().join("dstlink");
    symlink("real", &link).unwrap();

    let ssh = server.ssh_command();
    let src = server.remote_spec(&format!("{remote}/"));
    // No trailing slash: the user named the link itself, and rsync follows it.
    ok(&sftpsync(&["-e", &ssh, "-a", &src, link.to_str().unwrap()]));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_trees_match(&remote_local, &tmp.path().join("real"));
}

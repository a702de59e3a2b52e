//! Symlink options (`-l`, `-L`, `--copy-unsafe-links`, `--safe-links`) against rsync's own
//! results for the same tree.

use super::*;

/// A source tree with safe, unsafe and dangling links, beside a directory `out` that its
/// unsafe links lead into.
fn tree_with_links(root: &Path, server: &SftpOnlyServer) -> std::path::PathBuf {
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("f"), b"outside\n").unwrap();
    let src = root.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/x"), b"inside\n").unwrap();
    let links: &[(&str, &str)] = &[
        ("abs", "/etc/hostname"),
        ("dangling", "nothing"),
        ("outdir", "../out"),
        ("sneaky", "d/../d"),
        ("d/up", "../../out/f"),
        ("d/dotx", "./x"),
        ("d/updx", "../d/x"),
    ];
    for (link, target) in links {
        std::os::unix::fs::symlink(target, src.join(link)).unwrap();
    }
    chown_tree(root, server.uid(), server.gid()).unwrap();
    src
}

/// What local rsync makes of `src` with `flags`, and its exit code.
fn rsync_result(flags: &[&str], src: &Path, dst: &Path) -> i32 {
    let out = Command::new("rsync")
        .args(flags)
        .arg(slash(src))
        .arg(slash(dst))
        .output()
        .expect("run rsync");
    out.status.code().unwrap_or(-1)
}

#[test]
fn symlink_options_push_like_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tree_with_links(tmp.path(), server);
    for (i, flags) in [
        &["-a"][..],
        &["-a", "--safe-links"],
        &["-a", "--copy-unsafe-links"],
        &["-a", "--copy-unsafe-links", "--safe-links"],
        &["-a", "-L"],
        &["-rt", "--copy-unsafe-links"],
    ]
    .iter()
    .enumerate()
    {
        let oracle = tmp.path().join(format!("oracle-{i}"));
        let expected_code = rsync_result(flags, &src, &oracle);
        let (remote, local) = server.fresh_remote_dir("links-push");
        let out = push(server, flags, &src, &remote);
        assert_eq!(
            out.status.code(),
            Some(expected_code),
            "{flags:?}: stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_trees_match_with(&oracle, &local, &["--no-o", "--no-g"]);
    }
}

#[test]
fn safe_links_pull_creates_no_link_out_of_the_tree() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("links-pull");
    let src = tree_with_links(&remote_local, server);
    let remote_src = format!("{remote}/src");
    let dst = tmp.path().join("dst");

    let out = pull(server, &["-av", "--safe-links"], &remote_src, &dst);
    let stdout = ok(&out);
    assert!(
        stdout.contains("ignoring unsafe symlink \"abs\" -> \"/etc/hostname\""),
        "{stdout}"
    );
    assert!(stdout.contains("ignoring unsafe symlink \"d/up\" -> \"../../out/f\""));
    let oracle = tmp.path().join("oracle");
    assert_eq!(rsync_result(&["-a", "--safe-links"], &src, &oracle), 0);
    assert_trees_match_with(&oracle, &dst, &["--no-o", "--no-g"]);
    for name in ["abs", "outdir", "sneaky", "d/up"] {
        assert!(
            std::fs::symlink_metadata(dst.join(name)).is_err(),
            "{name} must not be created"
        );
    }
    // A second run with --delete leaves the skipped names alone, as rsync does.
    assert_eq!(
        ok(&pull(
            server,
            &["-ai", "--delete", "--safe-links"],
            &remote_src,
            &dst
        )),
        ""
    );
}

//! rsync's familiar controls: -z, --bwlimit, --files-from and -R, --backup, --link-dest,
//! --chmod, --chown, -C and the config file, each against rsync where rsync has the flag.

use super::*;

/// A program named `ssh` (so that it is taken for OpenSSH's) that notes its arguments in
/// `log` and runs the real ssh with them.
fn logging_ssh(dir: &Path, log: &Path) -> PathBuf {
    let script = dir.join("ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec ssh \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn compress_asks_openssh_and_warns_for_other_shells() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 5, 20);
    let log = tmp.path().join("ssh.log");
    let ssh = logging_ssh(tmp.path(), &log);
    let rsh = server
        .ssh_command()
        .replacen("ssh", ssh.to_str().unwrap(), 1);
    let (remote, local) = server.fresh_remote_dir("compress");
    let dest = server.remote_spec(&format!("{remote}/"));

    let out = sftpsync(&["-az", "--channels=1", "-e", &rsh, &slash(&src), &dest]);
    ok(&out);
    assert_trees_match(&src, &local);
    let words = std::fs::read_to_string(&log).unwrap();
    assert!(words.contains("-oCompression=yes"), "{words}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without -z nothing is asked; with a shell that is not ssh, -z says it does nothing.
    std::fs::remove_file(&log).unwrap();
    ok(&sftpsync(&[
        "-a",
        "--channels=1",
        "-e",
        &rsh,
        &slash(&src),
        &dest,
    ]));
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("Compression"));
    let out = pipe_push(&["-az"], &src, &tmp.path().join("piped"));
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-z has no effect"), "{err}");
}

#[test]
fn bwlimit_slows_pushes_and_pulls_to_the_rate() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Two files, so that the limit has to hold across concurrent copies.
    let data: Vec<u8> = (0..512 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("a"), &data).unwrap();
    std::fs::write(src.join("b"), &data).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("bwlimit");

    // 1 MiB at 256 KiB/s: about 4 s, of which the first burst is free.
    let started = std::time::Instant::now();
    ok(&push(server, &["-a", "--bwlimit=256"], &src, &remote));
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(3),
        "push took {took:?}"
    );
    assert_trees_match(&src, &local);

    let dst = tmp.path().join("dst");
    let started = std::time::Instant::now();
    ok(&pull(server, &["-a", "--bwlimit=256K"], &remote, &dst));
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(3),
        "pull took {took:?}"
    );
    assert_trees_match(&local, &dst);
}

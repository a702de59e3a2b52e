//! rsync's familiar controls: -z, --bwlimit, --files-from and -R, --backup, --link-dest,
//! --chmod, --chown, -C and the config file, each against rsync where rsync has the flag.

use super::*;
use std::os::unix::fs::MetadataExt;

/// A program named `ssh` (so that it is taken for OpenSSH's) that notes its arguments in
/// `log` and runs the real ssh with them.
pub(super) fn logging_ssh(dir: &Path, log: &Path) -> PathBuf {
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

/// Runs `rsync FLAGS src/ oracle/` and `sftpsync FLAGS src/ localhost:dst/` (sftp-server
/// over pipes, as root here), and checks the two results match as `rsync -a` compares them
/// (plus `compare`). Returns sftpsync's stdout.
fn like_rsync(flags: &[&str], compare: &[&str], src: &Path, oracle: &Path, dst: &Path) -> String {
    let rsync = Command::new("rsync")
        .args(flags)
        .arg(slash(src))
        .arg(slash(oracle))
        .output()
        .expect("run rsync");
    assert!(rsync.status.success(), "rsync {flags:?}: {rsync:?}");
    let out = ok(&pipe_push(flags, src, dst));
    assert_trees_match_with(oracle, dst, compare);
    out
}

/// A small tree of files and directories with assorted modes.
fn moded_tree(root: &Path) {
    for (path, mode) in [("d", 0o700), ("d/e", 0o755), ("g", 0o2750)] {
        std::fs::create_dir_all(root.join(path)).unwrap();
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for (path, mode) in [("f", 0o600), ("x", 0o755), ("d/r", 0o444), ("d/e/w", 0o666)] {
        std::fs::write(root.join(path), path).unwrap();
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::symlink("f", root.join("link")).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn chmod_changes_modes_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    moded_tree(&src);
    for (i, chmod) in [
        "D755,F644",
        "u+rwX,g-w,o=",
        "Fa+x",
        "ug=rwX,Dg+s",
        "+w",
        "go-rwx,u+X",
    ]
    .iter()
    .enumerate()
    {
        let arg = format!("--chmod={chmod}");
        let (oracle, dst) = (
            tmp.path().join(format!("o{i}")),
            tmp.path().join(format!("d{i}")),
        );
        like_rsync(&["-a", &arg], &[], &src, &oracle, &dst);
        // Without -p only new files take the changed modes; a second run is a no-op.
        let (oracle, dst) = (
            tmp.path().join(format!("po{i}")),
            tmp.path().join(format!("pd{i}")),
        );
        like_rsync(&["-rlt", &arg], &["--no-o", "--no-g"], &src, &oracle, &dst);
        assert_eq!(ok(&pipe_push(&["-rlti", &arg], &src, &dst)), "", "{chmod}");
    }
}

#[test]
fn chmod_on_push_to_sshd_and_again_is_a_no_op() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    moded_tree(&src);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("chmod");
    let oracle = tmp.path().join("oracle");
    let flags = ["-a", "--chmod=Dg+s,ug+w,Fo-rwx"];
    ok(&push(server, &flags, &src, &remote));
    let rsync = Command::new("rsync")
        .args(flags)
        .arg(slash(&src))
        .arg(slash(&oracle))
        .output();
    assert!(rsync.unwrap().status.success());
    assert_trees_match_with(&oracle, &local, &["--no-o", "--no-g"]);
    assert_eq!(ok(&push(server, &["-ai", flags[1]], &src, &remote)), "");
}

#[test]
fn chown_and_numeric_ids_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    moded_tree(&src);
    for (i, chown) in ["nobody:nogroup", "65534", ":123", "4321:4321"]
        .iter()
        .enumerate()
    {
        let arg = format!("--chown={chown}");
        let (oracle, dst) = (
            tmp.path().join(format!("o{i}")),
            tmp.path().join(format!("d{i}")),
        );
        // Without -o/-g: --chown brings them with it.
        like_rsync(&["-rt", &arg], &["-o", "-g"], &src, &oracle, &dst);
        let (oracle, dst) = (
            tmp.path().join(format!("no{i}")),
            tmp.path().join(format!("nd{i}")),
        );
        like_rsync(&["-a", "--numeric-ids", &arg], &[], &src, &oracle, &dst);
        assert_eq!(ok(&pipe_push(&["-ai", &arg], &src, &dst)), "", "{chown}");
    }
    let out = pipe_push(
        &["-a", "--chown=no-such-user-here"],
        &src,
        &tmp.path().join("x"),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown user no-such-user-here"), "{err}");
}

/// Runs sftpsync with `config` as its config file.
fn with_config(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .args(args)
        .env("XDG_STATE_HOME", shared_state_dir())
        .env("SFTPSYNC_CONFIG", config)
        .env_remove("RSYNC_RSH")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpsync")
}

#[test]
fn config_file_gives_per_host_defaults_below_the_command_line() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let log = tmp.path().join("ssh.log");
    let ssh = logging_ssh(tmp.path(), &log);
    let rsh = server
        .ssh_command()
        .replacen("ssh", ssh.to_str().unwrap(), 1);
    let host = server.user_at_host();
    let host = host.split('@').nth(1).unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nargs = [\"--chmod=F600\"]\n\n[host.\"{host}\"]\nchannels = 1\n\
             rsh = \"{rsh}\"\nssh_args = [\"-oServerAliveInterval=17\"]\n"
        ),
    )
    .unwrap();
    let (remote, local) = server.fresh_remote_dir("config");
    let dest = server.remote_spec(&format!("{remote}/"));

    // No -e: the host's section says how to connect.
    ok(&with_config(&config, &["-a", &slash(&src), &dest]));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&local.join("f")), 0o600);
    let words = std::fs::read_to_string(&log).unwrap();
    assert!(words.contains("-oServerAliveInterval=17"), "{words}");
    assert!(!words.contains("ControlMaster"), "one channel: {words}");

    // The command line wins; --no-config reads nothing.
    ok(&with_config(
        &config,
        &["-a", "--chmod=F640", &slash(&src), &dest],
    ));
    assert_eq!(mode(&local.join("f")), 0o640);
    std::fs::set_permissions(src.join("f"), std::fs::Permissions::from_mode(0o604)).unwrap();
    ok(&with_config(
        &config,
        &[
            "-a",
            "--no-config",
            "-e",
            &server.ssh_command(),
            &slash(&src),
            &dest,
        ],
    ));
    assert_eq!(mode(&local.join("f")), 0o604);

    // A mistake is one line naming the file and line, and exit 1 before anything is done.
    std::fs::write(&config, "[defaults]\nchannels = 2\nchanels = 3\n").unwrap();
    let out = with_config(&config, &["-a", &slash(&src), &dest]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("sftpsync: config file {}:3: ", config.display())),
        "{err}"
    );
    assert!(first.contains("chanels"), "{err}");
}

/// A source that differs from [`backup_dest`] in every way a backup is made for: a changed
/// file, an extra file, an extra directory with a file, a symlink with another target, and
/// a file where the source has a directory.
fn backup_source(src: &Path) {
    std::fs::create_dir_all(src.join("d/now-dir")).unwrap();
    write_at(&src.join("f"), b"new content", 1_600_000_000);
    write_at(&src.join("same"), b"same", 1_600_000_000);
    write_at(&src.join("d/g"), b"new g", 1_600_000_000);
    std::os::unix::fs::symlink("f", src.join("link")).unwrap();
}

/// The destination [`backup_source`] is synced onto.
fn backup_dest(dst: &Path) {
    std::fs::create_dir_all(dst.join("d/now-dir")).unwrap();
    std::fs::remove_dir(dst.join("d/now-dir")).unwrap();
    std::fs::create_dir_all(dst.join("gone/sub")).unwrap();
    write_at(&dst.join("f"), b"old", 1_500_000_000);
    write_at(&dst.join("same"), b"same", 1_600_000_000);
    write_at(&dst.join("d/g"), b"old g", 1_500_000_000);
    write_at(&dst.join("d/now-dir"), b"was a file", 1_500_000_000);
    write_at(&dst.join("extra"), b"extra", 1_500_000_000);
    write_at(&dst.join("gone/sub/z"), b"z", 1_500_000_000);
    std::os::unix::fs::symlink("same", dst.join("link")).unwrap();
    testkit::set_mtime_nofollow(&dst.join("link"), 1_500_000_000).unwrap();
}

#[test]
fn backups_are_kept_as_rsync_keeps_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    backup_source(&src);
    for (i, flags) in [
        &["-a", "--delete", "-b"][..],
        &["-a", "-b", "--suffix=.old"],
        &["-a", "--delete", "--backup-dir=bak"],
        &["-a", "--delete", "--backup-dir=bak", "--suffix=.1"],
        &["-a", "--delete", "--backup-dir=../outside"],
        // Rewritten in place, the old file is copied to its backup name, not linked or
        // renamed: a backup sharing the rewritten file's inode would hold the new bytes.
        // A backup dir inside the destination is copied into with copy-data.
        &["-a", "--inplace", "-b"],
        &["-a", "--inplace", "--delete", "--backup-dir=bak"],
        &["-a", "--append", "-b"],
    ]
    .iter()
    .enumerate()
    {
        let case = tmp.path().join(format!("case{i}"));
        let (oracle, dst) = (case.join("oracle/d"), case.join("ours/d"));
        backup_dest(&oracle);
        backup_dest(&dst);
        // rsync omits directory times when backups go beside their files.
        let out = like_rsync(flags, &["-O"], &src, &oracle, &dst);
        assert!(!out.contains("error"), "{flags:?}: {out}");
        let outside = |d: &Path| d.parent().unwrap().join("outside");
        if outside(&oracle).exists() {
            assert_trees_match_with(&outside(&oracle), &outside(&dst), &["-O"]);
        }
    }

    // In place with a backup dir of its own (absolute: rsync 3.5 fails on `../` with
    // --inplace), which the bytes are read and written into.
    let case = tmp.path().join("absolute");
    let (oracle, dst) = (case.join("oracle/d"), case.join("ours/d"));
    backup_dest(&oracle);
    backup_dest(&dst);
    let outside = |d: &Path| d.parent().unwrap().join("outside");
    let flags = |d: &Path| {
        let dir = format!("--backup-dir={}", outside(d).display());
        ["-a".to_string(), "--inplace".to_string(), dir]
    };
    let rsync = Command::new("rsync")
        .args(flags(&oracle))
        .arg(slash(&src))
        .arg(slash(&oracle))
        .output()
        .unwrap();
    assert!(rsync.status.success(), "{rsync:?}");
    let ours = flags(&dst);
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    ok(&pipe_push(&ours, &src, &dst));
    assert_trees_match_with(&oracle, &dst, &["-O"]);
    assert_trees_match_with(&outside(&oracle), &outside(&dst), &["-O"]);
    assert_eq!(std::fs::read(outside(&dst).join("f")).unwrap(), b"old");
}

#[test]
fn backups_on_a_push_keep_the_old_file_and_protect_the_backup_dir() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (src, oracle) = (tmp.path().join("src"), tmp.path().join("oracle"));
    let (remote, local) = server.fresh_remote_dir("backup");
    backup_source(&src);
    backup_dest(&local);
    backup_dest(&oracle);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    chown_tree(&local, server.uid(), server.gid()).unwrap();
    chown_tree(&oracle, server.uid(), server.gid()).unwrap();
    let old_inode = std::fs::metadata(local.join("f")).unwrap().ino();

    let flags = ["-a", "--delete", "-b"];
    ok(&push(server, &flags, &src, &remote));
    let rsync = Command::new("rsync")
        .args(flags)
        .arg(slash(&src))
        .arg(slash(&oracle))
        .output();
    assert!(rsync.unwrap().status.success());
    assert_trees_match_with(&oracle, &local, &["-O"]);
    assert_eq!(std::fs::read(local.join("f~")).unwrap(), b"old");
    assert_eq!(
        std::fs::metadata(local.join("f~")).unwrap().ino(),
        old_inode
    );
    assert_eq!(std::fs::read(local.join("f")).unwrap(), b"new content");

    // A backup dir inside the destination is not itself backed up or deleted later.
    let flags = ["-a", "--delete", "--backup-dir=bak"];
    write_at(&src.join("f"), b"newer content", 1_700_000_000);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    ok(&push(server, &flags, &src, &remote));
    assert_eq!(std::fs::read(local.join("bak/f")).unwrap(), b"new content");
    write_at(&src.join("f"), b"newest content", 1_800_000_000);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    ok(&push(server, &flags, &src, &remote));
    assert_eq!(
        std::fs::read(local.join("bak/f")).unwrap(),
        b"newer content"
    );
    assert!(!local.join("bak/bak").exists());
}

/// Runs rsync and sftpsync (over sftp-server pipes) with the same flags and operands from
/// `cwd`, into `oracle` and `dst`, and checks the results match as `rsync -a` sees them.
fn like_rsync_in(cwd: &Path, flags: &[&str], operands: &[&str], oracle: &Path, dst: &Path) {
    let rsync = Command::new("rsync")
        .current_dir(cwd)
        .args(flags)
        .args(operands)
        .arg(slash(oracle))
        .output()
        .expect("run rsync");
    assert!(rsync.status.success(), "rsync {flags:?}: {rsync:?}");
    let server = testkit::sftp_server_path();
    let out = Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .current_dir(cwd)
        .env("XDG_STATE_HOME", shared_state_dir())
        .env("SFTPSYNC_CONFIG", "")
        .arg("--sftp-server")
        .arg(&server)
        .args(flags)
        .args(operands)
        .arg(format!("localhost:{}", slash(dst)))
        .stdin(Stdio::null())
        .output()
        .expect("run sftpsync");
    ok(&out);
    same_root_time(oracle, dst);
    // Directories made without attributes have the times of their making, on each side.
    let plain_dirs = flags.contains(&"--no-implied-dirs");
    assert_trees_match_with(oracle, dst, if plain_dirs { &["-O"] } else { &[] });
}

/// Neither rsync nor sftpsync sends the destination's root with -R or --files-from, so
/// each side's has the time of its last change; make them alike for the comparison once
/// ours is shown not to carry a source time.
fn same_root_time(oracle: &Path, dst: &Path) {
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().mtime();
    assert!(
        mtime(dst) > 1_600_000_000,
        "the root was given a source time"
    );
    testkit::set_mtime_nofollow(dst, mtime(oracle)).unwrap();
}

/// A tree for the by-path tests: nested directories with files, and a deeper level.
fn path_tree(root: &Path) {
    for (path, data) in [
        ("usr/lib/x/f1", "1"),
        ("usr/lib/x/sub/f2", "22"),
        ("usr/lib/y", "3"),
        ("usr/share/doc/readme", "4"),
        ("usr/share/doc/deep/er/f5", "5"),
        ("etc/conf", "6"),
        ("top", "7"),
    ] {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        write_at(&root.join(path), data.as_bytes(), 1_600_000_000);
    }
    for (dir, mode) in [("usr", 0o750), ("usr/lib", 0o700), ("usr/share/doc", 0o755)] {
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn relative_paths_are_recreated_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    path_tree(&src);
    let abs = format!("{}/./usr/share", src.display());
    for (i, (flags, operands)) in [
        (
            &["-aR"][..],
            &["usr/lib/x", "usr/share/doc/readme", "top"][..],
        ),
        (&["-aR"], &["./usr/./lib", "etc/"]),
        (
            &["-aR", "--no-implied-dirs"],
            &["usr/lib/x/sub", "usr/share/doc"],
        ),
        (&["-aR"], &[abs.as_str()]),
    ]
    .iter()
    .enumerate()
    {
        let (oracle, dst) = (
            tmp.path().join(format!("o{i}")),
            tmp.path().join(format!("d{i}")),
        );
        like_rsync_in(&src, flags, operands, &oracle, &dst);
    }
    // --delete reaches into the directories sent whole, and nowhere above them.
    let (oracle, dst) = (tmp.path().join("odel"), tmp.path().join("ddel"));
    for d in [&oracle, &dst] {
        std::fs::create_dir_all(d.join("usr/lib/x")).unwrap();
        write_at(&d.join("usr/lib/x/extra"), b"x", 1_500_000_000);
        // Left alone by both, so its time must not depend on when it was written.
        write_at(&d.join("usr/kept"), b"k", 1_500_000_000);
    }
    like_rsync_in(&src, &["-aR", "--delete"], &["usr/lib/x"], &oracle, &dst);
    assert!(dst.join("usr/kept").exists() && !dst.join("usr/lib/x/extra").exists());
}

#[test]
fn files_from_sends_the_listed_paths_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    path_tree(&src);
    let list = tmp.path().join("list");
    std::fs::write(
        &list,
        "usr/lib/x\n# a comment\n/usr/share/doc/\n\n../etc/conf\r\nusr/lib/y\n",
    )
    .unwrap();
    let list0 = tmp.path().join("list0");
    std::fs::write(&list0, "usr/lib\0top\0").unwrap();
    let from = format!("--files-from={}", list.display());
    let from0 = format!("--files-from={}", list0.display());
    for (i, flags) in [
        &["-a", from.as_str()][..],
        &["-ar", from.as_str()],
        &["-a", "--no-implied-dirs", from.as_str()],
        &["-ar", "--from0", from0.as_str()],
        &["-a", "-0", from0.as_str()],
    ]
    .iter()
    .enumerate()
    {
        let (oracle, dst) = (
            tmp.path().join(format!("o{i}")),
            tmp.path().join(format!("d{i}")),
        );
        like_rsync_in(tmp.path(), flags, &["src"], &oracle, &dst);
    }
}

#[test]
fn files_from_on_the_server_for_a_pull() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, local) = server.fresh_remote_dir("files-from");
    path_tree(&local.join("tree"));
    std::fs::write(local.join("list"), "usr/share/doc/\ntop\n").unwrap();
    chown_tree(&local, server.uid(), server.gid()).unwrap();
    let (oracle, dst) = (tmp.path().join("oracle"), tmp.path().join("dst"));
    let rsync = Command::new("rsync")
        .arg(format!("--files-from={}", local.join("list").display()))
        .arg("-a")
        .arg(local.join("tree"))
        .arg(&oracle)
        .output()
        .unwrap();
    assert!(rsync.status.success(), "{rsync:?}");
    let ssh = server.ssh_command();
    let list = format!("--files-from=:{remote}/list");
    let src = server.remote_spec(&format!("{remote}/tree"));
    ok(&sftpsync(&["-a", "-e", &ssh, &list, &src, &slash(&dst)]));
    same_root_time(&oracle, &dst);
    assert_trees_match(&oracle, &dst);
    // Only the remote end can hold the list.
    let out = sftpsync(&[
        "-a",
        "-e",
        &ssh,
        "--files-from=elsewhere:list",
        &src,
        &slash(&dst),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// Each regular file below `root` with its link count, sorted.
fn link_counts(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                dirs.push(e.path());
            } else if m.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.push((rel, m.nlink()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn link_dest_on_a_push_links_unchanged_files_on_the_server_as_rsync_does() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 77, 40);
    let (remote, base) = server.fresh_remote_dir("link-dest");
    let oracle = tmp.path().join("oracle");

    // Yesterday's backup, on the server and in the oracle.
    ok(&push(server, &["-a"], &src, &format!("{remote}/prev")));
    copy_tree(&base.join("prev"), &oracle.join("prev"));
    mutate_tree(&src, 5);
    write_at(&src.join("brand-new"), b"new", 1_600_000_000);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    // Something already at today's name: replaced by the link where the file is unchanged.
    let today_files: Vec<PathBuf> = link_counts(&base.join("prev"))
        .into_iter()
        .map(|f| f.0)
        .filter(|f| src.join(f).exists())
        .collect();
    std::fs::create_dir_all(base.join("new")).unwrap();
    std::fs::create_dir_all(oracle.join("new")).unwrap();
    chown_tree(&base.join("new"), server.uid(), server.gid()).unwrap();
    for d in [&base.join("new"), &oracle.join("new")] {
        for f in today_files.iter().take(5) {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"in the way").unwrap();
        }
    }
    for d in [&base.join("new"), &oracle.join("new")] {
        chown_tree(d, server.uid(), server.gid()).unwrap();
    }

    let flags = ["-ai", "--link-dest=../prev"];
    let out = ok(&push(server, &flags, &src, &format!("{remote}/new")));
    let rsync = Command::new("rsync")
        .args(flags)
        .arg(slash(&src))
        .arg(slash(&oracle.join("new")))
        .output()
        .unwrap();
    assert!(rsync.status.success(), "{rsync:?}");
    assert_eq!(
        sorted_items(&out),
        sorted_items(&String::from_utf8_lossy(&rsync.stdout))
    );
    assert_trees_match(&src, &base.join("new"));
    let ours = link_counts(&base.join("new"));
    assert_eq!(ours, link_counts(&oracle.join("new")));
    assert!(
        ours.iter().any(|(_, n)| *n == 2),
        "nothing was linked: {ours:?}"
    );
    assert!(
        ours.iter().any(|(_, n)| *n == 1),
        "everything was linked: {ours:?}"
    );

    // Two link-dest dirs, the first that holds a file wins; an absolute one works too.
    let abs = format!(
        "/{}",
        base.join("prev")
            .strip_prefix(server.chroot())
            .unwrap()
            .display()
    );
    let flags = ["-a", "--link-dest=../none", &format!("--link-dest={abs}")];
    ok(&push(server, &flags, &src, &format!("{remote}/third")));
    assert_trees_match(&src, &base.join("third"));
    let third = link_counts(&base.join("third"));
    let linked = |c: &[(PathBuf, u64)]| c.iter().filter(|(_, n)| *n > 1).count();
    assert_eq!(linked(&third), linked(&ours), "{third:?}");
}

/// A backup pulled from the server next to yesterday's: unchanged files are hard links into
/// it, as rsync makes them, and `-i` describes each entry against its twin there.
#[test]
fn link_dest_on_a_pull_links_unchanged_files_locally_as_rsync_does() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, served) = server.fresh_remote_dir("link-dest-pull");
    owned_tree(server, &served, 78, 40);
    let (backups, oracle) = (tmp.path().join("backups"), tmp.path().join("oracle"));
    std::fs::create_dir(&backups).unwrap();
    ok(&pull(server, &["-a"], &remote, &backups.join("prev")));
    copy_tree(&backups.join("prev"), &oracle.join("prev"));
    mutate_tree(&served, 6);
    write_at(&served.join("brand-new"), b"new", 1_600_000_000);
    chown_tree(&served, server.uid(), server.gid()).unwrap();

    let flags = ["-ai", "--link-dest=../prev"];
    let ours = ok(&pull(server, &flags, &remote, &backups.join("new")));
    let rsync = Command::new("rsync")
        .args(flags)
        .arg(slash(&served))
        .arg(slash(&oracle.join("new")))
        .output()
        .unwrap();
    assert!(rsync.status.success(), "{rsync:?}");
    assert_eq!(
        sorted_items(&ours),
        sorted_items(&String::from_utf8_lossy(&rsync.stdout))
    );
    assert_trees_match(&served, &backups.join("new"));
    let counts = link_counts(&backups.join("new"));
    assert_eq!(counts, link_counts(&oracle.join("new")));
    assert!(
        counts.iter().any(|(_, n)| *n == 2),
        "nothing linked: {counts:?}"
    );
    assert!(
        counts.iter().any(|(_, n)| *n == 1),
        "all linked: {counts:?}"
    );

    // An absolute link-dest reached through a symlink, after one that does not exist.
    let alias = tmp.path().join("alias");
    std::os::unix::fs::symlink(&backups, &alias).unwrap();
    let abs = format!("--link-dest={}", alias.join("prev").display());
    let third = backups.join("third");
    ok(&pull(
        server,
        &["-a", "--link-dest=../none", &abs],
        &remote,
        &third,
    ));
    let linked = |c: Vec<(PathBuf, u64)>| -> Vec<(PathBuf, bool)> {
        c.into_iter().map(|(p, n)| (p, n > 1)).collect()
    };
    assert_eq!(linked(link_counts(&third)), linked(counts));
}

/// Every entry below `root` with its type, mode and link count: what `--copy-dest` and
/// `--compare-dest` leave differs in which names exist and whether they are links.
fn shape(root: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(".")
        .args(["-printf", "%n %m %y %P\\n"])
        .current_dir(root)
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// `--copy-dest` and `--compare-dest` on a push and on a pull: the same entries copied,
/// left out and itemized as rsync's.
#[test]
fn copy_dest_and_compare_dest_push_and_pull_as_rsync_does() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 79, 30);
    break_hard_links(&src);
    let (remote, base) = server.fresh_remote_dir("alt-dest");
    ok(&push(server, &["-a"], &src, &format!("{remote}/prev")));
    let local = tmp.path().join("local");
    copy_tree(&base.join("prev"), &local.join("prev"));
    mutate_tree(&src, 7);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    copy_tree(&src, &base.join("src"));
    chown_tree(&base.join("src"), server.uid(), server.gid()).unwrap();

    for kind in ["--copy-dest=../prev", "--compare-dest=../prev"] {
        let flags = ["-ai", kind];
        let name = &kind[2..6];
        let oracle = tmp.path().join(format!("oracle-{name}"));
        copy_tree(&base.join("prev"), &oracle.join("prev"));
        let rsync = Command::new("rsync")
            .args(flags)
            .arg(slash(&src))
            .arg(slash(&oracle.join("new")))
            .output()
            .unwrap();
        assert!(rsync.status.success(), "{rsync:?}");
        let want = sorted_items(&String::from_utf8_lossy(&rsync.stdout));
        assert!(want.iter().any(|l| l.starts_with("cf")), "{want:?}");

        let pushed = format!("{remote}/pushed-{name}");
        let out = ok(&push(server, &flags, &src, &pushed));
        assert_eq!(sorted_items(&out), want, "push {kind}");
        assert_eq!(
            shape(&base.join(format!("pushed-{name}"))),
            shape(&oracle.join("new")),
            "push {kind}"
        );

        let pulled = local.join(format!("pulled-{name}"));
        let out = ok(&pull(server, &flags, &format!("{remote}/src"), &pulled));
        assert_eq!(sorted_items(&out), want, "pull {kind}");
        assert_eq!(shape(&pulled), shape(&oracle.join("new")), "pull {kind}");
    }
}

/// A tree with per-directory filter files (`.rsync-filter`, `.cvsignore`) at two levels, and
/// names the CVS defaults catch.
fn filtered_tree(root: &Path) {
    for (path, data) in [
        (".rsync-filter", "- *.log\n- /top-only\n"),
        ("top-only", "t"),
        ("a.log", "l"),
        ("main.c", "c"),
        ("main.o", "o"),
        ("core", "core"),
        ("notes~", "n"),
        (".cvsignore", "*.gen\n"),
        ("x.gen", "g"),
        ("sub/.rsync-filter", "+ keep.log\n- /here\n"),
        ("sub/keep.log", "k"),
        ("sub/other.log", "o"),
        ("sub/here", "h"),
        ("sub/top-only", "t"),
        ("sub/.cvsignore", "*.tmp\n! \n"),
        ("sub/y.gen", "g"),
        ("sub/z.tmp", "z"),
        ("sub/deep/f.gen", "g"),
        ("sub/deep/here", "h"),
        ("sub/.git/config", "c"),
    ] {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        write_at(&root.join(path), data.as_bytes(), 1_600_000_000);
    }
}

#[test]
fn per_directory_filter_files_and_cvs_exclude_select_as_rsync_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    filtered_tree(&src);
    for (i, flags) in [
        &["-a", "-F"][..],
        &["-a", "-FF"],
        &["-a", "-C"],
        &["-a", "-C", "-F", "--include=core"],
        &["-a", "--filter=dir-merge,n- .cvsignore"],
    ]
    .iter()
    .enumerate()
    {
        let case = tmp.path().join(format!("case{i}"));
        let (oracle, dst) = (case.join("oracle"), case.join("ours"));
        // Extras on the receiver: --delete must spare what the rules exclude there. Their
        // times are set: excluded, they keep them, and two writes can straddle a second.
        for d in [&oracle, &dst] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            write_at(&d.join("sub/other.log"), b"old", 1_500_000_000);
            write_at(&d.join("extra.o"), b"x", 1_500_000_000);
            write_at(&d.join("extra"), b"x", 1_500_000_000);
        }
        let mut with_delete = flags.to_vec();
        with_delete.push("--delete");
        like_rsync(&with_delete, &[], &src, &oracle, &dst);
    }
}

#[test]
fn per_directory_filter_files_are_read_from_the_server_on_a_pull() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, local) = server.fresh_remote_dir("dir-merge");
    std::fs::remove_dir(&local).unwrap();
    filtered_tree(&local);
    chown_tree(&local, server.uid(), server.gid()).unwrap();
    let (oracle, dst) = (tmp.path().join("oracle"), tmp.path().join("dst"));
    let flags = ["-a", "-F", "-C"];
    let rsync = Command::new("rsync")
        .args(flags)
        .arg(slash(&local))
        .arg(slash(&oracle))
        .output();
    assert!(rsync.unwrap().status.success());
    ok(&pull(server, &flags, &remote, &dst));
    assert_trees_match(&oracle, &dst);
    assert!(!dst.join("a.log").exists() && dst.join("sub/keep.log").exists());
}

#[test]
fn without_hard_links_link_dest_sends_and_backups_rename() {
    let tmp = tempfile::tempdir().unwrap();
    let server = testkit::sftp_server_path();
    let refusing = server_script(
        tmp.path(),
        "no-links",
        &format!("{} -P hardlink", server.display()),
    );
    let (src, base) = (tmp.path().join("src"), tmp.path().join("base"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&base).unwrap();
    write_at(&src.join("f"), b"content", 1_600_000_000);
    ok(&push_through(&refusing, &["-a"], &src, &base.join("prev")));

    // Nothing can be linked: the file is sent, and the run still succeeds.
    let out = push_through(
        &refusing,
        &["-a", "--link-dest=../prev"],
        &src,
        &base.join("new"),
    );
    ok(&out);
    assert_trees_match(&src, &base.join("new"));
    let nlink = |p: &Path| std::fs::metadata(p).unwrap().nlink();
    assert_eq!(nlink(&base.join("new/f")), 1);

    // A backup is then made by renaming the old file away.
    write_at(&src.join("f"), b"changed", 1_700_000_000);
    ok(&push_through(
        &refusing,
        &["-a", "-b"],
        &src,
        &base.join("new"),
    ));
    assert_eq!(std::fs::read(base.join("new/f~")).unwrap(), b"content");
    assert_eq!(std::fs::read(base.join("new/f")).unwrap(), b"changed");
    assert_eq!(nlink(&base.join("new/f~")), 1);
}

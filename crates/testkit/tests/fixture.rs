//! Checks the fixtures against the real tools: the SFTP-only sshd and ProFTPD really serve SFTP
//! (and only SFTP), rsync really cannot use them, and the tree builders plus the rsync oracle agree with
//! `cp -a`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use testkit::{
    assert_trees_match, assert_trees_match_checksum, chown_tree, copy_tree, generate_mixed_tree,
    mutate_tree, rsync_diff, rsync_itemize, sftp_server_path, ProftpdServer, SftpOnlyServer,
    TestServer, TreeBuilder,
};

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sftp_batch(server: &TestServer, batch: &str) -> Output {
    let mut child = Command::new("sftp")
        .args(server.ssh_options())
        .args(["-b", "-"])
        .arg(server.user_at_host())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sftp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `sftp` puts a file into a fresh directory and gets it back through `get_path` (how the
/// server names that directory); the file lands in the data directory, owned by the test
/// user, and `pwd` shows `login_dir`.
fn put_and_get(server: &TestServer, get_path: impl Fn(&str) -> String, login_dir: &str) {
    let (remote, local_remote) = server.fresh_remote_dir("putget");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hello.txt");
    fs::write(&src, b"hello over sftp\n").unwrap();
    let back = tmp.path().join("back.txt");

    let batch = format!(
        "pwd\nput {} {remote}/hello.txt\nget {} {}\n",
        src.display(),
        get_path(&remote),
        back.display()
    );
    let out = sftp_batch(server, &batch);
    assert!(
        out.status.success(),
        "sftp failed; server log:\n{}\n{}",
        server.log_contents(),
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("Remote working directory: {login_dir}\n")),
        "{}",
        show(&out)
    );

    let landed = local_remote.join("hello.txt");
    assert_eq!(fs::read(&landed).unwrap(), b"hello over sftp\n");
    let meta = fs::metadata(&landed).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (server.uid(), server.gid()));
    assert_eq!(fs::read(&back).unwrap(), b"hello over sftp\n");
    assert_eq!(local_remote, server.data_dir().join(&remote));
}

#[test]
fn sftp_put_and_get_land_in_the_chroot_as_the_test_user() {
    // The login directory is /data inside the chroot.
    put_and_get(
        SftpOnlyServer::shared(),
        |remote| format!("{remote}/hello.txt"),
        "/data",
    );
}

#[test]
fn rsync_cannot_use_an_sftp_only_server() {
    let server = SftpOnlyServer::shared();
    let (remote, local_remote) = server.fresh_remote_dir("rsync");
    let tmp = tempfile::tempdir().unwrap();
    TreeBuilder::new(tmp.path())
        .file("a", b"a")
        .file("d/b", b"b");

    let out = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", tmp.path().display()))
        .arg(server.remote_spec(&format!("{remote}/")))
        .arg("-e")
        .arg(server.ssh_command())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    println!("rsync -a against the SFTP-only server:\n{}", show(&out));
    // sshd's "This service allows sftp connections only." reaches rsync where it expects
    // the peer's protocol version.
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("protocol version mismatch -- is your shell clean?")
            && stderr.contains("protocol incompatibility (code 2)"),
        "unexpected rsync error text: {}",
        show(&out)
    );
    assert_eq!(
        fs::read_dir(&local_remote).unwrap().count(),
        0,
        "rsync must not have written anything"
    );
}

#[test]
fn ssh_commands_do_not_run_a_shell() {
    let server = SftpOnlyServer::shared();
    for command in [&["/bin/true"][..], &["echo", "SHELL-RAN-$((6*7))"]] {
        let out = Command::new("ssh")
            .args(server.ssh_options())
            .arg(server.user_at_host())
            .args(command)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        println!("ssh {command:?}:\n{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("SHELL-RAN"),
            "a shell ran the command: {}",
            show(&out)
        );
        // sshd itself refuses a non-subsystem session when the forced command is
        // internal-sftp in a chroot, with this exact text on stdout and exit status 1.
        assert_eq!(
            stdout,
            "This service allows sftp connections only.\n",
            "{}",
            show(&out)
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    }
}

#[test]
fn ssh_command_string_matches_ssh_args() {
    let server = SftpOnlyServer::shared();
    let args = server.ssh_args();
    assert_eq!(args[0], "ssh");
    assert_eq!(server.ssh_command().split(' ').collect::<Vec<_>>(), args);
    assert!(server
        .ssh_command()
        .contains(&format!("-p {}", server.port())));
    assert_eq!(
        server.remote_spec("dst/"),
        format!("sftpsynctest@127.0.0.1:dst/")
    );
    let kh = fs::read_to_string(server.known_hosts()).unwrap();
    assert!(kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", server.port())));
    assert!(sftp_server_path().is_file());
}

#[test]
fn private_server_stops_and_cleans_up_on_drop() {
    let server = SftpOnlyServer::start();
    let shared = SftpOnlyServer::shared();
    assert_ne!(server.port(), shared.port());
    let (pid, dir) = (server.pid(), server.dir().to_owned());
    let out = sftp_batch(&server, "pwd\n");
    assert!(out.status.success(), "{}", show(&out));
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sshd {pid} survived drop"
    );
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn proftpd_put_and_get_land_in_its_root_as_the_test_user() {
    let server = ProftpdServer::shared();
    // DefaultRoot makes the data directory the user's `/`, and the login directory.
    put_and_get(server, |remote| format!("/{remote}/hello.txt"), "/");
    let kh = fs::read_to_string(server.known_hosts()).unwrap();
    assert!(kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", server.port())));
}

#[test]
fn proftpd_runs_no_commands_so_rsync_fails() {
    let server = ProftpdServer::shared();
    let out = Command::new("ssh")
        .args(server.ssh_options())
        .arg(server.user_at_host())
        .arg("echo SHELL-RAN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("SHELL-RAN"),
        "{}",
        show(&out)
    );
    // mod_sftp refuses "exec" channel requests outright; ssh exits with 255.
    assert_eq!(out.status.code(), Some(255), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exec request failed"),
        "{}",
        show(&out)
    );

    let (remote, local_remote) = server.fresh_remote_dir("rsync");
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a"), b"a").unwrap();
    let out = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", tmp.path().display()))
        .arg(server.remote_spec(&format!("{remote}/")))
        .arg("-e")
        .arg(server.ssh_command())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    assert_eq!(fs::read_dir(&local_remote).unwrap().count(), 0);
}

#[test]
fn private_proftpd_stops_and_cleans_up_on_drop() {
    let server = ProftpdServer::start();
    assert_ne!(server.port(), ProftpdServer::shared().port());
    let (pid, dir) = (server.pid(), server.dir().to_owned());
    let out = sftp_batch(&server, "pwd\n");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        server.log_contents().contains("Login successful"),
        "{}",
        server.log_contents()
    );
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "proftpd {pid} survived drop"
    );
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn oracle_agrees_with_cp_and_sees_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    let stats = generate_mixed_tree(&a, 1, 120);
    println!("{stats:?}");
    copy_tree(&a, &b);
    copy_tree(&a, &c);
    assert_eq!(rsync_diff(&a, &b, &[]), "");
    assert_trees_match(&a, &b);
    assert_trees_match_checksum(&a, &b);
    assert_eq!(rsync_diff(&a, &b, &["-H"]), "");

    mutate_tree(&c, 7);
    let diff = rsync_diff(&a, &c, &[]);
    println!("rsync -ani --delete a/ mutated/:\n{diff}");
    assert!(!diff.is_empty());
    for wanted in [
        "*deleting ",
        ">f.st",
        ">f..t",
        ".f...p",
        "cd+++++++++",
        ">f+++++++++",
    ] {
        assert!(
            diff.lines().any(|l| l.starts_with(wanted)),
            "expected a {wanted:?} line in:\n{diff}"
        );
    }
    // The mutated side is whole-second too, so a real rsync makes the trees equal again.
    let lines = rsync_itemize(&a, &c, &["--delete"]);
    assert!(!lines.is_empty());
    assert_trees_match_checksum(&a, &c);
}

#[test]
fn oracle_sees_ownership_and_chown_tree_fixes_it() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    TreeBuilder::new(&a)
        .file("f", b"x")
        .symlink("l", "f")
        .dir("d", 0o750, 1_000_000_000);
    copy_tree(&a, &b);
    chown_tree(&b, server.uid(), server.gid()).unwrap();
    assert!(rsync_diff(&a, &b, &[]).contains(".f....og..."));
    assert_eq!(rsync_diff(&a, &b, &["--no-o", "--no-g"]), "");
    chown_tree(&a, server.uid(), server.gid()).unwrap();
    assert_trees_match(&a, &b);
}

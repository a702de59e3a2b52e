//! Bad operands and failing file systems: each gives one clear line naming the path and the
//! cause, rsync's exit code, and leaves every old file whole.

use super::*;

/// A tmpfs of `size` mounted at `at` for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines that say what went wrong, without rsync's closing "sftpsync error: ... (code N)".
fn error_lines(out: &Output) -> Vec<String> {
    stderr_of(out)
        .lines()
        .filter(|l| !l.starts_with("sftpsync error:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn directory_onto_a_file_exits_3_naming_it() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"keep").unwrap();

    let out = sftpsync(&["-a", &slash(&src), file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("\"{}\"", file.display())),
        "{lines:?}"
    );
    assert!(lines[0].contains("must be a directory"), "{lines:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    let (remote, remote_local) = server.fresh_remote_dir("onto-file");
    std::fs::write(remote_local.join("file"), b"keep").unwrap();
    let ssh = server.ssh_command();
    let dest = server.remote_spec(&format!("{remote}/file"));
    let out = sftpsync(&["-a", "-e", &ssh, &slash(&src), &dest]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("file\" failed"), "{lines:?}");
    assert_eq!(std::fs::read(remote_local.join("file")).unwrap(), b"keep");
}

#[test]
fn missing_destination_parent_exits_11_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let dest = tmp.path().join("no/such/dir");
    let out = sftpsync(&["-a", &slash(&src), &slash(&dest)]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr_of(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no/such/dir"), "{lines:?}");
    assert!(lines[0].contains("No such file or directory"), "{lines:?}");
}

#[test]
fn nonexistent_host_exits_255_with_ssh_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sftpsync(&[
        "-a",
        "-e",
        "ssh -F /dev/null -o BatchMode=yes",
        &slash(tmp.path()),
        "nosuchhost.invalid:x/",
    ]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("Could not resolve hostname nosuchhost.invalid"),
        "{}",
        stderr_of(&out)
    );
}

/// One file the server will not let us write: that file fails, the rest arrives, exit 23.
#[test]
fn unwritable_remote_dir_fails_only_its_files() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("locked")).unwrap();
    std::fs::create_dir_all(src.join("open")).unwrap();
    std::fs::write(src.join("locked/f"), b"locked").unwrap();
    std::fs::write(src.join("open/f"), b"open").unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("unwritable");
    // Root's directory: the SFTP user may list it but not create anything in it.
    std::fs::create_dir(remote_local.join("locked")).unwrap();

    let out = push(server, &["-r"], &src, &remote);
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    let lines = error_lines(&out);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("locked/") && l.to_lowercase().contains("permission denied")),
        "{lines:?}"
    );
    // What to do is said once, not on every refused file.
    let hinted = lines
        .iter()
        .filter(|l| l.contains("sftpsync doctor"))
        .count();
    assert_eq!(hinted, 1, "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("open/")), "{lines:?}");

    assert_eq!(std::fs::read(remote_local.join("open/f")).unwrap(), b"open");
    assert!(names_in(&remote_local.join("locked")).is_empty());
}

/// A file we may not read, as an unprivileged user: it fails alone, exit 23.
#[test]
fn unreadable_local_file_fails_only_itself() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("readable"), b"yes").unwrap();
    std::fs::write(src.join("secret"), b"no").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(&dst, Some(nobody), Some(nobody)).unwrap();
    std::os::unix::fs::chown(src.join("readable"), Some(nobody), Some(nobody)).unwrap();

    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_sftpsync"))
        .args(["-r", "--no-index", "--sftp-server"])
        .arg(testkit::sftp_server_path())
        .arg(slash(&src))
        .arg(format!("localhost:{}", slash(&dst)))
        .stdin(Stdio::null())
        .output()
        .expect("run sftpsync as nobody");
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"secret\""), "{lines:?}");
    assert!(lines[0].contains("Permission denied"), "{lines:?}");
    assert_eq!(std::fs::read(dst.join("readable")).unwrap(), b"yes");
    assert_eq!(names_in(&dst), ["readable"]);
}

/// The server's disk fills up mid-file: a clear error, the old version whole, no temp left.
#[test]
fn remote_disk_full_keeps_the_old_file() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(src.join("small"), b"fits").unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("disk-full");
    let _disk = SmallDisk::mount(&remote_local, "1m");
    std::os::unix::fs::chown(&remote_local, Some(server.uid()), Some(server.gid())).unwrap();
    std::fs::write(remote_local.join("big"), b"old version").unwrap();
    std::os::unix::fs::chown(
        remote_local.join("big"),
        Some(server.uid()),
        Some(server.gid()),
    )
    .unwrap();

    let out = push(server, &["-r"], &src, &remote);
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    disk_full_outcome(&out, &remote_local, "the disk is full");
}

/// The same on pull: the local disk fills up.
#[test]
fn local_disk_full_keeps_the_old_file() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("local-full");
    std::fs::write(remote_local.join("big"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(remote_local.join("small"), b"fits").unwrap();
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    let dst = tmp.path().join("dst");
    let _disk = SmallDisk::mount(&dst, "1m");
    std::fs::write(dst.join("big"), b"old version").unwrap();

    let out = pull(server, &["-r"], &remote, &dst);
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    disk_full_outcome(&out, &dst, "No space left on device");
}

/// `big` fails with `cause` and keeps its old version. `small` is written at the same time:
/// it either fit or failed for the same cause. No temp file is left either way.
fn disk_full_outcome(out: &Output, dest: &Path, cause: &str) {
    let lines = error_lines(out);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"big\" failed") && l.contains(cause)),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.contains(cause)), "{lines:?}");
    assert_eq!(std::fs::read(dest.join("big")).unwrap(), b"old version");
    let small_failed = lines.iter().any(|l| l.contains("\"small\""));
    if small_failed {
        assert_eq!(names_in(dest), ["big"], "no temp file is left");
    } else {
        assert_eq!(std::fs::read(dest.join("small")).unwrap(), b"fits");
        assert_eq!(names_in(dest), ["big", "small"], "no temp file is left");
    }
}

/// `ssh_args` of the test server with one option's value replaced.
fn ssh_with(server: &TestServer, change: impl Fn(&str) -> Option<String>) -> String {
    server
        .ssh_args()
        .iter()
        .map(|a| change(a).unwrap_or_else(|| a.clone()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The one line saying what went wrong, and that it carries a hint.
fn the_error_with_hint(out: &Output) -> String {
    let lines = error_lines(out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("; hint: "), "{lines:?}");
    lines[0].clone()
}

#[test]
fn unknown_host_key_and_refused_login_exit_255_with_what_to_do() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let dest = server.remote_spec("anywhere/");

    let empty = tmp.path().join("known_hosts");
    std::fs::write(&empty, b"").unwrap();
    let ssh = ssh_with(server, |a| {
        a.starts_with("UserKnownHostsFile=")
            .then(|| format!("UserKnownHostsFile={}", empty.display()))
    });
    let out = sftpsync(&["-a", "-e", &ssh, &slash(&src), &dest]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr_of(&out));
    let line = the_error_with_hint(&out);
    assert!(line.contains("Host key verification failed"), "{line}");
    assert!(line.contains("ssh [USER@]HOST"), "{line}");

    let key = tmp.path().join("stranger");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let client_key = server.client_key().display().to_string();
    let ssh = ssh_with(server, |a| {
        (a == client_key).then(|| key.display().to_string())
    });
    let out = sftpsync(&["-a", "-e", &ssh, &slash(&src), &dest]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr_of(&out));
    let line = the_error_with_hint(&out);
    assert!(line.contains("Permission denied"), "{line}");
    assert!(line.contains("ssh -i KEY"), "{line}");
}

#[test]
fn missing_remote_paths_are_named_with_their_host() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    let (remote, _) = server.fresh_remote_dir("missing");

    // A destination whose parent does not exist: rsync makes only the last level.
    let out = push(server, &["-a"], &src, &format!("{remote}/no/such"));
    assert_eq!(out.status.code(), Some(11), "{}", stderr_of(&out));
    let line = the_error_with_hint(&out);
    let wanted = server.remote_spec(&format!("{remote}/no/such"));
    assert!(
        line.contains(&format!("mkdir remote \"{wanted}\"")),
        "{line}"
    );
    assert!(line.contains("create its parents first"), "{line}");

    // A source that is not there.
    let dst = tmp.path().join("dst");
    let ssh = server.ssh_command();
    let missing = server.remote_spec(&format!("{remote}/gone"));
    let out = sftpsync(&["-a", "-e", &ssh, &missing, &slash(&dst)]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    let line = the_error_with_hint(&out);
    assert!(
        line.contains(&format!("remote \"{missing}\" failed")),
        "{line}"
    );
    assert!(line.contains("No such file"), "{line}");
}

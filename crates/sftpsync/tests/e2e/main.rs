//! End-to-end: the real `sftpsync` binary against a real chrooted, SFTP-only OpenSSH sshd (and,
//! in `proftpd`, ProFTPD's mod_sftp), with local rsync as the oracle; plus the fast tier
//! against sftp-server over pipes.
//!
//! The tests of one concern live in a module of their own beside this file; the helpers here
//! are visible to them.

mod accepted_options;
mod append;
mod attr_options;
mod check_file;
mod compat;
mod confinement;
mod controls;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::{
    assert_trees_match, assert_trees_match_checksum, assert_trees_match_with, chown_tree,
    copy_tree, generate_mixed_tree, mutate_tree, rsync_diff, rsync_itemize, SftpOnlyServer,
    TestServer,
};

mod deletes;
mod delta;
mod doctor;
mod errors;
mod faults;
mod hostile;
mod in_order;
mod links;
mod listing;
mod metadata;
mod output;
mod proftpd;
mod quirks;
mod receiver_options;
mod resume;
mod rsync_gaps;
mod selection;
mod verbosity;

fn sftpsync(args: &[&str]) -> Output {
    sftpsync_with_state(args, shared_state_dir())
}

/// Runs sftpsync with its delta index under `state` rather than the user's home.
fn sftpsync_with_state(args: &[&str], state: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .args(args)
        .env("XDG_STATE_HOME", state)
        // The invoking user's config file must not change what the tests run.
        .env("SFTPSYNC_CONFIG", "")
        .stdin(Stdio::null())
        .output()
        .expect("run sftpsync")
}

/// One state directory for the tests that do not look at the index themselves.
fn shared_state_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("state dir"))
        .path()
}

/// A script named `name` in `dir` that runs `command` with the arguments it is given, for
/// `--sftp-server`: sftp-server with options, or behind a filter.
fn server_script(dir: &Path, name: &str, command: &str) -> String {
    let script = dir.join(name);
    std::fs::write(&script, format!("#!/bin/sh\nexec {command} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.to_str().unwrap().to_string()
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A number from `--stats` output (`Name: 1,234 bytes`), digit grouping removed.
fn stats_value(out: &str, name: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {out}"));
    line[name.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "sftpsync failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn slash(p: &Path) -> String {
    format!("{}/", p.display())
}

/// A source tree owned by the test user, so `-a` (owner and group) compares equal with what
/// the non-root SFTP user writes.
fn owned_tree(server: &TestServer, root: &Path, seed: u64, n: usize) {
    generate_mixed_tree(root, seed, n);
    chown_tree(root, server.uid(), server.gid()).unwrap();
}

fn push(server: &TestServer, extra: &[&str], src: &Path, remote: &str) -> Output {
    let ssh = server.ssh_command();
    let src = slash(src);
    let dest = server.remote_spec(&format!("{remote}/"));
    let mut args = vec!["-e", &ssh];
    args.extend_from_slice(extra);
    args.push(&src);
    args.push(&dest);
    sftpsync(&args)
}

fn pull(server: &TestServer, extra: &[&str], remote: &str, dst: &Path) -> Output {
    let ssh = server.ssh_command();
    let src = server.remote_spec(&format!("{remote}/"));
    let dst = slash(dst);
    let mut args = vec!["-e", &ssh];
    args.extend_from_slice(extra);
    args.push(&src);
    args.push(&dst);
    sftpsync(&args)
}

#[test]
fn rsync_fails_on_sftp_only_server_and_sftpsync_succeeds() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 1, 30);
    let (remote, local) = server.fresh_remote_dir("rsync-fails");

    let rsync = Command::new("rsync")
        .args(["-a", "-e", &server.ssh_command()])
        .arg(slash(&src))
        .arg(server.remote_spec(&format!("{remote}/")))
        .output()
        .unwrap();
    assert!(!rsync.status.success());
    let err = String::from_utf8_lossy(&rsync.stderr);
    assert!(err.contains("protocol version mismatch"), "{err}");

    ok(&push(server, &["-a", "--delete"], &src, &remote));
    assert_trees_match(&src, &local);
}

#[test]
fn push_mixed_tree_then_resync_changes_and_noop() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 42, 2000);
    let (remote, local) = server.fresh_remote_dir("push-mixed");

    ok(&push(server, &["-aH", "--delete"], &src, &remote));
    assert_trees_match(&src, &local);
    assert_trees_match_checksum(&src, &local);
    assert_trees_match_with(&src, &local, &["-H"]);

    // A second run finds nothing to do.
    let again = ok(&push(server, &["-aHi", "--delete"], &src, &remote));
    assert_eq!(again, "", "a no-change re-run must not touch anything");

    mutate_tree(&src, 7);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    ok(&push(server, &["-aH", "--delete"], &src, &remote));
    assert_trees_match(&src, &local);
    assert_trees_match_checksum(&src, &local);
    let again = ok(&push(server, &["-aHi", "--delete"], &src, &remote));
    assert_eq!(again, "");
}

#[test]
fn pull_mixed_tree_then_resync_changes() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("pull-mixed");
    std::fs::remove_dir(&remote_local).unwrap();
    owned_tree(server, &remote_local, 99, 2000);
    let dst = tmp.path().join("dst");

    ok(&pull(server, &["-a", "--delete"], &remote, &dst));
    assert_trees_match(&remote_local, &dst);
    assert_trees_match_checksum(&remote_local, &dst);
    assert_eq!(ok(&pull(server, &["-ai", "--delete"], &remote, &dst)), "");

    mutate_tree(&remote_local, 3);
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    ok(&pull(server, &["-a", "--delete"], &remote, &dst));
    assert_trees_match(&remote_local, &dst);
    assert_eq!(ok(&pull(server, &["-ai", "--delete"], &remote, &dst)), "");
}

#[test]
fn dry_run_changes_nothing() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(server, &src, 5, 300);
    let (remote, local) = server.fresh_remote_dir("dry-run");
    ok(&push(server, &["-a"], &src, &remote));
    mutate_tree(&src, 11);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let before = rsync_diff(&src, &local, &[]);
    assert!(!before.is_empty());
    let shown = ok(&push(server, &["-ani", "--delete"], &src, &remote));
    assert!(
        !shown.is_empty(),
        "a dry run still itemizes what it would do"
    );
    assert_eq!(rsync_diff(&src, &local, &[]), before);
}

/// Our itemized output for a change set equals what rsync prints for the same change set
/// between two local copies (with rsync's `>` where we send with `<`).
#[test]
fn itemize_matches_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    owned_tree(server, &old, 8, 400);
    // rsync without -H on a copy that shares inodes sees one chmod through two names; keep the
    // comparison about itemizing, not about hard links.
    break_hard_links(&old);
    let new = tmp.path().join("new");
    std::fs::create_dir(&new).unwrap();
    copy_tree(&old, &new);
    mutate_tree(&new, 21);
    chown_tree(&new, server.uid(), server.gid()).unwrap();

    // Each --delete-WHEN puts the deletions elsewhere in the output.
    for delete in [
        "--delete",
        "--delete-before",
        "--delete-delay",
        "--delete-after",
    ] {
        let (remote, _local) = server.fresh_remote_dir("itemize");
        ok(&push(server, &["-a"], &old, &remote));
        let reference = tmp.path().join(format!("reference{delete}"));
        std::fs::create_dir(&reference).unwrap();
        copy_tree(&old, &reference);

        let in_order: Vec<String> = rsync_itemize(&new, &reference, &[delete])
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect();
        let got_in_order: Vec<String> = ok(&push(server, &["-ai", delete], &new, &remote))
            .lines()
            .map(|l| l.replacen("<f", ">f", 1))
            .collect();
        let (mut want, mut got) = (in_order.clone(), got_in_order.clone());
        want.sort();
        got.sort();
        let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && got.len() == want.len(),
            "{delete}: rsync printed but we did not: {missing:#?}\nwe printed but rsync did not: {extra:#?}"
        );
        if delete == "--delete" {
            // rsync's own order for deletions during the walk depends on how far its sender's
            // file lists have run ahead; ours: a directory's deletions come before its other
            // entries.
            deletions_lead_their_directories(&got_in_order);
        } else {
            assert_eq!(
                got_in_order, in_order,
                "{delete}: same lines, but not in rsync's order"
            );
        }
    }
}

fn deletions_lead_their_directories(lines: &[String]) {
    let dir_of = |line: &str| {
        let path = line[12..].trim_end_matches('/');
        path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string()
    };
    let mut seen_other = std::collections::HashSet::new();
    for line in lines.iter().filter(|l| !l.ends_with(" ./")) {
        if line.starts_with("*deleting") {
            assert!(
                !seen_other.contains(&dir_of(line)),
                "{line} comes after other entries of its directory:\n{lines:#?}"
            );
        } else {
            seen_other.insert(dir_of(line));
        }
    }
}

/// Gives every name of a multiply-linked file its own inode, keeping contents and metadata.
fn break_hard_links(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            break_hard_links(&path);
        } else if meta.is_file() && meta.nlink() > 1 {
            let data = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, data).unwrap();
            std::fs::set_permissions(&path, meta.permissions()).unwrap();
            std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).unwrap();
            testkit::set_mtime_nofollow(&path, meta.mtime()).unwrap();
        }
    }
}

#[test]
fn killing_the_client_leaves_old_or_new_files_only() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let n = 12;
    let size = 4 * 1024 * 1024;
    for i in 0..n {
        write_at(&src.join(format!("f{i}")), &vec![b'o'; size], 1_500_000_000);
    }
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("kill");
    ok(&push(server, &["-a"], &src, &remote));
    for i in 0..n {
        // Same size: only the mtime tells the new version, so it must differ.
        write_at(&src.join(format!("f{i}")), &vec![b'n'; size], 1_600_000_000);
    }

    let ssh = server.ssh_command();
    let dest = server.remote_spec(&format!("{remote}/"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .args(["-a", "-e", &ssh, &slash(&src), &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let part of the run happen, then kill -9.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let done = (0..n)
            .filter(|i| std::fs::read(local.join(format!("f{i}"))).unwrap()[0] == b'n')
            .count();
        if done >= 2 || std::time::Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for i in 0..n {
        let data = std::fs::read(local.join(format!("f{i}"))).unwrap();
        assert_eq!(data.len(), size, "f{i} has the wrong size");
        assert!(
            data.iter().all(|&b| b == data[0]),
            "f{i} is a mix of old and new content"
        );
    }
    ok(&push(server, &["-a", "--delete"], &src, &remote));
    assert_trees_match_checksum(&src, &local);
}

#[test]
fn exit_codes_follow_rsync() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, _) = server.fresh_remote_dir("exit-codes");

    let out = sftpsync(&["--no-such-option", "a", "b"]);
    assert_eq!(out.status.code(), Some(1));

    let missing = tmp.path().join("missing");
    let out = push(server, &["-a"], &missing, &remote);
    assert_eq!(out.status.code(), Some(23));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing"), "{err}");

    // Nothing listens on port 1.
    let out = sftpsync(&[
        "-a",
        "-e",
        "ssh -F /dev/null -p 1 -o BatchMode=yes",
        &slash(tmp.path()),
        "nobody@127.0.0.1:x/",
    ]);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Connection refused"), "{err}");
}

/// Pushes `src/` into `dst/` through sftp-server over pipes (no sshd): the fast tier.
fn pipe_push(extra: &[&str], src: &Path, dst: &Path) -> Output {
    let server = testkit::sftp_server_path();
    push_through(server.to_str().unwrap(), extra, src, dst)
}

/// Pushes `src/` into `dst/` through `server` (a program run over pipes) instead of ssh.
fn push_through(server: &str, extra: &[&str], src: &Path, dst: &Path) -> Output {
    let mut args = vec!["--sftp-server", server];
    args.extend_from_slice(extra);
    let (s, d) = (slash(src), format!("localhost:{}", slash(dst)));
    args.push(&s);
    args.push(&d);
    sftpsync(&args)
}

/// The itemized lines of an output, sorted, with a push's `<` written as rsync's local `>`:
/// the walk's tasks may finish in another order than rsync's receiver prints.
fn sorted_items(stdout: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 12 && b[11] == b' ' && b"<>ch.*".contains(&b[0])
        })
        .map(|l| l.replacen("<f", ">f", 1))
        .collect();
    lines.sort();
    lines
}

fn write_at(path: &Path, data: &[u8], mtime: i64) {
    std::fs::write(path, data).unwrap();
    testkit::set_mtime_nofollow(path, mtime).unwrap();
}

#[test]
fn checksum_size_only_update_and_ignore_existing_decide_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("same-size"), b"aaaa", 1_000_000_000);
    write_at(&src.join("newer-dest"), b"src", 1_000_000_000);
    write_at(&src.join("grown"), b"longer", 1_000_000_000);
    ok(&pipe_push(&["-a"], &src, &dst));

    // Same size and mtime, other bytes: only --checksum notices.
    write_at(&dst.join("same-size"), b"bbbb", 1_000_000_000);
    assert_eq!(ok(&pipe_push(&["-ai"], &src, &dst)), "");
    assert_eq!(
        ok(&pipe_push(&["-aic"], &src, &dst)),
        "<fc........ same-size\n"
    );
    assert_eq!(std::fs::read(dst.join("same-size")).unwrap(), b"aaaa");

    // -u keeps a destination file that is newer; --size-only ignores mtimes.
    write_at(&dst.join("newer-dest"), b"dst", 2_000_000_000);
    assert_eq!(ok(&pipe_push(&["-aiu"], &src, &dst)), "");
    // Same size: no transfer, but -t still brings the mtime in line, as rsync does.
    assert_eq!(
        ok(&pipe_push(&["-ai", "--size-only"], &src, &dst)),
        ".f..t...... newer-dest\n"
    );
    assert_eq!(std::fs::read(dst.join("newer-dest")).unwrap(), b"dst");

    // --ignore-existing leaves changed files alone but still creates new ones.
    write_at(&src.join("grown"), b"longer still", 1_000_000_001);
    write_at(&src.join("brand-new"), b"n", 1_000_000_000);
    let out = ok(&pipe_push(&["-ai", "--ignore-existing"], &src, &dst));
    assert!(out.contains("<f+++++++++ brand-new"), "{out}");
    assert!(!out.contains("grown"), "{out}");
    assert_eq!(std::fs::read(dst.join("grown")).unwrap(), b"longer");
}

#[test]
fn filters_select_and_protect_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_mixed_tree(&src, 31, 300);
    std::fs::create_dir_all(src.join("build/obj")).unwrap();
    std::fs::write(src.join("build/obj/x.o"), b"o").unwrap();
    std::fs::write(src.join("keep.o"), b"o").unwrap();
    std::fs::create_dir_all(dst.join("build")).unwrap();
    std::fs::write(dst.join("protected.log"), b"old").unwrap();
    let filters = [
        "--exclude=*.o",
        "--exclude=/build/",
        "--include=*/",
        "--filter=- *.bin",
        "--exclude=*.log",
    ];
    let mut args = vec!["-a", "--delete"];
    args.extend_from_slice(&filters);
    ok(&pipe_push(&args, &src, &dst));
    // rsync with the same rules has nothing left to do, and the excluded log survived.
    assert_eq!(rsync_diff(&src, &dst, &filters), "");
    assert!(dst.join("protected.log").exists());
    assert!(!dst.join("keep.o").exists());

    // --delete-excluded removes what the rules exclude on the receiver too.
    let mut args = vec!["-a", "--delete", "--delete-excluded"];
    args.extend_from_slice(&filters);
    ok(&pipe_push(&args, &src, &dst));
    assert!(!dst.join("protected.log").exists());
}

#[test]
fn stats_report_rsync_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("f{i}")), vec![b'x'; 1000]).unwrap();
    }
    let out = ok(&pipe_push(&["-a", "--stats"], &src, &dst));
    assert!(out.contains("Number of files: 4 (reg: 3, dir: 1)"), "{out}");
    assert!(
        out.contains("Number of regular files transferred: 3"),
        "{out}"
    );
    assert!(
        out.contains("Total transferred file size: 3,000 bytes"),
        "{out}"
    );
    assert!(out.contains("total size is 3,000"), "{out}");
}

/// rsync's rule: after an error reading the source, nothing more is deleted. With deletions
/// during the walk, what was deleted before the error stays deleted, as in rsync.
#[test]
fn unreadable_source_dir_blocks_deletion() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("io-error");
    std::fs::create_dir(remote_local.join("locked")).unwrap();
    std::fs::create_dir(remote_local.join("sub")).unwrap();
    std::fs::write(remote_local.join("file"), b"data").unwrap();
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    std::fs::set_permissions(
        remote_local.join("locked"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(dst.join("sub")).unwrap();
    let reset = || {
        std::fs::write(dst.join("extra"), b"must survive").unwrap();
        std::fs::write(dst.join("sub/extra"), b"must survive").unwrap();
    };

    for delete in [
        "--delete-after",
        "--delete-before",
        "--delete-delay",
        "--delete",
    ] {
        reset();
        let out = pull(server, &["-a", delete], &remote, &dst);
        assert_eq!(out.status.code(), Some(23), "{delete}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("IO error encountered -- skipping file deletion"),
            "{delete}: {err}"
        );
        assert!(err.contains("locked"), "{err}");
        // During the walk, the top directory's extras go before `locked` is reached.
        assert_eq!(dst.join("extra").exists(), delete != "--delete", "{delete}");
        assert!(dst.join("sub/extra").exists(), "{delete}");
        assert_eq!(std::fs::read(dst.join("file")).unwrap(), b"data");
    }

    // --ignore-errors deletes anyway, as in rsync.
    let out = pull(
        server,
        &["-a", "--delete", "--ignore-errors"],
        &remote,
        &dst,
    );
    assert_eq!(out.status.code(), Some(23));
    assert!(!dst.join("extra").exists());
    assert!(!dst.join("sub/extra").exists());
}

#[test]
fn verbose_quiet_and_progress_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/file"), vec![b'x'; 5000]).unwrap();
    std::os::unix::fs::symlink("sub/file", src.join("link")).unwrap();

    let out = ok(&pipe_push(&["-av"], &src, &dst));
    assert!(out.starts_with("sending incremental file list\n"), "{out}");
    for line in ["./", "link -> sub/file", "sub/", "sub/file"] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in {out}");
    }
    assert!(out.contains("\nsent "), "{out}");

    std::fs::write(src.join("sub/file"), vec![b'y'; 6000]).unwrap();
    let out = ok(&pipe_push(&["-a", "--progress"], &src, &dst));
    assert!(out.lines().any(|l| l == "sub/file"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("6,000 100%")),
        "{out}"
    );

    std::fs::write(src.join("sub/file"), b"z").unwrap();
    let out = pipe_push(&["-avq"], &src, &dst);
    assert_eq!(ok(&out), "");
    assert_eq!(std::fs::read(dst.join("sub/file")).unwrap(), b"z");
}

/// Runs sftpsync with its own TMPDIR, so the test can see what it leaves there.
fn sftpsync_with_tmpdir(args: &[&str], tmpdir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .output()
        .expect("run sftpsync")
}

fn logins(server: &SftpOnlyServer) -> usize {
    server.log_contents().matches("Accepted publickey").count()
}

#[test]
fn channels_share_one_login_and_split_big_files() {
    // A private server: its log shows exactly the logins of this test.
    let server = SftpOnlyServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    owned_tree(&server, &src, 5, 300);
    // Big enough to be spread over every channel, with a pattern that shows misplaced ranges.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("channels");
    let sockets = tmp.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let ssh = server.ssh_command();
    let (s, d) = (slash(&src), server.remote_spec(&format!("{remote}/")));

    let out = sftpsync_with_tmpdir(&["-a", "-vv", "--channels=3", "-e", &ssh, &s, &d], &sockets);
    let text = ok(&out);
    assert!(
        text.contains("using 3 SFTP channels sharing one SSH connection"),
        "{text}"
    );
    assert_trees_match(&src, &local);
    assert_trees_match_checksum(&src, &local);
    assert_eq!(logins(&server), 1, "three channels, one login");
    assert_eq!(
        std::fs::read_dir(&sockets).unwrap().count(),
        0,
        "the control socket directory is removed at exit"
    );

    // Pull it back the same way: the big file is read through every channel.
    let dst = tmp.path().join("dst");
    let dst_s = slash(&dst);
    ok(&sftpsync_with_tmpdir(
        &["-a", "--channels=3", "-e", &ssh, &d, &dst_s],
        &sockets,
    ));
    assert_trees_match_checksum(&src, &dst);
    assert_eq!(logins(&server), 2);

    // A remote shell that is not OpenSSH's ssh cannot multiplex: each channel logs in.
    let wrapper = tmp.path().join("my-remote-shell");
    let mut words = ssh.split(' ');
    let program = words.next().unwrap();
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {program} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rsh = std::iter::once(wrapper.to_str().unwrap())
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(src.join("new"), b"new").unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let text = ok(&sftpsync(&["-a", "-v", "--channels=2", "-e", &rsh, &s, &d]));
    assert!(text.contains("over separate connections"), "{text}");
    assert_eq!(logins(&server), 4);
    assert_trees_match(&src, &local);
}

#[test]
fn no_change_run_only_lists_directories() {
    // sftp-server logs every request that changes something (and each opendir) at INFO.
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("requests.log");
    let wrapper = tmp.path().join("logging-sftp-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} -e -l INFO \"$@\" 2>>{}\n",
            testkit::sftp_server_path().display(),
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_mixed_tree(&src, 11, 300);
    let wrapper_s = wrapper.to_str().unwrap().to_string();
    let dest_spec = format!("localhost:{}", slash(&dst));
    let src_s = slash(&src);
    let run = || {
        ok(&sftpsync(&[
            "-a",
            "--delete",
            "--sftp-server",
            &wrapper_s,
            &src_s,
            &dest_spec,
        ]))
    };
    run();
    assert_trees_match(&src, &dst);

    std::fs::write(&log, b"").unwrap();
    run();
    let requests = std::fs::read_to_string(&log).unwrap();
    let changing = [
        "open ",
        "set ",
        "rename ",
        "posix-rename ",
        "remove ",
        "mkdir ",
        "rmdir ",
        "symlink ",
        "hardlink ",
    ];
    let changes: Vec<&str> = requests
        .lines()
        .filter(|l| changing.iter().any(|c| l.starts_with(c)))
        .collect();
    assert!(
        changes.is_empty(),
        "a no-change run changed things: {changes:#?}"
    );
    assert!(requests.contains("opendir "), "{requests}");
}

#[test]
fn big_file_writes_are_split_evenly_across_channels() {
    // Regression: 256 KiB source chunks were cut into one full write and a 1 KiB remainder,
    // and taking turns between two channels then sent every full write down the same one.
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let wrapper = tmp.path().join("logging-sftp-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} -e -l DEBUG1 \"$@\" 2>>{}/server.$$\n",
            testkit::sftp_server_path().display(),
            logs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("big"), &big).unwrap();
    let wrapper_s = wrapper.to_str().unwrap().to_string();
    let dest_spec = format!("localhost:{}", slash(&dst));
    ok(&sftpsync(&[
        "-a",
        "--channels=2",
        "--sftp-server",
        &wrapper_s,
        &slash(&src),
        &dest_spec,
    ]));
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), big);

    // sftp-server logs each WRITE as `... write "NAME" (handle N) off X len Y`.
    let mut written: Vec<u64> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .filter(|l| l.contains(": write \""))
                // The one-byte probe of whether the server takes writes out of order.
                .filter(|l| !l.contains("sftpsync-write-probe"))
                .filter_map(|l| l.rsplit("len ").next()?.trim().parse::<u64>().ok())
                .sum()
        })
        .collect();
    written.sort();
    assert_eq!(written.len(), 2, "two channels, two server processes");
    assert_eq!(written.iter().sum::<u64>(), big.len() as u64);
    assert!(
        written[0] * 10 >= written[1] * 9,
        "the channels carried {written:?} bytes: not an even split"
    );
}

//! `--partial`: a transfer cut off leaves `.NAME.partial` on the destination, and the next
//! run goes on from its end once the kept bytes check out against the source.

use testkit::{CutProxy, Fault, Flow, SftpOnlyServer, XorShift};

use super::*;

const SIZE: usize = 8 << 20;

/// Pushes `src/` through a proxy that cuts the connection after `cut` bytes to the server.
fn cut_push(server: &SftpOnlyServer, src: &Path, remote: &str, cut: u64) -> Output {
    cut_push_with(server, &["--partial"], src, remote, cut)
}

fn cut_push_with(
    server: &SftpOnlyServer,
    extra: &[&str],
    src: &Path,
    remote: &str,
    cut: u64,
) -> Output {
    let dest = server.remote_spec(&format!("{remote}/"));
    cut_run(server, Flow::ToServer, extra, &slash(src), &dest, cut)
}

/// Runs sftpsync from `from` to `to` through a proxy that cuts `flow` after `cut` bytes.
fn cut_run(
    server: &SftpOnlyServer,
    flow: Flow,
    extra: &[&str],
    from: &str,
    to: &str,
    cut: u64,
) -> Output {
    let proxy = CutProxy::start(server.port(), vec![Fault::Cut { flow, after: cut }]);
    let ssh = proxy.ssh_command(server);
    let mut args = vec!["-a", "--retries=0", "--channels=1", "-e", &ssh];
    args.extend_from_slice(extra);
    args.push(from);
    args.push(to);
    sftpsync(&args)
}

/// `--partial-dir=/DIR` on a push: the partial is DIR/NAME on the server, outside the
/// destination, and the next run goes on from it and renames the file into place from there.
#[test]
fn absolute_partial_dir_on_push_keeps_the_file_there_and_resumes_from_it() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), XorShift::new(12).bytes(SIZE)).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("abs-partial-push");
    let (parts, parts_local) = server.fresh_remote_dir("abs-partials");
    let flag = format!("--partial-dir={}/{parts}/p", testkit::server::LOGIN_DIR);

    let out = cut_push_with(server, &[&flag], &src, &remote, SIZE as u64 / 2);
    assert_ne!(out.status.code(), Some(0));
    let kept = std::fs::metadata(parts_local.join("p/big"))
        .expect("kept in the absolute partial dir")
        .len();
    assert!(kept > 0 && kept < SIZE as u64, "kept {kept}");
    assert!(names_in(&local).is_empty(), "{:?}", names_in(&local));

    let text = ok(&push(
        server,
        &["-a", "--delete", &flag, "--stats"],
        &src,
        &remote,
    ));
    assert_trees_match_checksum(&src, &local);
    assert!(
        !parts_local.join("p").exists(),
        "the empty partial dir is removed"
    );
    let literal = stats_value(&text, "Literal data");
    let matched = stats_value(&text, "Matched data");
    assert_eq!(literal + matched, SIZE as u64, "{text}");
    assert!(matched >= kept && literal > 0, "kept {kept}: {text}");
}

/// The same on a pull, with DIR on this machine outside the destination.
#[test]
fn absolute_partial_dir_on_pull_keeps_the_file_there_and_resumes_from_it() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, remote_local) = server.fresh_remote_dir("abs-partial-pull");
    std::fs::write(remote_local.join("big"), XorShift::new(13).bytes(SIZE)).unwrap();
    chown_tree(&remote_local, server.uid(), server.gid()).unwrap();
    let dst = tmp.path().join("dst");
    let parts = tmp.path().join("parts/p");
    std::fs::create_dir_all(parts.parent().unwrap()).unwrap();
    let flag = format!("--partial-dir={}", parts.display());
    let from = server.remote_spec(&format!("{remote}/"));

    let out = cut_run(
        server,
        Flow::ToClient,
        &[&flag],
        &from,
        &slash(&dst),
        SIZE as u64 / 2,
    );
    assert_ne!(out.status.code(), Some(0));
    let kept = std::fs::metadata(parts.join("big"))
        .expect("kept in the absolute partial dir")
        .len();
    assert!(kept > 0 && kept < SIZE as u64, "kept {kept}");
    assert!(!dst.join("big").exists());

    let text = ok(&pull(server, &["-a", &flag, "--stats"], &remote, &dst));
    assert_trees_match_checksum(&remote_local, &dst);
    assert!(!parts.exists(), "the empty partial dir is removed");
    let literal = stats_value(&text, "Literal data");
    let matched = stats_value(&text, "Matched data");
    assert_eq!(literal + matched, SIZE as u64, "{text}");
    assert!(matched >= kept && literal > 0, "kept {kept}: {text}");
}

/// In an absolute partial dir every file's partial is named by its base name alone: files of
/// one name in many directories, copied at once, must not use each other's.
#[test]
fn absolute_partial_dir_keeps_files_of_one_name_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..24 {
        let dir = src.join(format!("d{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), XorShift::new(100 + i).bytes(300_000)).unwrap();
    }
    let server = testkit::sftp_server_path();
    let server = server.to_str().unwrap();
    let parts = tmp.path().join("parts");
    let flag = format!("--partial-dir={}", parts.display());

    let pushed = tmp.path().join("pushed");
    ok(&push_through(server, &["-a", &flag], &src, &pushed));
    assert_trees_match_checksum(&src, &pushed);

    let pulled = tmp.path().join("pulled");
    let from = format!("localhost:{}", slash(&src));
    let args = ["--sftp-server", server, "-a", &flag, &from, &slash(&pulled)];
    ok(&sftpsync(&args));
    assert_trees_match_checksum(&src, &pulled);
    assert!(!parts.exists());
}

/// `--partial-dir`: the kept file is DIR/NAME, survives `--delete` until the copy that
/// resumes from it, and DIR goes once it is empty.
#[test]
fn partial_dir_keeps_the_file_there_and_resumes_from_it() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), XorShift::new(11).bytes(SIZE)).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("partial-dir");

    let out = cut_push_with(
        server,
        &["--partial-dir=.part"],
        &src,
        &remote,
        SIZE as u64 / 2,
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(local.join(".part/big").is_file(), "kept in the partial dir");
    assert!(!local.join(".big.partial").exists());

    let flags = ["-a", "--delete", "--partial-dir=.part", "--stats"];
    let text = ok(&push(server, &flags, &src, &remote));
    assert_trees_match_checksum(&src, &local);
    assert!(
        !local.join(".part").exists(),
        "the empty partial dir is removed"
    );
    assert!(stats_value(&text, "Matched data") > 0, "{text}");
}

#[test]
fn partial_push_resumes_where_it_was_cut() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), XorShift::new(5).bytes(SIZE)).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("resume");

    let out = cut_push(server, &src, &remote, SIZE as u64 / 2);
    assert_ne!(out.status.code(), Some(0), "the cut must fail the run");
    let kept = std::fs::metadata(local.join(".big.partial"))
        .expect("the partial file is kept")
        .len();
    assert!(kept > 0 && kept < SIZE as u64, "kept {kept}");
    assert!(!local.join("big").exists());

    let out = push(server, &["-a", "--partial", "--stats"], &src, &remote);
    let text = ok(&out);
    assert_trees_match_checksum(&src, &local);
    assert!(!local.join(".big.partial").exists());
    // The server may still have been writing what it had received when `kept` was read,
    // so the resumed run can find more than that.
    let literal = stats_value(&text, "Literal data");
    let matched = stats_value(&text, "Matched data");
    assert_eq!(literal + matched, SIZE as u64, "{text}");
    assert!(matched >= kept && literal > 0, "kept {kept}: {text}");
}

/// A kept partial whose end does not match the source (the source changed, or the partial
/// was damaged) is thrown away and the file sent whole.
#[test]
fn partial_that_does_not_match_is_sent_again_whole() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), XorShift::new(6).bytes(SIZE)).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("resume-bad");
    std::fs::write(
        local.join(".big.partial"),
        XorShift::new(99).bytes(SIZE / 4),
    )
    .unwrap();
    chown_tree(&local, server.uid(), server.gid()).unwrap();

    let out = push(server, &["-a", "--partial", "--stats"], &src, &remote);
    let text = ok(&out);
    assert_trees_match_checksum(&src, &local);
    assert_eq!(stats_value(&text, "Literal data"), SIZE as u64, "{text}");
    assert!(!local.join(".big.partial").exists());
}

/// Without --partial nothing is kept: the cut run's temp is cleared by the next run.
#[test]
fn without_partial_a_cut_file_is_sent_whole_next_time() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), XorShift::new(7).bytes(SIZE)).unwrap();
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let (remote, local) = server.fresh_remote_dir("no-partial");
    let proxy = CutProxy::start(
        server.port(),
        vec![Fault::Cut {
            flow: Flow::ToServer,
            after: SIZE as u64 / 2,
        }],
    );
    let ssh = proxy.ssh_command(server);
    let dest = server.remote_spec(&format!("{remote}/"));
    let out = sftpsync(&["-a", "--retries=0", "-e", &ssh, &slash(&src), &dest]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!local.join(".big.partial").exists());
    let text = ok(&push(server, &["-a", "--delete", "--stats"], &src, &remote));
    assert_eq!(stats_value(&text, "Literal data"), SIZE as u64, "{text}");
    assert_trees_match_checksum(&src, &local);
}

/// The same on pull: a local `.NAME.partial` that matches is gone on from.
#[test]
fn partial_pull_resumes_from_a_kept_local_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let data = XorShift::new(8).bytes(3 << 20);
    std::fs::write(src.join("f"), &data).unwrap();
    std::fs::write(dst.join(".f.partial"), &data[..1 << 20]).unwrap();
    let server = testkit::sftp_server_path();
    let from = format!("localhost:{}", slash(&src));
    let out = sftpsync(&[
        "-a",
        "--partial",
        "--stats",
        "--sftp-server",
        server.to_str().unwrap(),
        &from,
        &slash(&dst),
    ]);
    let text = ok(&out);
    assert_eq!(stats_value(&text, "Matched data"), 1 << 20, "{text}");
    assert_eq!(stats_value(&text, "Literal data"), 2 << 20, "{text}");
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), data);
    assert!(!dst.join(".f.partial").exists());
}

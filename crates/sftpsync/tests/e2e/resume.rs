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
    let proxy = CutProxy::start(
        server.port(),
        vec![Fault::Cut {
            flow: Flow::ToServer,
            after: cut,
        }],
    );
    let ssh = proxy.ssh_command(server);
    let dest = server.remote_spec(&format!("{remote}/"));
    let mut args = vec!["-a", "--retries=0", "--channels=1", "-e", &ssh];
    args.extend_from_slice(extra);
    let s = slash(src);
    args.push(&s);
    args.push(&dest);
    sftpsync(&args)
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

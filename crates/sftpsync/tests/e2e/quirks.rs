//! Servers that lack or refuse something sftpsync would use: OpenSSH's sftp-server over pipes
//! with requests hidden by `-P`, each detected and worked around once per run.

use super::*;

/// A script that runs sftp-server with `args` (e.g. `-P posix-rename`).
fn sftp_server_with(dir: &Path, name: &str, args: &str) -> String {
    let command = format!("{} {args}", testkit::sftp_server_path().display());
    server_script(dir, name, &command)
}

/// Without posix-rename, replacement falls back to remove + rename and says so once.
#[test]
fn sftp_server_without_posix_rename_still_replaces_files() {
    let tmp = tempfile::tempdir().unwrap();
    let server = sftp_server_with(tmp.path(), "no-rename", "-P posix-rename,copy-data");
    let src = tmp.path().join("src");
    generate_mixed_tree(&src, 77, 200);
    let dst = tmp.path().join("dst");
    ok(&push_through(&server, &["-a", "--delete"], &src, &dst));
    assert_trees_match(&src, &dst);
    mutate_tree(&src, 2);
    let out = push_through(&server, &["-a", "--delete"], &src, &dst);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("not atomically").count(),
        1,
        "warn once per run: {err}"
    );
    assert_trees_match(&src, &dst);
}

/// --require-atomic-replace: a file that exists is not replaced non-atomically; new files
/// still arrive, and the old version stays whole.
#[test]
fn require_atomic_replace_keeps_old_files_without_posix_rename() {
    let tmp = tempfile::tempdir().unwrap();
    let server = sftp_server_with(tmp.path(), "no-rename", "-P posix-rename");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("old"), b"new contents").unwrap();
    std::fs::write(src.join("fresh"), b"fresh").unwrap();
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("old"), b"old").unwrap();

    let out = push_through(&server, &["-r", "--require-atomic-replace"], &src, &dst);
    assert_eq!(out.status.code(), Some(23));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--require-atomic-replace"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("\"old\"")).count(),
        1,
        "{err}"
    );
    assert_eq!(std::fs::read(dst.join("old")).unwrap(), b"old");
    assert_eq!(std::fs::read(dst.join("fresh")).unwrap(), b"fresh");
    let names: Vec<_> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temp file is left: {names:?}");
}

/// A server that refuses SETSTAT: the contents arrive, one warning says times and modes
/// cannot be kept and what to do, and no entry fails for it.
#[test]
fn setstat_refused_warns_once_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let server = sftp_server_with(tmp.path(), "no-setstat", "-P setstat,fsetstat,lsetstat");
    let src = tmp.path().join("src");
    generate_mixed_tree(&src, 5, 300);
    let dst = tmp.path().join("dst");

    let out = push_through(&server, &["-a", "--delete"], &src, &dst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("refuses to set attributes").count(), 1, "{err}");
    assert!(err.contains("--size-only"), "{err}");
    assert_trees_match_with(&src, &dst, &["--no-t", "--no-p", "-c"]);

    // As the warning says: by size, a re-run finds nothing to send.
    let again = ok(&push_through(
        &server,
        &["-ai", "--delete", "--size-only"],
        &src,
        &dst,
    ));
    assert!(
        !again.lines().any(|l| l.starts_with("<f")),
        "nothing to send by size: {again}"
    );
}

/// `--append` opens the receiver's file without cutting anything off, so a server that
/// refuses every attribute change (and so the truncate) can still be appended to.
#[test]
fn append_works_on_a_server_that_refuses_setstat() {
    let tmp = tempfile::tempdir().unwrap();
    let server = sftp_server_with(tmp.path(), "no-setstat-append", "-P setstat,fsetstat");
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let data = testkit::XorShift::new(3).bytes(200_000);
    std::fs::write(src.join("log"), &data).unwrap();
    std::fs::write(dst.join("log"), &data[..50_000]).unwrap();
    let out = push_through(&server, &["-r", "--append", "--stats"], &src, &dst);
    let text = ok(&out);
    let got = std::fs::read(dst.join("log")).unwrap();
    assert!(got == data, "{} bytes, not as sent: {text}", got.len());
    assert_eq!(stats_value(&text, "Literal data"), 150_000, "{text}");
}

/// `--verify` reads each written file back: a server that garbles what it writes is caught,
/// the file fails alone and its old version stays. Without `--verify` the damage goes
/// unseen, which is why the option exists.
#[test]
fn verify_catches_a_server_that_garbles_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} --corrupt-writes -- {}",
        testkit::sftp_filter_path().display(),
        testkit::sftp_server_path().display()
    );
    let garbling = server_script(tmp.path(), "garbling", &command);
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Source times lie in the past: without -t the copies get the time of writing, and one
    // that fell in the source's second would pass the quick check and never be written again.
    write_at(&src.join("f"), b"new contents", 1_000_000_000);
    // Big enough to be indexed without a whole-file hash: --verify takes one all the same.
    let big: Vec<u8> = (0..17u32 << 20).map(|i| (i % 251) as u8).collect();
    write_at(&src.join("big"), &big, 1_000_000_000);
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("f"), b"old").unwrap();

    let out = push_through(&garbling, &["-r", "--verify"], &src, &dst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(23), "{err}");
    for name in ["\"f\"", "\"big\""] {
        assert!(
            err.contains(name) && err.contains("differs from the source"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"old");
    assert_eq!(
        std::fs::read_dir(&dst).unwrap().count(),
        1,
        "no temp file is left"
    );

    ok(&push_through(&garbling, &["-r"], &src, &dst));
    assert_ne!(std::fs::read(dst.join("f")).unwrap(), b"new contents");

    // A healthy server passes the check.
    std::fs::remove_file(dst.join("f")).unwrap();
    let healthy = testkit::sftp_server_path();
    ok(&push_through(
        healthy.to_str().unwrap(),
        &["-r", "--verify"],
        &src,
        &dst,
    ));
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"new contents");
    assert!(std::fs::read(dst.join("big")).unwrap() == big);
}

/// A server whose reads come back short before the end of the file: every file still arrives
/// whole, big ones through several channels included, and `-c` hashes what is really there.
#[test]
fn short_reads_before_eof_are_asked_again() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} --short-reads -- {}",
        testkit::sftp_filter_path().display(),
        testkit::sftp_server_path().display()
    );
    let short = server_script(tmp.path(), "short-reads", &command);
    let served = tmp.path().join("served");
    generate_mixed_tree(&served, 23, 200);
    std::fs::write(
        served.join("big"),
        testkit::XorShift::new(4).bytes(20 << 20),
    )
    .unwrap();
    let dst = tmp.path().join("dst");
    let from = format!("localhost:{}", slash(&served));
    ok(&sftpsync(&[
        "-a",
        "--channels=2",
        "--sftp-server",
        &short,
        &from,
        &slash(&dst),
    ]));
    assert_trees_match(&served, &dst);
    assert_trees_match_checksum(&served, &dst);
    let again = ok(&sftpsync(&[
        "-aic",
        "--sftp-server",
        &short,
        &from,
        &slash(&dst),
    ]));
    assert_eq!(again, "", "-c finds the pulled files equal");
}

/// A server that announces copy-data and then refuses it: a changed file is sent whole
/// instead, once found out, and nothing fails.
#[test]
fn refused_copy_data_sends_whole_files() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} --refuse copy-data -- {}",
        testkit::sftp_filter_path().display(),
        testkit::sftp_server_path().display()
    );
    let refusing = server_script(tmp.path(), "no-copy", &command);
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    let mut data = testkit::XorShift::new(9).bytes(1 << 20);
    for name in ["a", "b"] {
        write_at(&src.join(name), &data, 1_500_000_000);
    }
    let state = tmp.path().join("state");
    let run = |flags: &[&str]| {
        let (s, d) = (slash(&src), format!("localhost:{}", slash(&dst)));
        let mut args = vec!["--sftp-server", refusing.as_str()];
        args.extend_from_slice(flags);
        args.push(&s);
        args.push(&d);
        sftpsync_with_state(&args, &state)
    };
    ok(&run(&["-a"]));
    data[500_000] ^= 1;
    for name in ["a", "b"] {
        write_at(&src.join(name), &data, 1_600_000_000);
    }
    let out = run(&["-a", "--stats"]);
    let text = ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("refuses it").count(), 1, "warned once: {err}");
    assert_trees_match_checksum(&src, &dst);
    assert_eq!(stats_value(&text, "Literal data"), 2 << 20, "{text}");
    assert_eq!(names_in(&dst), ["a", "b"], "no temp file is left");
}

/// A server that lists files without their modification times: one warning, and files are
/// compared by size, so a re-run sends nothing instead of everything.
#[test]
fn listings_without_mtimes_compare_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} --no-reply-times -- {}",
        testkit::sftp_filter_path().display(),
        testkit::sftp_server_path().display()
    );
    let timeless = server_script(tmp.path(), "timeless", &command);
    let src = tmp.path().join("src");
    generate_mixed_tree(&src, 41, 150);
    let dst = tmp.path().join("dst");
    ok(&push_through(&timeless, &["-a"], &src, &dst));
    assert_trees_match(&src, &dst);

    let out = push_through(&timeless, &["-ai"], &src, &dst);
    let text = ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("without modification times").count(),
        1,
        "{err}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("<f")),
        "nothing to send by size: {text}"
    );
}

/// A server allowed few open files (sftp-server under `ulimit -n 40`, which its limits reply
/// reports): sftpsync keeps its open handles within that on each channel, both ways.
#[test]
fn open_handles_stay_within_the_servers_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "ulimit -n 40 && exec {}",
        testkit::sftp_server_path().display()
    );
    let script = tmp.path().join("few-files");
    std::fs::write(&script, format!("#!/bin/sh\n{command} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let limited = script.to_str().unwrap();
    let src = tmp.path().join("src");
    let mut rng = testkit::XorShift::new(17);
    for d in 0..4 {
        for f in 0..150 {
            let path = src.join(format!("d{d}/f{f}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let len = rng.range(1, 5000) as usize;
            std::fs::write(path, rng.bytes(len)).unwrap();
        }
    }
    let dst = tmp.path().join("dst");
    ok(&push_through(limited, &["-a", "--channels=2"], &src, &dst));
    assert_trees_match(&src, &dst);

    let back = tmp.path().join("back");
    let from = format!("localhost:{}", slash(&dst));
    ok(&sftpsync(&[
        "-a",
        "--channels=2",
        "--sftp-server",
        limited,
        &from,
        &slash(&back),
    ]));
    assert_trees_match_checksum(&src, &back);
}

/// gesftpserver says nothing of a handle limit, but breaks past 128 open at once (the 129th
/// slot is handed out again and again, and reads through it fail with "invalid handle"):
/// where a server does not say, sftpsync keeps fewer open. Pulls of many small files would
/// hit it every few runs.
#[test]
fn many_small_files_from_gesftpserver_keep_within_its_handle_table() {
    let server = testkit::gesftpserver::GESFTPSERVER;
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let mut rng = testkit::XorShift::new(29);
    for d in 0..5 {
        for f in 0..200 {
            let path = served.join(format!("d{d}/f{f}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let len = rng.range(10, 4000) as usize;
            std::fs::write(path, rng.bytes(len)).unwrap();
        }
    }
    let from = format!("localhost:{}", slash(&served));
    for run in 0..4 {
        let dst = tmp.path().join(format!("dst{run}"));
        let out = sftpsync(&["-a", "--sftp-server", server, &from, &slash(&dst)]);
        ok(&out);
        assert_trees_match_checksum(&served, &dst);
    }
}

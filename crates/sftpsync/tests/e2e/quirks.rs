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
    std::fs::write(src.join("f"), b"new contents").unwrap();
    // Big enough to be indexed without a whole-file hash: --verify takes one all the same.
    let big: Vec<u8> = (0..17u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big"), &big).unwrap();
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

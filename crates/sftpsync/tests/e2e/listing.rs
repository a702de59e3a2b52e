//! Listing mode (one operand, or `--list-only`) and `-d`: sftpsync's listing of a tree, read
//! locally, through sftp-server over pipes and from the SFTP-only server, must be exactly
//! `rsync --list-only` of the same tree; `-d` must leave the tree and print the lines rsync's
//! `-d` does.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::*;

/// A time zone with a half-hour offset and no files behind it: both programs print local
/// time, and a mistake of a zone or of the half hour shows.
const TZ: &str = "XYZ-5:30";

/// 2026/11/28 10:40:47 UTC, and a second time for the directories.
const T: i64 = 1_795_862_447;
const T_DIRS: i64 = 1_700_000_000;

/// Runs `cmd` in the listing environment (the zone above, a UTF-8 locale); stdout and the
/// exit code.
fn listed(cmd: &mut Command) -> (String, Option<i32>, String) {
    let out = cmd
        .env("TZ", TZ)
        .env("LC_ALL", "C.UTF-8")
        .env("SFTPSYNC_CONFIG", "")
        .env("XDG_STATE_HOME", shared_state_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run a listing");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tree with what a listing shows differently: sizes that need digit groups and units, a
/// setuid file, a sticky directory, a symlink, a FIFO, names with bytes that are not UTF-8,
/// a tab, a backslash that looks like an escape, a filter file; fixed mtimes throughout.
fn listing_tree(server: &TestServer, root: &Path) {
    for d in ["sub/deep", "empty"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    write_at(&root.join("a.txt"), b"hello", T);
    let big = std::fs::File::create(root.join("big")).unwrap();
    big.set_len(1_234_567).unwrap();
    drop(big);
    testkit::set_mtime_nofollow(&root.join("big"), T - 3600).unwrap();
    write_at(&root.join("sub/f"), b"x", T + 1);
    std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    write_at(&root.join("sub/deep/g"), b"yy", T + 2);
    write_at(&root.join("sub/skip.tmp"), b"tmp", T);
    for name in [
        &b"caf\xe9"[..],
        b"ok\xc3\xa9",
        b"tab\tname",
        b"back\\#123slash",
    ] {
        write_at(&root.join(OsStr::from_bytes(name)), b"n", T);
    }
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    testkit::set_mtime_nofollow(&root.join("link"), T + 5).unwrap();
    let fifo = root.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    testkit::set_mtime_nofollow(&fifo, T).unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    for d in ["sub/deep", "sub", "empty", ""] {
        testkit::set_mtime_nofollow(&root.join(d), T_DIRS).unwrap();
    }
    chown_tree(root, server.uid(), server.gid()).unwrap();
}

#[test]
fn listings_match_rsync_locally_over_pipes_and_from_the_server() {
    let server = SftpOnlyServer::shared();
    let (remote, remote_local) = server.fresh_remote_dir("listing");
    listing_tree(server, &remote_local.join("tree"));
    let ssh = server.ssh_command();
    let sftp_server = testkit::sftp_server_path();

    // (flags, operand below the directory holding the tree)
    let cases: &[(&[&str], &str)] = &[
        (&[], "tree"),
        (&[], "tree/"),
        (&["-r"], "tree/"),
        (&["-r"], "tree"),
        (&["-h"], "tree/"),
        (&["-hh", "-r"], "tree/"),
        (&["--no-h", "-r"], "tree/"),
        (&["-l"], "tree/"),
        (&["-a"], "tree/sub"),
        (&["-L", "-r"], "tree/"),
        (&["-r", "--exclude=deep", "--exclude=*.tmp"], "tree/"),
        (&["-r", "--exclude=/sub/"], "tree"),
        (&["-r", "-f", "- /tree/sub/f"], "tree"),
        (&["--no-d"], "tree/"),
        (&["-d"], "tree/sub"),
        (&[], "tree/a.txt"),
        (&["-l"], "tree/link"),
        (&["--list-only"], "tree/sub/"),
        (&["--chmod=go-rwx"], "tree/"),
    ];
    for (flags, operand) in cases {
        let local = format!("{}/{operand}", remote_local.display());
        let (want, want_code, rsync_err) = listed(
            Command::new("rsync")
                .arg("--list-only")
                .args(*flags)
                .arg(&local),
        );
        assert_eq!(want_code, Some(0), "rsync {flags:?} {operand}: {rsync_err}");
        assert!(!want.is_empty(), "{flags:?} {operand}");

        let bin = env!("CARGO_BIN_EXE_sftpsync");
        let pipe = format!("localhost:{local}");
        let over_ssh = server.remote_spec(&format!("{remote}/{operand}"));
        let runs: [(&str, Vec<&str>); 3] = [
            ("local", vec![&local]),
            (
                "pipe",
                vec!["--sftp-server", sftp_server.to_str().unwrap(), &pipe],
            ),
            ("ssh", vec!["-e", &ssh, &over_ssh]),
        ];
        for (how, operands) in runs {
            let (got, code, err) = listed(Command::new(bin).args(*flags).args(&operands));
            assert_eq!(code, Some(0), "{how} {flags:?} {operand}: {err}");
            assert_eq!(got, want, "{how} {flags:?} {operand}: {err}");
        }
    }
}

#[test]
fn a_missing_source_fails_with_code_23_as_in_rsync() {
    let server = SftpOnlyServer::shared();
    let (remote, remote_local) = server.fresh_remote_dir("listing-missing");
    listing_tree(server, &remote_local.join("tree"));
    let ssh = server.ssh_command();
    let sftp_server = testkit::sftp_server_path();
    let bin = env!("CARGO_BIN_EXE_sftpsync");

    for (operand, op) in [
        ("nothere", "link_stat"),
        ("nothere/", "change_dir"),
        ("tree/nothere", "link_stat"),
    ] {
        let local = format!("{}/{operand}", remote_local.display());
        let (want, want_code, rsync_err) =
            listed(Command::new("rsync").arg("--list-only").arg(&local));
        assert_eq!(want_code, Some(23), "{rsync_err}");
        assert!(rsync_err.contains(op), "{rsync_err}");
        let pipe = format!("localhost:{local}");
        let over_ssh = server.remote_spec(&format!("{remote}/{operand}"));
        let runs: [(&str, Vec<&str>); 3] = [
            ("local", vec![&local]),
            (
                "pipe",
                vec!["--sftp-server", sftp_server.to_str().unwrap(), &pipe],
            ),
            ("ssh", vec!["-e", &ssh, &over_ssh]),
        ];
        for (how, operands) in runs {
            let (got, code, err) = listed(Command::new(bin).args(&operands));
            assert_eq!(
                (got.as_str(), code),
                (want.as_str(), Some(23)),
                "{how}: {err}"
            );
            let name = operand.trim_end_matches('/');
            assert!(
                err.contains(op) && err.contains(name),
                "{how} {operand}: {err}"
            );
            assert!(err.contains("No such file or directory"), "{how}: {err}");
            assert!(err.contains("(code 23)"), "{how}: {err}");
        }
    }

    // The rest is still listed, as rsync lists it.
    let local = |p: &str| format!("{}/{p}", remote_local.display());
    let (want, want_code, _) = listed(Command::new("rsync").arg("--list-only").args([
        local("tree/a.txt"),
        local("gone"),
        local("tree/big"),
        local("dest"),
    ]));
    let (got, code, _) = listed(
        Command::new(env!("CARGO_BIN_EXE_sftpsync"))
            .arg("--list-only")
            .args([
                local("tree/a.txt"),
                local("gone"),
                local("tree/big"),
                local("dest"),
            ]),
    );
    assert_eq!((got, code), (want, want_code));
    assert_eq!(want_code, Some(23));
    assert!(
        !remote_local.join("dest").exists(),
        "a listing creates nothing"
    );
}

#[test]
fn json_listing_has_one_object_per_entry() {
    let server = SftpOnlyServer::shared();
    let (_, remote_local) = server.fresh_remote_dir("listing-json");
    let tree = remote_local.join("tree");
    listing_tree(server, &tree);
    let (text, _, _) = listed(Command::new("rsync").args(["--list-only", "-rl", &slash(&tree)]));
    let (json, code, err) =
        listed(Command::new(env!("CARGO_BIN_EXE_sftpsync")).args(["--json", "-rl", &slash(&tree)]));
    assert_eq!(code, Some(0), "{err}");
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries: Vec<&serde_json::Value> =
        objects.iter().filter(|o| o["type"] == "entry").collect();
    assert_eq!(entries.len(), text.lines().count(), "{json}");
    assert_eq!(objects.last().unwrap()["type"], "summary");
    assert_eq!(entries[0]["path"], ".");
    let link = entries.iter().find(|e| e["path"] == "link").unwrap();
    assert_eq!(
        (&link["kind"], &link["symlink_target"]),
        (&"symlink".into(), &"a.txt".into())
    );
    let latin1 = entries
        .iter()
        .find(|e| e.get("path_base64").is_some())
        .expect("the non-UTF-8 name");
    assert_eq!(latin1["path_base64"], "Y2Fm6Q==");
    let big = entries.iter().find(|e| e["path"] == "big").unwrap();
    assert_eq!(
        (&big["size"], &big["mtime"]),
        (&1_234_567.into(), &(T - 3600).into())
    );
}

/// A destination with extras at its top, in a directory the source has too, and in one it
/// lacks; fixed mtimes, so the trees can be compared to the second.
fn dirs_destination(dst: &Path) {
    for d in ["sub/old-dir", "gone/inside", "empty"] {
        std::fs::create_dir_all(dst.join(d)).unwrap();
    }
    write_at(&dst.join("extra"), b"e", T);
    write_at(&dst.join("sub/old-file"), b"o", T);
    write_at(&dst.join("gone/inside/f"), b"g", T);
    write_at(&dst.join("keep.tmp"), b"k", T);
    for d in ["sub/old-dir", "gone/inside", "gone", "sub", "empty", ""] {
        testkit::set_mtime_nofollow(&dst.join(d), T_DIRS).unwrap();
    }
}

/// sftpsync's itemized lines for `flags SRC_OPERAND DEST`, through sftp-server over pipes.
fn pipe_run(flags: &[&str], src: &str, dst: &Path) -> Vec<String> {
    let server = testkit::sftp_server_path();
    let mut args = vec!["--sftp-server", server.to_str().unwrap()];
    args.extend_from_slice(flags);
    let dest = format!("localhost:{}", slash(dst));
    args.push(src);
    args.push(&dest);
    let out = ok(&sftpsync(&args));
    // A push sends ('<'); rsync's local copy, the oracle, receives ('>').
    out.lines().map(|l| l.replacen("<f", ">f", 1)).collect()
}

#[test]
fn dirs_sends_directories_without_contents_and_deletes_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let server = SftpOnlyServer::shared();
    listing_tree(server, &src);
    // rsync skips the FIFO without -D, and so do we; its message is the same either way.
    std::fs::remove_file(src.join("fifo")).unwrap();
    testkit::set_mtime_nofollow(&src, T_DIRS).unwrap();
    std::fs::write(tmp.path().join("list"), "sub/\na.txt\n").unwrap();
    let list = format!("--files-from={}", tmp.path().join("list").display());

    // (flags, source operand below tmp)
    let cases: &[(&[&str], &str)] = &[
        (&["-dtpl"], "src/"),
        (&["-dtpl", "--delete"], "src/"),
        (&["-dtpl", "--delete-before", "--exclude=*.tmp"], "src/"),
        (&["-dtpl", "--delete-after"], "src/"),
        // A named directory is sent as an entry: nothing at the top is deleted.
        (&["-dtpl", "--delete"], "src"),
        (&["-rtpl", "--delete"], "src"),
        (&["-dtp", "--delete"], "src/sub"),
        // --files-from implies -d: a listed directory's contents are sent and cleaned.
        (&["-tp", "--delete", &list], "src/"),
    ];
    for (n, (flags, operand)) in cases.iter().enumerate() {
        let oracle = tmp.path().join(format!("oracle{n}"));
        let dst = tmp.path().join(format!("dst{n}"));
        dirs_destination(&oracle);
        dirs_destination(&dst);
        let src_operand = format!("{}/{operand}", tmp.path().display());
        let mut flags_i = flags.to_vec();
        flags_i.push("-i");

        let rsync = Command::new("rsync")
            .args(&flags_i)
            .arg(&src_operand)
            .arg(slash(&oracle))
            .output()
            .unwrap();
        assert!(rsync.status.success(), "{flags:?}");
        let mut want: Vec<String> = String::from_utf8_lossy(&rsync.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let mut got = pipe_run(&flags_i, &src_operand, &dst);
        // The order of the root's own line among the deletions differs from rsync's (as it
        // does with -r); what is printed may not.
        want.sort();
        got.sort();
        assert_eq!(got, want, "{flags:?} {operand}");
        if !operand.ends_with('/') || flags.contains(&list.as_str()) {
            // The destination itself is not sent, so its mtime is when the new entry came,
            // which may be another second on each side.
            for root in [&oracle, &dst] {
                testkit::set_mtime_nofollow(root, T_DIRS).unwrap();
            }
        }
        assert_trees_match_with(&oracle, &dst, &["--no-o", "--no-g"]);
    }
}

//! rsync options that are accepted for what they mean over SFTP: the compression options
//! (which decide whether ssh compresses), `--checksum-choice`/`--checksum-seed` and
//! `--max-alloc` (checked, then moot), and `--stderr`/`--msgs2stderr` (where messages go),
//! each compared with what rsync 3.x does with the same values; and `-T DIR`, compared
//! with rsync's `-T` on the same trees.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use super::controls::logging_ssh;
use super::*;

/// A fixed time for the fixtures, far from the wall clock.
const T: i64 = 1_500_000_000;

/// A remote shell for rsync that drops the host name and runs the command here, so that
/// rsync talks to a real rsync server over a pipe and its compression can be measured.
fn local_shell(dir: &Path) -> String {
    server_script(dir, "here", "sh -c 'shift; exec sh -c \"$*\"' here")
}

/// Whether rsync compresses file data with these options: a 2 MB run of zeros crosses the
/// pipe in a few KB when it does.
fn rsync_compresses(flags: &[&str], src: &Path, tmp: &Path) -> bool {
    let dst = tmp.join("rsync-dst");
    let _ = std::fs::remove_dir_all(&dst);
    let out = Command::new("rsync")
        .args(["-r", "--stats", "-e", &local_shell(tmp)])
        .args(flags)
        .arg(format!("localhost:{}", slash(src)))
        .arg(slash(&dst))
        .output()
        .expect("run rsync");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "rsync {flags:?}: {out:?}");
    stats_value(&text, "Total bytes received") < 100_000
}

#[test]
fn compression_options_decide_like_rsync_whether_ssh_compresses() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("zeros"), &vec![0u8; 2_000_000], T);
    chown_tree(&src, server.uid(), server.gid()).unwrap();
    let log = tmp.path().join("ssh.log");
    let ssh = logging_ssh(tmp.path(), &log);
    let rsh = server
        .ssh_command()
        .replacen("ssh", ssh.to_str().unwrap(), 1);

    let cases: &[&[&str]] = &[
        &["-z"],
        &[],
        &["--zl=5"],
        &["-z", "--compress-level=0"],
        &["-z", "--zc=zlib", "--zl=0"],
        &["--old-compress", "--zl=0"],
        &["--zc=zstd"],
        &["--zc=auto"],
        &["--zc=none", "-z"],
        &["-z", "--compress-choice=zstd", "--zc=none"],
        &["--zc=zstd", "--no-z"],
        &["--new-compress"],
        &["--zl=5", "--no-z"],
        &["--zt=4"],
        &["-z", "--zt=4", "--skip-compress=gz/jpg"],
    ];
    for (i, flags) in cases.iter().enumerate() {
        let expected = rsync_compresses(flags, &src, tmp.path());
        let _ = std::fs::remove_file(&log);
        let (remote, local) = server.fresh_remote_dir(&format!("accepted-z{i}"));
        let dest = server.remote_spec(&format!("{remote}/"));
        let mut args = vec!["-a", "--channels=1", "-e", &rsh];
        args.extend_from_slice(flags);
        let (s, d) = (slash(&src), dest.clone());
        args.push(&s);
        args.push(&d);
        ok(&sftpsync(&args));
        assert_trees_match(&src, &local);
        let words = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            words.contains("-oCompression=yes"),
            expected,
            "{flags:?}: rsync compresses: {expected}; ssh was run with {words}"
        );
    }

    // -v says that the level and the choice do not reach ssh.
    let (remote, _) = server.fresh_remote_dir("accepted-znote");
    let dest = server.remote_spec(&format!("{remote}/"));
    let out = sftpsync(&[
        "-av",
        "--zl=9",
        "--channels=1",
        "-e",
        &rsh,
        &slash(&src),
        &dest,
    ]);
    let text = ok(&out);
    assert!(
        text.contains("--compress-level=9 not applied: ssh compresses"),
        "{text}"
    );
    let out = sftpsync(&[
        "-a",
        "--zl=9",
        "--channels=1",
        "-e",
        &rsh,
        &slash(&src),
        &dest,
    ]);
    assert!(!ok(&out).contains("not applied"));
}

/// The first line rsync or sftpsync prints on stderr, without the program's name.
fn first_error(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("rsync: ")
        .or_else(|| line.strip_prefix("sftpsync: "))
        .unwrap_or(line)
        .to_string()
}

#[test]
fn bad_values_are_refused_with_rsyncs_message_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("f"), b"data", T);
    for bad in [
        "--zc=foo",
        "--compress-choice=zlib,zstd",
        "--zl=x",
        "--compress-level=99999999999",
        "--zt=x",
        "--cc=foo",
        "--checksum-choice=md5,sha1,xxh3",
        "--cc=,md5",
        "--checksum-seed=x",
        "--max-alloc=1",
        "--max-alloc=100k",
        "--max-alloc=x",
        "--max-alloc=-1",
        "--max-alloc=9000p",
        "--stderr=foo",
        "--stderr=ALL",
    ] {
        let theirs = Command::new("rsync")
            .args(["-r", bad])
            .arg(slash(&src))
            .arg(slash(&tmp.path().join("rsync-dst")))
            .output()
            .unwrap();
        let ours = pipe_push(&["-r", bad], &src, &tmp.path().join("dst"));
        assert_eq!(ours.status.code(), theirs.status.code(), "{bad}: {ours:?}");
        assert_ne!(ours.status.code(), Some(0), "{bad}");
        assert_eq!(first_error(&ours), first_error(&theirs), "{bad}");
        assert!(!tmp.path().join("dst").exists(), "{bad}");
    }
}

#[test]
fn checksum_and_alloc_options_are_accepted_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    generate_mixed_tree(&src, 11, 30);
    let flags = [
        "-a",
        "--cc=xxh128,md5",
        "--checksum-seed=7",
        "--max-alloc=1g",
        "--skip-compress=gz",
        "--zt=2",
    ];
    let plain = tmp.path().join("plain");
    let with = tmp.path().join("with");
    let a = ok(&pipe_push(&["-ai"], &src, &plain));
    let mut args = flags.to_vec();
    args.push("-i");
    let b = ok(&pipe_push(&args, &src, &with));
    assert_eq!(a.replace("/plain", "/with"), b);
    assert_trees_match(&src, &with);
    // With -c the choice of hash still changes nothing: nothing is sent again.
    let mut args = flags.to_vec();
    args.extend(["-c", "-i", "--cc=md4"]);
    assert_eq!(ok(&pipe_push(&args, &src, &with)), "");
}

/// `rsync FLAGS SRC/ DST/` (or only SRC with `dst` `None`), local.
fn rsync_local(flags: &[&str], src: &Path, dst: Option<&Path>) -> Output {
    let mut cmd = Command::new("rsync");
    cmd.args(flags).arg(slash(src));
    if let Some(d) = dst {
        cmd.arg(slash(d));
    }
    cmd.output().expect("run rsync")
}

#[test]
fn stderr_all_and_msgs2stderr_move_every_message_to_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("one"), b"1", T);
    write_at(&src.join("two"), b"22", T);
    let mut n = 0;
    for (route, to_stderr) in [
        (&["--stderr=all"][..], true),
        (&["--msgs2stderr"], true),
        (&["--stderr=a"], true),
        (&["--stderr=errors"], false),
        (&["--stderr=client"], false),
        (&["--msgs2stderr", "--no-msgs2stderr"], false),
        (&[], false),
    ] {
        n += 1;
        let mut flags = vec!["-av", "--stats"];
        flags.extend_from_slice(route);
        let theirs = rsync_local(&flags, &src, Some(&tmp.path().join(format!("r{n}"))));
        let ours = pipe_push(&flags, &src, &tmp.path().join(format!("o{n}")));
        ok(&ours);
        assert!(theirs.status.success());
        for (who, out) in [("rsync", &theirs), ("sftpsync", &ours)] {
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            let (messages, empty) = if to_stderr {
                (&stderr, &stdout)
            } else {
                (&stdout, &stderr)
            };
            assert!(empty.is_empty(), "{who} {route:?}: {empty}");
            for line in [
                "sending incremental file list",
                "one",
                "two",
                "Number of files",
            ] {
                assert!(
                    messages.lines().any(|l| l.starts_with(line)),
                    "{who} {route:?}: no {line} in {messages}"
                );
            }
        }

        // A listing is messages too.
        let theirs = rsync_local(&[&["-r"], route].concat(), &src, None);
        let ours = sftpsync(&[&["-r"], route, &[&slash(&src)]].concat());
        for (who, out) in [("rsync", &theirs), ("sftpsync", &ours)] {
            let shown = if to_stderr { &out.stderr } else { &out.stdout };
            let other = if to_stderr { &out.stdout } else { &out.stderr };
            assert!(other.is_empty(), "{who} {route:?}: {out:?}");
            assert!(String::from_utf8_lossy(shown).contains(" one\n"), "{who}");
        }
    }

    // Errors go to stderr either way, and the messages with them under --stderr=all.
    let out = pipe_push(
        &["-av", "--stderr=all"],
        &tmp.path().join("missing"),
        &tmp.path().join("x"),
    );
    assert_eq!(out.status.code(), Some(23));
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

/// Pulls `src/` (served by sftp-server over pipes) into `dst/`.
fn pipe_pull(extra: &[&str], src: &Path, dst: &Path) -> Output {
    let server = testkit::sftp_server_path();
    let mut args = vec!["--sftp-server", server.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (s, d) = (format!("localhost:{}", slash(src)), slash(dst));
    args.push(&s);
    args.push(&d);
    sftpsync(&args)
}

fn itemized(out: &Output) -> Vec<String> {
    sorted_items(&String::from_utf8_lossy(&out.stdout))
}

/// A source tree and an older destination with one file to replace, one to create and one
/// left alone.
fn temp_dir_fixture(src: &Path, dst: &Path) {
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::create_dir_all(dst.join("sub")).unwrap();
    write_at(&src.join("changed"), b"the new version", T + 10);
    write_at(&dst.join("changed"), b"old", T);
    write_at(&src.join("sub/new"), &vec![7u8; 300_000], T);
    write_at(&src.join("same"), b"same", T);
    write_at(&dst.join("same"), b"same", T);
    for d in [src, dst] {
        testkit::set_mtime_nofollow(&d.join("sub"), T).unwrap();
        testkit::set_mtime_nofollow(d, T).unwrap();
    }
}

#[test]
fn temp_dir_holds_new_versions_until_they_are_renamed_into_place_as_rsyncs_do() {
    let tmp = tempfile::tempdir().unwrap();
    // Another file system for DIR, where there is one: renames from it fail (EXDEV).
    let other_fs = tempfile::tempdir_in("/dev/shm").ok();
    // None: a relative DIR inside DEST (rsync 3.4+ refuses one with ".." in it).
    let mut cases: Vec<(&str, Option<&Path>)> =
        vec![("relative", None), ("same-fs", Some(tmp.path()))];
    if let Some(d) = &other_fs {
        cases.push(("other-fs", Some(d.path())));
    }
    for (way, push) in [("push", true), ("pull", false)] {
        for (place, fs_root) in &cases {
            let case = tmp.path().join(format!("{way}-{place}"));
            let src = case.join("src");
            let (theirs, ours) = (case.join("rsync-dst"), case.join("our-dst"));
            temp_dir_fixture(&src, &theirs);
            temp_dir_fixture(&case.join("unused"), &ours);
            // A relative DIR is taken from DEST; an absolute one as it is.
            let (their_dir, our_dir, their_arg, our_arg) = match fs_root {
                None => {
                    let (a, b) = (theirs.join("tmpd"), ours.join("tmpd"));
                    (a, b, "tmpd".to_string(), "tmpd".to_string())
                }
                Some(root) => {
                    let (a, b) = (
                        root.join(format!("{way}-rsync")),
                        root.join(format!("{way}-ours")),
                    );
                    let args = (a.display().to_string(), b.display().to_string());
                    (a, b, args.0, args.1)
                }
            };
            for d in [&their_dir, &our_dir] {
                std::fs::create_dir(d).unwrap();
                testkit::set_mtime_nofollow(d, T).unwrap();
            }
            let rsync = Command::new("rsync")
                .args(["-ai", "-T", &their_arg])
                .arg(slash(&src))
                .arg(slash(&theirs))
                .output()
                .unwrap();
            assert!(rsync.status.success(), "{rsync:?}");
            let flags = ["-ai", "-T", &our_arg, "--debug=sftp"];
            let out = if push {
                pipe_push(&flags, &src, &ours)
            } else {
                pipe_pull(&flags, &src, &ours)
            };
            ok(&out);
            let what = format!("{way} {place}");
            assert_eq!(itemized(&out), itemized(&rsync), "{what}");
            // DIR was used (its mtime moved) and is empty again, as rsync's.
            for d in [&their_dir, &our_dir] {
                assert!(names_in(d).is_empty(), "{what}: {:?}", names_in(d));
                let mtime = std::fs::metadata(d).unwrap().mtime();
                assert_ne!(mtime, T, "{what}: nothing was written in {}", d.display());
            }
            if fs_root.is_none() {
                // DIR is part of the trees: its time is now, not the source's.
                testkit::set_mtime_nofollow(&their_dir, T).unwrap();
                testkit::set_mtime_nofollow(&our_dir, T).unwrap();
            }
            assert_trees_match(&theirs, &ours);
            if push {
                // The server was asked to create each new version in DIR; only a rename
                // across file systems falls back to a copy beside the file.
                let log = String::from_utf8_lossy(&out.stderr);
                let created: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(" OPEN ") && l.contains("creat"))
                    .collect();
                let in_dir = format!("{}/.", our_dir.display());
                for name in ["changed", "new"] {
                    assert!(
                        created
                            .iter()
                            .any(|l| l.contains(&in_dir) && l.contains(&format!("/.{name}."))),
                        "{what}: {name} not created in DIR: {created:#?}"
                    );
                }
                if *place != "other-fs" {
                    assert!(
                        created.iter().all(|l| l.contains(&in_dir)),
                        "{what}: {created:#?}"
                    );
                } else {
                    // The server could not rename across: the copies beside the files.
                    assert!(
                        created.iter().any(|l| !l.contains(&in_dir)),
                        "{what}: {created:#?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_missing_temp_dir_stops_the_run_as_in_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_at(&src.join("f"), b"data", T);
    let missing = tmp.path().join("no-such-dir");
    let theirs = Command::new("rsync")
        .args(["-a", "-T", missing.to_str().unwrap()])
        .arg(slash(&src))
        .arg(slash(&tmp.path().join("rsync-dst")))
        .output()
        .unwrap();
    for out in [
        pipe_push(
            &["-a", "-T", missing.to_str().unwrap()],
            &src,
            &tmp.path().join("push"),
        ),
        pipe_pull(
            &["-a", "-T", missing.to_str().unwrap()],
            &src,
            &tmp.path().join("pull"),
        ),
    ] {
        assert_eq!(out.status.code(), theirs.status.code(), "{out:?}");
        let message = format!("The temp-dir does not exist: {}", missing.display());
        assert!(String::from_utf8_lossy(&theirs.stderr).contains(&message));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&message),
            "{out:?}"
        );
    }
    assert!(!tmp.path().join("push/f").exists());
    assert!(!tmp.path().join("pull/f").exists());
    assert!(!tmp.path().join("rsync-dst/f").exists());
}

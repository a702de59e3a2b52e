//! rsync options that are accepted for what they mean over SFTP: the compression options
//! (which decide whether ssh compresses), `--checksum-choice`/`--checksum-seed` and
//! `--max-alloc` (checked, then moot), and `--stderr`/`--msgs2stderr` (where messages go),
//! each compared with what rsync 3.x does with the same values.

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

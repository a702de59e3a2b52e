//! Behaviours at the edges of rsync's command line, each checked against real rsync on the
//! same tree (rsync local to local as the oracle, sftpsync pushing and pulling through
//! sftp-server over pipes): the filter rules on the names given on the command line, which
//! directories and non-regular files are reported as skipped and where, the line before
//! the file list, and how names are escaped in each locale with and without `-8`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::*;

const T: i64 = 1_700_000_000;
const T_DIRS: i64 = 1_600_000_000;

/// Which way sftpsync runs against sftp-server over pipes.
#[derive(Clone, Copy, Debug)]
enum Way {
    Push,
    Pull,
}

const WAYS: [Way; 2] = [Way::Push, Way::Pull];

/// Runs a program with `env` set (and the caller's config and index kept out); returns
/// stdout, stderr and the exit code.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> (Vec<u8>, String, Option<i32>) {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .env("SFTPSYNC_CONFIG", "")
        .env("XDG_STATE_HOME", shared_state_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// A remote shell for rsync that runs here the command it is given: rsync pushing or
/// pulling through it runs as over ssh (a server process on the other end), so the lines
/// it prints are those of a push or a pull.
fn rsh(tmp: &Path) -> String {
    server_script(tmp, "rsh", "sh -c 'shift; exec \"$@\"' rsh")
}

/// The remote side's operand: `localhost:PATH`.
fn remote(path: &str) -> String {
    format!("localhost:{path}")
}

/// rsync pushing (`sources` local, `dest` remote) or pulling (the other way) through
/// [`rsh`], with `flags`.
fn rsync(
    way: Way,
    rsh: &str,
    flags: &[&str],
    sources: &[String],
    dest: &str,
    env: &[(&str, &str)],
) -> Output3 {
    let mut args: Vec<String> = vec!["-e".into(), rsh.into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    match way {
        Way::Push => {
            args.extend(sources.iter().cloned());
            args.push(remote(dest));
        }
        Way::Pull => {
            args.extend(sources.iter().map(|s| remote(s)));
            args.push(dest.to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Output3::from(run("rsync", &args, env))
}

/// sftpsync with `flags` and the same operands, the remote side served by sftp-server over
/// pipes: the destination on a push, the sources on a pull.
fn ours(way: Way, flags: &[&str], sources: &[String], dest: &str, env: &[(&str, &str)]) -> Output3 {
    let server = testkit::sftp_server_path().display().to_string();
    let mut args: Vec<String> = vec!["--sftp-server".into(), server];
    args.extend(flags.iter().map(|f| f.to_string()));
    match way {
        Way::Push => {
            args.extend(sources.iter().cloned());
            args.push(remote(dest));
        }
        Way::Pull => {
            args.extend(sources.iter().map(|s| remote(s)));
            args.push(dest.to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Output3::from(run(env!("CARGO_BIN_EXE_sftpsync"), &args, env))
}

/// What a run printed, and how it ended.
struct Output3 {
    stdout: Vec<u8>,
    stderr: String,
    code: Option<i32>,
}

impl From<(Vec<u8>, String, Option<i32>)> for Output3 {
    fn from((stdout, stderr, code): (Vec<u8>, String, Option<i32>)) -> Output3 {
        Output3 {
            stdout,
            stderr,
            code,
        }
    }
}

impl Output3 {
    /// Stdout's lines as bytes (names may not be UTF-8), without the closing numbers that
    /// count bytes on the wire and `created directory` lines, which name the destination
    /// as each program was given it.
    fn lines(&self) -> Vec<Vec<u8>> {
        self.stdout
            .split(|&b| b == b'\n')
            .filter(|l| {
                !l.starts_with(b"sent ")
                    && !l.starts_with(b"total size is ")
                    && !l.starts_with(b"created directory ")
            })
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The lines sorted (the order of rsync's lines depends on which of its processes
    /// prints them), each as its bytes with those outside printable ASCII escaped: equal
    /// when the bytes are, and readable when not.
    fn sorted_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .lines()
            .iter()
            .map(|l| l.escape_ascii().to_string())
            .collect();
        lines.sort();
        lines
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// `src/a`, `src/sub/b` and `src/sub/deep/c`, with fixed mtimes.
fn small_tree(src: &Path) {
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    write_at(&src.join("a"), b"a\n", T);
    write_at(&src.join("sub/b"), b"bb\n", T + 1);
    write_at(&src.join("sub/deep/c"), b"ccc\n", T + 2);
    for d in ["sub/deep", "sub", ""] {
        testkit::set_mtime_nofollow(&src.join(d), T_DIRS).unwrap();
    }
}

/// Gives the directories a run may have made or changed (the destination and what is at
/// the top of `parent`) one mtime, so that trees made a second apart compare equal.
fn settle_dirs(parent: &Path) {
    for e in std::fs::read_dir(parent).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            testkit::set_mtime_nofollow(&path, T_DIRS).unwrap();
        }
    }
    testkit::set_mtime_nofollow(parent, T_DIRS).unwrap();
}

/// The same run by rsync and by sftpsync, pushing and pulling, must print the same lines
/// (in any order) and leave the same tree; the destination is `dest` inside a fresh
/// directory that holds an empty `dst` with a fixed mtime.
fn compare_with_rsync(tmp: &Path, n: usize, flags: &[&str], sources: &[&str], dest: &str) {
    let rsh = rsh(tmp);
    let sources: Vec<String> = sources
        .iter()
        .map(|s| format!("{}/{s}", tmp.display()))
        .collect();
    for way in WAYS {
        let fresh = |name: String| {
            let parent = tmp.join(name);
            std::fs::create_dir_all(parent.join("dst")).unwrap();
            settle_dirs(&parent);
            parent
        };
        let oracle = fresh(format!("{way:?}-oracle{n}"));
        let parent = fresh(format!("{way:?}{n}"));
        let dest_in = |parent: &Path| format!("{}/{dest}", parent.display());
        let want = rsync(way, &rsh, flags, &sources, &dest_in(&oracle), &[]);
        let got = ours(way, flags, &sources, &dest_in(&parent), &[]);
        let what = format!("{way:?} {flags:?} {sources:?} {dest}");
        assert_eq!(
            (got.code, got.stderr.as_str()),
            (want.code, want.stderr.as_str()),
            "{what}"
        );
        assert_eq!(
            got.sorted_lines(),
            want.sorted_lines(),
            "{what}:\n{}\nrsync:\n{}",
            got.text(),
            want.text()
        );
        settle_dirs(&oracle);
        settle_dirs(&parent);
        // Without -t each copy gets the time it was written, which the two runs need not
        // share to the second: contents are compared instead.
        let keeps_times = flags
            .iter()
            .any(|f| f.starts_with('-') && !f.starts_with("--") && f.contains(['t', 'a']));
        let compare: &[&str] = if keeps_times {
            &["--no-o", "--no-g"]
        } else {
            &["--no-o", "--no-g", "--no-t", "-c"]
        };
        assert_trees_match_with(&oracle, &parent, compare);
    }
}

#[test]
fn names_on_the_command_line_are_filtered_like_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    small_tree(&tmp.path().join("src"));
    // (flags, sources below tmp, destination below the case's directory)
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&["-rti", "--exclude=src"], &["src"], "dst/"),
        (&["-rti", "--exclude=/src"], &["src"], "dst/"),
        (&["-rti", "--exclude=src/"], &["src"], "dst/"),
        (
            &["-rti", "--exclude=src/", "--include=src"],
            &["src"],
            "dst/",
        ),
        (
            &["-rti", "--include=src", "--exclude=src/"],
            &["src"],
            "dst/",
        ),
        (&["-rti", "--include=src", "--exclude=*"], &["src"], "dst/"),
        (&["-rti", "-f", "- src"], &["src"], "dst/"),
        (&["-rti", "--exclude=src/a"], &["src"], "dst/"),
        // A file is left out by a pattern that matches only files.
        (
            &["-rti", "--exclude=a", "--exclude=sub/"],
            &["src/a", "src/sub"],
            "dst/",
        ),
        (&["-rti", "--exclude=sub"], &["src/a", "src/sub"], "dst/"),
        // The name is matched as the top of the transfer: its last component, anchored.
        (&["-rti", "--exclude=/b"], &["src/sub/b", "src/a"], "dst/"),
        (&["-rti", "--exclude=sub/b"], &["src/sub/b"], "dst/"),
        (&["-rti", "--exclude=/deep/"], &["src/sub/deep"], "dst/"),
        (&["-rti", "--exclude=/deep/c"], &["src/sub/deep"], "dst/"),
        // `dir/`: the directory itself is not filtered, its contents are.
        (&["-rti", "--exclude=*"], &["src/"], "dst/"),
        (&["-rti", "--exclude=/", "--exclude=."], &["src/"], "dst/"),
        (
            &["-rti", "--exclude=/a", "--exclude=sub/"],
            &["src/"],
            "dst/",
        ),
        // Excluded before it could be skipped: no "skipping directory".
        (&["-ti", "--exclude=src"], &["src"], "dst/"),
        (&["-ti", "--exclude=sub"], &["src/sub", "src/a"], "dst/"),
        (&["-dti", "--exclude=sub/"], &["src/sub", "src/a"], "dst/"),
        // One file to a new name, left out: nothing is written.
        (&["-ti", "--exclude=a"], &["src/a"], "dst/new"),
        // Nothing sent: a missing destination is made only when named as a directory.
        (&["-rti", "--exclude=src"], &["src"], "missing"),
        (&["-rti", "--exclude=src"], &["src"], "missing/"),
        // rsync's rule is on its file list: one file left of two names is copied to the
        // new name. (Without -i: rsync itemizes it by its source name, sftpsync by the new.)
        (&["-rt", "--exclude=src"], &["src/a", "src"], "missing"),
        (&["-t"], &["src/a", "src"], "missing"),
        (&["-ti"], &["src"], "missing"),
        (&["-ti"], &["src/"], "missing"),
        (&["-rti"], &["src"], "missing"),
    ];
    for (n, (flags, sources, dest)) in cases.iter().enumerate() {
        compare_with_rsync(tmp.path(), n, flags, sources, dest);
    }
}

#[test]
fn skipped_directories_are_told_on_stdout_unless_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    small_tree(&tmp.path().join("src"));
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["src"]),
        (&[], &["src/"]),
        (&["-q"], &["src"]),
        (&["-q"], &["src/"]),
        (&["-v"], &["src"]),
        (&["-v"], &["src/"]),
        (&["-i"], &["src/sub", "src/a"]),
        (&["-t", "--info=name0"], &["src/sub", "src/a"]),
        (&["-vi", "-t"], &["src/", "src/sub", "src/a"]),
    ];
    for (n, (flags, sources)) in cases.iter().enumerate() {
        compare_with_rsync(tmp.path(), n, flags, sources, "dst/");
    }
    // The lines themselves, not only the same as rsync's.
    let src = format!("{}/src/", tmp.path().display());
    let dest = format!("{}/pushed/", tmp.path().display());
    for way in WAYS {
        let out = ours(way, &[], std::slice::from_ref(&src), &dest, &[]);
        assert_eq!(out.text(), "skipping directory .\n", "{way:?}");
        assert_eq!(out.stderr, "", "{way:?}");
    }
}

/// A source with a file, a symlink, a FIFO and a socket, fixed mtimes.
fn special_tree(src: &Path) {
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write_at(&src.join("file"), b"f\n", T);
    write_at(&src.join("sub/inner"), b"i\n", T);
    std::os::unix::fs::symlink("file", src.join("link")).unwrap();
    std::os::unix::fs::symlink("../file", src.join("sub/link")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(src.join("sub/fifo"))
        .status()
        .unwrap()
        .success());
    let socket = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    drop(socket);
    for p in ["link", "sub/link", "sub/fifo", "sock"] {
        testkit::set_mtime_nofollow(&src.join(p), T).unwrap();
    }
    for d in ["sub", ""] {
        testkit::set_mtime_nofollow(&src.join(d), T_DIRS).unwrap();
    }
}

#[test]
fn non_regular_files_are_told_on_stdout_without_a_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    special_tree(&tmp.path().join("src"));
    let cases: &[(&[&str], &[&str])] = &[
        (&["-rt"], &["src/"]),
        (&["-rt"], &["src"]),
        (&["-rtq"], &["src/"]),
        (&["-rtv"], &["src/"]),
        (&["-rti"], &["src/"]),
        (&["-rtl"], &["src/"]),
        (&["-rt", "--info=nonreg0"], &["src/"]),
        (&["-rtv", "--info=nonreg0"], &["src/"]),
        (&["-t"], &["src/link", "src/file", "src/sock"]),
    ];
    for (n, (flags, sources)) in cases.iter().enumerate() {
        compare_with_rsync(tmp.path(), n, flags, sources, "dst/");
    }
    let src = format!("{}/src/", tmp.path().display());
    for way in WAYS {
        let dest = format!("{}/{way:?}-plain/", tmp.path().display());
        let out = ours(way, &["-rt"], std::slice::from_ref(&src), &dest, &[]);
        assert_eq!(
            out.sorted_lines(),
            [
                "",
                "skipping non-regular file \\\"link\\\"",
                "skipping non-regular file \\\"sock\\\"",
                "skipping non-regular file \\\"sub/fifo\\\"",
                "skipping non-regular file \\\"sub/link\\\"",
            ],
            "{way:?}: {}",
            out.text()
        );
        assert_eq!(out.stderr, "", "{way:?}");
    }
}

#[test]
fn the_line_before_the_file_list_is_rsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    small_tree(&tmp.path().join("src"));
    let list = tmp.path().join("list");
    std::fs::write(&list, "a\nsub/b\n").unwrap();
    let files_from = format!("--files-from={}", list.display());
    let cases: &[&[&str]] = &[
        &["-tv"],
        &["-dtv"],
        &["-rtv"],
        &["-rtv", "--delete-before"],
        &["-rtv", "--delete-after"],
        &["-rtv", "--delete-delay"],
        &["-rtv", "--delete"],
        &["-tv", &files_from],
    ];
    let rsh = rsh(tmp.path());
    for (n, flags) in cases.iter().enumerate() {
        let sources = [format!("{}/src/", tmp.path().display())];
        for way in WAYS {
            let oracle = tmp.path().join(format!("{way:?}-oracle{n}"));
            let want = rsync(way, &rsh, flags, &sources, &slash(&oracle), &[]);
            let dest = tmp.path().join(format!("{way:?}{n}"));
            let got = ours(way, flags, &sources, &slash(&dest), &[]);
            let (got_lines, want_lines) = (got.lines(), want.lines());
            // Only the first line comes in a fixed order.
            assert_eq!(got_lines.first(), want_lines.first(), "{way:?} {flags:?}");
            assert_eq!(got.sorted_lines(), want.sorted_lines(), "{way:?} {flags:?}");
        }
    }
}

/// Names that show what a locale and `-8` change, as bytes: UTF-8 ones (one that only
/// glibc's decoder takes, past U+10FFFF), Latin-1, an overlong form, a cut sequence, control
/// bytes, DEL and a backslash that looks like an escape.
const NAMES: &[&[u8]] = &[
    "café".as_bytes(),
    "日本".as_bytes(),
    b"big\xf4\x90\x80\x80",
    b"caf\xe9",
    b"over\xc0\xaf",
    b"cut\xe6\xb7",
    b"nl\nx",
    b"esc\x1b[1m",
    b"tab\tx",
    b"del\x7f",
    b"back\\#123",
];

#[test]
fn names_are_escaped_as_rsync_escapes_them_in_each_locale_and_with_8_bit_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for name in NAMES {
        write_at(&src.join(OsStr::from_bytes(name)), b"n", T);
        write_at(&src.join("d").join(OsStr::from_bytes(name)), b"n", T);
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(b"to-caf\xe9"), src.join("link")).unwrap();
    testkit::set_mtime_nofollow(&src.join("link"), T).unwrap();
    for d in ["d", ""] {
        testkit::set_mtime_nofollow(&src.join(d), T_DIRS).unwrap();
    }
    let sources = [slash(&src)];
    let rsh = rsh(tmp.path());
    let bin = env!("CARGO_BIN_EXE_sftpsync");
    let server = testkit::sftp_server_path().display().to_string();
    let mut n = 0;
    for locale in ["C.UTF-8", "C"] {
        for eight in [&[][..], &["-8"][..]] {
            let env = [("LC_ALL", locale), ("TZ", "UTC")];
            for flags in [&["-rtli"][..], &["-rtlv"]] {
                let flags = [flags, eight].concat();
                n += 1;
                for way in WAYS {
                    let oracle = tmp.path().join(format!("{way:?}-oracle{n}"));
                    let want = rsync(way, &rsh, &flags, &sources, &slash(&oracle), &env);
                    assert_eq!(want.code, Some(0), "{}", want.stderr);
                    let dest = tmp.path().join(format!("{way:?}{n}"));
                    let got = ours(way, &flags, &sources, &slash(&dest), &env);
                    let what = format!("{way:?} {locale} {flags:?}");
                    assert_eq!(got.code, Some(0), "{what}: {}", got.stderr);
                    assert_eq!(
                        got.sorted_lines(),
                        want.sorted_lines(),
                        "{what}:\n{}\nrsync:\n{}",
                        got.text(),
                        want.text()
                    );
                }
            }
            // Listings, of the local tree and of it as the remote side.
            let flags = [&["--list-only", "-rl"][..], eight].concat();
            let listing = |program: &str, extra: &[&str], operand: &str| {
                let args = [&flags[..], extra, &[operand]].concat();
                Output3::from(run(program, &args, &env))
            };
            let at_remote = remote(&sources[0]);
            for (what, want, got) in [
                (
                    "local",
                    listing("rsync", &[], &sources[0]),
                    listing(bin, &[], &sources[0]),
                ),
                (
                    "remote",
                    listing("rsync", &["-e", &rsh], &at_remote),
                    listing(bin, &["--sftp-server", &server], &at_remote),
                ),
            ] {
                assert_eq!((got.code, want.code), (Some(0), Some(0)), "{}", got.stderr);
                assert_eq!(
                    got.lines(),
                    want.lines(),
                    "{what} {locale} {flags:?}:\n{}\nrsync:\n{}",
                    got.text(),
                    want.text()
                );
            }
        }
    }
    // Spot checks, so that a change in rsync's escaping shows here too.
    let list = |flags: &[&str], locale| {
        let args = [flags, &["--list-only", "-rl", &sources[0]]].concat();
        Output3::from(run("rsync", &args, &[("LC_ALL", locale)]))
    };
    let utf8 = list(&[], "C.UTF-8");
    let c = list(&[], "C");
    let raw = list(&["-8"], "C");
    let has = |out: &Output3, tail: &[u8]| out.lines().iter().any(|l| l.ends_with(tail));
    assert!(has(&utf8, " d/café".as_bytes()), "{}", utf8.text());
    assert!(has(&utf8, b" d/caf\\#351"), "{}", utf8.text());
    assert!(has(&c, b" d/caf\\#303\\#251"), "{}", c.text());
    assert!(has(&raw, b" d/caf\xe9"), "{}", raw.text());
    assert!(has(&raw, b" d/nl\\#012x"), "{}", raw.text());
    assert!(has(&raw, b" link -> to-caf\xe9"), "{}", raw.text());
}

#[test]
fn c1_controls_in_names_stay_escaped_even_with_8_bit_output() {
    // Where sftpsync differs from rsync on purpose: rsync prints these as they are with -8
    // (and U+009B as it is in a UTF-8 locale), and terminals act on them.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    write_at(&src.join(OsStr::from_bytes(b"csi\x9b2J")), b"n", T);
    write_at(&src.join(OsStr::from_bytes(b"u\xc2\x9b2J")), b"n", T);
    let sources = [slash(&src)];
    for locale in ["C.UTF-8", "C"] {
        for eight in [&[][..], &["-8"][..]] {
            let flags = [&["-ri"][..], eight].concat();
            for way in WAYS {
                let dest = tmp.path().join(format!("{way:?}{locale}{}", eight.len()));
                let got = ours(way, &flags, &sources, &slash(&dest), &[("LC_ALL", locale)]);
                assert!(
                    !got.stdout.contains(&0x9b),
                    "{way:?} {locale} {flags:?}: {}",
                    got.text()
                );
                let lines = got.lines();
                for name in [&b" csi\\#2332J"[..], b" u\\#302\\#2332J"] {
                    assert!(
                        lines.iter().any(|l| l.ends_with(name)),
                        "{way:?} {locale} {flags:?}: {}",
                        got.text()
                    );
                }
            }
        }
    }
}

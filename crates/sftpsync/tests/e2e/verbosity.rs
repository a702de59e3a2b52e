//! How much a push says at each level, as rsync's -v, -vv and -vvv, and `--debug=sftp`'s log
//! of every request: against sftp-server over pipes.

use super::*;

struct Push {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    server: String,
}

impl Push {
    /// A source of two files, one in a subdirectory.
    fn new() -> Push {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("top.txt"), b"top\n").unwrap();
        std::fs::write(src.join("sub/inner.txt"), b"inner\n").unwrap();
        let server = testkit::sftp_server_path().display().to_string();
        Push {
            _tmp: tmp,
            src,
            dst,
            server,
        }
    }

    fn run(&self, extra: &[&str]) -> (String, String) {
        let src = slash(&self.src);
        let dest = format!("localhost:{}", slash(&self.dst));
        let mut args = vec!["-a", "--sftp-server", &self.server];
        args.extend_from_slice(extra);
        args.push(&src);
        args.push(&dest);
        let out = sftpsync(&args);
        let stdout = ok(&out);
        (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn debug_sftp_logs_each_request_and_reply() {
    let push = Push::new();
    let (stdout, log) = push.run(&["--debug=sftp"]);
    assert!(
        !stdout.contains("sftp:"),
        "the log goes to stderr: {stdout}"
    );
    let lines: Vec<&str> = log.lines().collect();
    let find = |want: &[&str]| {
        lines
            .iter()
            .find(|l| l.starts_with("sftp: [") && want.iter().all(|w| l.contains(w)))
            .unwrap_or_else(|| panic!("no line with {want:?} in:\n{log}"))
            .to_string()
    };
    assert!(find(&["<- VERSION 3"]).contains("posix-rename@openssh.com"));
    let open = find(&["-> #", "OPEN", "top.txt", "flags=write,creat"]);
    // Each request's reply carries its number.
    let id = open.split(['#', ' ']).find_map(|w| w.parse::<u32>().ok());
    let id = id.unwrap_or_else(|| panic!("no request id in {open}"));
    find(&[&format!("<- #{id} OPEN handle=")]);
    find(&["-> #", "WRITE handle=", "offset=0 len=4"]);
    find(&["-> #", "CLOSE handle="]);
    find(&["<- #", "CLOSE status Ok"]);
    find(&["-> #", "MKDIR", "sub"]);

    std::fs::write(push.src.join("top.txt"), b"changed\n").unwrap();
    let (_, quiet) = push.run(&[]);
    assert!(!quiet.contains("sftp:"), "{quiet}");

    // rsync's syntax: a level, several flags, and rsync's own flags accepted.
    let (_, log) = push.run(&["--debug=FLIST2,sftp1"]);
    assert!(log.contains("-> #"), "{log}");
    let (_, log) = push.run(&["--debug=all", "--debug=none"]);
    assert!(!log.contains("sftp:"), "{log}");
}

#[test]
fn debug_rejects_unknown_flags_and_explains_itself() {
    let out = sftpsync(&["--debug=bogus", "a", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown --debug item: \"bogus\""));
    let out = sftpsync(&["--debug=help"]);
    assert!(ok(&out).contains("SFTP "));
}

#[test]
fn each_v_adds_what_rsync_adds() {
    let push = Push::new();
    let (v1, _) = push.run(&["-v"]);
    assert!(v1.starts_with("sending incremental file list\n"), "{v1}");
    assert!(
        v1.contains("\ntop.txt\n") && v1.contains("\nsub/inner.txt\n"),
        "{v1}"
    );
    assert!(!v1.contains("opening connection"), "{v1}");
    assert!(v1.contains("total size is 10"), "{v1}");

    std::fs::write(push.src.join("top.txt"), b"top, changed\n").unwrap();
    let (v2, err) = push.run(&["-vv"]);
    // How it connects, whether deltas are on, and what was found unchanged.
    assert!(
        v2.starts_with(&format!("opening connection using: {}\n", push.server)),
        "{v2}"
    );
    assert!(v2.contains("\ndelta-transmission enabled\n"), "{v2}");
    assert!(v2.contains("\nsub/inner.txt is uptodate\n"), "{v2}");
    assert!(v2.contains("\ntop.txt\n"), "{v2}");
    assert!(!err.contains("sftp:"), "{err}");
    let (v1, _) = push.run(&["-v"]);
    assert!(!v1.contains("uptodate"), "{v1}");

    // -W turns deltas off, and -vv says so with rsync's words.
    let (w, _) = push.run(&["-vv", "-W"]);
    assert!(
        w.contains("\ndelta-transmission disabled for local transfer or --whole-file\n"),
        "{w}"
    );

    // -vvv also logs the requests, as rsync's -vvv turns on its debug output.
    let (_, err) = push.run(&["-vvv"]);
    assert!(err.contains("sftp: [1] -> #"), "{err}");
    let (_, err) = push.run(&["-vvv", "--debug=sftp0"]);
    assert!(!err.contains("sftp:"), "{err}");
}

#[test]
fn double_i_lists_unchanged_files_with_blanks_as_rsync() {
    let push = Push::new();
    push.run(&[]);
    let (out, _) = push.run(&["-ii"]);
    assert!(out.contains(".f          top.txt\n"), "{out}");
    assert!(out.contains(".f          sub/inner.txt\n"), "{out}");
    let (out, _) = push.run(&["-i"]);
    assert!(out.is_empty(), "{out}");
}

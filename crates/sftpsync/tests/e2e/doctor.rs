//! `sftpsync doctor` against real servers: the chrooted SFTP-only sshd (healthy, commands
//! refused), a server that refuses SETSTAT (a problem, with the flag to use), and a
//! full-shell sshd (plain rsync would work).

use super::*;

use testkit::ShellServer;

fn doctor(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let out = sftpsync(&all);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// The report's words with its wrapping undone, to look for phrases in.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The finding named `check` in a `--json` report.
fn finding<'a>(report: &'a serde_json::Value, check: &str) -> &'a serde_json::Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {report}"))
}

#[test]
fn doctor_finds_the_chrooted_sftp_only_server_healthy() {
    let server = SftpOnlyServer::shared();
    let (remote, _) = server.fresh_remote_dir("doctor");
    let rsh = server.ssh_command();
    let target = server.remote_spec(&remote);
    let (code, text) = doctor(&["-e", &rsh, &target]);
    assert_eq!(code, Some(0), "{text}");
    // ForceCommand internal-sftp refuses a command with words of its own.
    assert!(
        flat(&text).contains(
            "shell commands are refused (exit status 1): \"This service allows sftp \
             connections only.\""
        ),
        "{text}"
    );
    assert!(text.contains("login dir   /data"), "{text}");
    assert!(
        text.contains("times       modification times set here are kept"),
        "{text}"
    );
    assert!(
        flat(&text).contains("copy-data (delta transfer on push)"),
        "{text}"
    );
    assert!(text.contains("verdict     healthy"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 79), "{text}");
    assert_eq!(
        std::fs::read_dir(server.data_dir().join(&remote))
            .unwrap()
            .count(),
        0,
        "the test file is left behind"
    );

    let (code, json) = doctor(&["-e", &rsh, "--json", &target]);
    assert_eq!(code, Some(0), "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["sftp_version"], 3);
    assert_eq!(finding(&report, "shell")["verdict"], "ok");
    assert_eq!(finding(&report, "writable")["verdict"], "ok");
    assert!(report["rtt_ms"].as_f64().is_some(), "{report}");
    assert!(report["write_mb_per_s"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn doctor_reports_refused_setstat_and_suggests_size_only() {
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} -P setstat,fsetstat",
        testkit::sftp_server_path().display()
    );
    let server = server_script(tmp.path(), "no-setstat", &command);
    let target = format!("localhost:{}", tmp.path().display());
    let (code, text) = doctor(&["--sftp-server", &server, &target]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        flat(&text).contains("! times the server refuses setting attributes"),
        "{text}"
    );
    assert!(
        text.contains("suggested   sftpsync -a --size-only SRC"),
        "{text}"
    );
    assert!(text.contains("problems found"), "{text}");
}

#[test]
fn doctor_says_plain_rsync_would_work_on_a_full_shell_server() {
    let server = ShellServer::start();
    let rsh = server.ssh_command();
    let (code, text) = doctor(&["-e", &rsh, &server.root_spec("/tmp")]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        flat(&text).contains("commands run: plain rsync over ssh would work"),
        "{text}"
    );
}

#[test]
fn doctor_names_the_cause_when_it_cannot_log_in() {
    let server = SftpOnlyServer::shared();
    let rsh = server.ssh_command();
    let target = format!("nobody-here@{}:", server.host());
    let (code, text) = doctor(&["-e", &rsh, "--no-shell-probe", &target]);
    assert_eq!(code, Some(255), "{text}");
    assert!(
        flat(&text).contains("the login was refused (permission denied)"),
        "{text}"
    );
}

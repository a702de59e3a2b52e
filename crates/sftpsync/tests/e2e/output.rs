//! What a run prints for people and for programs: `--out-format` and `--log-file` against
//! rsync's own for the same change set, `--json` lines, and `--progress` and
//! `--info=progress2` with and without a terminal.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{break_hard_links, ok, pipe_push, push_through, slash};
use testkit::{copy_tree, generate_mixed_tree, mutate_tree, rsync_itemize};

/// An old tree and a changed copy of it, under `dir`.
fn change_set(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let old = dir.join("old");
    generate_mixed_tree(&old, seed, 150);
    // Without -H, rsync sees one change through two names of a shared inode; the output is
    // what is compared here, not hard links.
    break_hard_links(&old);
    let new = dir.join("new");
    std::fs::create_dir(&new).unwrap();
    copy_tree(&old, &new);
    mutate_tree(&new, seed + 1);
    (old, new)
}

/// A fresh copy of `old` named `name` under `dir`.
fn copy_of(old: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir(&to).unwrap();
    copy_tree(old, &to);
    to
}

fn rsync(args: &[&str], src: &Path, dst: &Path) -> String {
    let out = Command::new("rsync")
        .args(args)
        .arg(slash(src))
        .arg(slash(dst))
        .stdin(Stdio::null())
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Our lines as rsync's local copy prints them: it receives (`>`) where we send (`<`).
/// A directory's `%l` is left out: rsync shows its st_size, and sftpsync's local tree does
/// not keep one.
fn comparable(line: &str) -> String {
    let line = line.replacen("\t<f", "\t>f", 1).replacen("<f", ">f", 1);
    let mut fields: Vec<&str> = line.split('\t').collect();
    if fields.len() > 3 && fields[1].as_bytes().get(1) == Some(&b'd') {
        fields[3] = "-";
    }
    fields.join("\t")
}

#[test]
fn out_format_and_log_file_match_rsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = change_set(tmp.path(), 61);
    let ours = copy_of(&old, tmp.path(), "ours");
    let theirs = copy_of(&old, tmp.path(), "theirs");
    let (our_log, their_log) = (tmp.path().join("ours.log"), tmp.path().join("theirs.log"));
    // Tabs part the fields: rsync escapes them in names.
    let format = "--out-format=%o\t%i\t%n%L\t%l\t%f\t%B\t%M\t%U\t%G";
    let their_log_arg = format!("--log-file={}", their_log.display());
    let want = rsync(
        &["-a", "--delete-after", format, &their_log_arg],
        &new,
        &theirs,
    );
    let our_log_arg = format!("--log-file={}", our_log.display());
    let got = ok(&pipe_push(
        &["-a", "--delete-after", format, &our_log_arg],
        &new,
        &ours,
    ));
    let want: Vec<String> = want.lines().map(comparable).collect();
    let got: Vec<String> = got.lines().map(comparable).collect();
    assert!(want.len() > 20, "the change set is too small: {want:#?}");
    assert_eq!(got, want, "--out-format lines differ from rsync's");

    // The log: rsync's stamp and process id on every line, the default "%i %n%L" items.
    // Names are written as they are, unescaped, as rsync writes them: a name with a newline
    // goes on over the next line.
    let items = |log: &Path| -> Vec<String> {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned();
        let stamped = |l: &str| {
            let b = l.as_bytes();
            b.len() > 22
                && b[4] == b'/'
                && b[7] == b'/'
                && b[10] == b' '
                && b[13] == b':'
                && b[19] == b' '
                && b[20] == b'['
        };
        let mut entries: Vec<String> = Vec::new();
        for line in text.lines() {
            if stamped(line) {
                let (pid, rest) = line[21..].split_once("] ").unwrap();
                assert!(pid.parse::<u32>().is_ok(), "{line}");
                entries.push(rest.to_string());
            } else {
                let last = entries.last_mut().unwrap_or_else(|| panic!("{line}"));
                last.push('\n');
                last.push_str(line);
            }
        }
        entries
            .into_iter()
            .filter(|e| {
                !["building file list", "sent "]
                    .iter()
                    .any(|w| e.starts_with(w))
            })
            .map(|e| e.replacen("<f", ">f", 1))
            .collect()
    };
    assert_eq!(items(&our_log), items(&their_log));
    let text = String::from_utf8_lossy(&std::fs::read(&our_log).unwrap()).into_owned();
    assert!(text.contains("] building file list\n"), "{text}");
    assert!(text.contains("caf\u{fffd} "), "a raw Latin-1 name: {text}");
    assert!(text.contains("] sent "), "{text}");

    // Appended, as rsync does: a second run adds its lines after the first run's.
    let before = std::fs::read(&our_log).unwrap();
    ok(&pipe_push(&["-a", &our_log_arg], &new, &ours));
    let after = std::fs::read(&our_log).unwrap();
    assert!(after.starts_with(&before) && after.len() > before.len());
}

/// Decodes standard padded base64; enough for checking what `--json` wrote.
fn unbase64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .expect("JSON output is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn json_lines_describe_each_change_and_end_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = change_set(tmp.path(), 71);
    let odd_name: &[u8] = b"caf\xe9-\xff";
    std::fs::write(
        new.join(std::ffi::OsStr::from_bytes(odd_name)),
        b"not UTF-8",
    )
    .unwrap();
    let ours = copy_of(&old, tmp.path(), "ours");
    let reference = copy_of(&old, tmp.path(), "reference");
    let all_want: Vec<String> = rsync_itemize(&new, &reference, &["--delete-after"])
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    // Names shown the same in both: rsync escapes the others, JSON does not.
    let plain = |s: &[u8]| s.iter().all(|b| (0x20..0x7f).contains(b)) && !s.contains(&b'\\');
    let want: Vec<String> = all_want
        .iter()
        .filter(|l| plain(l.as_bytes()))
        .cloned()
        .collect();

    let out = pipe_push(&["-a", "--delete-after", "--json", "-v"], &new, &ours);
    ok(&out);
    // Every line of stdout is one object: -v adds no text to it.
    let lines = json_lines(&out.stdout);
    let (summary, items) = lines.split_last().unwrap();
    assert_eq!(
        items.len(),
        all_want.len(),
        "as many items as rsync's -i lines"
    );
    let mut got = Vec::new();
    let mut odd = None;
    for v in items {
        assert_eq!(v["type"], "item", "{v}");
        let path = v["path"].as_str().unwrap();
        let raw = match v.get("path_base64") {
            Some(b64) => unbase64(b64.as_str().unwrap()),
            None => path.as_bytes().to_vec(),
        };
        if raw == odd_name {
            odd = Some(v.clone());
        }
        let target = v.get("symlink_target").map_or("", |t| t.as_str().unwrap());
        if !plain(&raw) || !plain(target.as_bytes()) {
            continue;
        }
        let dir = if v["kind"] == "dir" { "/" } else { "" };
        let link = v
            .get("symlink_target")
            .map_or(String::new(), |t| format!(" -> {}", t.as_str().unwrap()));
        let itemize = v["itemize"].as_str().unwrap().replacen("<f", ">f", 1);
        got.push(format!("{itemize} {path}{dir}{link}"));
        if v["transferred"] == true {
            let size = v["size"].as_u64().unwrap();
            let moved = v["literal"].as_u64().unwrap() + v["matched"].as_u64().unwrap();
            assert_eq!(moved, size, "{v}");
        }
        assert_eq!(v["deleted"], itemize.starts_with("*deleting"), "{v}");
    }
    assert_eq!(got, want, "the items are rsync's -i lines");
    assert!(got.len() > 20, "the change set is too small: {got:#?}");
    let odd = odd.expect("the non-UTF-8 name has an item");
    assert_eq!(odd["itemize"], "<f+++++++++");
    assert!(odd["path"].as_str().unwrap().contains('\u{fffd}'));

    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["exit_code"], 0);
    let count = |key: &str| items.iter().filter(|v| v[key] == true).count() as u64;
    assert_eq!(summary["stats"]["transferred_files"], count("transferred"));
    assert_eq!(summary["stats"]["deleted_files"], count("deleted"));
    assert!(summary["bytes_sent"].as_u64().unwrap() > 0);

    // An error is an object too, and the summary carries the exit code.
    let out = pipe_push(&["-a", "--json"], &tmp.path().join("missing"), &ours);
    assert_eq!(out.status.code(), Some(23));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["type"], "error");
    assert!(lines[0]["message"].as_str().unwrap().contains("missing"));
    assert_eq!(lines.last().unwrap()["exit_code"], 23);
}

/// A server script that lets requests through slowly, so that a file takes seconds.
fn slow_server(dir: &Path) -> String {
    let script = dir.join("slow-sftp-server");
    let server = testkit::sftp_server_path();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # Requests pass in reads of at most 64 KiB, 5 ms apart.\n\
             slow() {{\n\
               t=$(mktemp)\n\
               while dd bs=65536 count=1 status=none of=\"$t\"; [ -s \"$t\" ]; do\n\
                 cat \"$t\"; sleep 0.005\n\
               done\n\
               rm -f \"$t\"\n\
             }}\n\
             slow | {} \"$@\"\n",
            server.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.to_str().unwrap().to_string()
}

/// rsync's progress line at 100%: size, rate, time taken, transfer number and entries.
fn final_progress(line: &str) -> Option<(u64, u64, u64)> {
    let (head, tail) = line.trim_start().split_once(" 100% ")?;
    head.replace(',', "").parse::<u64>().ok()?;
    let mut words = tail.split_whitespace();
    let rate = words.next()?;
    let unit_ok = ["kB/s", "MB/s", "GB/s"].iter().any(|u| {
        rate.strip_suffix(u)
            .is_some_and(|n| n.parse::<f64>().is_ok() && n.contains('.'))
    });
    let time = words.next()?;
    let time_ok = time.split(':').count() == 3;
    let counts = words.collect::<Vec<_>>().join(" ");
    let counts = counts.strip_prefix("(xfr#")?.strip_suffix(')')?;
    let (xfr, chk) = counts.split_once(", to-chk=")?;
    let (left, total) = chk.split_once('/')?;
    (unit_ok && time_ok).then_some(())?;
    Some((xfr.parse().ok()?, left.parse().ok()?, total.parse().ok()?))
}

#[test]
fn progress_on_a_pipe_has_rsyncs_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for name in ["a", "b", "sub/c"] {
        std::fs::write(src.join(name), name.repeat(100)).unwrap();
    }
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("sub/big"), &big).unwrap();
    let (dst, reference) = (tmp.path().join("dst"), tmp.path().join("reference"));

    let server = slow_server(tmp.path());
    let ours = ok(&push_through(&server, &["-a", "--progress"], &src, &dst));
    let theirs = rsync(&["-a", "--progress"], &src, &reference);

    // (name, the progress text after it) for each file that was sent.
    let blocks = |text: &str| -> Vec<(String, String)> {
        let lines: Vec<&str> = text.split('\n').collect();
        lines
            .windows(2)
            .filter(|w| w[1].starts_with('\r'))
            .map(|w| (w[0].to_string(), w[1].to_string()))
            .collect()
    };
    let (ours_b, theirs_b) = (blocks(&ours), blocks(&theirs));
    let names = |b: &[(String, String)]| {
        let mut n: Vec<String> = b.iter().map(|(n, _)| n.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&ours_b), names(&theirs_b), "{ours:?}\n{theirs:?}");
    assert!(
        ours.starts_with("sending incremental file list\n"),
        "{ours:?}"
    );

    let total = |b: &[(String, String)]| {
        let last = b.last().unwrap().1.rsplit('\r').next().unwrap().to_string();
        final_progress(&last)
            .unwrap_or_else(|| panic!("{last:?}"))
            .2
    };
    assert_eq!(
        total(&ours_b),
        total(&theirs_b),
        "the same entries to check"
    );
    for (i, (name, progress)) in ours_b.iter().enumerate() {
        let last = progress.rsplit('\r').next().unwrap();
        let (xfr, _, _) = final_progress(last).unwrap_or_else(|| panic!("{name}: {last:?}"));
        assert_eq!(xfr, i as u64 + 1, "transfers are numbered in order");
    }
    // The big file took seconds: its line was redrawn on the way, each time ending in two
    // spaces and a carriage return, as rsync's.
    let (_, big_progress) = ours_b.iter().find(|(n, _)| n == "sub/big").unwrap();
    let partial: Vec<&str> = big_progress
        .split('\r')
        .filter(|s| !s.is_empty() && !s.contains(" 100% "))
        .collect();
    assert!(!partial.is_empty(), "{big_progress:?}");
    for p in partial {
        assert!(p.ends_with("  ") && p.contains("% "), "{p:?}");
    }
}

#[test]
fn progress2_draws_only_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("f{i}")), vec![b'x'; 30_000]).unwrap();
    }

    let out = ok(&pipe_push(
        &["-a", "--info=progress2"],
        &src,
        &tmp.path().join("d1"),
    ));
    assert_eq!(
        out, "",
        "nothing but progress was asked for, and stdout is no terminal"
    );

    // On a pseudo-terminal (script(1)) the one line shows, counting all five files.
    let server = testkit::sftp_server_path();
    let command = format!(
        "{} -a --info=progress2 --sftp-server {} {} localhost:{}",
        env!("CARGO_BIN_EXE_sftpsync"),
        server.display(),
        slash(&src),
        slash(&tmp.path().join("d2"))
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let last = text
        .split(['\r', '\n'])
        .rfind(|l| l.contains("(xfr#"))
        .unwrap_or_else(|| panic!("no progress line in {text:?}"));
    assert!(last.contains("(xfr#5, to-chk=0/6)"), "{last:?}");
    assert!(last.contains("150,000"), "{last:?}");
    assert!(text.ends_with('\n'), "the line is ended: {text:?}");
}

#[test]
fn human_readable_stats_use_rsyncs_units() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![7u8; 5_000_000]).unwrap();
    std::fs::write(src.join("small"), vec![1u8; 4096]).unwrap();
    for (i, h) in ["--no-h", "-h", "-hh"].into_iter().enumerate() {
        let ours = ok(&pipe_push(
            &["-a", "--stats", h],
            &src,
            &tmp.path().join(format!("ours{i}")),
        ));
        let theirs = rsync(
            &["-a", "--stats", h],
            &src,
            &tmp.path().join(format!("theirs{i}")),
        );
        for name in [
            "Total file size:",
            "Total transferred file size:",
            "Literal data:",
            "total size is",
        ] {
            let line = |text: &str| {
                let l = text.lines().find(|l| l.starts_with(name)).unwrap();
                // rsync's speedup depends on its own protocol's byte counts.
                l.split("  speedup").next().unwrap().to_string()
            };
            assert_eq!(line(&ours), line(&theirs), "{h}");
        }
    }
}

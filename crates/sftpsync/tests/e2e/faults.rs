//! Faults on the way: connections cut or stalled at chosen bytes by a proxy, servers that
//! never answer, and the client killed mid-run. After each, every destination file is its
//! old or its new version, and the next run (or the same run, reconnecting) completes.
//!
//! Temp files (`.name.XXXXXX`): after a cut with no retries left, a pull has removed its
//! local temps; a push cannot reach the server any more and leaves them, and the check below
//! ignores them; the plain re-run with `--delete` removes them, which the rsync oracle
//! verifies. A run that reconnects removes its own leftovers on the new connection. After
//! `kill -9`, temps may remain on either side until such a re-run.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::{CutProxy, Fault, Flow, SftpOnlyServer, XorShift};

use super::*;

/// An old and a new version of one tree, both owned by the test user: a small mixed tree
/// (links, odd names, a multi-MiB file) changed by `mutate_tree`, plus files that are
/// replaced by new contents.
struct Versions {
    old: PathBuf,
    new: PathBuf,
}

fn versions(server: &SftpOnlyServer, base: &Path, seed: u64) -> Versions {
    let old = base.join("old");
    let new = base.join("new");
    generate_mixed_tree(&old, seed, 30);
    let mut rng = XorShift::new(seed);
    let big = old.join("replaced");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..8 {
        let path = big.join(format!("r{i}"));
        std::fs::write(&path, rng.bytes(256 * 1024)).unwrap();
        testkit::set_mtime_nofollow(&path, 1_500_000_000).unwrap();
    }
    copy_tree(&old, &new);
    mutate_tree(&new, seed);
    let big = new.join("replaced");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..8 {
        let path = big.join(format!("r{i}"));
        // Half keep their size: only the mtime tells the quick check they changed.
        let len = if i % 2 == 0 { 256 * 1024 } else { 200 * 1024 };
        // mutate_tree may have turned it into a directory.
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        }
        std::fs::write(&path, rng.bytes(len)).unwrap();
        testkit::set_mtime_nofollow(&path, 1_600_000_000).unwrap();
    }
    chown_tree(&old, server.uid(), server.gid()).unwrap();
    chown_tree(&new, server.uid(), server.gid()).unwrap();
    Versions { old, new }
}

/// rsync's temp names, as the engine makes them: `.` + name + `.` + six letters or digits.
fn is_temp_name(name: &[u8]) -> bool {
    name.len() > 8
        && name[0] == b'.'
        && name[name.len() - 7] == b'.'
        && name[name.len() - 6..].iter().all(u8::is_ascii_alphanumeric)
}

/// What a path holds, for comparing versions: file contents, link target, or a directory.
#[derive(PartialEq, Eq, Debug)]
enum Content {
    File(Vec<u8>),
    Link(PathBuf),
    Dir,
}

fn content(path: &Path) -> Option<Content> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(if meta.file_type().is_symlink() {
        Content::Link(std::fs::read_link(path).unwrap())
    } else if meta.is_dir() {
        Content::Dir
    } else {
        Content::File(std::fs::read(path).unwrap())
    })
}

/// Panics unless every entry under `dest` is its old or its new version. Entries in
/// neither version must be temp files; returns how many there were.
fn assert_old_or_new(dest: &Path, v: &Versions) -> usize {
    fn walk(dir: &Path, rel: &Path, v: &Versions, temps: &mut usize) {
        let mut entries: BTreeMap<Vec<u8>, PathBuf> = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            entries.insert(e.file_name().as_bytes().to_vec(), e.path());
        }
        for (name, path) in entries {
            let rel = rel.join(OsStr::from_bytes(&name));
            let here = content(&path).expect("listed, so present");
            let old = content(&v.old.join(&rel));
            let new = content(&v.new.join(&rel));
            if old.is_none() && new.is_none() {
                assert!(
                    is_temp_name(&name),
                    "{} is in neither version and is no temp file",
                    rel.display()
                );
                *temps += 1;
                continue;
            }
            assert!(
                old.as_ref() == Some(&here) || new.as_ref() == Some(&here),
                "{} is neither its old nor its new version",
                rel.display()
            );
            if here == Content::Dir {
                walk(&path, &rel, v, temps);
            }
        }
    }
    let mut temps = 0;
    walk(dest, Path::new(""), v, &mut temps);
    temps
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `sftpsync -e SSH EXTRA... SRC DST` where one side is remote, through whatever `ssh` says.
fn run_with(ssh: &str, extra: &[&str], src: &str, dst: &str) -> Output {
    let mut args = vec!["-e", ssh];
    args.extend_from_slice(extra);
    args.push(src);
    args.push(dst);
    sftpsync(&args)
}

/// The two ways a sync can go, set up with the old version at the destination and the new
/// one at the source.
#[derive(Clone, Copy, Debug)]
enum Way {
    Push,
    Pull,
}

struct Case {
    src: String,
    dst: String,
    /// The destination directory, seen locally.
    dest: PathBuf,
    /// The source directory, seen locally.
    source: PathBuf,
}

fn case(server: &SftpOnlyServer, base: &Path, v: &Versions, way: Way, name: &str) -> Case {
    let (remote, remote_local) = server.fresh_remote_dir(name);
    match way {
        Way::Push => {
            copy_tree(&v.old, &remote_local);
            Case {
                src: slash(&v.new),
                dst: server.remote_spec(&format!("{remote}/")),
                dest: remote_local,
                source: v.new.clone(),
            }
        }
        Way::Pull => {
            copy_tree(&v.new, &remote_local);
            let local = base.join(format!("{name}-{remote}"));
            copy_tree(&v.old, &local);
            Case {
                src: server.remote_spec(&format!("{remote}/")),
                dst: slash(&local),
                dest: local,
                source: remote_local,
            }
        }
    }
}

/// A plain run straight to the server completes what a broken one left.
fn rerun_completes(server: &SftpOnlyServer, c: &Case) {
    ok(&run_with(
        &server.ssh_command(),
        &["-a", "--delete"],
        &c.src,
        &c.dst,
    ));
    assert_trees_match(&c.source, &c.dest);
}

/// Bytes each way of a whole uncut sync, and of one with nothing to do (login, handshake
/// and listing): cuts are placed between the two, inside the transfer.
fn measure(server: &SftpOnlyServer, base: &Path, v: &Versions, way: Way) -> [(u64, u64); 2] {
    let c = case(server, base, v, way, "cut-measure");
    let mut seen = [(0, 0); 2];
    for slot in &mut seen {
        let proxy = CutProxy::start(server.port(), vec![]);
        ok(&run_with(
            &proxy.ssh_command(server),
            &["-a", "--delete"],
            &c.src,
            &c.dst,
        ));
        *slot = (proxy.bytes(Flow::ToServer), proxy.bytes(Flow::ToClient));
    }
    let [full, noop] = seen;
    [noop, full]
}

/// Cuts per direction; more find more, at a second or so each.
const CUTS: usize = 2;

fn cuts_leave_old_or_new_files(way: Way, seed: u64) {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let v = versions(server, tmp.path(), seed);
    let [noop, full] = measure(server, tmp.path(), &v, way);
    let mut rng = XorShift::new(seed);
    for (flow, lo, hi) in [
        (Flow::ToServer, noop.0, full.0),
        (Flow::ToClient, noop.1, full.1),
    ] {
        assert!(hi > lo, "{way:?} {flow:?}: full {hi} bytes, no-op {lo}");
        // The last stretch is the goodbye after the work is done: a cut there is no cut.
        let hi = lo + (hi - lo) * 8 / 10;
        for _ in 0..CUTS {
            let after = rng.range(lo, hi);
            let c = case(server, tmp.path(), &v, way, "cut");
            let proxy = CutProxy::start(server.port(), vec![Fault::Cut { flow, after }]);
            let out = run_with(
                &proxy.ssh_command(server),
                &["-a", "--delete", "--retries=0"],
                &c.src,
                &c.dst,
            );
            let what = format!(
                "{way:?} cut {flow:?} after {after} bytes, {} connections",
                proxy.connections()
            );
            assert_eq!(proxy.faults_fired(), 1, "{what}");
            match code(&out) {
                Some(12) => assert!(
                    stderr(&out).contains("error in SFTP protocol data stream (code 12)"),
                    "{what}: {}",
                    stderr(&out)
                ),
                // A channel opening just as the cut came logs in on its own (ssh falls back
                // to a direct connection when the ControlMaster is gone) and may be the one
                // that finishes the work.
                Some(0) => assert_trees_match(&c.source, &c.dest),
                other => panic!("{what}: exit {other:?}: {}", stderr(&out)),
            }
            let temps = assert_old_or_new(&c.dest, &v);
            if let Way::Pull = way {
                assert_eq!(temps, 0, "{what}: a local temp file was left behind");
            }
            rerun_completes(server, &c);
        }
    }
}

#[test]
fn cut_connection_during_push_leaves_old_or_new_files_and_exit_12() {
    cuts_leave_old_or_new_files(Way::Push, 301);
}

#[test]
fn cut_connection_during_pull_leaves_old_or_new_files_and_exit_12() {
    cuts_leave_old_or_new_files(Way::Pull, 302);
}

#[test]
fn retries_reconnect_after_a_cut_finish_the_sync_and_remove_the_cut_runs_temps() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let v = versions(server, tmp.path(), 303);
    for (way, flow) in [(Way::Push, Flow::ToServer), (Way::Pull, Flow::ToClient)] {
        // Well past login and listing, well before the end of the data.
        let fault = Fault::Cut {
            flow,
            after: 400 * 1024,
        };
        let c = case(server, tmp.path(), &v, way, "retry");
        let proxy = CutProxy::start(server.port(), vec![fault]);
        let out = run_with(
            &proxy.ssh_command(server),
            // No --delete: the walk must not be what removes the cut attempt's temps.
            &["-a", "-v", "--retries=3"],
            &c.src,
            &c.dst,
        );
        let text = ok(&out);
        assert_eq!(proxy.faults_fired(), 1, "{way:?}");
        // A channel opening just as the master died logs in on its own (ssh falls back to
        // a direct connection when the ControlMaster socket is gone), so count at least.
        assert!(proxy.connections() >= 2, "{way:?}: no reconnect");
        assert!(
            text.contains("reconnecting in 1 s (attempt 2 of 4)"),
            "{way:?}: {text}"
        );
        let temps = assert_old_or_new(&c.dest, &v);
        assert_eq!(temps, 0, "{way:?}: the cut attempt's temp files were left");
        // Without --delete, only what the new version dropped may differ.
        let diff = rsync_diff(&c.source, &c.dest, &[]);
        assert!(
            diff.lines().all(|l| l.starts_with("*deleting ")),
            "{way:?}: {diff}"
        );
    }
}

#[test]
fn stalled_connection_hits_timeout_with_exit_30() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let v = versions(server, tmp.path(), 304);
    let c = case(server, tmp.path(), &v, Way::Push, "stall");
    let stall = Fault::Stall {
        flow: Flow::ToServer,
        after: 300 * 1024,
    };
    let proxy = CutProxy::start(server.port(), vec![stall]);
    let start = Instant::now();
    let out = run_with(
        &proxy.ssh_command(server),
        &["-a", "--timeout=3", "--retries=0"],
        &c.src,
        &c.dst,
    );
    let took = start.elapsed();
    assert_eq!(proxy.faults_fired(), 1);
    assert_eq!(code(&out), Some(30), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timeout in data send/receive (code 30)"),
        "{}",
        stderr(&out)
    );
    // Not a timing benchmark: the bounds only say the timeout, and nothing else, ended it.
    assert!(took >= Duration::from_secs(3), "took {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_old_or_new(&c.dest, &v);

    // A timeout is a lost connection: with a retry left, the next connection finishes.
    let proxy = CutProxy::start(server.port(), vec![stall]);
    let out = run_with(
        &proxy.ssh_command(server),
        &["-a", "--delete", "--timeout=3", "--retries=2"],
        &c.src,
        &c.dst,
    );
    ok(&out);
    assert!(proxy.connections() >= 2, "no reconnect");
    assert_trees_match(&c.source, &c.dest);
}

#[test]
fn server_that_never_answers_hits_contimeout_with_exit_35() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (remote, _) = server.fresh_remote_dir("contimeout");
    let proxy = CutProxy::start(server.port(), vec![Fault::Blackhole]);
    let start = Instant::now();
    // Default retries: a connection never made is not retried.
    let out = run_with(
        &proxy.ssh_command(server),
        &["-a", "--contimeout=2"],
        &slash(tmp.path()),
        &server.remote_spec(&format!("{remote}/")),
    );
    let took = start.elapsed();
    assert_eq!(code(&out), Some(35), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timeout waiting for daemon connection (code 35)"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(proxy.connections(), 1);
}

/// `kill -9` at a few points drawn from a fixed seed, spread over the time an uncut run takes.
fn kill_leaves_old_or_new_files(way: Way, seed: u64) {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let v = versions(server, tmp.path(), seed);
    let c = case(server, tmp.path(), &v, way, "kill-measure");
    let start = Instant::now();
    ok(&run_with(
        &server.ssh_command(),
        &["-a", "--delete"],
        &c.src,
        &c.dst,
    ));
    let whole = start.elapsed().as_millis() as u64;
    let mut rng = XorShift::new(seed);
    for _ in 0..3 {
        let c = case(server, tmp.path(), &v, way, "kill");
        let at = Duration::from_millis(rng.range(whole / 10, whole * 9 / 10 + 1));
        let ssh = server.ssh_command();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sftpsync"))
            .args(["-a", "--delete", "-e", &ssh, &c.src, &c.dst])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_old_or_new(&c.dest, &v);
        rerun_completes(server, &c);
    }
}

#[test]
fn killing_the_client_during_push_leaves_old_or_new_files() {
    kill_leaves_old_or_new_files(Way::Push, 305);
}

#[test]
fn killing_the_client_during_pull_leaves_old_or_new_files() {
    kill_leaves_old_or_new_files(Way::Pull, 306);
}

#[test]
fn lost_session_does_not_wait_for_channels_still_connecting() {
    let server = SftpOnlyServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let v = versions(server, tmp.path(), 307);
    let c = case(server, tmp.path(), &v, Way::Push, "hung-channels");
    // Through `env`, ssh is not recognised as OpenSSH: every extra channel is a connection
    // of its own, and these ones hang before the SSH banner, with no ConnectTimeout set.
    let mut faults = vec![Fault::Cut {
        flow: Flow::ToServer,
        after: 400 * 1024,
    }];
    faults.extend([Fault::Blackhole; 7]);
    let proxy = CutProxy::start(server.port(), faults);
    let ssh = format!("env {}", proxy.ssh_command(server));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sftpsync"))
        .args(["-a", "--retries=0", "-e", &ssh, &c.src, &c.dst])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still waiting for channels that can never open");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(proxy.faults_fired(), 1);
    assert_eq!(status.code(), Some(12));
    assert_old_or_new(&c.dest, &v);
}

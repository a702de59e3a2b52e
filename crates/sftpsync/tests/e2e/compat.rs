//! The compatibility suite: one list of scenarios (push, pull, re-sync, delete, delta both ways,
//! check-file, hard links, symlinks, atomic replace, times, modes, odd names, a big file, many
//! small files) run against every server configuration people meet, each started by the test
//! kit on 127.0.0.1 or run over pipes.
//!
//! One test per server, so servers run side by side and one that breaks cannot hide another.
//! Within a server every scenario yields its own cell, a panic included, so one failing cell
//! cannot hide the next. Each server's row goes to `target/compat-results.json` as soon as it
//! is done, and `compat-table` turns that file into `docs/compatibility.md`
//! (`scripts/compat.sh` does both).
//!
//! What a server cannot do is written down in [`expected`], with why: a test fails only when a
//! cell differs from that, in either direction, so a regression and a server that started
//! working both get noticed.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::Instant;

use testkit::compat::{Cause, Cell, Row, Status, FEATURES};
use testkit::{AsyncsshServer, GesftpServer, ProftpdServer, RcloneServer, TreeBuilder, XorShift};

use super::*;

/// How the suite reaches one server configuration.
enum Reach {
    /// Over ssh, to a server the test kit started.
    Ssh(&'static TestServer),
    /// A server program sftpsync runs over pipes (`--sftp-server`), serving below `base`.
    Pipe {
        program: String,
        base: tempfile::TempDir,
    },
}

/// One row of the table.
struct Target {
    key: &'static str,
    title: &'static str,
    order: u32,
    reach: Reach,
    version: String,
}

impl Target {
    fn ssh(
        key: &'static str,
        title: &'static str,
        order: u32,
        server: &'static TestServer,
    ) -> Self {
        let version = match key {
            "proftpd" => first_line("/usr/sbin/proftpd", &["-v"]),
            "gesftpserver" => format!(
                "gesftpserver {}, {}",
                first_line("dpkg-query", &["-W", "-f=${Version}", "gesftpserver"]),
                openssh_version()
            ),
            "rclone" => first_line("rclone", &["version"]),
            "asyncssh" => format!("asyncssh {}", testkit::asyncssh::ASYNCSSH_VERSION),
            _ => openssh_version(),
        };
        Target {
            key,
            title,
            order,
            reach: Reach::Ssh(server),
            version,
        }
    }

    /// OpenSSH's sftp-server with `args`, over pipes.
    fn sftp_server(key: &'static str, title: &'static str, order: u32, args: &str) -> Self {
        let base = tempfile::tempdir().unwrap();
        let command = format!("{} {args}", testkit::sftp_server_path().display());
        let program = server_script(base.path(), "server", &command);
        Target {
            key,
            title,
            order,
            reach: Reach::Pipe { program, base },
            version: openssh_version(),
        }
    }

    /// A new empty directory on the server: its remote path, and where it is on this machine.
    fn fresh(&self, name: &str) -> (String, PathBuf) {
        match &self.reach {
            Reach::Ssh(server) => server.fresh_remote_dir(name),
            Reach::Pipe { base, .. } => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{name}-"))
                    .tempdir_in(base.path())
                    .unwrap()
                    .keep();
                (dir.to_str().unwrap().to_owned(), dir)
            }
        }
    }

    /// `text` with the server's directory, which differs from run to run, shortened.
    fn without_run_paths(&self, text: String) -> String {
        let dir = match &self.reach {
            Reach::Ssh(server) => server.data_dir(),
            Reach::Pipe { base, .. } => base.path().to_owned(),
        };
        text.replace(dir.to_str().unwrap(), "DIR")
    }

    /// Makes what a test put in the server's directory its user's.
    fn own(&self, local: &Path) {
        if let Reach::Ssh(server) = &self.reach {
            chown_tree(local, server.uid(), server.gid()).unwrap();
        }
    }

    fn run(&self, flags: &[&str], from: String, to: String) -> Output {
        let mut args: Vec<String> = match &self.reach {
            Reach::Ssh(server) => vec!["-e".into(), server.ssh_command()],
            Reach::Pipe { program, .. } => vec!["--sftp-server".into(), program.clone()],
        };
        args.extend(flags.iter().map(|f| f.to_string()));
        args.push(from);
        args.push(to);
        sftpsync(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `remote` (relative to the login directory) as an absolute path on the server.
    fn absolute(&self, remote: &str) -> String {
        match (&self.reach, self.key) {
            (Reach::Pipe { .. }, _) => remote.to_owned(),
            // sshd's chroot has the login directory below its root.
            (Reach::Ssh(_), "openssh" | "gesftpserver") => {
                format!("{}/{remote}", testkit::server::LOGIN_DIR)
            }
            (Reach::Ssh(_), _) => format!("/{remote}"),
        }
    }

    fn spec(&self, remote: &str) -> String {
        match &self.reach {
            Reach::Ssh(server) => server.remote_spec(&format!("{remote}/")),
            Reach::Pipe { .. } => format!("localhost:{remote}/"),
        }
    }

    fn push(&self, flags: &[&str], src: &Path, remote: &str) -> Output {
        self.run(flags, slash(src), self.spec(remote))
    }

    fn pull(&self, flags: &[&str], remote: &str, dst: &Path) -> Output {
        self.run(flags, self.spec(remote), slash(dst))
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn openssh_version() -> String {
    let v = first_line("ssh", &["-V"]);
    v.split(',').next().unwrap_or(&v).to_owned()
}

/// A scenario: `Ok` when the feature works, else what was seen.
type Scenario = fn(&Target, &Path) -> Result<(), String>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("push", push_tree),
    ("pull", pull_tree),
    ("resync", resync),
    ("delete", delete),
    ("delta_push", delta_push),
    ("delta_pull", delta_pull),
    ("check_file", check_file),
    ("hard_links", hard_links),
    ("symlinks", symlinks),
    ("atomic_replace", atomic_replace),
    ("mtime", mtimes_kept),
    ("mode", modes_kept),
    ("non_utf8", non_utf8_names),
    ("big_file", big_file),
    ("many_files", many_files),
];

/// Why a cell of `server` is not a pass, for every cell that is not: its status, whose doing
/// it is, and what sftpsync does about it.
fn expected(server: &str, feature: &str) -> Option<(Status, Cause, &'static str)> {
    use Cause::*;
    use Status::*;
    let read_only = "The server is read-only (`sftp-server -R`): nothing can be written, and \
                     sftpsync reports each refused write (exit 23).";
    let no_check_file = "The server has no check-file extension, so a changed file is pulled \
                         whole and `-c` reads it to hash it.";
    Some(match (server, feature) {
        (_, "delta_pull" | "check_file") if server != "proftpd" => {
            (NotApplicable, Server, no_check_file)
        }
        (
            "sftp-server-R",
            "push" | "resync" | "delete" | "delta_push" | "hard_links" | "symlinks"
            | "atomic_replace" | "mtime" | "mode" | "non_utf8" | "big_file" | "many_files",
        ) => (NotApplicable, Server, read_only),
        ("sftp-server-no-posix-rename", "atomic_replace") => (
            NotApplicable,
            Server,
            "Without posix-rename a file cannot be renamed over another, so sftpsync removes \
             the old file first (one warning per run); `--require-atomic-replace` refuses that \
             instead.",
        ),
        ("sftp-server-no-copy-data" | "proftpd" | "gesftpserver" | "rclone", "delta_push") => (
            NotApplicable,
            Server,
            "The server has no copy-data extension, so a changed file is sent whole \
             (`--inplace` still sends only the changed blocks where an index entry exists).",
        ),
        ("sftp-server-no-hardlink", "hard_links") => (
            NotApplicable,
            Server,
            "The server offers no hard links: sftpsync says so once and stores every further \
             name of a file as a copy of the first (made on the server with copy-data where \
             it can).",
        ),
        ("rclone", "hard_links") => (
            Fail,
            Server,
            "rclone answers hardlink@openssh.com with OK and links nothing. sftpsync looks \
             for the first link it makes, finds none, says so once and stores every further \
             name as a copy.",
        ),
        ("rclone", "mode") => (
            Fail,
            Server,
            "rclone's VFS gives files and directories its own permissions (its umask) and \
             accepts any mode in SETSTAT without applying it. sftpsync reads the first file's \
             attributes back and says so once.",
        ),
        ("rclone", "mtime") => (
            Fail,
            Server,
            "rclone keeps the mtimes of files but not of directories: every run sets them \
             again (itemized `.d..t......`), nothing is sent again.",
        ),
        ("rclone", "symlinks") => (
            NotApplicable,
            Server,
            "rclone refuses SYMLINK and READLINK: each link is an error of its own and the run \
             ends with exit 23, as rsync's does where links cannot be made; `-L` stores what \
             they point to instead.",
        ),
        ("asyncssh", "symlinks") => (
            Fail,
            Server,
            "asyncssh's chroot stores an absolute target with the chroot's real path in front \
             (READLINK takes it off again, so re-syncs agree, but on the server's disk the \
             link points into the chroot), and its READLINK resolves a relative target against \
             the server process's working directory instead of the link's directory: relative \
             links pulled from it come back wrong, or as an error of their own (exit 23) where \
             that lands outside the chroot.",
        ),
        ("proftpd", "symlinks") => (
            Fail,
            Server,
            "ProFTPD's READLINK answers a relative target with the absolute path it resolves \
             to (`sub/g` in `/d` comes back as `/d/sub/g`). sftpsync restores the stored target \
             where the link's listed size shows it, which works for targets without `.` or \
             `..`; one with `..` is resolved away by the server and cannot be told, so such a \
             link pulled from ProFTPD becomes absolute (with one warning). Links pushed to it \
             are written as they are.",
        ),
        _ => return None,
    })
}

/// Runs every scenario against `target` and records its row; fails if a cell is not what
/// [`expected`] says.
fn run_suite(target: Target) {
    let keys: Vec<&str> = SCENARIOS.iter().map(|(k, _)| *k).collect();
    let columns: Vec<&str> = FEATURES.iter().map(|f| f.key).collect();
    assert_eq!(
        keys, columns,
        "one scenario per column of the table, in its order"
    );
    let started = Instant::now();
    let mut cells = Vec::new();
    let mut surprises = Vec::new();
    for (feature, scenario) in SCENARIOS {
        let tmp = tempfile::tempdir().unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(&target, tmp.path())))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("the scenario panicked: {msg}"))
            });
        // Paths of this run's throwaway directories would make every table differ.
        let outcome = outcome.map_err(|detail| target.without_run_paths(detail));
        let cell = match (outcome, expected(target.key, feature)) {
            (Ok(()), None) => pass(feature),
            (Ok(()), Some((_, Cause::Changing, _))) => pass(feature),
            (Ok(()), Some((status, cause, note))) => {
                surprises.push(format!(
                    "{feature}: passes, but is expected to be {} ({})",
                    status.as_str(),
                    cause.as_str()
                ));
                let mut cell = pass(feature);
                cell.note = Some((cause, note.to_owned()));
                cell
            }
            (Err(detail), Some((status, cause, note))) => Cell {
                feature,
                status,
                detail,
                note: Some((cause, note.to_owned())),
            },
            (Err(detail), None) => {
                surprises.push(format!("{feature}: {detail}"));
                Cell {
                    feature,
                    status: Status::Fail,
                    detail,
                    note: Some((Cause::Ours, "Not explained yet: a regression.".to_owned())),
                }
            }
        };
        cells.push(cell);
    }
    let row = Row {
        key: target.key.to_owned(),
        order: target.order,
        title: target.title.to_owned(),
        version: target.version.clone(),
        date: today(),
        seconds: started.elapsed().as_secs_f64(),
        cells,
    };
    let results = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("compat-results.json");
    testkit::compat::record_row(&results, &row).unwrap();
    assert!(
        surprises.is_empty(),
        "{} ({}): cells that differ from what is expected of it:\n{}",
        target.title,
        target.key,
        surprises.join("\n")
    );
}

fn pass(feature: &'static str) -> Cell {
    Cell {
        feature,
        status: Status::Pass,
        detail: String::new(),
        note: None,
    }
}

fn today() -> String {
    first_line("date", &["-u", "+%Y-%m-%d"])
}

// ---- The servers. ----

#[test]
fn compat_openssh_internal_sftp() {
    let server = SftpOnlyServer::shared();
    run_suite(Target::ssh(
        "openssh",
        "OpenSSH sshd, chroot + internal-sftp",
        1,
        server,
    ));
}

#[test]
fn compat_sftp_server_hidden_extensions() {
    // Quick over pipes: one test for the six, in turn.
    for (i, (ext, key)) in [
        ("posix-rename", "sftp-server-no-posix-rename"),
        ("copy-data", "sftp-server-no-copy-data"),
        ("hardlink", "sftp-server-no-hardlink"),
        ("fsync", "sftp-server-no-fsync"),
        ("lsetstat", "sftp-server-no-lsetstat"),
        ("limits", "sftp-server-no-limits"),
    ]
    .into_iter()
    .enumerate()
    {
        let title: &'static str = Box::leak(format!("OpenSSH sftp-server -P {ext}").into());
        run_suite(Target::sftp_server(
            key,
            title,
            2 + i as u32,
            &format!("-P {ext}"),
        ));
    }
}

#[test]
fn compat_sftp_server_read_only() {
    run_suite(Target::sftp_server(
        "sftp-server-R",
        "OpenSSH sftp-server -R (read-only)",
        8,
        "-R",
    ));
}

#[test]
fn compat_proftpd() {
    run_suite(Target::ssh(
        "proftpd",
        "ProFTPD mod_sftp",
        9,
        ProftpdServer::shared(),
    ));
}

#[test]
fn compat_gesftpserver() {
    run_suite(Target::ssh(
        "gesftpserver",
        "gesftpserver as sshd's subsystem (chroot)",
        10,
        GesftpServer::shared(),
    ));
}

#[test]
fn compat_rclone() {
    run_suite(Target::ssh(
        "rclone",
        "rclone serve sftp",
        11,
        RcloneServer::shared(),
    ));
}

#[test]
fn compat_asyncssh() {
    run_suite(Target::ssh(
        "asyncssh",
        "asyncssh SFTPServer (chroot)",
        12,
        AsyncsshServer::shared(),
    ));
}

// ---- Helpers for the scenarios. ----

/// The run's stdout if it exited 0, else what went wrong.
fn ran(what: &str, out: &Output) -> Result<String, String> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let err: Vec<&str> = err.lines().take(6).collect();
    Err(format!("{what}: {} ({})", out.status, err.join(" / ")))
}

/// Contents, names, kinds and link targets differ (rsync -c, without times, modes or owners).
fn same_content(what: &str, a: &Path, b: &Path) -> Result<(), String> {
    let diff = rsync_diff(a, b, &["-c", "--no-t", "--no-p", "--no-o", "--no-g"]);
    if diff.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: rsync -c still finds: {}", lines(&diff)))
    }
}

fn lines(text: &str) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut shown = all.iter().take(8).copied().collect::<Vec<_>>().join("; ");
    if all.len() > 8 {
        shown.push_str(&format!("; ... ({} lines)", all.len()));
    }
    shown
}

/// `len` bytes that differ by `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    XorShift::new(seed).bytes(len)
}

/// Files, a dot file, an empty one, nested directories with their own modes and times.
fn basic_tree(root: &Path) {
    TreeBuilder::new(root)
        .file_with("a.txt", b"alpha\n", 0o644, 1_500_000_000)
        .file_with(".hidden", b"dot file", 0o600, 1_500_000_100)
        .file_with("run.sh", b"#!/bin/sh\nexit 0\n", 0o755, 1_500_000_200)
        .file_with("empty", b"", 0o640, 1_500_000_300)
        .file_with("sub/b.bin", noise(300_000, 1), 0o644, 1_500_000_400)
        .file_with("sub/deeper/c", b"c", 0o604, 1_500_000_500)
        .file_with("sub/deeper/d.bin", noise(1 << 20, 2), 0o644, 1_500_000_600)
        .dir("sub/deeper", 0o750, 1_500_001_000)
        .dir("sub", 0o755, 1_500_002_000)
        .finish();
}

/// The basic tree, already on the server: its remote path and local view.
fn basic_tree_on_server(t: &Target) -> (String, PathBuf) {
    let (remote, local) = t.fresh("served");
    basic_tree(&local);
    t.own(&local);
    (remote, local)
}

/// A file of `data` alone in a new directory on the server.
fn file_on_server(t: &Target, data: &[u8], mtime: i64) -> (String, PathBuf) {
    let (remote, local) = t.fresh("file");
    TreeBuilder::new(&local)
        .file_with("f", data, 0o644, mtime)
        .finish();
    t.own(&local);
    (remote, local)
}

fn flip_bytes(data: &mut [u8], at: &[usize]) {
    for &i in at {
        data[i] ^= 0xa5;
    }
}

// ---- The scenarios, one per column. ----

fn push_tree(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    basic_tree(&src);
    let (remote, local) = t.fresh("push");
    ran("push", &t.push(&["-a"], &src, &remote))?;
    same_content("after the push", &src, &local)?;
    // The same by an absolute path, which some servers want and others refuse.
    let (remote, local) = t.fresh("push-abs");
    let absolute = t.absolute(&remote);
    ran(
        &format!("push to {absolute}"),
        &t.push(&["-a"], &src, &absolute),
    )?;
    same_content("after the push by absolute path", &src, &local)
}

fn pull_tree(t: &Target, tmp: &Path) -> Result<(), String> {
    let (remote, served) = basic_tree_on_server(t);
    let dst = tmp.join("dst");
    ran("pull", &t.pull(&["-a"], &remote, &dst))?;
    same_content("after the pull", &served, &dst)
}

fn resync(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    basic_tree(&src);
    let (remote, local) = t.fresh("resync");
    ran("first push", &t.push(&["-a"], &src, &remote))?;
    let mut grown = noise(300_000, 1);
    grown.extend_from_slice(b"and a tail");
    TreeBuilder::new(&src)
        .file_with("a.txt", b"ALPHA\n", 0o644, 1_600_000_000)
        .file_with("sub/b.bin", grown, 0o644, 1_600_000_100)
        .file_with("sub/new.txt", b"new", 0o644, 1_600_000_200)
        .finish();
    ran("second push", &t.push(&["-a"], &src, &remote))?;
    same_content("after the second push", &src, &local)?;
    let again = ran("third push", &t.push(&["-ai"], &src, &remote))?;
    let sent: Vec<&str> = again.lines().filter(|l| l.starts_with("<f")).collect();
    if sent.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "a run with nothing to do sent files again: {}",
            sent.join("; ")
        ))
    }
}

fn delete(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    basic_tree(&src);
    let (remote, local) = t.fresh("delete");
    ran("first push", &t.push(&["-a"], &src, &remote))?;
    std::fs::remove_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::remove_file(src.join(".hidden")).unwrap();
    ran("push --delete", &t.push(&["-a", "--delete"], &src, &remote))?;
    same_content("after --delete", &src, &local)
}

fn delta_push(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    let mut data = noise(2 << 20, 3);
    TreeBuilder::new(&src)
        .file_with("f", &data, 0o644, 1_500_000_000)
        .finish();
    let (remote, local) = t.fresh("delta-push");
    ran("first push", &t.push(&["-a"], &src, &remote))?;
    flip_bytes(&mut data, &[10, 1 << 20, (2 << 20) - 5]);
    TreeBuilder::new(&src)
        .file_with("f", &data, 0o644, 1_600_000_000)
        .finish();
    let out = ran("second push", &t.push(&["-a", "--stats"], &src, &remote))?;
    same_content("after the delta push", &src, &local)?;
    let (literal, matched) = (
        stats_value(&out, "Literal data"),
        stats_value(&out, "Matched data"),
    );
    if matched > 0 && literal < 1 << 20 {
        Ok(())
    } else {
        Err(format!(
            "3 changed bytes of 2 MiB: {literal} bytes sent, {matched} copied on the server"
        ))
    }
}

fn delta_pull(t: &Target, tmp: &Path) -> Result<(), String> {
    let mut data = noise(2 << 20, 4);
    let (remote, served) = file_on_server(t, &data, 1_500_000_000);
    let dst = tmp.join("dst");
    ran("first pull", &t.pull(&["-a"], &remote, &dst))?;
    flip_bytes(&mut data, &[10, 1 << 20, (2 << 20) - 5]);
    TreeBuilder::new(&served)
        .file_with("f", &data, 0o644, 1_600_000_000)
        .finish();
    t.own(&served);
    let out = ran("second pull", &t.pull(&["-a", "--stats"], &remote, &dst))?;
    same_content("after the delta pull", &served, &dst)?;
    let literal = stats_value(&out, "Literal data");
    if literal < 1 << 20 {
        Ok(())
    } else {
        Err(format!(
            "3 changed bytes of 2 MiB: {literal} bytes fetched (whole file)"
        ))
    }
}

fn check_file(t: &Target, tmp: &Path) -> Result<(), String> {
    let (remote, served) = file_on_server(t, &noise(1 << 20, 5), 1_500_000_000);
    let dst = tmp.join("dst");
    ran("first pull", &t.pull(&["-a"], &remote, &dst))?;
    testkit::set_mtime_nofollow(&dst.join("f"), 1_700_000_000).unwrap();
    let out = ran("pull -c", &t.pull(&["-a", "-c", "--stats"], &remote, &dst))?;
    same_content("after pull -c", &served, &dst)?;
    // --stats leaves the line out when the count is zero.
    let name = "Checksums computed by the server";
    let by_server = if out.lines().any(|l| l.starts_with(name)) {
        stats_value(&out, name)
    } else {
        0
    };
    if by_server >= 1 {
        Ok(())
    } else {
        Err("-c read the file back to hash it: no hash came from the server".into())
    }
}

fn hard_links(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    TreeBuilder::new(&src)
        .file_with("a", noise(100_000, 6), 0o644, 1_500_000_000)
        .hardlink("b", "a")
        .hardlink("sub/c", "a")
        .file_with("d", b"alone", 0o644, 1_500_000_000)
        .finish();
    let (remote, local) = t.fresh("hard-links");
    let out = t.push(&["-aH"], &src, &remote);
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    ran("push -H", &out)?;
    same_content("after push -H", &src, &local)?;
    let ino = |p: &str| std::fs::symlink_metadata(local.join(p)).map(|m| m.ino());
    let a = ino("a").map_err(|e| format!("a: {e}"))?;
    let apart: Vec<&str> = ["b", "sub/c"]
        .into_iter()
        .filter(|p| ino(p).ok() != Some(a))
        .collect();
    if apart.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} arrived as separate copies of a, not links to it; sftpsync said: {}",
            apart.join(" and "),
            lines(&warnings)
        ))
    }
}

fn symlinks(t: &Target, tmp: &Path) -> Result<(), String> {
    let links = [
        ("rel", "sub/g"),
        ("sub/up", "../f"),
        ("abs", "/nowhere/abs-target"),
        ("dangling", "no/such/thing"),
    ];
    let src = tmp.join("src");
    let mut tree = TreeBuilder::new(&src)
        .file_with("f", b"f", 0o644, 1_500_000_000)
        .file_with("sub/g", b"g", 0o644, 1_500_000_000);
    for (link, target) in links {
        tree = tree.symlink_with(link, target, 1_500_000_000);
    }
    tree.finish();
    let (remote, local) = t.fresh("symlinks");
    ran("push", &t.push(&["-a"], &src, &remote))?;
    let mut wrong = Vec::new();
    let target_of = |root: &Path, link: &str| {
        std::fs::read_link(root.join(link))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("({e})"))
    };
    for (link, target) in links {
        let got = target_of(&local, link);
        if got != target {
            wrong.push(format!("pushed {link} -> {target} is {got} on the server"));
        }
    }
    // Pulled back whatever the push made of them, so that both halves are always seen.
    let back = tmp.join("back");
    if let Err(e) = ran("pull back", &t.pull(&["-a"], &remote, &back)) {
        wrong.push(e);
    }
    for (link, target) in links {
        let got = target_of(&back, link);
        if got != target {
            wrong.push(format!("{link} -> {target} pulled back as {got}"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

fn atomic_replace(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    TreeBuilder::new(&src)
        .file_with("f", b"old contents", 0o644, 1_500_000_000)
        .finish();
    let (remote, local) = t.fresh("replace");
    ran("first push", &t.push(&["-a"], &src, &remote))?;
    TreeBuilder::new(&src)
        .file_with("f", b"new, longer contents", 0o644, 1_600_000_000)
        .finish();
    let out = t.push(&["-a"], &src, &remote);
    ran("second push", &out)?;
    same_content("after the replace", &src, &local)?;
    let err = String::from_utf8_lossy(&out.stderr);
    match err.lines().find(|l| l.contains("not atomically")) {
        None => Ok(()),
        Some(warning) => Err(warning.to_owned()),
    }
}

/// A tree whose files and directories have modes and times of their own.
fn attribute_tree(root: &Path) {
    TreeBuilder::new(root)
        .file_with("private", b"p", 0o600, 1_400_000_000)
        .file_with("tool", b"#!/bin/sh\n", 0o755, 1_400_000_100)
        .file_with("group", b"g", 0o640, 1_400_000_200)
        .file_with("d/odd", b"o", 0o604, 1_400_000_300)
        .file_with("e/f", b"f", 0o644, 1_400_000_400)
        .dir("d", 0o750, 1_400_001_000)
        .dir("e", 0o700, 1_400_002_000)
        .finish();
}

/// Pushes the attribute tree and returns what rsync with `flags` still finds different.
fn attributes_after_push(t: &Target, tmp: &Path, flags: &[&str]) -> Result<String, String> {
    let src = tmp.join("src");
    attribute_tree(&src);
    let (remote, local) = t.fresh("attrs");
    let out = t.push(&["-a"], &src, &remote);
    ran("push", &out)?;
    same_content("after the push", &src, &local)?;
    let diff = rsync_diff(&src, &local, flags);
    if diff.is_empty() {
        return Ok(String::new());
    }
    let warnings = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "rsync still finds: {}{}",
        lines(&diff),
        if warnings.trim().is_empty() {
            String::new()
        } else {
            format!("; sftpsync warned: {}", lines(&warnings))
        }
    ))
}

fn mtimes_kept(t: &Target, tmp: &Path) -> Result<(), String> {
    attributes_after_push(t, tmp, &["--no-p", "--no-o", "--no-g"]).map(drop)
}

fn modes_kept(t: &Target, tmp: &Path) -> Result<(), String> {
    attributes_after_push(t, tmp, &["--no-t", "--no-o", "--no-g"]).map(drop)
}

fn non_utf8_names(t: &Target, tmp: &Path) -> Result<(), String> {
    use std::ffi::OsStr;
    let src = tmp.join("src");
    let names: [&[u8]; 3] = [b"caf\xe9", b"\xff\xfe bytes", b"d\x80\x81"];
    std::fs::create_dir_all(src.join(OsStr::from_bytes(names[2]))).unwrap();
    std::fs::write(src.join(OsStr::from_bytes(names[0])), b"latin-1").unwrap();
    std::fs::write(src.join(OsStr::from_bytes(names[1])), b"raw").unwrap();
    std::fs::write(
        src.join(OsStr::from_bytes(names[2]))
            .join(OsStr::from_bytes(b"\xe9t\xe9.txt")),
        b"inside",
    )
    .unwrap();
    let (remote, local) = t.fresh("names");
    ran("push", &t.push(&["-a"], &src, &remote))?;
    same_content("after the push", &src, &local)?;
    let back = tmp.join("back");
    ran("pull back", &t.pull(&["-a"], &remote, &back))?;
    same_content("after the pull back", &src, &back)
}

/// The 100 MiB source, made once for every server: a random MiB repeated, each copy stamped
/// with its number so that a misplaced range shows.
fn big_source() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let block = noise(1 << 20, 7);
        let mut data = Vec::with_capacity(100 << 20);
        for i in 0..100u64 {
            data.extend_from_slice(&i.to_le_bytes());
            data.extend_from_slice(&block[8..]);
        }
        std::fs::write(dir.path().join("big"), data).unwrap();
        dir
    })
    .path()
}

fn same_file(a: &Path, b: &Path) -> Result<(), String> {
    let status = Command::new("cmp")
        .arg("--quiet")
        .arg(a)
        .arg(b)
        .status()
        .unwrap();
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} differs from {}", b.display(), a.display()))
    }
}

fn big_file(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = big_source();
    let (remote, local) = t.fresh("big");
    let result = (|| {
        ran("push", &t.push(&["-a"], src, &remote))?;
        same_file(&src.join("big"), &local.join("big"))?;
        let back = tmp.join("back");
        ran("pull back", &t.pull(&["-a"], &remote, &back))?;
        same_file(&src.join("big"), &back.join("big"))
    })();
    // A dozen servers' copies would add up.
    let _ = std::fs::remove_file(local.join("big"));
    result
}

fn many_files(t: &Target, tmp: &Path) -> Result<(), String> {
    let src = tmp.join("src");
    let mut rng = XorShift::new(8);
    for d in 0..10 {
        let dir = src.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let len = rng.range(10, 4000) as usize;
            std::fs::write(dir.join(format!("file{f:03}")), rng.bytes(len)).unwrap();
        }
    }
    let (remote, local) = t.fresh("many");
    ran("push", &t.push(&["-a"], &src, &remote))?;
    same_content("after the push", &src, &local)?;
    let back = tmp.join("back");
    ran("pull back", &t.pull(&["-a"], &remote, &back))?;
    same_content("after the pull back", &src, &back)
}

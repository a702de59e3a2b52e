//! Throwaway OpenSSH sshd that allows only SFTP (ForceCommand internal-sftp, chrooted) on
//! 127.0.0.1, with generated keys, for end-to-end tests against a real server.
//!
//! Layout of one instance, `/srv/sftpsync-test/<pid>-<n>/`:
//! `sshd_config`, `host_ed25519[.pub]`, `client_ed25519[.pub]`, `authorized_keys`,
//! `known_hosts`, `sshd.pid`, `sshd.log` (LogLevel VERBOSE, handy when a test fails), and
//! `chroot/data/`, the SFTP login directory (`/data` as the client sees it).
//!
//! The chroot cannot live under /tmp: sshd refuses a ChrootDirectory any of whose components
//! is group- or world-writable or not owned by root.
//!
//! Process-wide side effect: starting a server makes the test process a child subreaper and
//! starts a thread that reaps orphaned sshd processes (see `start_orphan_reaper` for why).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::run_checked;

/// The unprivileged account the test server lets in. Created on first use if missing.
pub const TEST_USER: &str = "sftpsynctest";
/// Parent of all instance directories; see the module docs for why not /tmp.
pub const INSTANCE_ROOT: &str = "/srv/sftpsync-test";
/// Login directory inside the chroot, as the SFTP client sees it.
pub const LOGIN_DIR: &str = "/data";

const SSHD: &str = "/usr/sbin/sshd";
const HOST: &str = "127.0.0.1";
const NOLOGIN: &str = "/usr/sbin/nologin";
const PORT_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running sshd that accepts only `TEST_USER` with the generated client key and only for SFTP.
///
/// Get the per-test-binary instance with [`SftpOnlyServer::shared`], or a private one with
/// [`SftpOnlyServer::start`] (stopped and deleted on drop).
#[derive(Debug)]
pub struct SftpOnlyServer {
    port: u16,
    pid: u32,
    uid: u32,
    gid: u32,
    dir: PathBuf,
    chroot: PathBuf,
    client_key: PathBuf,
    known_hosts: PathBuf,
    log: PathBuf,
    // Mutex only to make the server Sync for the shared static; the receiver tells Drop
    // whether sshd already exited, so it never signals a PID that may have been reused.
    exited: Mutex<Receiver<io::Result<ExitStatus>>>,
}

impl SftpOnlyServer {
    /// The instance shared by every test of this test binary, started on first call.
    ///
    /// Statics are never dropped, so an `atexit` hook stops it and deletes its directory when
    /// the test binary exits normally; if the process dies abruptly, sshd still gets SIGKILL
    /// (PR_SET_PDEATHSIG) and the next run sweeps the directory. Panics if it cannot start.
    pub fn shared() -> &'static SftpOnlyServer {
        SHARED.get_or_init(|| {
            let server = Self::try_start()
                .unwrap_or_else(|e| panic!("cannot start the shared SFTP-only sshd: {e}"));
            // SAFETY: registering a plain extern "C" function has no preconditions.
            if unsafe { libc::atexit(stop_shared_at_exit) } != 0 {
                eprintln!("testkit: atexit failed; the shared sshd will be SIGKILLed at exit");
            }
            server
        })
    }

    /// A private instance, for tests that must not share state (or that stop the server).
    /// Panics if it cannot start.
    pub fn start() -> SftpOnlyServer {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start a private SFTP-only sshd: {e}"))
    }

    /// Like [`start`](Self::start) but reports failure instead of panicking.
    pub fn try_start() -> io::Result<SftpOnlyServer> {
        check_prerequisites()?;
        let (uid, gid) = ensure_test_user()?;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_instances);
        start_orphan_reaper();

        let dir = new_instance_dir()?;
        // Until sshd is up, a failure must not leave the half-built directory behind.
        let mut guard = RemoveOnDrop(Some(dir.clone()));
        let started = start_in(&dir, uid, gid)?;
        guard.0 = None;
        Ok(started)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn user(&self) -> &'static str {
        TEST_USER
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// PID of the listening sshd.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The instance directory (config, keys, log, chroot).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ChrootDirectory: what the client sees as `/`.
    pub fn chroot(&self) -> &Path {
        &self.chroot
    }

    /// `chroot/data`: the SFTP login directory, where relative remote paths land.
    pub fn data_dir(&self) -> PathBuf {
        self.chroot.join(LOGIN_DIR.trim_start_matches('/'))
    }

    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// sshd's own log (LogLevel VERBOSE), the first place to look when a connection fails.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// The log's current contents, lossily decoded; empty if unreadable.
    pub fn log_contents(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// ssh options usable by `ssh`, `sftp` and `scp` alike (port given as `-o Port=`, since
    /// ssh spells the flag `-p` and sftp/scp spell it `-P`).
    ///
    /// `-F /dev/null` keeps the invoking user's ~/.ssh/config out; host keys are still checked
    /// strictly, against the instance's own known_hosts.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut v = vec![
            "-F".to_owned(),
            "/dev/null".to_owned(),
            "-o".to_owned(),
            format!("Port={}", self.port),
        ];
        v.extend(self.common_options());
        v
    }

    /// Program and arguments for rsync-style `-e`, starting with `ssh`.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut v = vec![
            "ssh".to_owned(),
            "-F".to_owned(),
            "/dev/null".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        v.extend(self.common_options());
        v
    }

    /// [`ssh_args`](Self::ssh_args) joined by spaces, to pass as `sftpsync -e` / `rsync -e`.
    /// The instance paths contain no spaces or quotes, so plain joining is safe.
    pub fn ssh_command(&self) -> String {
        self.ssh_args().join(" ")
    }

    /// `sftpsynctest@127.0.0.1:PATH`, PATH relative to the login directory (or absolute inside
    /// the chroot).
    pub fn remote_spec(&self, path: &str) -> String {
        format!("{TEST_USER}@{HOST}:{path}")
    }

    /// `sftpsynctest@127.0.0.1`, for ssh/sftp command lines.
    pub fn user_at_host(&self) -> String {
        format!("{TEST_USER}@{HOST}")
    }

    /// Creates a new empty directory in the login directory, owned by the test user, so that
    /// tests running in parallel against the shared server never collide.
    ///
    /// Returns the path relative to the login directory (for [`remote_spec`](Self::remote_spec))
    /// and the same directory's local path under the chroot. Panics on failure.
    pub fn fresh_remote_dir(&self, name: &str) -> (String, PathBuf) {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            !name.is_empty() && !name.contains('/') && !name.contains('\0'),
            "fresh_remote_dir wants a single path component, got {name:?}"
        );
        let data = self.data_dir();
        loop {
            let rel = format!("{name}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
            let local = data.join(&rel);
            match fs::create_dir(&local) {
                Ok(()) => {
                    fs::set_permissions(&local, fs::Permissions::from_mode(0o755))
                        .and_then(|()| chown(&local, Some(self.uid), Some(self.gid)))
                        .unwrap_or_else(|e| panic!("cannot prepare {}: {e}", local.display()));
                    return (rel, local);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", local.display()),
            }
        }
    }

    fn common_options(&self) -> Vec<String> {
        let mut v = vec!["-i".to_owned(), self.client_key.display().to_string()];
        for opt in [
            "IdentitiesOnly=yes".to_owned(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "StrictHostKeyChecking=yes".to_owned(),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "BatchMode=yes".to_owned(),
            "LogLevel=ERROR".to_owned(),
        ] {
            v.push("-o".to_owned());
            v.push(opt);
        }
        v
    }
}

impl Drop for SftpOnlyServer {
    fn drop(&mut self) {
        let exited = self.exited.get_mut().unwrap_or_else(|p| p.into_inner());
        stop_sshd(self.pid, exited);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("testkit: cannot remove {}: {e}", self.dir.display());
        }
    }
}

static SHARED: OnceLock<SftpOnlyServer> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    // A panic must not unwind out of an extern "C" function (that aborts the process).
    let _ = std::panic::catch_unwind(|| {
        if let Some(server) = SHARED.get() {
            let exited = server.exited.lock().unwrap_or_else(|p| p.into_inner());
            stop_sshd(server.pid, &exited);
            let _ = fs::remove_dir_all(&server.dir);
        }
        // Zombies still parented to this process at exit would go to PID 1 and stay.
        let deadline = Instant::now() + Duration::from_secs(2);
        while reap_orphaned_sshds() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Signals sshd to stop and waits for its spawner thread to confirm, escalating to SIGKILL.
fn stop_sshd(pid: u32, exited: &Receiver<io::Result<ExitStatus>>) {
    // Once the spawner has reaped it, the PID is free for reuse: signalling it could hit a
    // stranger, so only signal while the spawner is still waiting.
    if exited.try_recv().is_ok() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
        match exited.recv_timeout(Duration::from_secs(5)) {
            Ok(_) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    eprintln!("testkit: sshd {pid} did not exit after SIGKILL");
}

/// Listening sshds whose spawner threads are blocked in wait(): the orphan reaper must leave
/// them alone or that wait() would fail. Held across spawn() so the reaper never sees a
/// listener before it is registered.
static LISTENERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// OpenSSH's per-connection processes routinely outlive their parent (the "[priv]" monitor
/// exits before its "@notty" child), so every session leaves an orphan. Where PID 1 does not
/// reap (containers, including this project's CI machines, with pid_max 32768) these pile up
/// as zombies. So the test process becomes a child subreaper, which makes those orphans its
/// own children, and a background thread reaps them.
///
/// Side effect for the whole test binary: any orphaned descendant is reparented to it rather
/// than to PID 1; only zombies named sshd* are reaped, since reaping anything else could
/// steal the exit status of a `Child` some test is waiting for.
fn start_orphan_reaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments has no memory-safety preconditions.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
            eprintln!(
                "testkit: PR_SET_CHILD_SUBREAPER failed ({}); sshd orphans go to PID 1",
                io::Error::last_os_error()
            );
            return;
        }
        let spawned = thread::Builder::new()
            .name("testkit-reaper".to_owned())
            .spawn(|| loop {
                thread::sleep(Duration::from_millis(100));
                reap_orphaned_sshds();
            });
        if let Err(e) = spawned {
            eprintln!("testkit: cannot start the sshd orphan reaper: {e}");
        }
    });
}

/// Reaps this process's zombie sshd children that are not listeners; returns how many
/// sshd children (of any state) were left to wait for.
fn reap_orphaned_sshds() -> usize {
    let listeners = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    let mut left = 0;
    for child in child_processes(std::process::id()) {
        // 9.8+ runs sessions as sshd-session, which still starts with "sshd".
        if !child.comm.starts_with("sshd") || listeners.contains(&child.pid) {
            continue;
        }
        if child.state == 'Z' {
            let mut status = 0;
            // SAFETY: waits for one specific zombie child; status is a valid out-pointer.
            unsafe { libc::waitpid(child.pid as libc::pid_t, &mut status, libc::WNOHANG) };
        } else {
            left += 1;
        }
    }
    left
}

struct ProcInfo {
    pid: u32,
    comm: String,
    state: char,
}

/// Processes whose parent is `parent`, from /proc.
fn child_processes(parent: u32) -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split
            // at the last ')'.
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next()?.chars().next()?;
            let ppid: u32 = rest.next()?.parse().ok()?;
            (ppid == parent).then(|| ProcInfo {
                pid,
                comm: stat[open + 1..close].to_owned(),
                state,
            })
        })
        .collect()
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn check_prerequisites() -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the SFTP-only sshd fixture must run as root (sshd chroot and user creation)",
        ));
    }
    if !Path::new(SSHD).is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{SSHD} not found: apt-get install -y openssh-server"),
        ));
    }
    // sshd's privilege-separation chroot; Debian creates it only when the service starts.
    match fs::create_dir("/run/sshd") {
        Ok(()) => fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("mkdir /run/sshd: {e}"))),
    }
    Ok(())
}

/// Creates `TEST_USER` if needed and fixes up the attributes sshd cares about; returns its
/// uid and gid.
fn ensure_test_user() -> io::Result<(u32, u32)> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());

    if passwd_entry(TEST_USER)?.is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                LOGIN_DIR,
                "--shell",
                NOLOGIN,
                TEST_USER,
            ])
            .output()?;
        // Exit 9 means the name is taken: another test process created it in the meantime.
        if !out.status.success() && out.status.code() != Some(9) {
            return Err(io::Error::other(format!(
                "useradd {TEST_USER} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let entry = passwd_entry(TEST_USER)?.ok_or_else(|| {
        io::Error::other(format!(
            "{TEST_USER} missing from /etc/passwd after useradd"
        ))
    })?;

    // Without PAM, sshd treats a password field starting with '!' (useradd's default) as a
    // locked account and refuses even key logins; '*' means "no password" but not locked.
    // The home must be the login dir because sshd chdirs there inside the chroot before
    // ForceCommand runs and complains on the channel's stderr if it is missing.
    let needs_fix = shadow_password(TEST_USER)?.as_deref() != Some("*")
        || entry.home != LOGIN_DIR
        || entry.shell != NOLOGIN;
    if needs_fix {
        let mut attempts = 0;
        loop {
            let out = Command::new("usermod")
                .args(["-p", "*", "-d", LOGIN_DIR, "-s", NOLOGIN, TEST_USER])
                .output()?;
            if out.status.success() {
                break;
            }
            attempts += 1;
            // Exit 10: /etc/passwd is locked by a concurrent usermod from another test binary.
            if out.status.code() != Some(10) || attempts >= 20 {
                return Err(io::Error::other(format!(
                    "usermod {TEST_USER} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok((entry.uid, entry.gid))
}

struct PasswdEntry {
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn passwd_entry(user: &str) -> io::Result<Option<PasswdEntry>> {
    let text = fs::read_to_string("/etc/passwd")?;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7 && f[0] == user {
            let parse = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| io::Error::other(format!("bad /etc/passwd line: {line}")))
            };
            return Ok(Some(PasswdEntry {
                uid: parse(f[2])?,
                gid: parse(f[3])?,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            }));
        }
    }
    Ok(None)
}

fn shadow_password(user: &str) -> io::Result<Option<String>> {
    let text = match fs::read_to_string("/etc/shadow") {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_owned())
    }))
}

/// Deletes instance directories left by test processes that are gone (the shared instance is
/// never dropped, so its directory always outlives its process).
fn remove_stale_instances() {
    let Ok(entries) = fs::read_dir(INSTANCE_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn pid_alive(pid: libc::pid_t) -> bool {
    // A zombie counts as dead: where PID 1 does not reap, a killed test binary can stay one.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn mkdir_root_0755(path: &Path) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    chown(path, Some(0), Some(0))
}

fn new_instance_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = Path::new(INSTANCE_ROOT);
    fs::create_dir_all(root)?;
    // create_dir_all obeys the umask and would happily reuse a loosely-permissioned
    // directory, either of which makes sshd reject the chroot.
    mkdir_root_0755(root)?;
    loop {
        let dir = root.join(format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                mkdir_root_0755(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
}

fn keygen(path: &Path, comment: &str) -> io::Result<()> {
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

/// `type base64` of a .pub file, without the comment.
fn public_key(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let fields: Vec<&str> = text.split_whitespace().take(2).collect();
    if fields.len() != 2 {
        return Err(io::Error::other(format!(
            "unexpected public key in {}",
            path.display()
        )));
    }
    Ok(fields.join(" "))
}

fn start_in(dir: &Path, uid: u32, gid: u32) -> io::Result<SftpOnlyServer> {
    let chroot = dir.join("chroot");
    fs::create_dir(&chroot)?;
    mkdir_root_0755(&chroot)?;
    let data = chroot.join(LOGIN_DIR.trim_start_matches('/'));
    fs::create_dir(&data)?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
    chown(&data, Some(uid), Some(gid))?;

    let host_key = dir.join("host_ed25519");
    let client_key = dir.join("client_ed25519");
    keygen(&host_key, "sftpsync-test-host")?;
    keygen(&client_key, "sftpsync-test-client")?;

    // sshd reads this file as the test user, so it must be world-readable; root ownership
    // keeps the user from adding keys of its own.
    let authorized_keys = dir.join("authorized_keys");
    fs::write(
        &authorized_keys,
        format!("{}\n", public_key(&client_key.with_extension("pub"))?),
    )?;
    fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))?;

    let host_pub = public_key(&host_key.with_extension("pub"))?;
    let known_hosts = dir.join("known_hosts");
    let config = dir.join("sshd_config");
    let log = dir.join("sshd.log");
    let penalties = supports_per_source_penalties();

    let mut failures = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        fs::write(&known_hosts, format!("[{HOST}]:{port} {host_pub}\n"))?;
        fs::write(
            &config,
            sshd_config(port, dir, &host_key, &authorized_keys, &chroot, penalties),
        )?;
        let (pid, exited) = spawn_sshd(&config, &log)?;
        match wait_ready(port, &exited, &log) {
            Ok(()) => {
                return Ok(SftpOnlyServer {
                    port,
                    pid,
                    uid,
                    gid,
                    dir: dir.to_owned(),
                    chroot,
                    client_key,
                    known_hosts,
                    log,
                    exited: Mutex::new(exited),
                });
            }
            Err(e) => {
                stop_sshd(pid, &exited);
                failures.push(format!("port {port}: {e}"));
            }
        }
    }
    Err(io::Error::other(format!(
        "sshd did not come up after {PORT_ATTEMPTS} attempts:\n{}",
        failures.join("\n")
    )))
}

/// Asks the kernel for a free port. Racy by nature (someone may take it before sshd binds),
/// which is why the caller retries with a new port when sshd fails to listen.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// PerSourcePenalties (OpenSSH 9.8+) would block 127.0.0.1 after tests that deliberately fail
/// to authenticate or drop connections; older sshd rejects the keyword, so ask the version.
fn supports_per_source_penalties() -> bool {
    let Ok(out) = Command::new(SSHD).arg("-V").stdin(Stdio::null()).output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    parse_openssh_version(&text).is_some_and(|v| v >= (9, 8))
}

fn parse_openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn sshd_config(
    port: u16,
    dir: &Path,
    host_key: &Path,
    authorized_keys: &Path,
    chroot: &Path,
    penalties: bool,
) -> String {
    let dir = dir.display();
    let penalties = if penalties {
        "PerSourcePenalties no\n"
    } else {
        ""
    };
    // MaxStartups/MaxSessions are raised because parallel tests open many connections at once
    // and the default 10:30:100 starts dropping unauthenticated ones at random.
    format!(
        "\
# Written by sftpsync's testkit for one throwaway test server. Not a production config.
Port {port}
ListenAddress {HOST}
AddressFamily inet
HostKey {host_key}
PidFile {dir}/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
AuthorizedKeysFile {authorized_keys}
AllowUsers {TEST_USER}
Subsystem sftp internal-sftp
LogLevel VERBOSE
UseDNS no
PrintMotd no
MaxStartups 200
MaxSessions 100
{penalties}
Match User {TEST_USER}
    ForceCommand internal-sftp -d {LOGIN_DIR}
    ChrootDirectory {chroot}
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    PermitTunnel no
    PermitTTY no
",
        host_key = host_key.display(),
        authorized_keys = authorized_keys.display(),
        chroot = chroot.display(),
    )
}

/// Starts `sshd -D -e` from a thread dedicated to it.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, so
/// the child must come from a thread that lives as long as sshd should: this one blocks in
/// wait() until sshd exits (or parks forever if waiting fails), and dies with the process.
/// That is how the never-dropped shared instance still goes away with the test binary.
fn spawn_sshd(config: &Path, log: &Path) -> io::Result<(u32, Receiver<io::Result<ExitStatus>>)> {
    let log_file = File::options().create(true).append(true).open(log)?;
    let log_out = log_file.try_clone()?;
    let config = config.to_owned();
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::Builder::new()
        .name("testkit-sshd".to_owned())
        .spawn(move || {
            let mut cmd = Command::new(SSHD);
            cmd.args([OsStr::new("-D"), OsStr::new("-e"), OsStr::new("-f")])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_out)
                .stderr(log_file);
            // SAFETY: the closure runs between fork and exec and only calls prctl, which is
            // async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut listeners = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
            let mut child = match cmd.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                    return;
                }
            };
            let pid = child.id();
            listeners.push(pid);
            drop(listeners);
            let _ = pid_tx.send(Ok(pid));
            let status = child.wait();
            LISTENERS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|&p| p != pid);
            let failed = status.is_err();
            let _ = exit_tx.send(status);
            if failed {
                // If wait() failed, sshd may still be running; leaving this thread would
                // deliver its death signal now instead of at process exit.
                loop {
                    thread::park();
                }
            }
        })?;
    let pid = pid_rx
        .recv()
        .map_err(|_| io::Error::other("sshd spawner thread died"))??;
    Ok((pid, exit_rx))
}

/// Waits until *our* sshd listens on `port`: its log must say so (a banner alone could come
/// from whatever else grabbed the port), and the port must answer with an SSH banner.
fn wait_ready(port: u16, exited: &Receiver<io::Result<ExitStatus>>, log: &Path) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let listening = format!("Server listening on {HOST} port {port}");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(status) = exited.try_recv() {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(io::Error::other(format!(
                "sshd exited ({status}) before listening; its log:\n{}",
                log_tail(log)
            )));
        }
        let logged = fs::read(log)
            .map(|b| String::from_utf8_lossy(&b).contains(&listening))
            .unwrap_or(false);
        if logged && banner_ok(&addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "sshd not ready on port {port} after {READY_TIMEOUT:?}; its log:\n{}",
                    log_tail(log)
                ),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn banner_ok(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).is_ok() && &buf == b"SSH-2.0-"
}

fn log_tail(log: &Path) -> String {
    let text = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssh_versions() {
        assert_eq!(
            parse_openssh_version("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19"),
            Some((9, 2))
        );
        assert_eq!(
            parse_openssh_version("usage\nOpenSSH_10.0, x"),
            Some((10, 0))
        );
        assert_eq!(parse_openssh_version("nothing"), None);
    }

    #[test]
    fn config_has_the_chroot_match_block() {
        let c = sshd_config(
            2222,
            Path::new("/srv/x"),
            Path::new("/srv/x/hk"),
            Path::new("/srv/x/ak"),
            Path::new("/srv/x/chroot"),
            false,
        );
        assert!(c.contains("Port 2222\n"));
        assert!(c.contains("ForceCommand internal-sftp -d /data\n"));
        assert!(c.contains("ChrootDirectory /srv/x/chroot\n"));
        assert!(!c.contains("PerSourcePenalties"));
    }
}

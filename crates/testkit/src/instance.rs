//! What every throwaway test server shares: the test user, an instance directory under /srv
//! with generated keys, the server process (started from a thread of its own, stopped by PID
//! only), and the ssh options that reach it.
//!
//! Each server type writes its own config and dereferences to the [`TestServer`] built here,
//! so tests and helpers can take any of them.
//!
//! Process-wide side effect: starting a server makes the test process a child subreaper and
//! starts a thread that reaps orphaned server processes (see `start_orphan_reaper` for why).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use crate::run_checked;

/// The unprivileged account the test servers let in. Created on first use if missing.
pub const TEST_USER: &str = "sftpsynctest";
/// Parent of all instance directories. Not /tmp: sshd refuses a chroot below a
/// world-writable directory.
pub const INSTANCE_ROOT: &str = "/srv/sftpsync-test";
/// The test user's home: sshd's login directory inside its chroot.
pub(crate) const HOME: &str = "/data";

pub(crate) const HOST: &str = "127.0.0.1";
/// The test user's login shell.
pub(crate) const NOLOGIN: &str = "/usr/sbin/nologin";
const PORT_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Command names of server processes, the only orphans the reaper may collect.
/// OpenSSH 9.8+ runs sessions as sshd-session, which still starts with "sshd".
const SERVER_COMMS: [&str; 2] = ["sshd", "proftpd"];

/// A running throwaway SFTP server: what a test needs to reach it and to look at what it wrote.
/// Stopping it (on drop) signals only the PID this kit started, then deletes the instance
/// directory.
#[derive(Debug)]
pub struct TestServer {
    name: &'static str,
    port: u16,
    pid: u32,
    uid: u32,
    gid: u32,
    dir: PathBuf,
    data_dir: PathBuf,
    client_key: PathBuf,
    known_hosts: PathBuf,
    log: PathBuf,
    // Mutex only to make the server Sync for the shared statics; the receiver tells the stop
    // whether the process already exited, so it never signals a PID that may have been reused.
    exited: Mutex<Receiver<io::Result<ExitStatus>>>,
}

impl TestServer {
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

    /// PID of the listening server process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The instance directory (config, keys, log, the served files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SFTP login directory, where relative remote paths land.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// The server's own log, the first place to look when a connection fails.
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

    /// `sftpsynctest@127.0.0.1:PATH`, PATH relative to the login directory (or absolute as
    /// the confined user sees the server's files).
    pub fn remote_spec(&self, path: &str) -> String {
        format!("{TEST_USER}@{HOST}:{path}")
    }

    /// `sftpsynctest@127.0.0.1`, for ssh/sftp command lines.
    pub fn user_at_host(&self) -> String {
        format!("{TEST_USER}@{HOST}")
    }

    /// Creates a new empty directory in the login directory, owned by the test user, so that
    /// tests running in parallel against a shared server never collide.
    ///
    /// Returns the path relative to the login directory (for [`remote_spec`](Self::remote_spec))
    /// and the same directory's local path. Panics on failure.
    pub fn fresh_remote_dir(&self, name: &str) -> (String, PathBuf) {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            !name.is_empty() && !name.contains('/') && !name.contains('\0'),
            "fresh_remote_dir wants a single path component, got {name:?}"
        );
        loop {
            let rel = format!("{name}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
            let local = self.data_dir.join(&rel);
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

    /// Stops the process and deletes the instance directory. `&self` so the never-dropped
    /// shared instances can be stopped from an atexit hook too.
    fn stop(&self) {
        let exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        stop_process(self.name, self.pid, &exited);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("testkit: cannot remove {}: {e}", self.dir.display());
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Registers `hook` (which calls [`stop_at_exit`] on a shared instance) to run at exit.
///
/// Statics are never dropped, hence the hook; if the process dies abruptly instead, the server
/// still gets SIGKILL (PR_SET_PDEATHSIG) and the next run sweeps its directory.
pub(crate) fn register_at_exit(hook: extern "C" fn(), name: &str) {
    // SAFETY: registering a plain extern "C" function has no preconditions.
    if unsafe { libc::atexit(hook) } != 0 {
        eprintln!("testkit: atexit failed; the shared {name} will be SIGKILLed at exit");
    }
}

/// The body of a shared instance's atexit hook.
pub(crate) fn stop_at_exit(server: Option<&TestServer>) {
    // A panic must not unwind out of an extern "C" function (that aborts the process).
    let _ = std::panic::catch_unwind(|| {
        if let Some(server) = server {
            server.stop();
        }
        // Zombies still parented to this process at exit would go to PID 1 and stay.
        let deadline = Instant::now() + Duration::from_secs(2);
        while reap_orphans() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    });
}

/// Fails unless the test process is root: both servers chroot the test user, and the user may
/// have to be created.
pub(crate) fn check_root(what: &str) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the {what} fixture must run as root (chroot and user creation)"),
        ));
    }
    Ok(())
}

/// An instance directory with fresh host and client keys, for the test user; the server type
/// writes its config into it and then [`launch`](Self::launch)es. Dropped before a successful
/// launch, it deletes the directory again.
pub(crate) struct Setup {
    pub dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Private host key, OpenSSH format; `.pub` beside it.
    pub host_key: PathBuf,
    /// Private client key; `.pub` beside it.
    pub client_key: PathBuf,
    cleanup: RemoveOnDrop,
}

/// One attempt's way to start the server on a given port.
pub(crate) struct Launch {
    pub command: Command,
    /// A log line that only this attempt's process writes once it listens.
    pub ready_line: String,
}

impl Setup {
    pub(crate) fn new() -> io::Result<Setup> {
        let (uid, gid) = ensure_test_user()?;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_instances);
        start_orphan_reaper();

        let dir = new_instance_dir()?;
        let cleanup = RemoveOnDrop(Some(dir.clone()));
        let host_key = dir.join("host_ed25519");
        let client_key = dir.join("client_ed25519");
        keygen(&host_key, "sftpsync-test-host")?;
        keygen(&client_key, "sftpsync-test-client")?;
        Ok(Setup {
            dir,
            uid,
            gid,
            host_key,
            client_key,
            cleanup,
        })
    }

    /// Creates `path` as an empty directory the test user owns.
    pub(crate) fn user_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        chown(path, Some(self.uid), Some(self.gid))
    }

    /// Writes `authorized_keys` (OpenSSH format) with the client key, world-readable (servers
    /// read it as the test user) but root-owned, so the user cannot add keys of its own.
    pub(crate) fn authorized_keys(&self) -> io::Result<PathBuf> {
        let path = self.dir.join("authorized_keys");
        let key = public_key(&self.client_key.with_extension("pub"))?;
        fs::write(&path, format!("{key}\n"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    /// The host key, handed to the test user for servers that run as that user.
    pub(crate) fn host_key_for_user(&self) -> io::Result<PathBuf> {
        chown(&self.host_key, Some(self.uid), Some(self.gid))?;
        Ok(self.host_key.clone())
    }

    /// Starts the server on a free port, retrying with another port when the port was taken
    /// in the meantime. `attempt` writes the config for a port and says how to start it;
    /// stdout and stderr go to `<name>.log`. Returns once the log shows the ready line and the
    /// port answers with a banner starting with `banner`.
    pub(crate) fn launch(
        mut self,
        name: &'static str,
        banner: &'static [u8],
        data_dir: PathBuf,
        mut attempt: impl FnMut(u16) -> io::Result<Launch>,
    ) -> io::Result<TestServer> {
        let host_pub = public_key(&self.host_key.with_extension("pub"))?;
        let known_hosts = self.dir.join("known_hosts");
        let log = self.dir.join(format!("{name}.log"));
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            fs::write(&known_hosts, format!("[{HOST}]:{port} {host_pub}\n"))?;
            let Launch {
                command,
                ready_line,
            } = attempt(port)?;
            // The log is shared by all attempts; only what this one adds counts.
            let log_start = fs::metadata(&log).map_or(0, |m| m.len());
            let (pid, exited) = spawn_server(name, command, &log)?;
            match wait_ready(name, port, &exited, &log, log_start, &ready_line, banner) {
                Ok(()) => {
                    self.cleanup.0 = None;
                    return Ok(TestServer {
                        name,
                        port,
                        pid,
                        uid: self.uid,
                        gid: self.gid,
                        dir: self.dir.clone(),
                        data_dir,
                        client_key: self.client_key.clone(),
                        known_hosts,
                        log,
                        exited: Mutex::new(exited),
                    });
                }
                Err(e) => {
                    stop_process(name, pid, &exited);
                    failures.push(format!("port {port}: {e}"));
                }
            }
        }
        Err(io::Error::other(format!(
            "{name} did not come up after {PORT_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        )))
    }
}

/// Signals the process to stop and waits for its spawner thread to confirm, escalating to
/// SIGKILL.
fn stop_process(name: &str, pid: u32, exited: &Receiver<io::Result<ExitStatus>>) {
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
    eprintln!("testkit: {name} {pid} did not exit after SIGKILL");
}

/// Listening servers whose spawner threads are blocked in wait(): the orphan reaper must leave
/// them alone or that wait() would fail. Held across spawn() so the reaper never sees a
/// listener before it is registered.
static LISTENERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Server session processes routinely outlive their parent (OpenSSH's "[priv]" monitor exits
/// before its "@notty" child; a stopped ProFTPD leaves its sessions running), so sessions leave
/// orphans. Where PID 1 does not reap (containers, including this project's CI machines, with
/// pid_max 32768) these pile up as zombies. So the test process becomes a child subreaper,
/// which makes those orphans its own children, and a background thread reaps them.
///
/// Side effect for the whole test binary: any orphaned descendant is reparented to it rather
/// than to PID 1; only zombies named like a server are reaped, since reaping anything else
/// could steal the exit status of a `Child` some test is waiting for.
fn start_orphan_reaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments has no memory-safety preconditions.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
            eprintln!(
                "testkit: PR_SET_CHILD_SUBREAPER failed ({}); server orphans go to PID 1",
                io::Error::last_os_error()
            );
            return;
        }
        let spawned = thread::Builder::new()
            .name("testkit-reaper".to_owned())
            .spawn(|| loop {
                thread::sleep(Duration::from_millis(100));
                reap_orphans();
            });
        if let Err(e) = spawned {
            eprintln!("testkit: cannot start the server orphan reaper: {e}");
        }
    });
}

/// Reaps this process's zombie server children that are not listeners; returns how many
/// server children (of any state) were left to wait for.
fn reap_orphans() -> usize {
    let listeners = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
    let mut left = 0;
    for child in child_processes(std::process::id()) {
        let is_server = SERVER_COMMS.iter().any(|c| child.comm.starts_with(c));
        if !is_server || listeners.contains(&child.pid) {
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

/// Creates `TEST_USER` if needed and fixes up the attributes the servers care about; returns
/// its uid and gid.
fn ensure_test_user() -> io::Result<(u32, u32)> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());

    if passwd_entry(TEST_USER)?.is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                HOME,
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
        || entry.home != HOME
        || entry.shell != NOLOGIN;
    if needs_fix {
        let mut attempts = 0;
        loop {
            let out = Command::new("usermod")
                .args(["-p", "*", "-d", HOME, "-s", NOLOGIN, TEST_USER])
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

/// Deletes instance directories left by test processes that are gone (the shared instances
/// are never dropped, so their directories always outlive their process).
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

/// Makes `path` root-owned and 0755, as sshd wants every component of a chroot.
pub(crate) fn mkdir_root_0755(path: &Path) -> io::Result<()> {
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
pub(crate) fn public_key(path: &Path) -> io::Result<String> {
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

/// Asks the kernel for a free port. Racy by nature (someone may take it before the server
/// binds), which is why [`Setup::launch`] retries with a new port when the server fails to
/// listen.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Starts `command` from a thread dedicated to it, output appended to `log`.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, so
/// the child must come from a thread that lives as long as the server should: this one blocks
/// in wait() until the server exits (or parks forever if waiting fails), and dies with the
/// process. That is how the never-dropped shared instances still go away with the test binary.
fn spawn_server(
    name: &str,
    mut command: Command,
    log: &Path,
) -> io::Result<(u32, Receiver<io::Result<ExitStatus>>)> {
    let log_file = File::options().create(true).append(true).open(log)?;
    let log_out = log_file.try_clone()?;
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("testkit-{name}"))
        .spawn(move || {
            command
                .stdin(Stdio::null())
                .stdout(log_out)
                .stderr(log_file);
            // SAFETY: the closure runs between fork and exec and only calls prctl, which is
            // async-signal-safe.
            unsafe {
                command.pre_exec(|| {
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
            let mut child = match command.spawn() {
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
                // If wait() failed, the server may still be running; leaving this thread
                // would deliver its death signal now instead of at process exit.
                loop {
                    thread::park();
                }
            }
        })?;
    let pid = pid_rx
        .recv()
        .map_err(|_| io::Error::other(format!("{name} spawner thread died")))??;
    Ok((pid, exit_rx))
}

/// Waits until *our* server listens on `port`: its log (past `log_start`) must say so, since a
/// banner alone could come from whatever else grabbed the port, and the port must answer with
/// a banner starting with `banner`.
fn wait_ready(
    name: &str,
    port: u16,
    exited: &Receiver<io::Result<ExitStatus>>,
    log: &Path,
    log_start: u64,
    ready_line: &str,
    banner: &[u8],
) -> io::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(status) = exited.try_recv() {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(io::Error::other(format!(
                "{name} exited ({status}) before listening; its log:\n{}",
                log_tail(log)
            )));
        }
        let logged = fs::read(log)
            .map(|b| {
                let new = b.get(log_start as usize..).unwrap_or_default();
                String::from_utf8_lossy(new).contains(ready_line)
            })
            .unwrap_or(false);
        if logged && banner_ok(&addr, banner) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{name} not ready on port {port} after {READY_TIMEOUT:?}; its log:\n{}",
                    log_tail(log)
                ),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn banner_ok(addr: &SocketAddr, banner: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    // Both sides may speak first in SSH, and some servers (Go's x/crypto/ssh, as in rclone)
    // wait for the client's identification before sending theirs.
    if stream.write_all(b"SSH-2.0-testkit-probe\r\n").is_err() {
        return false;
    }
    let mut buf = vec![0u8; banner.len()];
    stream.read_exact(&mut buf).is_ok() && buf == banner
}

fn log_tail(log: &Path) -> String {
    let text = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

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
//! [`ShellServer`] is the opposite case, a server where plain rsync works: no ForceCommand, no
//! chroot, and `root` may log in with the generated key to run commands.

use std::fs;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::instance::{
    check_root, mkdir_root_0755, register_at_exit, stop_at_exit, Launch, Setup, TestServer, HOME,
    HOST, NOLOGIN,
};
pub use crate::instance::{INSTANCE_ROOT, TEST_USER};

/// Login directory inside the chroot, as the SFTP client sees it.
pub const LOGIN_DIR: &str = HOME;

const SSHD: &str = "/usr/sbin/sshd";
/// Copied into a chroot as the login shell: dash needs nothing but libc.
const POSIX_SHELL: &str = "/bin/dash";

/// A running sshd that accepts only `TEST_USER` with the generated client key and only for SFTP.
///
/// Get the per-test-binary instance with [`SftpOnlyServer::shared`], or a private one with
/// [`SftpOnlyServer::start`] (stopped and deleted on drop). Everything a test reaches it by
/// comes from the [`TestServer`] it dereferences to.
#[derive(Debug)]
pub struct SftpOnlyServer {
    server: TestServer,
    chroot: PathBuf,
}

impl Deref for SftpOnlyServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl SftpOnlyServer {
    /// The instance shared by every test of this test binary, started on first call and
    /// stopped at exit. Panics if it cannot start.
    pub fn shared() -> &'static SftpOnlyServer {
        SHARED.get_or_init(|| {
            let server = Self::try_start()
                .unwrap_or_else(|e| panic!("cannot start the shared SFTP-only sshd: {e}"));
            register_at_exit(stop_shared_at_exit, "sshd");
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
        Self::try_start_with(Subsystem::Internal)
    }

    /// An sshd whose SFTP sessions are served by `subsystem`, chrooted either way.
    pub(crate) fn try_start_with(subsystem: Subsystem) -> io::Result<SftpOnlyServer> {
        let (server, chroot) = start_sshd(subsystem, Access::SftpOnly)?;
        Ok(SftpOnlyServer { server, chroot })
    }

    /// The ChrootDirectory: what the client sees as `/`.
    pub fn chroot(&self) -> &Path {
        &self.chroot
    }
}

/// An sshd with no restrictions beyond key logins: `root` gets a shell (the user of
/// [`TestServer`] still gets SFTP only, through its nologin shell). Stopped on drop.
#[derive(Debug)]
pub struct ShellServer {
    server: TestServer,
}

impl Deref for ShellServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl ShellServer {
    /// Panics if it cannot start.
    pub fn start() -> ShellServer {
        let (server, _) = start_sshd(Subsystem::Internal, Access::Shell)
            .unwrap_or_else(|e| panic!("cannot start a full-shell sshd: {e}"));
        ShellServer { server }
    }

    /// `root@127.0.0.1:PATH`, for commands run with a shell.
    pub fn root_spec(&self, path: &str) -> String {
        format!("root@{HOST}:{path}")
    }
}

/// What an sshd lets its users do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `TEST_USER` only, its sessions forced to SFTP in a chroot.
    SftpOnly,
    /// `TEST_USER` and `root`, with whatever their shells allow.
    Shell,
}

/// Starts an sshd; returns it and the chroot the SFTP-only user is kept in.
fn start_sshd(subsystem: Subsystem, access: Access) -> io::Result<(TestServer, PathBuf)> {
    check_prerequisites()?;
    let setup = Setup::new()?;
    let dir = setup.dir.clone();
    let chroot = dir.join("chroot");
    fs::create_dir(&chroot)?;
    mkdir_root_0755(&chroot)?;
    let data = chroot.join(LOGIN_DIR.trim_start_matches('/'));
    setup.user_dir(&data)?;
    if let Subsystem::External(program) = subsystem {
        populate_chroot(&chroot, program)?;
    }

    let authorized_keys = setup.authorized_keys()?;

    let config = dir.join("sshd_config");
    let host_key = setup.host_key.clone();
    let penalties = supports_per_source_penalties();
    let server = setup.launch("sshd", b"SSH-2.0-", data, |port| {
        fs::write(
            &config,
            sshd_config(
                port,
                &dir,
                &host_key,
                &authorized_keys,
                &chroot,
                Shape {
                    penalties,
                    subsystem,
                    access,
                },
            ),
        )?;
        let mut command = Command::new(SSHD);
        command.args(["-D", "-e", "-f"]).arg(&config);
        Ok(Launch {
            command,
            ready_line: format!("Server listening on {HOST} port {port}"),
        })
    })?;
    Ok((server, chroot))
}

/// What serves the SFTP subsystem.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subsystem {
    /// sshd's own `internal-sftp`, forced on every session.
    Internal,
    /// A server program, copied into the chroot at the same path.
    External(&'static str),
}

static SHARED: OnceLock<SftpOnlyServer> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    stop_at_exit(SHARED.get().map(|s| &s.server));
}

fn check_prerequisites() -> io::Result<()> {
    check_root("SFTP-only sshd")?;
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

/// Makes `program` runnable inside `chroot` for the test user: sshd starts every command of a
/// session as `SHELL -c COMMAND`, SHELL being the user's login shell (nologin) looked up inside
/// the chroot. So the chroot gets the program, a POSIX shell at the shell's path, and the
/// shared libraries both load, each at its own path, root-owned.
fn populate_chroot(chroot: &Path, program: &str) -> io::Result<()> {
    let shell = Path::new(NOLOGIN);
    let mut files = vec![
        (PathBuf::from(program), PathBuf::from(program)),
        (PathBuf::from(POSIX_SHELL), shell.to_path_buf()),
    ];
    for binary in [program, POSIX_SHELL] {
        for lib in shared_libraries(Path::new(binary))? {
            files.push((lib.clone(), lib));
        }
    }
    for (from, to) in files {
        let inside = chroot.join(to.strip_prefix("/").unwrap_or(&to));
        let parent = inside.parent().expect("a file below the chroot");
        fs::create_dir_all(parent)?;
        let mut dir = parent;
        while dir != chroot {
            mkdir_root_0755(dir)?;
            dir = dir.parent().expect("below the chroot");
        }
        if !inside.exists() {
            fs::copy(&from, &inside).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("copy {} into the chroot: {e}", from.display()),
                )
            })?;
        }
    }
    Ok(())
}

/// The shared libraries `binary` loads, dynamic loader included, as `ldd` lists them.
fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let out = crate::run_checked(Command::new("ldd").arg(binary))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-... (0x...)"
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
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

/// How an sshd is set up, beyond its paths.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Whether to turn off PerSourcePenalties (the sshd knows the keyword).
    penalties: bool,
    subsystem: Subsystem,
    access: Access,
}

fn sshd_config(
    port: u16,
    dir: &Path,
    host_key: &Path,
    authorized_keys: &Path,
    chroot: &Path,
    shape: Shape,
) -> String {
    let Shape {
        penalties,
        subsystem,
        access,
    } = shape;
    let dir = dir.display();
    // internal-sftp is forced so that no other command can run; an external server is started
    // by sshd through the user's shell inside the chroot (see `populate_chroot`), and sessions
    // start in the user's home, the login directory.
    let (program, force) = match subsystem {
        Subsystem::Internal => (
            "internal-sftp",
            format!("ForceCommand internal-sftp -d {LOGIN_DIR}"),
        ),
        Subsystem::External(program) => (program, format!("ForceCommand {program}")),
    };
    let penalties = if penalties {
        "PerSourcePenalties no\n"
    } else {
        ""
    };
    let (root_login, users, restrictions) = match access {
        Access::SftpOnly => (
            "no",
            TEST_USER.to_string(),
            format!(
                "\
Match User {TEST_USER}
    {force}
    ChrootDirectory {chroot}
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    PermitTunnel no
    PermitTTY no
",
                chroot = chroot.display()
            ),
        ),
        Access::Shell => (
            "prohibit-password",
            format!("{TEST_USER} root"),
            String::new(),
        ),
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
PermitRootLogin {root_login}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
AuthorizedKeysFile {authorized_keys}
AllowUsers {users}
Subsystem sftp {program}
LogLevel VERBOSE
UseDNS no
PrintMotd no
MaxStartups 200
MaxSessions 100
{penalties}
{restrictions}",
        host_key = host_key.display(),
        authorized_keys = authorized_keys.display(),
    )
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
            Shape {
                penalties: false,
                subsystem: Subsystem::Internal,
                access: Access::SftpOnly,
            },
        );
        assert!(c.contains("Port 2222\n"));
        assert!(c.contains("ForceCommand internal-sftp -d /data\n"));
        assert!(c.contains("ChrootDirectory /srv/x/chroot\n"));
        assert!(!c.contains("PerSourcePenalties"));
    }
}

//! Throwaway ProFTPD with mod_sftp on 127.0.0.1, SFTP only, the test user confined to the
//! instance's data directory: a second real server implementation for end-to-end tests.
//!
//! Layout of one instance, `/srv/sftpsync-test/<pid>-<n>/`: `proftpd.conf`,
//! `host_ed25519[.pub]`, `client_ed25519[.pub]`, `authorized_keys` (RFC 4716), `known_hosts`,
//! `proftpd.pid`, `proftpd.scoreboard`, `proftpd.log` (the daemon's output at debug level 2
//! plus the SFTPLog) and `data/`, the DefaultRoot: what the client sees as `/` and its login
//! directory.
//!
//! Needs Debian's `proftpd-core` and `proftpd-mod-crypto` (mod_sftp), 1.3.7 or later for the
//! OpenSSH-format ed25519 host key.

use std::fs;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::instance::{
    check_root, register_at_exit, stop_at_exit, Launch, Setup, TestServer, HOST,
};
use crate::run_checked;

const PROFTPD: &str = "/usr/sbin/proftpd";
const MODULE_DIR: &str = "/usr/lib/proftpd";
/// mod_sftp sends this before its key exchange; nothing else answers a port with it.
const BANNER: &[u8] = b"SSH-2.0-mod_sftp";

/// A running ProFTPD that speaks only SFTP and lets in only `TEST_USER` with the generated
/// client key. Files the client creates belong to the test user: mod_sftp drops root after
/// login.
///
/// Get the per-test-binary instance with [`ProftpdServer::shared`], or a private one with
/// [`ProftpdServer::start`] (stopped and deleted on drop). Everything a test reaches it by
/// comes from the [`TestServer`] it dereferences to; unlike the sshd, absolute remote paths
/// start at [`data_dir`](TestServer::data_dir), since that is the user's root.
#[derive(Debug)]
pub struct ProftpdServer {
    server: TestServer,
}

impl Deref for ProftpdServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl ProftpdServer {
    /// The instance shared by every test of this test binary, started on first call and
    /// stopped at exit. Panics if it cannot start.
    pub fn shared() -> &'static ProftpdServer {
        SHARED.get_or_init(|| {
            let server = Self::try_start()
                .unwrap_or_else(|e| panic!("cannot start the shared ProFTPD: {e}"));
            register_at_exit(stop_shared_at_exit, "proftpd");
            server
        })
    }

    /// A private instance, for tests that must not share state (or that stop the server).
    /// Panics if it cannot start.
    pub fn start() -> ProftpdServer {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start a private ProFTPD: {e}"))
    }

    /// Like [`start`](Self::start) but reports failure instead of panicking.
    pub fn try_start() -> io::Result<ProftpdServer> {
        check_prerequisites()?;
        let setup = Setup::new()?;
        let dir = setup.dir.clone();
        let data = dir.join("data");
        setup.user_dir(&data)?;

        // mod_sftp reads user keys only in RFC 4716 form, which ssh-keygen -e writes.
        let authorized_keys = dir.join("authorized_keys");
        let exported = run_checked(
            Command::new("ssh-keygen")
                .arg("-e")
                .arg("-f")
                .arg(setup.client_key.with_extension("pub")),
        )?;
        fs::write(&authorized_keys, exported.stdout)?;
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))?;

        let config = dir.join("proftpd.conf");
        let log = dir.join("proftpd.log");
        let host_key = setup.host_key.clone();
        let server = setup.launch("proftpd", BANNER, data.clone(), |port| {
            let paths = ConfigPaths {
                dir: &dir,
                data: &data,
                host_key: &host_key,
                authorized_keys: &authorized_keys,
                log: &log,
            };
            fs::write(&config, proftpd_config(port, &paths))?;
            let mut command = Command::new(PROFTPD);
            // Foreground, with debug level 2 on stderr: logins, chroot and transfers.
            command.args(["-n", "-d", "2", "-c"]).arg(&config);
            Ok(Launch {
                command,
                // Logged after the listener is bound; a taken port ends the process instead.
                ready_line: "standalone mode STARTUP".to_owned(),
            })
        })?;
        Ok(ProftpdServer { server })
    }
}

static SHARED: OnceLock<ProftpdServer> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    stop_at_exit(SHARED.get().map(|s| &s.server));
}

fn check_prerequisites() -> io::Result<()> {
    check_root("ProFTPD")?;
    let module = Path::new(MODULE_DIR).join("mod_sftp.so");
    if !Path::new(PROFTPD).is_file() || !module.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{PROFTPD} or {} not found: apt-get install -y proftpd-core proftpd-mod-crypto",
                module.display()
            ),
        ));
    }
    Ok(())
}

struct ConfigPaths<'a> {
    dir: &'a Path,
    data: &'a Path,
    host_key: &'a Path,
    authorized_keys: &'a Path,
    log: &'a Path,
}

fn proftpd_config(port: u16, p: &ConfigPaths) -> String {
    // The main server is the only one, and SFTPEngine turns its one port into SFTP, so no FTP
    // listener exists. Nothing here may touch /var, /run or the network beyond 127.0.0.1:
    // mod_delay's table, wtmp, the transfer log and reverse DNS are all off (mod_ident, which
    // would do ident lookups, is not loaded).
    format!(
        "\
# Written by sftpsync's testkit for one throwaway test server. Not a production config.
ServerType standalone
ServerName \"sftpsync test\"
DefaultAddress {HOST}
SocketBindTight on
Port {port}
UseIPv6 off
UseReverseDNS off
User nobody
Group nogroup
PidFile {dir}/proftpd.pid
ScoreboardFile {dir}/proftpd.scoreboard
TransferLog none
WtmpLog off
DelayEngine off

# Accounts come from /etc/passwd only; the test user has no password and a nologin shell.
AuthPAM off
AuthOrder mod_auth_unix.c
RequireValidShell off
DefaultRoot {data}
# ProFTPD refuses to write over an existing file unless told, which SFTP clients expect.
AllowOverwrite on
Umask 022

ModulePath {MODULE_DIR}
LoadModule mod_sftp.c
SFTPEngine on
SFTPLog {log}
SFTPHostKey {host_key}
SFTPAuthMethods publickey
SFTPAuthorizedUserKeys file:{authorized_keys}
SFTPCompression off
",
        dir = p.dir.display(),
        data = p.data.display(),
        log = p.log.display(),
        host_key = p.host_key.display(),
        authorized_keys = p.authorized_keys.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_confines_the_user_and_speaks_only_sftp() {
        let dir = Path::new("/srv/x");
        let c = proftpd_config(
            2222,
            &ConfigPaths {
                dir,
                data: &dir.join("data"),
                host_key: &dir.join("hk"),
                authorized_keys: &dir.join("ak"),
                log: &dir.join("proftpd.log"),
            },
        );
        assert!(c.contains("\nPort 2222\n"));
        assert!(c.contains("\nDefaultRoot /srv/x/data\n"));
        assert!(c.contains("\nSFTPEngine on\n"));
        assert!(c.contains("\nSFTPAuthorizedUserKeys file:/srv/x/ak\n"));
        assert!(
            !c.contains("<VirtualHost"),
            "a second server would listen for FTP"
        );
    }
}

//! Throwaway `rclone serve sftp` (Debian's rclone) on 127.0.0.1: an SFTP server written in Go
//! on top of rclone's virtual file system, for end-to-end tests.
//!
//! It serves the instance's `data/` directory, which is `/` and the login directory for the
//! client, and runs as the test user so that what it writes belongs to that user. Publickey
//! login only: the generated client key is its one authorized key, and no password is set.
//! Directory listings are not cached (`--dir-cache-time 0s`), so files a test puts in `data/`
//! itself are seen at once.
//!
//! What rclone's VFS does differently from a POSIX server (seen with 1.60): no SYMLINK or
//! READLINK, permissions fixed by its umask whatever the client sets, directory mtimes not
//! kept, writes taken only in order (no in-place update, no second writer), and hardlink
//! answered with OK while nothing is linked.

use std::io;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::instance::{
    check_root, register_at_exit, stop_at_exit, Launch, Setup, TestServer, HOST,
};

pub const RCLONE: &str = "/usr/bin/rclone";
/// rclone names itself in its identification string (a version after the slash in releases).
const BANNER: &[u8] = b"SSH-2.0-rclone";

/// A running `rclone serve sftp`; see the module docs.
#[derive(Debug)]
pub struct RcloneServer {
    server: TestServer,
}

impl Deref for RcloneServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl RcloneServer {
    /// The instance shared by every test of this test binary, started on first call and
    /// stopped at exit. Panics if it cannot start.
    pub fn shared() -> &'static RcloneServer {
        SHARED.get_or_init(|| {
            let server = Self::try_start()
                .unwrap_or_else(|e| panic!("cannot start the shared rclone serve sftp: {e}"));
            register_at_exit(stop_shared_at_exit, "rclone");
            server
        })
    }

    /// Starts a private instance, stopped and deleted on drop.
    pub fn try_start() -> io::Result<RcloneServer> {
        check_root("rclone serve sftp")?;
        if !Path::new(RCLONE).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{RCLONE} not found: apt-get install -y rclone"),
            ));
        }
        let setup = Setup::new()?;
        let dir = setup.dir.clone();
        let data = dir.join("data");
        setup.user_dir(&data)?;
        // Its home, for anything rclone decides to keep (it has no config file to read).
        let home = dir.join("home");
        setup.user_dir(&home)?;
        let authorized_keys = setup.authorized_keys()?;
        let host_key = setup.host_key_for_user()?;
        let (uid, gid) = (setup.uid, setup.gid);
        let server = setup.launch("rclone", BANNER, data.clone(), |port| {
            let mut command = Command::new(RCLONE);
            command
                .args(["serve", "sftp"])
                .arg(&data)
                .arg(format!("--addr={HOST}:{port}"))
                .arg("--key")
                .arg(&host_key)
                .arg("--authorized-keys")
                .arg(&authorized_keys)
                .args(["--config", "/dev/null", "--dir-cache-time", "0s", "-v"])
                .env("HOME", &home)
                .env_remove("RCLONE_CONFIG")
                .uid(uid)
                .gid(gid);
            Ok(Launch {
                command,
                ready_line: format!("SFTP server listening on {HOST}:{port}"),
            })
        })?;
        Ok(RcloneServer { server })
    }
}

static SHARED: OnceLock<RcloneServer> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    stop_at_exit(SHARED.get().map(|s| &s.server));
}

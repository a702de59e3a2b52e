//! Throwaway SFTP server built on asyncssh (PyPI), on 127.0.0.1: a Python implementation for
//! end-to-end tests. The server is our own small script (`servers/asyncssh_sftp.py`), run by
//! Debian's python3 as the test user, with asyncssh's chroot option on.
//!
//! asyncssh is found in [`ASYNCSSH_LIB`], where `scripts/test.sh` and `.ci/run` install the
//! pinned version with `pip install --target` (the test user must be able to read it, which
//! rules out root's own Python environments).
//!
//! The instance's `data/` directory is `/` and the login directory for the client. Its chroot
//! maps every path below `data/`, and symlink targets too: an absolute target is stored with
//! `data/`'s real path in front, and READLINK resolves whatever it reads against the server
//! process's own directory before taking that prefix off again.

use std::fs;
use std::io;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::instance::{
    check_root, register_at_exit, stop_at_exit, Launch, Setup, TestServer, HOST,
};

/// Where the test scripts install asyncssh and its dependencies.
pub const ASYNCSSH_LIB: &str = "/usr/local/lib/sftpsync-test-python";
/// The version `scripts/test.sh` and `.ci/run` install.
pub const ASYNCSSH_VERSION: &str = "2.24.1";
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = include_str!("../servers/asyncssh_sftp.py");
const BANNER: &[u8] = b"SSH-2.0-AsyncSSH_";

/// A running asyncssh SFTP server; see the module docs.
#[derive(Debug)]
pub struct AsyncsshServer {
    server: TestServer,
}

impl Deref for AsyncsshServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl AsyncsshServer {
    /// The instance shared by every test of this test binary, started on first call and
    /// stopped at exit. Panics if it cannot start.
    pub fn shared() -> &'static AsyncsshServer {
        SHARED.get_or_init(|| {
            let server = Self::try_start()
                .unwrap_or_else(|e| panic!("cannot start the shared asyncssh server: {e}"));
            register_at_exit(stop_shared_at_exit, "asyncssh");
            server
        })
    }

    /// Starts a private instance, stopped and deleted on drop.
    pub fn try_start() -> io::Result<AsyncsshServer> {
        check_root("asyncssh server")?;
        if !Path::new(ASYNCSSH_LIB).join("asyncssh").is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "asyncssh not found in {ASYNCSSH_LIB}: {PYTHON} -m pip install --target \
                     {ASYNCSSH_LIB} asyncssh=={ASYNCSSH_VERSION}"
                ),
            ));
        }
        let setup = Setup::new()?;
        let dir = setup.dir.clone();
        let data = dir.join("data");
        setup.user_dir(&data)?;
        let script = dir.join("asyncssh_sftp.py");
        fs::write(&script, SCRIPT)?;
        let authorized_keys = setup.authorized_keys()?;
        let host_key = setup.host_key_for_user()?;
        let (uid, gid) = (setup.uid, setup.gid);
        let server = setup.launch("asyncssh", BANNER, data.clone(), |port| {
            let mut command = Command::new(PYTHON);
            command
                .arg(&script)
                .arg(format!("--port={port}"))
                .arg("--host-key")
                .arg(&host_key)
                .arg("--authorized-keys")
                .arg(&authorized_keys)
                .arg("--root")
                .arg(&data)
                .env("PYTHONPATH", ASYNCSSH_LIB)
                // Nothing of ours to compile; the user could not write the caches anyway.
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .current_dir(&data)
                .uid(uid)
                .gid(gid);
            Ok(Launch {
                command,
                ready_line: format!("SFTP server listening on {HOST} port {port}"),
            })
        })?;
        Ok(AsyncsshServer { server })
    }
}

static SHARED: OnceLock<AsyncsshServer> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    stop_at_exit(SHARED.get().map(|s| &s.server));
}

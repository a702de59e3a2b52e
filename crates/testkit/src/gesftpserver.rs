//! Throwaway OpenSSH sshd whose SFTP subsystem is the Green End SFTP server (Debian's
//! `gesftpserver`), on 127.0.0.1: a third real server implementation for end-to-end tests.
//!
//! Chrooted like [`SftpOnlyServer`](crate::SftpOnlyServer), which is what a hosting provider
//! would do with it: internal-sftp's chroot works because sshd needs nothing inside it, but an
//! external server must be found there, and sshd starts it through the user's login shell. So
//! the chroot holds `/usr/libexec/gesftpserver`, a POSIX shell at the login shell's path
//! (`/usr/sbin/nologin` inside the chroot is dash) and the libraries of both. The login
//! directory is `/data`, the user's home, as on the sshd.
//!
//! Quirks worth knowing: it takes SYMLINK's arguments in the draft's order and says so with
//! `symlink-order@rjk.greenend.org.uk`, and it offers no hard links or copy-data.

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::OnceLock;

use crate::instance::{register_at_exit, stop_at_exit, TestServer};
use crate::server::{SftpOnlyServer, Subsystem};

/// Where Debian's gesftpserver package puts the server.
pub const GESFTPSERVER: &str = "/usr/libexec/gesftpserver";

/// A running sshd serving SFTP through gesftpserver; see the module docs.
#[derive(Debug)]
pub struct GesftpServer {
    sshd: SftpOnlyServer,
}

impl Deref for GesftpServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.sshd
    }
}

impl GesftpServer {
    /// The instance shared by every test of this test binary, started on first call and
    /// stopped at exit. Panics if it cannot start.
    pub fn shared() -> &'static GesftpServer {
        SHARED.get_or_init(|| {
            let server = Self::try_start()
                .unwrap_or_else(|e| panic!("cannot start the shared gesftpserver sshd: {e}"));
            register_at_exit(stop_shared_at_exit, "gesftpserver sshd");
            server
        })
    }

    /// Starts a private instance, stopped and deleted on drop.
    pub fn try_start() -> io::Result<GesftpServer> {
        if !Path::new(GESFTPSERVER).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{GESFTPSERVER} not found: apt-get install -y gesftpserver"),
            ));
        }
        let sshd = SftpOnlyServer::try_start_with(Subsystem::External(GESFTPSERVER))?;
        Ok(GesftpServer { sshd })
    }

    /// The ChrootDirectory: what the client sees as `/`.
    pub fn chroot(&self) -> &Path {
        self.sshd.chroot()
    }
}

static SHARED: OnceLock<GesftpServer> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    stop_at_exit(SHARED.get().map(|s| &*s.sshd));
}

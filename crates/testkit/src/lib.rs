//! Test support for sftpsync: throwaway SFTP servers (a chrooted SFTP-only OpenSSH sshd,
//! ProFTPD's mod_sftp, gesftpserver behind sshd, `rclone serve sftp` and asyncssh), the local sftp-server for the pipe tier, builders for test trees, local
//! rsync as the oracle that judges results, and a TCP proxy that breaks connections on purpose.
//!
//! Everything here is test fixture code: setup helpers panic with a message saying what failed
//! (a test cannot do anything useful without its fixture), while the few calls a test may want
//! to recover from return `std::io::Result`.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Output};

pub mod asyncssh;
pub mod compat;
pub mod gesftpserver;
mod instance;
pub mod oracle;
pub mod prng;
pub mod proftpd;
pub mod proxy;
pub mod rclone;
pub mod server;
pub mod tree;

pub use asyncssh::AsyncsshServer;
pub use gesftpserver::GesftpServer;
pub use instance::TestServer;
pub use oracle::{
    assert_trees_match, assert_trees_match_checksum, assert_trees_match_with, copy_tree,
    rsync_diff, rsync_itemize,
};
pub use prng::XorShift;
pub use proftpd::ProftpdServer;
pub use proxy::{CutProxy, Fault, Flow};
pub use rclone::RcloneServer;
pub use server::{SftpOnlyServer, ShellServer, TEST_USER};
pub use tree::{
    chown_tree, generate_mixed_tree, mutate_tree, set_mtime_nofollow, truncate_mtimes, TreeBuilder,
    TreeStats,
};

/// Re-exported so tests use the same version the fixtures were built against.
pub use tempfile;

/// Where Debian's openssh-sftp-server puts the binary.
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// Path of OpenSSH's `sftp-server`, for the fast tier that speaks SFTP over its stdin/stdout
/// without sshd in between.
///
/// Panics if it is missing, naming the package that provides it.
pub fn sftp_server_path() -> PathBuf {
    let path = PathBuf::from(SFTP_SERVER);
    assert!(
        path.is_file(),
        "{SFTP_SERVER} not found: install it with `apt-get install -y openssh-sftp-server` \
         (pulled in by openssh-server)"
    );
    path
}

/// Path of the test kit's `hostile-sftp-server`, built on first use if the test binary's
/// target directory does not have it yet (tests of other crates cannot name another crate's
/// binary, so it is found next to them).
pub fn hostile_server_path() -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    testkit_bin(&BUILT, "hostile-sftp-server")
}

/// Path of the test kit's `sftp-filter` proxy (see its source for the flags), found or built
/// like [`hostile_server_path`].
pub fn sftp_filter_path() -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    testkit_bin(&BUILT, "sftp-filter")
}

fn testkit_bin(built: &std::sync::Mutex<Option<PathBuf>>, name: &str) -> PathBuf {
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    // Test binaries live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("path of the running test");
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test binary inside a target directory")
        .to_path_buf();
    let path = profile_dir.join(name);
    // Under cargo the build always runs (a no-op when fresh), so a stale server is never used;
    // elsewhere an existing binary is taken as it is.
    let cargo = std::env::var_os("CARGO");
    if cargo.is_some() || !path.is_file() {
        let target_dir = profile_dir.parent().expect("target directory");
        let cargo = cargo.unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "testkit", "--bin", name])
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run_checked(&mut cmd).unwrap_or_else(|e| panic!("build {name}: {e}"));
        assert!(
            path.is_file(),
            "{} missing after building it",
            path.display()
        );
    }
    *built = Some(path.clone());
    path
}

/// Runs a command to completion and turns a non-zero exit into an error carrying its stderr,
/// so fixture failures say which tool failed and why.
pub(crate) fn run_checked(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

//! Opens the SFTP channels of one run: one login, then more channels multiplexed over it.
//!
//! One SSH channel moves at most one flow-control window (2 MiB on OpenSSH) per round trip,
//! and one sftp-server handles its requests one at a time. Several channels lift both limits.
//! With OpenSSH the extra channels ride the first connection through a private ControlMaster
//! socket, so there is one login and at most one password prompt.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use futures::future::join_all;
use sftp_client::{ClientConfig, SftpClient, SftpError, Transport};

/// How the channels of a run came to be, for -v.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// Extra channels share the first connection (OpenSSH ControlMaster).
    Multiplexed,
    /// The remote shell is not OpenSSH's ssh, or multiplexing did not come up: each channel
    /// is its own connection.
    SeparateConnections,
    /// `--sftp-server`: each channel is its own local server process.
    LocalServers,
}

pub struct Channels {
    pub clients: Vec<SftpClient>,
    pub sharing: Sharing,
    /// Channels asked for but not opened, with the first reason.
    pub failed: Option<(usize, String)>,
    /// Holds the ControlMaster socket; removed when dropped.
    _control_dir: Option<tempfile::TempDir>,
}

impl Channels {
    /// Closes every channel; the multiplexed ones before the master they ride on.
    pub async fn shutdown(&self) {
        for c in self.clients.iter().skip(1) {
            c.shutdown().await;
        }
        if let Some(first) = self.clients.first() {
            first.shutdown().await;
        }
    }
}

/// How to reach the server.
pub enum Route<'a> {
    /// `--sftp-server PATH`: a local server program over pipes.
    LocalServer(&'a OsStr),
    /// The remote shell command (already split into words), user and host.
    Ssh {
        rsh: Vec<OsString>,
        user: Option<&'a [u8]>,
        host: &'a [u8],
    },
}

fn handshake_error(peer: &[u8], detail: String) -> SftpError {
    SftpError::Handshake {
        peer: String::from_utf8_lossy(peer).into_owned(),
        detail,
        stderr: String::new(),
        exit_code: None,
    }
}

/// Whether the remote shell is OpenSSH's client, which can multiplex.
fn is_openssh(rsh: &[OsString]) -> bool {
    rsh.first().is_some_and(|p| {
        let b = p.as_bytes();
        let name = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
        name == b"ssh"
    })
}

fn with_options(rsh: &[OsString], opts: &[String]) -> Vec<OsString> {
    let mut words = rsh.to_vec();
    words.extend(opts.iter().map(OsString::from));
    words
}

async fn open_one(route: &Route<'_>, rsh: Option<&[OsString]>) -> Result<SftpClient, SftpError> {
    let (transport, peer): (std::io::Result<Transport>, &[u8]) = match route {
        Route::LocalServer(path) => (Transport::sftp_server(path, &[]), path.as_bytes()),
        Route::Ssh { user, host, .. } => (
            Transport::ssh(rsh.expect("ssh words for an ssh route"), *user, host),
            host,
        ),
    };
    let transport = transport
        .map_err(|e| handshake_error(peer, format!("cannot start the transport command: {e}")))?;
    SftpClient::connect(transport, ClientConfig::default()).await
}

/// OpenSSH's default cipher order, which puts ChaCha20 first.
const OPENSSH_DEFAULT_CIPHERS: &str = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,\
                                       aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com";

/// The same ciphers with AES-GCM first: on CPUs with AES instructions it costs a fraction of
/// ChaCha20's CPU time, and on two cores CPU is what bulk transfers run out of.
const PREFERRED_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
                                 chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

/// Options to add to the ssh command: AES-GCM first, but only when the configuration in
/// force (`ssh -G`) is OpenSSH's untouched default, so a user's own cipher choice stands.
async fn cipher_options(rsh: &[OsString], user: Option<&[u8]>, host: &[u8]) -> Vec<String> {
    if !cpu_has_aes() {
        return Vec::new();
    }
    let Some((program, args)) = rsh.split_first() else {
        return Vec::new();
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).arg("-G");
    if let Some(u) = user {
        cmd.arg("-l").arg(OsStr::from_bytes(u));
    }
    cmd.arg("--").arg(OsStr::from_bytes(host));
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), cmd.output()).await;
    let Ok(Ok(out)) = out else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let default_in_force = text
        .lines()
        .any(|l| l.strip_prefix("ciphers ") == Some(OPENSSH_DEFAULT_CIPHERS));
    if out.status.success() && default_in_force {
        vec![format!("-oCiphers={PREFERRED_CIPHERS}")]
    } else {
        Vec::new()
    }
}

fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Opens up to `wanted` channels. Only the first must succeed; the others are a bonus, and
/// the run goes on with however many came up.
pub async fn open(route: Route<'_>, wanted: usize) -> Result<Channels, SftpError> {
    let wanted = wanted.max(1);
    let route = match route {
        Route::Ssh { rsh, user, host } if is_openssh(&rsh) => {
            let extra = cipher_options(&rsh, user, host).await;
            Route::Ssh {
                rsh: with_options(&rsh, &extra),
                user,
                host,
            }
        }
        other => other,
    };
    let (first_words, more_words, sharing, control_dir) = match &route {
        Route::LocalServer(_) => (None, None, Sharing::LocalServers, None),
        Route::Ssh { rsh, .. } if wanted > 1 && is_openssh(rsh) => {
            match private_socket_dir() {
                Ok(dir) => {
                    let socket = dir.path().join("control");
                    let path = socket.display().to_string();
                    let master = with_options(
                        rsh,
                        &[
                            "-oControlMaster=yes".into(),
                            format!("-oControlPath={path}"),
                            "-oControlPersist=no".into(),
                        ],
                    );
                    // BatchMode: should the socket not answer, the extra channels log in on
                    // their own without ever prompting a second time.
                    let client = with_options(
                        rsh,
                        &[
                            "-oControlMaster=no".into(),
                            format!("-oControlPath={path}"),
                            "-oBatchMode=yes".into(),
                        ],
                    );
                    (
                        Some(master),
                        Some((client, socket)),
                        Sharing::Multiplexed,
                        Some(dir),
                    )
                }
                Err(_) => (
                    Some(rsh.clone()),
                    Some((
                        with_options(rsh, &["-oBatchMode=yes".into()]),
                        PathBuf::new(),
                    )),
                    Sharing::SeparateConnections,
                    None,
                ),
            }
        }
        Route::Ssh { rsh, .. } => (
            Some(rsh.clone()),
            Some((rsh.clone(), PathBuf::new())),
            Sharing::SeparateConnections,
            None,
        ),
    };

    let first = open_one(&route, first_words.as_deref()).await?;
    let mut sharing = sharing;
    if sharing == Sharing::Multiplexed {
        let socket_up = more_words
            .as_ref()
            .is_some_and(|(_, socket)| socket.exists());
        if !socket_up {
            sharing = Sharing::SeparateConnections;
        }
    }
    let more_words = more_words.map(|(w, _)| w);
    let rest = join_all((1..wanted).map(|_| open_one(&route, more_words.as_deref()))).await;
    let mut clients = vec![first];
    let mut failed: Option<(usize, String)> = None;
    for r in rest {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => {
                let f = failed.get_or_insert((0, e.to_string()));
                f.0 += 1;
            }
        }
    }
    Ok(Channels {
        clients,
        sharing,
        failed,
        _control_dir: control_dir,
    })
}

/// A directory only we can enter, for the ControlMaster socket. Unix socket paths are
/// limited to about 100 bytes, so it goes in /tmp unless TMPDIR is short enough.
fn private_socket_dir() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() <= 60 {
        base
    } else {
        PathBuf::from("/tmp")
    };
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("sftpsync-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openssh_multiplexes() {
        let w = |s: &str| -> Vec<OsString> { s.split(' ').map(OsString::from).collect() };
        assert!(is_openssh(&w("ssh -p 22")));
        assert!(is_openssh(&w("/usr/bin/ssh")));
        assert!(!is_openssh(&w("/usr/local/bin/my-ssh-wrapper")));
        assert!(!is_openssh(&w("sshpass -p x ssh")));
    }

    #[test]
    fn socket_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = private_socket_dir().unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(d.path().join("control").as_os_str().len() < 100);
    }
}

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
use sftp_client::{ClientConfig, SftpClient, SftpError, Transport, Version};

/// How the channels of a run came to be, for -v.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// Extra channels share the first connection (OpenSSH ControlMaster).
    Multiplexed,
    /// The remote shell is not OpenSSH's ssh, or multiplexing did not come up: each channel
    /// is its own connection.
    SeparateConnections,
    /// The server mixes up the requests of channels that share a connection, so each extra
    /// channel is its own connection (see `keeps_channels_apart`).
    SeparateForServer,
    /// `--sftp-server`: each channel is its own local server process.
    LocalServers,
}

/// Opens further channels like the first one, and holds the ControlMaster socket's directory
/// (removed when this is dropped, after every channel has closed).
pub struct Connector {
    route: Route,
    /// The remote shell command for the extra channels.
    more_words: Option<Vec<OsString>>,
    pub sharing: Sharing,
    config: ClientConfig,
    _control_dir: Option<tempfile::TempDir>,
}

/// How to reach the server.
pub enum Route {
    /// `--sftp-server PATH`: a local server program over pipes.
    LocalServer(OsString),
    /// The remote shell command (already split into words), user and host.
    Ssh {
        rsh: Vec<OsString>,
        user: Option<Vec<u8>>,
        host: Vec<u8>,
    },
}

impl Route {
    /// `--sftp-server PROGRAM` if given, else the remote shell (`-e`, then `RSYNC_RSH`, then
    /// `ssh`) to `[user@]host`.
    pub fn new(
        rsh: Option<&OsStr>,
        sftp_server: Option<&std::path::Path>,
        user: Option<&[u8]>,
        host: &[u8],
    ) -> Result<Route, SftpError> {
        if let Some(server) = sftp_server {
            return Ok(Route::LocalServer(server.as_os_str().to_owned()));
        }
        let rsh = rsh
            .map(OsStr::to_owned)
            .or_else(|| std::env::var_os("RSYNC_RSH"))
            .unwrap_or_else(|| OsString::from("ssh"));
        let rsh = sftp_client::split_command(rsh.as_bytes())
            .map_err(|e| handshake_error(host, format!("bad --rsh command: {e}")))?;
        Ok(Route::Ssh {
            rsh,
            user: user.map(<[u8]>::to_vec),
            host: host.to_vec(),
        })
    }

    /// Adds words to the remote shell command (before the host); a local server takes none.
    pub fn with_ssh_args(self, extra: &[OsString]) -> Route {
        match self {
            Route::Ssh { rsh, user, host } => Route::Ssh {
                rsh: rsh.iter().chain(extra).cloned().collect(),
                user,
                host,
            },
            other => other,
        }
    }

    /// `-z`: rsync compresses its own stream, sftpsync has OpenSSH compress the SSH stream.
    /// `Err` gives the route back unchanged when its remote shell is not OpenSSH's ssh, whose
    /// options we cannot know.
    pub fn compressed(self) -> Result<Route, Route> {
        match self {
            Route::Ssh { rsh, user, host } if is_openssh(&rsh) => Ok(Route::Ssh {
                rsh: with_options(&rsh, &["-oCompression=yes".into()]),
                user,
                host,
            }),
            other => Err(other),
        }
    }
}

impl Connector {
    /// Opens `n` more channels at once. Failures only mean fewer channels: the count and the
    /// first reason come back for -v.
    pub async fn open_more(&self, n: usize) -> (Vec<SftpClient>, Option<(usize, String)>) {
        let words = self.more_words.as_deref();
        let results = join_all((0..n).map(|_| open_one(&self.route, words, self.config))).await;
        let mut clients = Vec::new();
        let mut failed: Option<(usize, String)> = None;
        for r in results {
            match r {
                Ok(c) => clients.push(c),
                Err(e) => failed.get_or_insert((0, e.to_string())).0 += 1,
            }
        }
        (clients, failed)
    }
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
pub(crate) fn is_openssh(rsh: &[OsString]) -> bool {
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

async fn open_one(
    route: &Route,
    rsh: Option<&[OsString]>,
    config: ClientConfig,
) -> Result<SftpClient, SftpError> {
    let (transport, peer): (std::io::Result<Transport>, &[u8]) = match route {
        Route::LocalServer(path) => (Transport::sftp_server(path, &[]), path.as_bytes()),
        Route::Ssh {
            rsh: own,
            user,
            host,
        } => (
            Transport::ssh(rsh.unwrap_or(own), user.as_deref(), host),
            host,
        ),
    };
    let transport = transport
        .map_err(|e| handshake_error(peer, format!("cannot start the transport command: {e}")))?;
    SftpClient::connect(transport, config).await
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

/// Opens the first channel, and prepares for `wanted - 1` more: they share its connection
/// when the remote shell is OpenSSH's ssh. `config` carries the timeouts; with OpenSSH the
/// connect timeout also becomes ssh's own `ConnectTimeout`, which covers the TCP connect and
/// the SSH banner exchange (an ssh option the user gave in `-e` comes first and wins).
///
/// `announce` is told the command line of the first channel before it starts, as rsync
/// says at -vv how it connects.
pub async fn open(
    route: Route,
    wanted: usize,
    config: ClientConfig,
    announce: &(dyn Fn(String) + Sync),
) -> Result<(SftpClient, Connector), SftpError> {
    let route = match route {
        Route::Ssh { rsh, user, host } if is_openssh(&rsh) => {
            let mut extra = cipher_options(&rsh, user.as_deref(), &host).await;
            if let Some(t) = config.connect_timeout {
                extra.push(format!("-oConnectTimeout={}", t.as_secs().max(1)));
            }
            Route::Ssh {
                rsh: with_options(&rsh, &extra),
                user,
                host,
            }
        }
        other => other,
    };
    let mut control_dir = None;
    let mut socket = None;
    let (first_words, more_words, sharing) = match &route {
        Route::LocalServer(_) => (None, None, Sharing::LocalServers),
        Route::Ssh { rsh, .. } if wanted > 1 && is_openssh(rsh) => match private_socket_dir() {
            Ok(dir) => {
                let path = dir.path().join("control");
                let shown = path.display().to_string();
                let master = with_options(
                    rsh,
                    &[
                        "-oControlMaster=yes".into(),
                        format!("-oControlPath={shown}"),
                        "-oControlPersist=no".into(),
                    ],
                );
                // BatchMode: should the socket not answer, the extra channels log in on their
                // own without ever prompting a second time.
                let client = with_options(
                    rsh,
                    &[
                        "-oControlMaster=no".into(),
                        format!("-oControlPath={shown}"),
                        "-oBatchMode=yes".into(),
                    ],
                );
                control_dir = Some(dir);
                socket = Some(path);
                (Some(master), Some(client), Sharing::Multiplexed)
            }
            Err(_) => (
                Some(rsh.clone()),
                Some(with_options(rsh, &["-oBatchMode=yes".into()])),
                Sharing::SeparateConnections,
            ),
        },
        Route::Ssh { rsh, .. } => (
            Some(rsh.clone()),
            Some(rsh.clone()),
            Sharing::SeparateConnections,
        ),
    };
    announce(format!(
        "opening connection using: {}",
        command_line(&route, first_words.as_deref())
    ));
    let first = open_one(&route, first_words.as_deref(), config).await?;
    let (more_words, sharing) = match (&route, socket) {
        // The master listens once it has logged in, which the SFTP handshake proves.
        (_, Some(path)) if !path.exists() => (more_words, Sharing::SeparateConnections),
        (Route::Ssh { rsh, .. }, Some(_)) if !keeps_channels_apart(first.version()) => (
            Some(with_options(rsh, &["-oBatchMode=yes".into()])),
            Sharing::SeparateForServer,
        ),
        _ => (more_words, sharing),
    };
    Ok((
        first,
        Connector {
            route,
            more_words,
            sharing,
            config,
            _control_dir: control_dir,
        },
    ))
}

/// The command a channel runs, quoted for a shell where a word needs it.
fn command_line(route: &Route, rsh: Option<&[OsString]>) -> String {
    let (program, args) = match route {
        Route::LocalServer(path) => (path.clone(), Vec::new()),
        Route::Ssh {
            rsh: own,
            user,
            host,
        } => sftp_client::ssh_command(rsh.unwrap_or(own), user.as_deref(), host),
    };
    std::iter::once(&program)
        .chain(&args)
        .map(|w| shell_word(&w.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// Whether the server keeps apart the SFTP requests of channels that share one SSH
/// connection. ProFTPD's mod_sftp (up to 1.3.8 at least, proftpd/proftpd#1897) reassembles
/// requests in one buffer per connection, so two channels' writes corrupt each other and the
/// session hangs. Its VERSION reply is told apart by a `versions` extension without OpenSSH's
/// `limits@openssh.com`; a server behind OpenSSH's sshd runs one process per channel.
fn keeps_channels_apart(v: &Version) -> bool {
    v.extension("versions").is_none() || v.extension(sftp_client::ext::LIMITS).is_some()
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
    fn compression_is_asked_of_openssh_only() {
        let ssh = |words: &str| Route::Ssh {
            rsh: words.split(' ').map(OsString::from).collect(),
            user: None,
            host: b"h".to_vec(),
        };
        let words = |r: Route| match r {
            Route::Ssh { rsh, .. } => rsh,
            Route::LocalServer(_) => panic!("not ssh"),
        };
        let r = ssh("ssh -p 2222").compressed().ok().expect("openssh");
        assert_eq!(words(r), ["ssh", "-p", "2222", "-oCompression=yes"]);
        assert!(ssh("plink -P 22").compressed().is_err());
        assert!(Route::LocalServer("sftp-server".into())
            .compressed()
            .is_err());
    }

    #[test]
    fn proftpd_gets_channels_of_their_own() {
        let version = |names: &[&str]| Version {
            version: 3,
            extensions: names
                .iter()
                .map(|n| (n.as_bytes().to_vec(), b"1".to_vec()))
                .collect(),
        };
        // ProFTPD 1.3.8's v3 extensions.
        let proftpd = ["versions", "fsync@openssh.com", "posix-rename@openssh.com"];
        assert!(!keeps_channels_apart(&version(&proftpd)));
        let openssh = [
            "posix-rename@openssh.com",
            "limits@openssh.com",
            "copy-data",
        ];
        assert!(keeps_channels_apart(&version(&openssh)));
        assert!(keeps_channels_apart(&version(&[])));
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

//! Byte-stream transports for the client: an `ssh -s sftp` child, a local sftp-server child,
//! or any reader/writer pair.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Keep this much of the peer's stderr for error messages; ssh's reasons for failing fit easily.
const STDERR_KEEP: usize = 8 * 1024;

/// What the transport's process printed on stderr, kept for error messages.
#[derive(Clone, Debug)]
pub struct StderrLog {
    text: Arc<Mutex<Vec<u8>>>,
    done: watch::Receiver<bool>,
}

impl StderrLog {
    fn empty() -> (StderrLog, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            StderrLog {
                text: Arc::new(Mutex::new(Vec::new())),
                done: rx,
            },
            tx,
        )
    }

    /// The captured text so far, trimmed, with non-printable bytes escaped.
    pub fn text(&self) -> String {
        let bytes = self.text.lock().unwrap().clone();
        let s = String::from_utf8_lossy(&bytes);
        // ssh ends some lines with CR LF: the CR would show as a stray '?'.
        s.trim()
            .replace('\r', "")
            .replace('\n', "; ")
            .replace(|c: char| c.is_control(), "?")
    }

    /// Waits (briefly) until the process closed its stderr, so a message built after the
    /// connection dropped includes everything the process said on its way out.
    pub async fn settle(&self, timeout: std::time::Duration) {
        let mut rx = self.done.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
    }
}

/// A connected byte stream to an SFTP server, and the process behind it if there is one.
pub struct Transport {
    pub(crate) reader: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) writer: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) child: Option<Child>,
    pub(crate) stderr: StderrLog,
    /// How to name the peer in messages, e.g. `ssh user@host` or `sftp-server`.
    pub(crate) description: String,
}

impl Transport {
    /// Wraps an already-connected stream pair (tests, in-process servers).
    pub fn from_streams(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
        description: impl Into<String>,
    ) -> Transport {
        let (stderr, done) = StderrLog::empty();
        let _ = done.send(true);
        Transport {
            reader: Box::new(reader),
            writer: Box::new(writer),
            child: None,
            stderr,
            description: description.into(),
        }
    }

    /// Starts `program args...` and speaks SFTP over its stdin/stdout.
    pub fn spawn(
        program: &OsStr,
        args: &[OsString],
        description: impl Into<String>,
    ) -> std::io::Result<Transport> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let reader = child.stdout.take().expect("stdout is piped");
        let writer = child.stdin.take().expect("stdin is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let (stderr, done) = StderrLog::empty();
        let text = stderr.text.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match err_pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut t = text.lock().unwrap();
                        t.extend_from_slice(&buf[..n]);
                        if t.len() > STDERR_KEEP {
                            let cut = t.len() - STDERR_KEEP;
                            t.drain(..cut);
                        }
                    }
                }
            }
            let _ = done.send(true);
        });
        Ok(Transport {
            reader: Box::new(reader),
            writer: Box::new(writer),
            child: Some(child),
            stderr,
            description: description.into(),
        })
    }

    /// Starts the system ssh client (or the `rsh` command given with `-e`) asking for the
    /// `sftp` subsystem on `host`, as OpenSSH's own sftp does: nothing else ever runs there.
    pub fn ssh(rsh: &[OsString], user: Option<&[u8]>, host: &[u8]) -> std::io::Result<Transport> {
        let (program, args) = ssh_command(rsh, user, host);
        let mut description = String::from("ssh ");
        if let Some(u) = user {
            description.push_str(&String::from_utf8_lossy(u));
            description.push('@');
        }
        description.push_str(&String::from_utf8_lossy(host));
        Transport::spawn(&program, &args, description)
    }

    /// Starts a local sftp-server binary over pipes; relative paths resolve against our own
    /// working directory.
    pub fn sftp_server(path: &OsStr, args: &[OsString]) -> std::io::Result<Transport> {
        Transport::spawn(path, args, "sftp-server")
    }

    pub fn stderr(&self) -> &StderrLog {
        &self.stderr
    }
}

/// The program and arguments that ask ssh for the sftp subsystem. Options go before the host
/// and `--` ends them, so a host or user name can never be read as an option.
pub fn ssh_command(
    rsh: &[OsString],
    user: Option<&[u8]>,
    host: &[u8],
) -> (OsString, Vec<OsString>) {
    ssh_running(rsh, user, host, &[OsStr::new("-s")], OsStr::new("sftp"))
}

/// The program and arguments that run `command` on the host through a shell, as rsync
/// starts its server: only to find out whether the server allows that.
pub fn ssh_exec_command(
    rsh: &[OsString],
    user: Option<&[u8]>,
    host: &[u8],
    command: &OsStr,
) -> (OsString, Vec<OsString>) {
    ssh_running(rsh, user, host, &[], command)
}

fn ssh_running(
    rsh: &[OsString],
    user: Option<&[u8]>,
    host: &[u8],
    flags: &[&OsStr],
    what: &OsStr,
) -> (OsString, Vec<OsString>) {
    let (program, mut args) = match rsh.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (OsString::from("ssh"), Vec::new()),
    };
    for opt in [
        "-oForwardX11=no",
        "-oForwardAgent=no",
        "-oPermitLocalCommand=no",
        "-oClearAllForwardings=yes",
    ] {
        args.push(opt.into());
    }
    if let Some(u) = user {
        args.push("-l".into());
        args.push(OsString::from_vec(u.to_vec()));
    }
    args.extend(flags.iter().map(|f| f.to_os_string()));
    args.push("--".into());
    let host = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    args.push(OsStr::from_bytes(host).to_owned());
    args.push(what.to_os_string());
    (program, args)
}

/// Splits an `-e`/`--rsh` command string into words the way rsync does: whitespace separates,
/// single quotes keep everything literal, double quotes keep spaces and honour backslash.
pub fn split_command(s: &[u8]) -> Result<Vec<OsString>, String> {
    let mut words = Vec::new();
    let mut cur = Vec::new();
    let mut in_word = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            b' ' | b'\t' | b'\n' => {
                if in_word {
                    words.push(OsString::from_vec(std::mem::take(&mut cur)));
                    in_word = false;
                }
            }
            b'\'' => {
                in_word = true;
                let end = s[i + 1..]
                    .iter()
                    .position(|&b| b == b'\'')
                    .ok_or("unmatched ' in command")?;
                cur.extend_from_slice(&s[i + 1..i + 1 + end]);
                i += end + 1;
            }
            b'"' => {
                in_word = true;
                i += 1;
                loop {
                    match s.get(i) {
                        None => return Err("unmatched \" in command".into()),
                        Some(b'"') => break,
                        Some(b'\\') if i + 1 < s.len() => {
                            cur.push(s[i + 1]);
                            i += 1;
                        }
                        Some(&b) => cur.push(b),
                    }
                    i += 1;
                }
            }
            b'\\' if i + 1 < s.len() => {
                in_word = true;
                cur.push(s[i + 1]);
                i += 1;
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
        i += 1;
    }
    if in_word {
        words.push(OsString::from_vec(cur));
    }
    if words.is_empty() {
        return Err("empty remote shell command".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn split_command_like_rsync() {
        let w = split_command(b"ssh -p 2222 -i 'my key' -o \"A=b c\" x\\ y").unwrap();
        assert_eq!(
            strs(&w),
            ["ssh", "-p", "2222", "-i", "my key", "-o", "A=b c", "x y"]
        );
        assert!(split_command(b"ssh 'oops").is_err());
        assert!(split_command(b"   ").is_err());
    }

    #[test]
    fn ssh_command_puts_host_after_double_dash() {
        let (p, a) = ssh_command(&[], Some(b"bob"), b"-oProxyCommand=evil");
        assert_eq!(p, "ssh");
        let a = strs(&a);
        let dd = a.iter().position(|s| s == "--").unwrap();
        assert_eq!(a[dd + 1], "-oProxyCommand=evil");
        assert_eq!(a[dd + 2], "sftp");
        assert!(a.windows(2).any(|w| w == ["-l", "bob"]));
    }

    #[test]
    fn ssh_command_strips_ipv6_brackets_and_keeps_rsh_words() {
        let rsh = split_command(b"ssh -p 2222").unwrap();
        let (_, a) = ssh_command(&rsh, None, b"[::1]");
        let a = strs(&a);
        assert_eq!(&a[..2], ["-p", "2222"]);
        assert_eq!(a[a.len() - 2], "::1");
    }
}

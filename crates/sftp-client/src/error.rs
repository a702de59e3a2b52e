//! Errors of the SFTP client: server refusals, dead connections, protocol violations.

use sftp_proto::{ProtoError, StatusCode};

#[derive(Debug, Clone, thiserror::Error)]
pub enum SftpError {
    /// The server answered the request with an error status.
    #[error("{}", status_text(*code, message))]
    Status {
        op: &'static str,
        code: StatusCode,
        message: String,
    },
    /// The connection could not be set up.
    #[error("{}", handshake_text(peer, detail, stderr, *exit_code))]
    Handshake {
        peer: String,
        detail: String,
        stderr: String,
        exit_code: Option<i32>,
    },
    /// The connection ended or broke while requests were outstanding.
    #[error("{peer}: {detail}")]
    Closed {
        op: &'static str,
        peer: String,
        detail: String,
    },
    /// Requests were outstanding and nothing arrived from the server for the I/O timeout.
    #[error("{peer}: io timeout after {secs} seconds with requests outstanding")]
    Timeout { peer: String, secs: u64 },
    /// The SFTP session was not up within the connect timeout.
    #[error(
        "{peer}: connect timeout: no SFTP session after {secs} seconds{}",
        stderr_suffix(stderr)
    )]
    ConnectTimeout {
        peer: String,
        secs: u64,
        stderr: String,
    },
    #[error("server sent a {got} reply to {op}")]
    UnexpectedReply { op: &'static str, got: &'static str },
    /// The server broke the protocol (a reply of the wrong type or size, to an unknown id, cut
    /// off or oversized): nothing it says can be trusted any more, so the session was closed.
    #[error("{peer}: protocol error: {detail}")]
    Protocol {
        op: &'static str,
        peer: String,
        detail: String,
    },
    /// A well-formed reply that cannot be used (a symlink target with a NUL, a listing past
    /// the cap); only this request fails.
    #[error("invalid reply to {op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error("malformed reply to {op}: {error}")]
    Malformed { op: &'static str, error: ProtoError },
    /// The request cannot be put on the wire (a field too long for its length); nothing was
    /// sent.
    #[error("cannot send {op}: {error}")]
    Unencodable { op: &'static str, error: ProtoError },
    #[error("the server does not offer the {ext} extension")]
    Unsupported { ext: &'static str },
}

fn status_text(code: StatusCode, message: &str) -> String {
    let words = code.describe();
    let m = message.trim();
    if m.is_empty() || m.eq_ignore_ascii_case(words) {
        words.to_string()
    } else {
        // Server messages are the server's words: keep them but never let them carry control
        // characters to the terminal.
        let clean: String = m
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        format!("{words} ({clean})")
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

fn handshake_text(peer: &str, detail: &str, stderr: &str, exit: Option<i32>) -> String {
    let mut s = format!("cannot start SFTP session with {peer}: {detail}");
    if !stderr.is_empty() {
        s.push_str(": ");
        s.push_str(stderr);
    }
    if let Some(code) = exit {
        s.push_str(&format!(" (exit status {code})"));
    }
    s
}

impl SftpError {
    /// The status code, when the server refused the request.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            SftpError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NoSuchFile)
    }

    /// True when the session is gone and no further request can succeed.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            SftpError::Closed { .. }
                | SftpError::Handshake { .. }
                | SftpError::Malformed { .. }
                | SftpError::Protocol { .. }
                | SftpError::Timeout { .. }
                | SftpError::ConnectTimeout { .. }
        )
    }

    /// True when an established session died under us (the stream ended, broke or went
    /// silent), as opposed to the server refusing or garbling something: only such a loss is
    /// worth reconnecting for.
    pub fn is_lost_session(&self) -> bool {
        matches!(self, SftpError::Closed { .. } | SftpError::Timeout { .. })
    }
}

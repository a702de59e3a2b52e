//! What a person can do about a failure, added to the error that names the path, the side
//! and the cause. Hints are matched on what ssh and the server said, so an unexpected
//! wording only costs the hint, never the error itself.

use sftp_client::SftpError;
use sync_engine::{ErrorKind, Side, TreeError};

/// ssh's words for why a session could not start, and what to do about each.
const CONNECT_HINTS: &[(&str, &str)] = &[
    (
        "Host key verification failed",
        "ssh does not know this server's host key, or the key changed: connect once with \
         plain `ssh [USER@]HOST` to check and accept it (sftpsync never accepts keys itself)",
    ),
    (
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "the server's host key changed: make sure it was meant to, then update known_hosts \
         (ssh-keygen -R HOST)",
    ),
    (
        "Permission denied",
        "the server refused the login: check the user name (USER@HOST) and the key \
         (-e 'ssh -i KEY', or ssh-add); `ssh -v [USER@]HOST` shows what was offered",
    ),
    (
        "Too many authentication failures",
        "ssh offered too many keys: name the right one with -e 'ssh -i KEY -o \
         IdentitiesOnly=yes'",
    ),
    (
        "Could not resolve hostname",
        "check the host name, or the Host alias in ~/.ssh/config",
    ),
    (
        "Connection refused",
        "nothing accepts SSH connections there: check the host and the port (-e 'ssh -p \
         PORT')",
    ),
    (
        "subsystem request failed",
        "the server offers no SFTP to this login: its admin needs `Subsystem sftp \
         internal-sftp` (or sftp-server) in sshd_config",
    ),
    (
        "did not answer as an SFTP server",
        "something prints text when this account logs in (a shell startup file, a \
         ForceCommand that is not internal-sftp): the SFTP stream must be clean",
    ),
];

/// A hint for a session that could not be set up, or was lost for good.
pub fn for_connection(e: &SftpError) -> Option<&'static str> {
    let text = e.to_string();
    if let Some((_, hint)) = CONNECT_HINTS.iter().find(|(said, _)| text.contains(said)) {
        return Some(hint);
    }
    match e {
        SftpError::ConnectTimeout { .. } => Some(
            "no SFTP session within --contimeout: check that the host answers (`ssh -v \
             [USER@]HOST`), or allow more time",
        ),
        SftpError::Timeout { .. } => Some(
            "the server stopped answering for --timeout seconds: run again (finished files \
             are not sent again), or allow more time",
        ),
        SftpError::Closed { .. } => Some(
            "the connection was lost: run again (finished files are not sent again), or \
             raise --retries",
        ),
        SftpError::Handshake { .. } => {
            Some("`sftpsync doctor [USER@]HOST` tells what the server allows and why")
        }
        _ => None,
    }
}

/// A hint for one failed entry, if there is something to do about it.
pub fn for_entry(e: &TreeError) -> Option<&'static str> {
    let cause = e.cause.to_ascii_lowercase();
    match (e.side, e.kind, e.op) {
        _ if cause.contains("disk is full") || cause.contains("no space left") => {
            Some("free some space (or ask about the quota); the old version of the file was kept")
        }
        (Side::Remote, ErrorKind::PermissionDenied, _) => Some(
            "the SFTP login may not change this: `sftpsync doctor [USER@]HOST:DIR` shows \
             what it may do; ask the server's admin for write access",
        ),
        (Side::Local, ErrorKind::PermissionDenied, _) => {
            Some("your user may not read or write this locally: check its permissions")
        }
        (_, ErrorKind::NotFound, "mkdir") => Some(
            "only the last directory of the destination is created, as in rsync: create \
             its parents first",
        ),
        (Side::Remote, ErrorKind::NotFound, "link_stat") => {
            Some("a remote path without a leading / starts in the login directory")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(stderr: &str) -> SftpError {
        SftpError::Handshake {
            peer: "ssh host".into(),
            detail: "connection closed before the SFTP handshake".into(),
            stderr: stderr.into(),
            exit_code: Some(255),
        }
    }

    #[test]
    fn ssh_failures_get_their_remedy() {
        let hint = |said: &str| for_connection(&handshake(said)).unwrap_or("");
        assert!(
            hint("Host key verification failed.").contains("known_hosts")
                || hint("Host key verification failed.").contains("accept it")
        );
        assert!(hint("u@h: Permission denied (publickey).").contains("ssh -i KEY"));
        assert!(
            hint("ssh: Could not resolve hostname x: Name or service not known")
                .contains("Host alias")
        );
        assert!(hint("subsystem request failed on channel 0").contains("Subsystem sftp"));
        assert!(hint("something else").contains("sftpsync doctor"));
    }

    #[test]
    fn entry_failures_get_hints_by_side_and_cause() {
        let err = |side, kind, op, cause: &str| TreeError {
            op,
            side,
            path: b"a".to_vec(),
            cause: cause.into(),
            kind,
        };
        let denied = err(
            Side::Remote,
            ErrorKind::PermissionDenied,
            "open",
            "permission denied",
        );
        assert!(for_entry(&denied).unwrap().contains("doctor"));
        let full = err(
            Side::Remote,
            ErrorKind::Other,
            "write",
            "failure (the disk is full)",
        );
        assert!(for_entry(&full).unwrap().contains("space"));
        let parent = err(Side::Remote, ErrorKind::NotFound, "mkdir", "no such file");
        assert!(for_entry(&parent).unwrap().contains("parents"));
        let other = err(
            Side::Local,
            ErrorKind::Other,
            "read",
            "Input/output error (5)",
        );
        assert_eq!(for_entry(&other), None);
    }
}

//! One `tracing` event per SFTP request sent and per reply received, under the target
//! `sftp` at DEBUG level (what `sftpsync --debug=sftp` shows).
//!
//! Each event carries `peer`, `id` and `op` as fields, and a message that reads on its own:
//! `[2] -> #12 OPEN "d/.a.tmp" flags=write,creat,excl mode=600` and `[2] <- #12 OPEN
//! handle=00`, where `[2]` numbers the session (several may run side by side) and `#12` the
//! request.
//! Nothing is formatted unless a subscriber wants these events: the summaries below are
//! `Display` wrappers evaluated only inside an enabled event.

use std::fmt;

use std::sync::atomic::{AtomicU32, Ordering};

use sftp_proto::{Attrs, OpenFlags, Request, Response, Status, Version};

/// The target every event of this crate is logged under.
pub const TARGET: &str = "sftp";

/// Numbers the sessions of this process for the log, from 1.
pub(crate) fn next_channel() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn version(peer: &str, channel: u32, version: &Version) {
    tracing::debug!(
        target: "sftp",
        peer,
        channel,
        "[{channel}] <- VERSION {} {}",
        version.version,
        Extensions(version)
    );
}

pub(crate) fn request(peer: &str, channel: u32, id: u32, req: &Request<'_>) {
    tracing::debug!(
        target: "sftp",
        peer,
        channel,
        id,
        op = req.name(),
        "[{channel}] -> #{id} {}{}",
        req.name().to_ascii_uppercase(),
        RequestArgs(req)
    );
}

pub(crate) fn reply(peer: &str, channel: u32, id: u32, op: &str, resp: &Response) {
    tracing::debug!(
        target: "sftp",
        peer,
        channel,
        id,
        op,
        "[{channel}] <- #{id} {} {}",
        op.to_ascii_uppercase(),
        Reply(resp)
    );
}

struct Extensions<'a>(&'a Version);

impl fmt::Display for Extensions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("extensions:")?;
        for (name, data) in &self.0.extensions {
            write!(
                f,
                " {}={}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(data)
            )?;
        }
        Ok(())
    }
}

/// Bytes of a path or a link target, as Rust would quote the text.
struct Path<'a>(&'a [u8]);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.0))
    }
}

/// Handles are opaque bytes; hex keeps them short and unambiguous.
struct HandleBytes<'a>(&'a [u8]);

impl fmt::Display for HandleBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("handle=")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

struct Flags(OpenFlags);

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (OpenFlags::READ, "read"),
            (OpenFlags::WRITE, "write"),
            (OpenFlags::APPEND, "append"),
            (OpenFlags::CREAT, "creat"),
            (OpenFlags::TRUNC, "trunc"),
            (OpenFlags::EXCL, "excl"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(flag, _)| self.0 .0 & flag.0 != 0)
            .map(|(_, name)| *name)
            .collect();
        write!(f, "flags={}", set.join(","))
    }
}

struct AttrList<'a>(&'a Attrs);

impl fmt::Display for AttrList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        let mut sep = "";
        let mut item = |f: &mut fmt::Formatter<'_>, text: fmt::Arguments<'_>| {
            let r = write!(f, "{sep}{text}");
            sep = " ";
            r
        };
        if let Some(size) = a.size {
            item(f, format_args!("size={size}"))?;
        }
        if let Some(mode) = a.permissions {
            item(f, format_args!("mode={mode:o}"))?;
        }
        if let Some((uid, gid)) = a.uid_gid {
            item(f, format_args!("uid={uid} gid={gid}"))?;
        }
        if let Some((_, mtime)) = a.atime_mtime {
            item(f, format_args!("mtime={mtime}"))?;
        }
        if sep.is_empty() {
            f.write_str("no attributes")?;
        }
        Ok(())
    }
}

struct RequestArgs<'r, 'a>(&'r Request<'a>);

impl fmt::Display for RequestArgs<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !matches!(self.0, Request::Limits) {
            f.write_str(" ")?;
        }
        match self.0 {
            Request::Open { path, flags, attrs } => {
                write!(f, "{} {} {}", Path(path), Flags(*flags), AttrList(attrs))
            }
            Request::Close { handle }
            | Request::Fstat { handle }
            | Request::Readdir { handle }
            | Request::Fsync { handle }
            | Request::Fstatvfs { handle } => write!(f, "{}", HandleBytes(handle)),
            Request::Read {
                handle,
                offset,
                len,
            } => write!(f, "{} offset={offset} len={len}", HandleBytes(handle)),
            Request::Write {
                handle,
                offset,
                data,
            } => write!(
                f,
                "{} offset={offset} len={}",
                HandleBytes(handle),
                data.len()
            ),
            Request::Fsetstat { handle, attrs } => {
                write!(f, "{} {}", HandleBytes(handle), AttrList(attrs))
            }
            Request::Setstat { path, attrs }
            | Request::Lsetstat { path, attrs }
            | Request::Mkdir { path, attrs } => write!(f, "{} {}", Path(path), AttrList(attrs)),
            Request::Lstat { path }
            | Request::Stat { path }
            | Request::Opendir { path }
            | Request::Remove { path }
            | Request::Rmdir { path }
            | Request::Realpath { path }
            | Request::Readlink { path }
            | Request::Statvfs { path }
            | Request::ExpandPath { path } => write!(f, "{}", Path(path)),
            Request::Rename { from, to } | Request::PosixRename { from, to } => {
                write!(f, "{} -> {}", Path(from), Path(to))
            }
            Request::Symlink { first, second } => write!(f, "{} {}", Path(first), Path(second)),
            Request::Hardlink { existing, new } => {
                write!(f, "{} -> {}", Path(existing), Path(new))
            }
            Request::Limits => Ok(()),
            Request::CopyData {
                read_handle,
                read_offset,
                len,
                write_handle,
                write_offset,
            } => write!(
                f,
                "from {} offset={read_offset} len={len} to {} offset={write_offset}",
                HandleBytes(read_handle),
                HandleBytes(write_handle)
            ),
            Request::HomeDirectory { user } => write!(f, "user={}", Path(user)),
            Request::CheckFileName {
                path,
                algorithms,
                offset,
                len,
                block_size,
            } => write!(
                f,
                "{} algorithms={} offset={offset} len={len} block={block_size}",
                Path(path),
                String::from_utf8_lossy(algorithms)
            ),
            Request::Extended { name, data } => write!(
                f,
                "{} ({} bytes)",
                String::from_utf8_lossy(name),
                data.len()
            ),
        }
    }
}

struct Reply<'a>(&'a Response);

impl fmt::Display for Reply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Response::Status(Status { code, message }) => {
                write!(f, "status {code:?}")?;
                let message = String::from_utf8_lossy(message);
                if !message.trim().is_empty() {
                    write!(f, " {:?}", message.trim())?;
                }
                Ok(())
            }
            Response::Handle(h) => write!(f, "{}", HandleBytes(h)),
            Response::Data(d) => write!(f, "data {} bytes", d.len()),
            Response::Name(names) => match &names[..] {
                [one] => write!(f, "name {}", Path(&one.filename)),
                _ => write!(f, "{} names", names.len()),
            },
            Response::Attrs(a) => write!(f, "attrs {}", AttrList(a)),
            Response::ExtendedReply(b) => write!(f, "extended reply {} bytes", b.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_read_as_one_line_each() {
        let attrs = Attrs {
            permissions: Some(0o100644),
            ..Attrs::default()
        };
        let open = Request::Open {
            path: b"dir/a\nb",
            flags: OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            attrs: &attrs,
        };
        assert_eq!(
            RequestArgs(&open).to_string(),
            r#" "dir/a\nb" flags=write,creat,trunc mode=100644"#
        );
        let write = Request::Write {
            handle: &[0, 1, 0xab],
            offset: 4096,
            data: &[0; 10],
        };
        assert_eq!(
            RequestArgs(&write).to_string(),
            " handle=0001ab offset=4096 len=10"
        );
        let status = Response::Status(Status {
            code: sftp_proto::StatusCode::PermissionDenied,
            message: b"Permission denied".to_vec(),
        });
        assert_eq!(
            Reply(&status).to_string(),
            r#"status PermissionDenied "Permission denied""#
        );
    }
}

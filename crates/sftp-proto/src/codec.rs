//! Encoding of client requests and decoding of server replies, including OpenSSH extensions.

use bytes::{Bytes, BytesMut};

use crate::attrs::Attrs;
use crate::packet_type as pt;
use crate::{ext, ProtoError, SFTP_VERSION};

pub(crate) struct Writer {
    buf: Vec<u8>,
    /// Longest string or count the wire's u32 length fields may carry (lower in tests).
    limit: u64,
    /// The first length that did not fit: the bytes written are then no valid packet.
    overflow: Option<u64>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer::with_buf(Vec::new(), u64::from(u32::MAX))
    }
    fn with_buf(buf: Vec<u8>, limit: u64) -> Self {
        Writer {
            buf,
            limit,
            overflow: None,
        }
    }
    /// A length or count field, checked against what a u32 carries instead of wrapping.
    pub(crate) fn len(&mut self, n: usize) {
        let n = n as u64;
        let v = match u32::try_from(n) {
            Ok(v) if n <= self.limit => v,
            _ => {
                self.overflow.get_or_insert(n);
                u32::MAX
            }
        };
        self.u32(v);
    }
    pub(crate) fn overflow(&self) -> Option<u64> {
        self.overflow
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn string(&mut self, s: &[u8]) {
        self.len(s.len());
        self.buf.extend_from_slice(s);
    }
    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < n {
            return Err(ProtoError::Truncated {
                what,
                needed: n - self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn string(&mut self, what: &'static str) -> Result<&'a [u8], ProtoError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }
    fn finish(&self, what: &'static str) -> Result<(), ProtoError> {
        match self.remaining() {
            0 => Ok(()),
            trailing => Err(ProtoError::Trailing { what, trailing }),
        }
    }
}

/// SSH_FXP_OPEN pflags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    pub const READ: OpenFlags = OpenFlags(0x01);
    pub const WRITE: OpenFlags = OpenFlags(0x02);
    pub const APPEND: OpenFlags = OpenFlags(0x04);
    pub const CREAT: OpenFlags = OpenFlags(0x08);
    pub const TRUNC: OpenFlags = OpenFlags(0x10);
    pub const EXCL: OpenFlags = OpenFlags(0x20);
}

impl std::ops::BitOr for OpenFlags {
    type Output = OpenFlags;
    fn bitor(self, rhs: OpenFlags) -> OpenFlags {
        OpenFlags(self.0 | rhs.0)
    }
}

/// A request from client to server. Extensions are variants of their own and go out as
/// SSH_FXP_EXTENDED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Open {
        path: &'a [u8],
        flags: OpenFlags,
        attrs: &'a Attrs,
    },
    Close {
        handle: &'a [u8],
    },
    Read {
        handle: &'a [u8],
        offset: u64,
        len: u32,
    },
    Write {
        handle: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Lstat {
        path: &'a [u8],
    },
    Fstat {
        handle: &'a [u8],
    },
    Setstat {
        path: &'a [u8],
        attrs: &'a Attrs,
    },
    Fsetstat {
        handle: &'a [u8],
        attrs: &'a Attrs,
    },
    Opendir {
        path: &'a [u8],
    },
    Readdir {
        handle: &'a [u8],
    },
    Remove {
        path: &'a [u8],
    },
    Mkdir {
        path: &'a [u8],
        attrs: &'a Attrs,
    },
    Rmdir {
        path: &'a [u8],
    },
    Realpath {
        path: &'a [u8],
    },
    Stat {
        path: &'a [u8],
    },
    Rename {
        from: &'a [u8],
        to: &'a [u8],
    },
    Readlink {
        path: &'a [u8],
    },
    /// Arguments in wire order. The draft says (linkpath, targetpath); OpenSSH reads them
    /// the other way round, so the caller decides the order.
    Symlink {
        first: &'a [u8],
        second: &'a [u8],
    },
    PosixRename {
        from: &'a [u8],
        to: &'a [u8],
    },
    Fsync {
        handle: &'a [u8],
    },
    Hardlink {
        existing: &'a [u8],
        new: &'a [u8],
    },
    Lsetstat {
        path: &'a [u8],
        attrs: &'a Attrs,
    },
    Limits,
    Statvfs {
        path: &'a [u8],
    },
    Fstatvfs {
        handle: &'a [u8],
    },
    ExpandPath {
        path: &'a [u8],
    },
    CopyData {
        read_handle: &'a [u8],
        read_offset: u64,
        /// 0 copies up to end of file.
        len: u64,
        write_handle: &'a [u8],
        write_offset: u64,
    },
    HomeDirectory {
        user: &'a [u8],
    },
    /// `check-file-name`: hashes of a file's blocks, computed by the server. `len` 0 means up
    /// to the end of the file, `block_size` 0 one hash over the whole range.
    CheckFileName {
        path: &'a [u8],
        /// Comma-separated, in order of preference; the server picks one.
        algorithms: &'a [u8],
        offset: u64,
        len: u64,
        block_size: u32,
    },
    /// Any other SSH_FXP_EXTENDED request: name and raw request-specific data.
    Extended {
        name: &'a [u8],
        data: &'a [u8],
    },
}

impl Request<'_> {
    /// A short name for messages and debugging.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Open { .. } => "open",
            Request::Close { .. } => "close",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Lstat { .. } => "lstat",
            Request::Fstat { .. } => "fstat",
            Request::Setstat { .. } => "setstat",
            Request::Fsetstat { .. } => "fsetstat",
            Request::Opendir { .. } => "opendir",
            Request::Readdir { .. } => "readdir",
            Request::Remove { .. } => "remove",
            Request::Mkdir { .. } => "mkdir",
            Request::Rmdir { .. } => "rmdir",
            Request::Realpath { .. } => "realpath",
            Request::Stat { .. } => "stat",
            Request::Rename { .. } => "rename",
            Request::Readlink { .. } => "readlink",
            Request::Symlink { .. } => "symlink",
            Request::PosixRename { .. } => "posix-rename",
            Request::Fsync { .. } => "fsync",
            Request::Hardlink { .. } => "hardlink",
            Request::Lsetstat { .. } => "lsetstat",
            Request::Limits => "limits",
            Request::Statvfs { .. } => "statvfs",
            Request::Fstatvfs { .. } => "fstatvfs",
            Request::ExpandPath { .. } => "expand-path",
            Request::CopyData { .. } => "copy-data",
            Request::HomeDirectory { .. } => "home-directory",
            Request::CheckFileName { .. } => "check-file-name",
            Request::Extended { .. } => "extended",
        }
    }

    /// Appends the whole packet, length prefix included, to `out`. A field longer than the
    /// wire's 32-bit lengths can say is refused, and `out` is left as it was.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.encode_within(id, out, u64::from(u32::MAX))
    }

    fn encode_within(&self, id: u32, out: &mut Vec<u8>, limit: u64) -> Result<(), ProtoError> {
        let start = out.len();
        let mut w = Writer::with_buf(std::mem::take(out), limit);
        w.u32(0); // length, patched below
        match self {
            Request::Open { path, flags, attrs } => {
                w.u8(pt::OPEN);
                w.u32(id);
                w.string(path);
                w.u32(flags.0);
                attrs.encode(&mut w);
            }
            Request::Close { handle } => simple(&mut w, pt::CLOSE, id, handle),
            Request::Read {
                handle,
                offset,
                len,
            } => {
                w.u8(pt::READ);
                w.u32(id);
                w.string(handle);
                w.u64(*offset);
                w.u32(*len);
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                w.u8(pt::WRITE);
                w.u32(id);
                w.string(handle);
                w.u64(*offset);
                w.string(data);
            }
            Request::Lstat { path } => simple(&mut w, pt::LSTAT, id, path),
            Request::Fstat { handle } => simple(&mut w, pt::FSTAT, id, handle),
            Request::Setstat { path, attrs } => {
                simple(&mut w, pt::SETSTAT, id, path);
                attrs.encode(&mut w);
            }
            Request::Fsetstat { handle, attrs } => {
                simple(&mut w, pt::FSETSTAT, id, handle);
                attrs.encode(&mut w);
            }
            Request::Opendir { path } => simple(&mut w, pt::OPENDIR, id, path),
            Request::Readdir { handle } => simple(&mut w, pt::READDIR, id, handle),
            Request::Remove { path } => simple(&mut w, pt::REMOVE, id, path),
            Request::Mkdir { path, attrs } => {
                simple(&mut w, pt::MKDIR, id, path);
                attrs.encode(&mut w);
            }
            Request::Rmdir { path } => simple(&mut w, pt::RMDIR, id, path),
            Request::Realpath { path } => simple(&mut w, pt::REALPATH, id, path),
            Request::Stat { path } => simple(&mut w, pt::STAT, id, path),
            Request::Rename { from, to } => {
                simple(&mut w, pt::RENAME, id, from);
                w.string(to);
            }
            Request::Readlink { path } => simple(&mut w, pt::READLINK, id, path),
            Request::Symlink { first, second } => {
                simple(&mut w, pt::SYMLINK, id, first);
                w.string(second);
            }
            Request::PosixRename { from, to } => {
                extended(&mut w, id, ext::POSIX_RENAME.as_bytes());
                w.string(from);
                w.string(to);
            }
            Request::Fsync { handle } => {
                extended(&mut w, id, ext::FSYNC.as_bytes());
                w.string(handle);
            }
            Request::Hardlink { existing, new } => {
                extended(&mut w, id, ext::HARDLINK.as_bytes());
                w.string(existing);
                w.string(new);
            }
            Request::Lsetstat { path, attrs } => {
                extended(&mut w, id, ext::LSETSTAT.as_bytes());
                w.string(path);
                attrs.encode(&mut w);
            }
            Request::Limits => extended(&mut w, id, ext::LIMITS.as_bytes()),
            Request::Statvfs { path } => {
                extended(&mut w, id, ext::STATVFS.as_bytes());
                w.string(path);
            }
            Request::Fstatvfs { handle } => {
                extended(&mut w, id, ext::FSTATVFS.as_bytes());
                w.string(handle);
            }
            Request::ExpandPath { path } => {
                extended(&mut w, id, ext::EXPAND_PATH.as_bytes());
                w.string(path);
            }
            Request::CopyData {
                read_handle,
                read_offset,
                len,
                write_handle,
                write_offset,
            } => {
                extended(&mut w, id, ext::COPY_DATA.as_bytes());
                w.string(read_handle);
                w.u64(*read_offset);
                w.u64(*len);
                w.string(write_handle);
                w.u64(*write_offset);
            }
            Request::HomeDirectory { user } => {
                extended(&mut w, id, ext::HOME_DIRECTORY.as_bytes());
                w.string(user);
            }
            Request::CheckFileName {
                path,
                algorithms,
                offset,
                len,
                block_size,
            } => {
                extended(&mut w, id, ext::CHECK_FILE_NAME.as_bytes());
                w.string(path);
                w.string(algorithms);
                w.u64(*offset);
                w.u64(*len);
                w.u32(*block_size);
            }
            Request::Extended { name, data } => {
                extended(&mut w, id, name);
                w.buf.extend_from_slice(data);
            }
        }
        let body = w.buf.len() - start - 4;
        let overflow = w.overflow();
        *out = w.buf;
        let len = match (overflow, u32::try_from(body)) {
            (None, Ok(len)) if u64::from(len) <= limit => len,
            (overflow, _) => {
                out.truncate(start);
                return Err(ProtoError::TooLong {
                    len: overflow.unwrap_or(body as u64),
                });
            }
        };
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

fn simple(w: &mut Writer, ty: u8, id: u32, arg: &[u8]) {
    w.u8(ty);
    w.u32(id);
    w.string(arg);
}

fn extended(w: &mut Writer, id: u32, name: &[u8]) {
    w.u8(pt::EXTENDED);
    w.u32(id);
    w.string(name);
}

/// The SSH_FXP_INIT packet, length prefix included.
pub fn encode_init() -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(5);
    w.u8(pt::INIT);
    w.u32(SFTP_VERSION);
    w.into_inner()
}

/// The server's SSH_FXP_VERSION: its version and advertised extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: u32,
    pub extensions: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Version {
    /// Decodes a VERSION packet (type byte included, no length prefix).
    pub fn decode(packet: &[u8]) -> Result<Version, ProtoError> {
        let mut r = Reader::new(packet);
        let ty = r.u8("packet type")?;
        if ty != pt::VERSION {
            return Err(ProtoError::UnexpectedType(ty));
        }
        let version = r.u32("version")?;
        let mut extensions = Vec::new();
        while r.remaining() > 0 {
            let name = r.string("extension name")?.to_vec();
            let data = r.string("extension data")?.to_vec();
            extensions.push((name, data));
        }
        Ok(Version {
            version,
            extensions,
        })
    }

    pub fn extension(&self, name: &str) -> Option<&[u8]> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, d)| d.as_slice())
    }

    pub fn client_extensions(&self) -> ClientExtensions {
        let has = |name: &str| self.extension(name).is_some();
        ClientExtensions {
            posix_rename: has(ext::POSIX_RENAME),
            statvfs: has(ext::STATVFS),
            fstatvfs: has(ext::FSTATVFS),
            hardlink: has(ext::HARDLINK),
            fsync: has(ext::FSYNC),
            lsetstat: has(ext::LSETSTAT),
            limits: has(ext::LIMITS),
            expand_path: has(ext::EXPAND_PATH),
            copy_data: has(ext::COPY_DATA),
            home_directory: has(ext::HOME_DIRECTORY),
            symlink_draft_order: has(ext::SYMLINK_ORDER),
        }
    }
}

/// Which known extensions the server offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientExtensions {
    pub posix_rename: bool,
    pub statvfs: bool,
    pub fstatvfs: bool,
    pub hardlink: bool,
    pub fsync: bool,
    pub lsetstat: bool,
    pub limits: bool,
    pub expand_path: bool,
    pub copy_data: bool,
    pub home_directory: bool,
    /// The server reads SYMLINK arguments in the draft's (linkpath, targetpath) order.
    pub symlink_draft_order: bool,
}

/// SSH_FX_* status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Ok,
    Eof,
    NoSuchFile,
    PermissionDenied,
    Failure,
    BadMessage,
    NoConnection,
    ConnectionLost,
    OpUnsupported,
    Other(u32),
}

impl StatusCode {
    pub fn from_u32(code: u32) -> StatusCode {
        match code {
            0 => StatusCode::Ok,
            1 => StatusCode::Eof,
            2 => StatusCode::NoSuchFile,
            3 => StatusCode::PermissionDenied,
            4 => StatusCode::Failure,
            5 => StatusCode::BadMessage,
            6 => StatusCode::NoConnection,
            7 => StatusCode::ConnectionLost,
            8 => StatusCode::OpUnsupported,
            n => StatusCode::Other(n),
        }
    }

    /// Words for a person, used when the server sent no message of its own.
    pub fn describe(self) -> &'static str {
        match self {
            StatusCode::Ok => "success",
            StatusCode::Eof => "end of file",
            StatusCode::NoSuchFile => "no such file or directory",
            StatusCode::PermissionDenied => "permission denied",
            StatusCode::Failure => "failure",
            StatusCode::BadMessage => "bad message",
            StatusCode::NoConnection => "no connection",
            StatusCode::ConnectionLost => "connection lost",
            StatusCode::OpUnsupported => "operation not supported",
            StatusCode::Other(_) => "unknown status",
        }
    }
}

/// An SSH_FXP_STATUS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: StatusCode,
    pub message: Vec<u8>,
}

/// One entry of an SSH_FXP_NAME reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    pub filename: Vec<u8>,
    pub longname: Vec<u8>,
    pub attrs: Attrs,
}

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Status(Status),
    Handle(Vec<u8>),
    Data(Bytes),
    Name(Vec<NameEntry>),
    Attrs(Attrs),
    ExtendedReply(Bytes),
}

impl Response {
    /// Decodes a reply packet (type byte included, no length prefix) into its request id and
    /// contents.
    pub fn decode(packet: BytesMut) -> Result<(u32, Response), ProtoError> {
        let packet = packet.freeze();
        let mut r = Reader::new(&packet);
        let ty = r.u8("packet type")?;
        let id = r.u32("request id")?;
        let resp = match ty {
            pt::STATUS => {
                let code = StatusCode::from_u32(r.u32("status code")?);
                // Some old servers omit message and language tag.
                let message = if r.remaining() > 0 {
                    r.string("status message")?.to_vec()
                } else {
                    Vec::new()
                };
                if r.remaining() > 0 {
                    r.string("language tag")?;
                }
                Response::Status(Status { code, message })
            }
            pt::HANDLE => {
                let h = r.string("handle")?.to_vec();
                r.finish("handle")?;
                Response::Handle(h)
            }
            pt::DATA => {
                let len = r.u32("data length")? as usize;
                let start = r.position();
                if r.remaining() < len {
                    return Err(ProtoError::Truncated {
                        what: "data",
                        needed: len - r.remaining(),
                    });
                }
                r.take(len, "data")?;
                r.finish("data")?;
                Response::Data(packet.slice(start..start + len))
            }
            pt::NAME => {
                let count = r.u32("name count")?;
                // Each entry takes at least 12 bytes (two empty strings and empty attrs).
                if count as usize > r.remaining() / 12 {
                    return Err(ProtoError::BadCount(count));
                }
                let mut names = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let filename = r.string("filename")?.to_vec();
                    let longname = r.string("longname")?.to_vec();
                    let attrs = Attrs::decode(&mut r)?;
                    names.push(NameEntry {
                        filename,
                        longname,
                        attrs,
                    });
                }
                Response::Name(names)
            }
            pt::ATTRS => Response::Attrs(Attrs::decode(&mut r)?),
            pt::EXTENDED_REPLY => Response::ExtendedReply(packet.slice(r.position()..)),
            other => return Err(ProtoError::UnexpectedType(other)),
        };
        Ok((id, resp))
    }
}

/// Reply to `limits@openssh.com`. Zero means "no limit given".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_packet_length: u64,
    pub max_read_length: u64,
    pub max_write_length: u64,
    pub max_open_handles: u64,
}

impl Limits {
    pub fn decode(data: &[u8]) -> Result<Limits, ProtoError> {
        let mut r = Reader::new(data);
        Ok(Limits {
            max_packet_length: r.u64("max packet length")?,
            max_read_length: r.u64("max read length")?,
            max_write_length: r.u64("max write length")?,
            max_open_handles: r.u64("max open handles")?,
        })
    }
}

/// Reply to `statvfs@openssh.com` / `fstatvfs@openssh.com`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatVfs {
    pub bsize: u64,
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub favail: u64,
    pub fsid: u64,
    pub flag: u64,
    pub namemax: u64,
}

impl StatVfs {
    pub fn decode(data: &[u8]) -> Result<StatVfs, ProtoError> {
        let mut r = Reader::new(data);
        Ok(StatVfs {
            bsize: r.u64("bsize")?,
            frsize: r.u64("frsize")?,
            blocks: r.u64("blocks")?,
            bfree: r.u64("bfree")?,
            bavail: r.u64("bavail")?,
            files: r.u64("files")?,
            ffree: r.u64("ffree")?,
            favail: r.u64("favail")?,
            fsid: r.u64("fsid")?,
            flag: r.u64("flag")?,
            namemax: r.u64("namemax")?,
        })
    }
}

/// Reply to `check-file-name`: the algorithm the server chose and the hashes, one per block
/// in order, all of that algorithm's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    pub algorithm: Vec<u8>,
    pub hashes: Bytes,
}

impl FileHashes {
    /// The draft has the reply start with the extension's name, "check-file", then the
    /// algorithm; ProFTPD sends the algorithm alone, so the name is skipped where present.
    /// The rest of the packet is the hashes back to back. Their length is the caller's to
    /// check, as only it knows the algorithm's digest size.
    pub fn decode(data: &Bytes) -> Result<FileHashes, ProtoError> {
        let mut r = Reader::new(data);
        let mut algorithm = r.string("hash algorithm")?;
        if algorithm == b"check-file" {
            algorithm = r.string("hash algorithm")?;
        }
        Ok(FileHashes {
            algorithm: algorithm.to_vec(),
            hashes: data.slice(r.position()..),
        })
    }
}

/// Raw contents of an SSH_FXP_EXTENDED_REPLY, for extensions we do not decode ourselves.
pub type ExtendedReply = Bytes;

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(req: &Request<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        req.encode(7, &mut out).unwrap();
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len + 4, out.len(), "length prefix must cover the body");
        out
    }

    #[test]
    fn init_packet_bytes() {
        assert_eq!(encode_init(), vec![0, 0, 0, 5, 1, 0, 0, 0, 3]);
    }

    #[test]
    fn open_request_layout() {
        let attrs = Attrs::default();
        let out = encoded(&Request::Open {
            path: b"caf\xe9",
            flags: OpenFlags::WRITE | OpenFlags::CREAT,
            attrs: &attrs,
        });
        assert_eq!(
            out,
            vec![
                0, 0, 0, 21, 3, 0, 0, 0, 7, 0, 0, 0, 4, b'c', b'a', b'f', 0xe9, 0, 0, 0, 0x0a, 0,
                0, 0, 0
            ]
        );
    }

    #[test]
    fn extended_requests_carry_their_names() {
        let out = encoded(&Request::PosixRename {
            from: b"a",
            to: b"b",
        });
        assert_eq!(out[4], pt::EXTENDED);
        let mut r = Reader::new(&out[9..]);
        assert_eq!(r.string("name").unwrap(), b"posix-rename@openssh.com");
        assert_eq!(r.string("from").unwrap(), b"a");
        assert_eq!(r.string("to").unwrap(), b"b");
        assert_eq!(r.remaining(), 0);

        let out = encoded(&Request::CopyData {
            read_handle: b"h1",
            read_offset: 1,
            len: 2,
            write_handle: b"h2",
            write_offset: 3,
        });
        let mut r = Reader::new(&out[9..]);
        assert_eq!(r.string("name").unwrap(), b"copy-data");
        assert_eq!(r.string("rh").unwrap(), b"h1");
        assert_eq!(r.u64("ro").unwrap(), 1);
        assert_eq!(r.u64("len").unwrap(), 2);
        assert_eq!(r.string("wh").unwrap(), b"h2");
        assert_eq!(r.u64("wo").unwrap(), 3);

        let out = encoded(&Request::CheckFileName {
            path: b"f",
            algorithms: b"sha256,md5",
            offset: 4,
            len: 5,
            block_size: 6,
        });
        let mut r = Reader::new(&out[9..]);
        assert_eq!(r.string("name").unwrap(), b"check-file-name");
        assert_eq!(r.string("path").unwrap(), b"f");
        assert_eq!(r.string("algorithms").unwrap(), b"sha256,md5");
        assert_eq!(r.u64("offset").unwrap(), 4);
        assert_eq!(r.u64("len").unwrap(), 5);
        assert_eq!(r.u32("block size").unwrap(), 6);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn check_file_reply_gives_algorithm_and_hashes() {
        let mut w = Writer::with_buf(Vec::new(), u64::MAX);
        w.string(b"check-file");
        w.string(b"md5");
        let mut data = w.buf;
        data.extend_from_slice(&[7; 32]);
        let got = FileHashes::decode(&Bytes::from(data)).unwrap();
        assert_eq!(got.algorithm, b"md5");
        assert_eq!(&got.hashes[..], &[7; 32]);

        // ProFTPD leaves the name out.
        let mut w = Writer::with_buf(Vec::new(), u64::MAX);
        w.string(b"sha256");
        let mut data = w.buf;
        data.extend_from_slice(&[9; 64]);
        let got = FileHashes::decode(&Bytes::from(data)).unwrap();
        assert_eq!(got.algorithm, b"sha256");
        assert_eq!(&got.hashes[..], &[9; 64]);

        assert!(FileHashes::decode(&Bytes::from_static(b"\0\0")).is_err());
    }

    #[test]
    fn encode_refuses_a_string_its_length_field_cannot_carry() {
        // The real limit is 4 GiB; a lower one proves the check without allocating that.
        let mut out = vec![9, 9];
        let req = Request::Remove { path: b"four" };
        assert_eq!(
            req.encode_within(1, &mut out, 3),
            Err(ProtoError::TooLong { len: 4 })
        );
        assert_eq!(out, vec![9, 9], "nothing half-written is left behind");
        req.encode_within(1, &mut out, 4 + 13).unwrap();
        assert_eq!(out.len(), 2 + 4 + 13);
        let attrs = Attrs {
            extended: vec![(b"k".to_vec(), b"v".to_vec())],
            ..Default::default()
        };
        let open = Request::Open {
            path: b"p",
            flags: OpenFlags::READ,
            attrs: &attrs,
        };
        assert!(open.encode_within(1, &mut out, 20).is_err());
        assert_eq!(out.len(), 2 + 4 + 13);
    }

    #[test]
    fn encode_appends_after_existing_bytes() {
        let mut out = vec![9, 9];
        Request::Close { handle: b"h" }.encode(1, &mut out).unwrap();
        assert_eq!(
            out,
            vec![9, 9, 0, 0, 0, 10, 4, 0, 0, 0, 1, 0, 0, 0, 1, b'h']
        );
    }

    fn packet(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn decode_status_with_and_without_message() {
        let (id, r) = Response::decode(packet(&[
            101, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 2, b'n', b'o', 0, 0, 0, 0,
        ]))
        .unwrap();
        assert_eq!(id, 9);
        assert_eq!(
            r,
            Response::Status(Status {
                code: StatusCode::NoSuchFile,
                message: b"no".to_vec()
            })
        );
        let (_, r) = Response::decode(packet(&[101, 0, 0, 0, 9, 0, 0, 0, 1])).unwrap();
        assert!(matches!(
            r,
            Response::Status(Status {
                code: StatusCode::Eof,
                ..
            })
        ));
    }

    #[test]
    fn decode_data_is_a_slice() {
        let (_, r) = Response::decode(packet(&[103, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3])).unwrap();
        assert_eq!(r, Response::Data(Bytes::from_static(&[1, 2, 3])));
        assert!(Response::decode(packet(&[103, 0, 0, 0, 1, 0, 0, 0, 4, 1, 2, 3])).is_err());
    }

    #[test]
    fn decode_name_list_with_latin1() {
        let mut w = Writer::new();
        w.u8(pt::NAME);
        w.u32(3);
        w.u32(2);
        for n in [&b"caf\xe9"[..], b"b c"] {
            w.string(n);
            w.string(b"long");
            Attrs {
                size: Some(1),
                ..Default::default()
            }
            .encode(&mut w);
        }
        let (_, r) = Response::decode(packet(&w.into_inner())).unwrap();
        let Response::Name(names) = r else { panic!() };
        assert_eq!(names[0].filename, b"caf\xe9");
        assert_eq!(names[1].filename, b"b c");
        assert_eq!(names[1].attrs.size, Some(1));
    }

    #[test]
    fn decode_name_count_larger_than_packet_is_refused() {
        let r = Response::decode(packet(&[104, 0, 0, 0, 1, 0x7f, 0, 0, 0]));
        assert_eq!(r, Err(ProtoError::BadCount(0x7f00_0000)));
    }

    #[test]
    fn huge_name_count_is_refused_before_allocating() {
        // 2^31 entries claimed in a packet holding one: refused from the header alone.
        let mut w = Writer::new();
        w.u8(pt::NAME);
        w.u32(1);
        w.u32(1 << 31);
        w.string(b"a");
        w.string(b"a");
        w.u32(0);
        let r = Response::decode(packet(&w.into_inner()));
        assert_eq!(r, Err(ProtoError::BadCount(1 << 31)));
    }

    #[test]
    fn name_count_larger_than_entries_present_is_truncated_not_a_panic() {
        let mut w = Writer::new();
        w.u8(pt::NAME);
        w.u32(1);
        w.u32(2);
        w.u32(0);
        w.u32(0);
        w.u32(0);
        // The second entry's filename claims more bytes than the packet has left.
        w.u32(100);
        w.u32(0);
        w.u32(0);
        assert!(matches!(
            Response::decode(packet(&w.into_inner())),
            Err(ProtoError::Truncated { .. })
        ));
    }

    #[test]
    fn decode_data_rejects_trailing_garbage() {
        assert!(matches!(
            Response::decode(packet(&[103, 0, 0, 0, 1, 0, 0, 0, 1, 7, 8])),
            Err(ProtoError::Trailing { .. })
        ));
    }

    #[test]
    fn attrs_to_bytes_decodes_back() {
        let a = Attrs {
            size: Some(10),
            permissions: Some(0o100644),
            ..Default::default()
        };
        let mut w = Writer::new();
        w.u8(pt::ATTRS);
        w.u32(5);
        let mut bytes = w.into_inner();
        bytes.extend_from_slice(&a.to_bytes().unwrap());
        assert_eq!(
            Response::decode(packet(&bytes)).unwrap(),
            (5, Response::Attrs(a))
        );
    }

    #[test]
    fn decode_handle_rejects_trailing_garbage() {
        assert!(Response::decode(packet(&[102, 0, 0, 0, 1, 0, 0, 0, 1, b'h', 0])).is_err());
    }

    #[test]
    fn decode_unknown_type_is_an_error() {
        assert_eq!(
            Response::decode(packet(&[77, 0, 0, 0, 1])),
            Err(ProtoError::UnexpectedType(77))
        );
    }

    #[test]
    fn decode_version_with_extensions() {
        let mut w = Writer::new();
        w.u8(pt::VERSION);
        w.u32(3);
        w.string(b"posix-rename@openssh.com");
        w.string(b"1");
        w.string(b"copy-data");
        w.string(b"1");
        let v = Version::decode(&w.into_inner()).unwrap();
        assert_eq!(v.version, 3);
        let e = v.client_extensions();
        assert!(e.posix_rename && e.copy_data && !e.hardlink);
    }

    #[test]
    fn decode_limits() {
        let mut data = Vec::new();
        for v in [262144u64, 261120, 261120, 1024] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        let l = Limits::decode(&data).unwrap();
        assert_eq!(l.max_read_length, 261120);
        assert_eq!(l.max_open_handles, 1024);
        assert!(Limits::decode(&data[..20]).is_err());
    }
}

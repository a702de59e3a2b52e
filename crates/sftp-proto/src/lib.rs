//! Sans-IO codec for SFTP version 3 (draft-ietf-secsh-filexfer-02) plus the OpenSSH extensions.
//!
//! Bytes go in, packets come out; nothing here does I/O or reads a clock. Names, paths and
//! handles stay byte strings throughout: a server may hand us any bytes, and a name that is
//! not UTF-8 must round-trip unchanged.

mod attrs;
mod codec;
mod frame;

pub use attrs::{Attrs, FileKind};
pub use codec::{
    encode_init, ClientExtensions, ExtendedReply, FileHashes, Limits, NameEntry, OpenFlags,
    Request, Response, StatVfs, Status, StatusCode, Version,
};
pub use frame::FrameDecoder;

/// The only protocol version we speak; servers offering more are answered in v3.
pub const SFTP_VERSION: u32 = 3;

/// Packets larger than this are refused unless `limits@openssh.com` says the server sends more.
/// OpenSSH's own limit is 256 KiB, but a `check-file` reply carries up to 65536 hashes of 32
/// bytes in one packet; some slack covers the header.
pub const DEFAULT_MAX_PACKET: u32 = 2 * 1024 * 1024 + 1024;

/// Errors found while decoding bytes from a peer, or encoding a request the wire cannot carry.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("packet truncated: needed {needed} more bytes while reading {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("empty packet")]
    Empty,
    #[error("unexpected packet type {0}")]
    UnexpectedType(u8),
    #[error("{trailing} unexpected trailing bytes after {what}")]
    Trailing { what: &'static str, trailing: usize },
    #[error("name list claims {0} entries, more than the packet can hold")]
    BadCount(u32),
    #[error("a field of {len} bytes is longer than an SFTP length field can say")]
    TooLong { len: u64 },
}

/// Packet type numbers (draft-ietf-secsh-filexfer-02 section 3).
pub mod packet_type {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Extension names as servers advertise them in SSH_FXP_VERSION.
pub mod ext {
    pub const POSIX_RENAME: &str = "posix-rename@openssh.com";
    pub const STATVFS: &str = "statvfs@openssh.com";
    pub const FSTATVFS: &str = "fstatvfs@openssh.com";
    pub const HARDLINK: &str = "hardlink@openssh.com";
    pub const FSYNC: &str = "fsync@openssh.com";
    pub const LSETSTAT: &str = "lsetstat@openssh.com";
    pub const LIMITS: &str = "limits@openssh.com";
    pub const EXPAND_PATH: &str = "expand-path@openssh.com";
    pub const COPY_DATA: &str = "copy-data";
    pub const HOME_DIRECTORY: &str = "home-directory";
    /// Hashes computed by the server (ProFTPD answers it under v3 without announcing it).
    pub const CHECK_FILE_NAME: &str = "check-file-name";
    /// gesftpserver announces that it takes SYMLINK arguments in the draft's order.
    pub const SYMLINK_ORDER: &str = "symlink-order@rjk.greenend.org.uk";
}

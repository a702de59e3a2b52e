//! Async, pipelined SFTP v3 client over any byte stream, with ssh and sftp-server transports.
//!
//! Every call may be issued from many tasks at once; requests are matched to replies by id and
//! bounded by a per-channel budget of requests and bytes in flight.

mod client;
mod error;
pub mod trace;
mod transport;

pub use client::{ClientConfig, Handle, PendingReply, SftpClient};
pub use error::SftpError;
pub use sftp_proto::{
    encode_init, ext, packet_type, Attrs, ClientExtensions, FileKind, Limits, NameEntry, OpenFlags,
    Request, StatVfs, StatusCode, Version,
};
pub use transport::{split_command, ssh_command, ssh_exec_command, StderrLog, Transport};

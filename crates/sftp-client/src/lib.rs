//! Async, pipelined SFTP v3 client over any byte stream, with ssh and sftp-server transports.
//!
//! Every call may be issued from many tasks at once; requests are matched to replies by id and
//! bounded by a per-channel budget of requests and bytes in flight.
//!
//! # Main types
//!
//! - [`Transport`]: the byte stream to a server and the process behind it: the system `ssh`
//!   asking for the `sftp` subsystem ([`Transport::ssh`], so `~/.ssh/config`, the agent and
//!   `known_hosts` apply), a local `sftp-server` over pipes ([`Transport::sftp_server`]),
//!   or streams connected some other way ([`Transport::from_streams`]).
//! - [`SftpClient`]: one session, made by [`SftpClient::connect`]. Clones share it. The
//!   typed calls (`open`, `read`, `write`, `lstat`, `read_dir`, `posix_rename`, ...) wait
//!   for their reply; [`SftpClient::send`] and the `send_*` calls return a [`PendingReply`]
//!   to await later, which is how many READs or WRITEs are kept in flight.
//! - [`ClientConfig`]: the in-flight budget, and rsync's `--timeout` and `--contimeout`.
//! - [`SftpError`]: a refusal by the server ([`SftpError::Status`], with its
//!   [`StatusCode`]), a session that could not start ([`SftpError::Handshake`], with what
//!   ssh printed) or was lost, a timeout, or a server breaking the protocol.
//!
//! # Example
//!
//! ```no_run
//! use sftp_client::{Attrs, ClientConfig, OpenFlags, SftpClient, Transport};
//!
//! # async fn demo() -> Result<(), sftp_client::SftpError> {
//! let transport = Transport::ssh(&["ssh".into()], Some(b"backup"), b"host.example")
//!     .expect("ssh can be started");
//! let sftp = SftpClient::connect(transport, ClientConfig::default()).await?;
//! let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
//! let file = sftp.open(b"upload/hello.txt", flags, &Attrs::default()).await?;
//! sftp.write(&file, 0, b"hello\n").await?;
//! sftp.close(&file).await?;
//! for entry in sftp.read_dir(b"upload").await? {
//!     println!("{}", String::from_utf8_lossy(&entry.filename));
//! }
//! sftp.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Logging
//!
//! Each request and reply is a `tracing` event at DEBUG level under the target
//! [`trace::TARGET`] (`sftp`). The crate installs no subscriber and prints nothing; with
//! none listening, an event costs a check of a static flag.

mod client;
mod error;
pub mod trace;
mod transport;

pub use client::{ClientConfig, Handle, HandleRoom, PendingReply, SftpClient};
pub use error::SftpError;
pub use sftp_proto::{
    encode_init, ext, packet_type, Attrs, ClientExtensions, FileKind, Limits, NameEntry, OpenFlags,
    Request, StatVfs, StatusCode, Version,
};
pub use transport::{split_command, ssh_command, ssh_exec_command, StderrLog, Transport};

//! The client against real peers: OpenSSH's sftp-server over pipes, our hostile server, and
//! transports that stall or never answer.

mod against_sftp_server;
mod timeouts;

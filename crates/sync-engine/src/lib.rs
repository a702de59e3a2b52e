//! rsync's sync semantics over a `Tree` abstraction: walk, filter, compare, transfer, apply.
//!
//! The engine never prints or exits: what happens is told to a [`Reporter`], and how the run
//! went comes back as a [`SyncOutcome`]. It is what the `sftpsync` command runs, and it can
//! be used from other programs the same way.
//!
//! # Main types
//!
//! - [`Tree`]: one side of a sync, a directory that can be listed, read and written.
//!   [`LocalTree`] is a directory on this machine (nothing outside it is ever reached, not
//!   even through symlinks); [`SftpTree`] is a directory on an SFTP server, worked on over
//!   the [`sftp_client::SftpClient`] sessions of a [`ChannelPool`]
//!   ([`SftpTree::on_session`] for one session).
//! - [`SyncJob`]: the sources, each a [`SourceRoot`] (a tree, and whether its contents or
//!   one named entry is sent: rsync's trailing slash), the destination tree, and settings
//!   of the run. [`SyncJob::new`] fills in the command line's defaults.
//! - [`SyncOptions`]: rsync's flags as fields (`-a` is [`SyncOptions::archive`]), with the
//!   `--exclude`/`--include`/`--filter` rules in [`FilterRules`].
//! - [`run`]: the sync. Each change is an [`Item`] told to the [`Reporter`] (its
//!   [`Item::code`] is rsync's `%i`); [`CollectingReporter`] keeps everything.
//! - [`SyncOutcome`]: counts and [`Stats`] for rsync's exit code and summary, and the error
//!   that stopped the run, if one did. Every [`TreeError`] names the operation, the side
//!   ([`Side`]), the path and the cause.
//! - [`RemoteIndex`]: what earlier runs wrote to a server (from the `sync-index` crate),
//!   which lets a changed file be sent as a delta without any process on the server.
//!
//! # Example
//!
//! Pushing a directory's contents, as `sftpsync -a --delete src/ host:backup/` does
//! (`examples/sync_tree.rs` is the same as a program):
//!
//! ```no_run
//! use sftp_client::{ClientConfig, SftpClient, Transport};
//! use sync_engine::{CollectingReporter, LocalTree, SftpTree, SourceRoot, SyncJob, SyncOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = Transport::ssh(&["ssh".into()], None, b"backup@host.example")?;
//! let session = SftpClient::connect(transport, ClientConfig::default()).await?;
//! let dest = SftpTree::on_session(session.clone(), "backup");
//! let job = SyncJob::new(vec![SourceRoot::contents(LocalTree::new("src"))], dest);
//! let opts = SyncOptions { delete: true, ..SyncOptions::archive() };
//! let report = CollectingReporter::default();
//! let outcome = sync_engine::run(&job, &opts, &report).await;
//! session.shutdown().await;
//! for item in report.items.lock().unwrap().iter() {
//!     println!("{} {}", item.code(), item.display_name());
//! }
//! if let Some(fatal) = outcome.fatal {
//!     return Err(fatal.into());
//! }
//! # Ok(())
//! # }
//! ```

pub mod backup;
pub mod delta_index;
pub mod filter;
pub mod link_dest;
pub mod listing;
pub mod local;
pub mod mtime;
pub mod options;
pub mod path;
mod prune;
pub mod remote;
pub mod report;
mod server_hashes;
mod simple;
pub mod sync;
mod task;
pub mod tree;
pub mod validate;

pub use backup::Backup;
pub use delta_index::RemoteIndex;
pub use filter::FilterRules;
pub use link_dest::{AltDest, LinkDest};
pub use listing::{ListOutcome, ListSink, Listed};
pub use local::LocalTree;
pub use options::{AppendMode, DeleteWhen, MissingArgs, RemoveSource, SyncOptions};
pub use remote::{ChannelPool, ServerQuirks, SftpTree};
pub use report::{CollectingReporter, Item, Progress, Reporter, Skipped, Stats, UpdateType};
pub use simple::DEFAULT_TASKS_PER_LANE;
pub use sync::{run, top_entry, SourceContent, SourceRoot, SyncJob, SyncOutcome, TopEntry};
pub use task::hash_file;
pub use tree::{
    BlockHashes, ErrorKind, HashAlgorithm, HashRange, Kind, Meta, SetMeta, Side, Tree, TreeError,
};

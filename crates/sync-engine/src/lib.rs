//! rsync's sync semantics over a `Tree` abstraction: walk, filter, compare, transfer, apply.
//!
//! The engine never prints or exits: what happens is told to a [`Reporter`], and how the run
//! went comes back as a [`SyncOutcome`].

pub mod backup;
pub mod delta_index;
pub mod filter;
pub mod link_dest;
pub mod local;
pub mod mtime;
pub mod options;
pub mod path;
pub mod remote;
pub mod report;
mod server_hashes;
pub mod sync;
mod task;
pub mod tree;
pub mod validate;

pub use backup::Backup;
pub use delta_index::RemoteIndex;
pub use filter::FilterRules;
pub use link_dest::LinkDest;
pub use local::LocalTree;
pub use options::{AppendMode, DeleteWhen, SyncOptions};
pub use remote::{ChannelPool, ServerQuirks, SftpTree};
pub use report::{CollectingReporter, Item, Progress, Reporter, Stats, UpdateType};
pub use sync::{run, SourceContent, SourceRoot, SyncJob, SyncOutcome};
pub use task::hash_file;
pub use tree::{
    BlockHashes, ErrorKind, HashAlgorithm, HashRange, Kind, Meta, SetMeta, Side, Tree, TreeError,
};

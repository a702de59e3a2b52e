//! rsync's sync semantics over a `Tree` abstraction: walk, filter, compare, transfer, apply.
//!
//! The engine never prints or exits: what happens is told to a [`Reporter`], and how the run
//! went comes back as a [`SyncOutcome`].

pub mod filter;
pub mod local;
pub mod options;
pub mod path;
pub mod remote;
pub mod report;
pub mod sync;
pub mod tree;

pub use filter::FilterRules;
pub use local::LocalTree;
pub use options::SyncOptions;
pub use remote::{ServerQuirks, SftpTree};
pub use report::{CollectingReporter, Item, Reporter, Stats, UpdateType};
pub use sync::{hash_file, run, SourceContent, SourceRoot, SyncJob, SyncOutcome};
pub use tree::{ErrorKind, Kind, Meta, SetMeta, Side, Tree, TreeError};

//! Shorter ways to set up a run for programs that use the engine as a library: rsync's
//! `-a` as options, a job with the CLI's defaults, and a remote tree on one SFTP session.

use std::sync::Arc;

use sftp_client::SftpClient;

use crate::options::SyncOptions;
use crate::remote::{ChannelPool, ServerQuirks, SftpTree};
use crate::sync::{SourceContent, SourceRoot, SyncJob};
use crate::tree::Tree;

/// Entries worked on at once per channel when a job is made with [`SyncJob::new`]: enough
/// to hide tens of milliseconds of latency, far below OpenSSH's open-handle limit.
pub const DEFAULT_TASKS_PER_LANE: usize = 128;

impl SyncOptions {
    /// rsync's `-a`: recursive, and keep symlinks, permissions, times, group, owner,
    /// devices and specials (not hard links, as in rsync). Deltas are on; nothing is
    /// deleted unless `delete` is set too.
    pub fn archive() -> SyncOptions {
        SyncOptions {
            recursive: true,
            links: true,
            perms: true,
            times: true,
            group: true,
            owner: true,
            devices: true,
            specials: true,
            ..SyncOptions::default()
        }
    }
}

impl SourceRoot {
    /// `SRC/`: the contents of `tree`'s root go into the destination.
    pub fn contents(tree: impl Tree + 'static) -> SourceRoot {
        SourceRoot {
            tree: Arc::new(tree),
            content: SourceContent::Contents,
        }
    }

    /// `SRC` without a trailing slash: the entry `name` inside `tree`'s root goes into the
    /// destination under that name.
    pub fn named(tree: impl Tree + 'static, name: impl Into<Vec<u8>>) -> SourceRoot {
        SourceRoot {
            tree: Arc::new(tree),
            content: SourceContent::Named(name.into()),
        }
    }
}

impl SyncJob {
    /// A job copying `sources` into `dest` with the command line's defaults: no delta index
    /// (changed files are sent whole unless [`SyncJob::index`] is set), no progress hook.
    pub fn new(sources: Vec<SourceRoot>, dest: impl Tree + 'static) -> SyncJob {
        SyncJob {
            sources,
            dest: Arc::new(dest),
            dest_file_name: None,
            dest_is_dir: true,
            tasks_per_lane: DEFAULT_TASKS_PER_LANE,
            index: None,
            partial_dir_tree: None,
            temp_dir_tree: None,
            progress: None,
            backup: None,
            link_dest: None,
        }
    }
}

impl SftpTree {
    /// The directory `dir` on the server of `session` (relative paths start in the login
    /// directory), worked on over that one channel. Warnings about the server (it refuses
    /// SETSTAT, it cannot rename atomically) go to `tracing` under the target `sync`; use
    /// [`SftpTree::new`] to receive them yourself or to spread work over several channels.
    pub fn on_session(session: SftpClient, dir: impl Into<Vec<u8>>) -> SftpTree {
        let dir = dir.into();
        let describe = format!("{}:{}", session.peer(), String::from_utf8_lossy(&dir));
        SftpTree::new(
            Arc::new(ChannelPool::new(session)),
            dir,
            describe,
            Arc::new(ServerQuirks::default()),
            Arc::new(|message: String| tracing::warn!(target: "sync", "{message}")),
        )
    }
}

//! `--link-dest`: a file that needs sending, but sits unchanged in one of the given
//! directories on the destination's side, is hard-linked from there instead of sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::mtime::mtimes_differ;
use crate::options::SyncOptions;
use crate::path::{file_name, join, parent, RelPath};
use crate::task::modes_differ;
use crate::tree::{ErrorKind, Kind, Meta, Tree};

/// The directories to link from, on one tree that reaches both them and the destination.
pub struct LinkDest {
    /// A tree on the destination's side (and session) rooted where both paths below start.
    pub tree: Arc<dyn Tree>,
    /// The destination's root, as a path in `tree`.
    pub dest: RelPath,
    /// Each `--link-dest` directory as a path in `tree`, in the order given.
    pub dirs: Vec<RelPath>,
    /// Hard links turned out impossible here: every file is sent as usual.
    disabled: AtomicBool,
    temps: AtomicU64,
}

/// What came of looking for a file in the link-dest directories.
pub(crate) enum Linked {
    /// The destination name is now a link to an identical file.
    Done,
    /// No identical file (or none could be linked): send it.
    No,
    /// The tree cannot make hard links; the warning to give, once.
    Unsupported(String),
}

impl LinkDest {
    pub fn new(tree: Arc<dyn Tree>, dest: RelPath, dirs: Vec<RelPath>) -> LinkDest {
        LinkDest {
            tree,
            dest,
            dirs,
            disabled: AtomicBool::new(false),
            temps: AtomicU64::new(0),
        }
    }

    /// Whether `found` is `src` as the options compare files: rsync's quick check, and the
    /// attributes being preserved, since a link shares them.
    fn same(&self, opts: &SyncOptions, dest: &dyn Tree, src: &Meta, found: &Meta) -> bool {
        if opts.ignore_times && !opts.size_only {
            // rsync's quick check fails every file under -I, so nothing is linked.
            return false;
        }
        let chown = dest.can_chown();
        found.kind == Kind::File
            && found.size == src.size
            && !mtimes_differ(
                dest.stored_mtime(src.mtime),
                found.mtime,
                opts.modify_window,
            )
            && !(opts.perms && modes_differ(src.mode, found.mode))
            && !(opts.owner && chown && src.uid.is_some() && found.uid != src.uid)
            && !(opts.group && chown && src.gid.is_some() && found.gid != src.gid)
    }

    /// Links `dest_path` to the first identical file found. An existing destination file is
    /// replaced atomically: the link is made under a temp name and renamed over it.
    pub(crate) async fn link(
        &self,
        opts: &SyncOptions,
        dest: &dyn Tree,
        src: &Meta,
        dest_path: &RelPath,
        replacing: bool,
    ) -> Result<Linked, crate::tree::TreeError> {
        if self.disabled.load(Ordering::Relaxed) || opts.checksum {
            return Ok(Linked::No);
        }
        for dir in &self.dirs {
            let candidate = join(dir, dest_path);
            let found = match self.tree.lstat(&candidate).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) if e.kind == ErrorKind::Connection => return Err(e),
                Err(_) => continue,
            };
            if !self.same(opts, dest, src, &found) {
                continue;
            }
            if opts.dry_run {
                return Ok(Linked::Done);
            }
            let target = join(&self.dest, dest_path);
            let made = if replacing {
                let n = self.temps.fetch_add(1, Ordering::Relaxed);
                let mut name = b".".to_vec();
                name.extend_from_slice(
                    &file_name(dest_path)[..file_name(dest_path).len().min(200)],
                );
                name.extend_from_slice(format!(".link{n}").as_bytes());
                let temp = join(&self.dest, &join(parent(dest_path), &name));
                match self.tree.hard_link(&candidate, &temp).await {
                    Ok(()) => match self.tree.rename_replace(&temp, &target).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            let _ = self.tree.remove_file(&temp).await;
                            Err(e)
                        }
                    },
                    Err(e) => Err(e),
                }
            } else {
                self.tree.hard_link(&candidate, &target).await
            };
            return match made {
                Ok(()) => Ok(Linked::Done),
                Err(e) if e.kind == ErrorKind::Connection => Err(e),
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    if self.disabled.swap(true, Ordering::Relaxed) {
                        Ok(Linked::No)
                    } else {
                        Ok(Linked::Unsupported(format!(
                            "--link-dest: hard links cannot be made on {} ({}); files are sent \
                             instead",
                            dest.describe(),
                            e.cause
                        )))
                    }
                }
                // Another file system, or a name in the way: sending still works.
                Err(_) => Ok(Linked::No),
            };
        }
        Ok(Linked::No)
    }
}

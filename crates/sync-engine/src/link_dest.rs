//! `--link-dest`, `--copy-dest` and `--compare-dest`: a file that needs sending, but sits
//! unchanged in one of the given directories on the destination's side, is hard-linked or
//! copied from there, or left out, instead of sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::backup::finish_or_abandon;
use crate::mtime::mtimes_differ;
use crate::options::SyncOptions;
use crate::path::{join, temp_beside, RelPath};
use crate::report::UpdateType;
use crate::task::modes_differ;
use crate::tree::{ErrorKind, Kind, Meta, Tree};

/// What is done with a file found unchanged in one of the directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AltDest {
    /// `--link-dest`: hard-linked.
    Link,
    /// `--copy-dest`: copied where it is.
    Copy,
    /// `--compare-dest`: left out of the destination.
    Compare,
}

/// The directories to link from, on one tree that reaches both them and the destination.
pub struct LinkDest {
    pub kind: AltDest,
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
    /// An identical file was found and dealt with: the destination name is now a link to
    /// it (`Some(HardLink)`), or it is left out (`--compare-dest`, `None`).
    Done(Option<UpdateType>),
    /// No identical file (or none could be linked): send it. rsync itemizes the file
    /// against the best one found, as though it had been there, and copies it where the
    /// quick check passes.
    No(Option<Basis>),
    /// The tree cannot make hard links; the warning to give, once.
    Unsupported(String),
}

/// A file in a link-dest directory that is not identical to the source's, but the one rsync
/// compares the new file with.
pub(crate) struct Basis {
    pub meta: Meta,
    /// Its path in the link-dest tree.
    pub path: RelPath,
    /// Same size and mtime as the source: a copy of it is the new file, given the
    /// attributes.
    pub quick_match: bool,
}

impl LinkDest {
    pub fn new(kind: AltDest, tree: Arc<dyn Tree>, dest: RelPath, dirs: Vec<RelPath>) -> LinkDest {
        LinkDest {
            kind,
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

    /// A name beside `dest_path` to make its new version under, in the link-dest tree.
    fn temp_name(&self, dest_path: &RelPath, what: &str) -> RelPath {
        let n = self.temps.fetch_add(1, Ordering::Relaxed);
        join(&self.dest, &temp_beside(dest_path, what, n))
    }

    /// A new symlink at `dest_path` (nothing there yet) with an identical twin in the
    /// directories: hard-linked to it (as rsync does where links can be hard-linked), left
    /// out, or made as usual but shown as a copy, by the kind. What was done, `None` where
    /// nothing was found or the link failed and the symlink is to be made as usual.
    pub(crate) async fn symlink_twin(
        &self,
        opts: &SyncOptions,
        dest_path: &RelPath,
        target: &[u8],
    ) -> Result<Option<Linked>, crate::tree::TreeError> {
        if self.disabled.load(Ordering::Relaxed) {
            return Ok(None);
        }
        for dir in &self.dirs {
            let candidate = join(dir, dest_path);
            let found = match self.tree.lstat(&candidate).await {
                Ok(Some(m)) if m.kind == Kind::Symlink => m,
                Err(e) if e.kind == ErrorKind::Connection => return Err(e),
                _ => continue,
            };
            match self.tree.read_link(&candidate, Some(found.size)).await {
                Ok(t) if t == target => {}
                Err(e) if e.kind == ErrorKind::Connection => return Err(e),
                _ => continue,
            }
            match self.kind {
                AltDest::Compare => return Ok(Some(Linked::Done(None))),
                AltDest::Copy => return Ok(Some(Linked::No(None))),
                AltDest::Link => {}
            }
            if opts.dry_run {
                return Ok(Some(Linked::Done(Some(UpdateType::HardLink))));
            }
            let made = self
                .tree
                .hard_link(&candidate, &join(&self.dest, dest_path))
                .await;
            return match made {
                Ok(()) => Ok(Some(Linked::Done(Some(UpdateType::HardLink)))),
                Err(e) if e.kind == ErrorKind::Connection => Err(e),
                Err(_) => Ok(None),
            };
        }
        Ok(None)
    }

    /// Makes `dest_path` a copy of `basis`, copied where both are (no bytes cross the
    /// wire), with the attributes of `meta`: rsync's local copy of a link-dest file that
    /// passes the quick check but differs in its attributes. `Ok(false)` where the tree
    /// cannot copy so; the file is then sent.
    pub(crate) async fn copy_basis(
        &self,
        basis: &Basis,
        dest_path: &RelPath,
        meta: &crate::tree::SetMeta,
    ) -> Result<bool, crate::tree::TreeError> {
        if !self.tree.copies_ranges() {
            return Ok(false);
        }
        let temp = self.temp_name(dest_path, "copy");
        let mut writer = self
            .tree
            .create_file_based_on(&temp, 0o600, &basis.path)
            .await?;
        let copied = writer.copy_from_base(0, basis.meta.size).await;
        let copied = finish_or_abandon(writer, copied, meta).await;
        let placed = match copied {
            Ok(()) => {
                self.tree
                    .rename_replace(&temp, &join(&self.dest, dest_path))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = placed {
            let _ = self.tree.remove_file(&temp).await;
            return Err(e);
        }
        Ok(true)
    }

    /// The first directory at `dest_path` in the link-dest directories: rsync itemizes a
    /// new directory against it, as though it had been there.
    pub(crate) async fn find_dir(&self, dest_path: &RelPath) -> Option<Meta> {
        for dir in &self.dirs {
            let candidate = if dest_path.is_empty() {
                dir.clone()
            } else {
                join(dir, dest_path)
            };
            if let Ok(Some(m)) = self.tree.lstat(&candidate).await {
                if m.kind == Kind::Dir {
                    return Some(m);
                }
            }
        }
        None
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
            return Ok(Linked::No(None));
        }
        // rsync's preference among the files that are not identical: one that passes the
        // quick check, else any regular file; the first of each kind.
        let mut basis: Option<Basis> = None;
        for dir in &self.dirs {
            let candidate = join(dir, dest_path);
            let found = match self.tree.lstat(&candidate).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) if e.kind == ErrorKind::Connection => return Err(e),
                Err(_) => continue,
            };
            if !self.same(opts, dest, src, &found) {
                if found.kind == Kind::File {
                    let quick = found.size == src.size
                        && !mtimes_differ(
                            dest.stored_mtime(src.mtime),
                            found.mtime,
                            opts.modify_window,
                        );
                    if basis.as_ref().is_none_or(|b| quick && !b.quick_match) {
                        basis = Some(Basis {
                            meta: found,
                            path: candidate,
                            quick_match: quick,
                        });
                    }
                }
                continue;
            }
            match self.kind {
                AltDest::Compare => return Ok(Linked::Done(None)),
                AltDest::Copy => {
                    return Ok(Linked::No(Some(Basis {
                        meta: found,
                        path: candidate,
                        quick_match: true,
                    })))
                }
                AltDest::Link => {}
            }
            if opts.dry_run {
                return Ok(Linked::Done(Some(UpdateType::HardLink)));
            }
            let target = join(&self.dest, dest_path);
            let made = if replacing {
                let temp = self.temp_name(dest_path, "link");
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
                Ok(()) => Ok(Linked::Done(Some(UpdateType::HardLink))),
                Err(e) if e.kind == ErrorKind::Connection => Err(e),
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    if self.disabled.swap(true, Ordering::Relaxed) {
                        Ok(Linked::No(None))
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
                Err(_) => Ok(Linked::No(None)),
            };
        }
        Ok(Linked::No(basis))
    }
}

//! Work on single entries that runs concurrently with the walk: copies, links, deletions,
//! attribute fixes. Each task reports back what it did instead of touching shared state.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use delta::{DeltaEncoder, KnownBlock, Op, Signature, SignatureBuilder};
use tokio::sync::watch;

use crate::backup::Backup;
use crate::delta_index::{IndexedContent, RemoteIndex, DELTA_MIN_SIZE};
use crate::filter::FilterRules;
use crate::link_dest::{Basis, LinkDest, Linked};
use crate::mtime::mtimes_differ;
use crate::options::{AppendMode, RemoveSource, SyncOptions};
use crate::path::{display_path, file_name, join, parent, unsafe_symlink, RelPath};
use crate::report::{Item, Progress, Stats, UpdateType};
use crate::server_hashes::{self, BuildError, ServerHashTrust, Versions};
use crate::tree::{
    ErrorKind, FileReader, FileWriter, HashRange, Kind, Meta, SetMeta, Side, Tree, TreeError,
    TreeResult,
};
use crate::validate::validate_listing;

/// What every task needs, shared by the whole run.
pub(crate) struct Shared {
    pub opts: SyncOptions,
    pub dest: Arc<dyn Tree>,
    pub index: Option<Arc<RemoteIndex>>,
    /// The directory of an absolute `--partial-dir`, on the destination's side.
    pub partial_tree: Option<Arc<dyn Tree>>,
    /// `-T DIR`: where temp files are written instead of beside their files.
    pub temp_tree: Option<Arc<dyn Tree>>,
    pub umask: u32,
    pub server_hashes: ServerHashTrust,
    temp_counter: AtomicU64,
    deletions: AtomicU64,
    partial_names: NameLocks,
    /// A file was written through `partial_tree`, so its directory may have been made.
    pub partial_dir_used: AtomicBool,
    pub progress: Option<Arc<dyn Progress>>,
    /// `--backup`: where replaced and deleted entries are kept.
    pub backup: Option<Arc<Backup>>,
}

impl Shared {
    pub fn new(
        opts: SyncOptions,
        dest: Arc<dyn Tree>,
        index: Option<Arc<RemoteIndex>>,
        partial_tree: Option<Arc<dyn Tree>>,
        progress: Option<Arc<dyn Progress>>,
    ) -> Shared {
        Shared {
            opts,
            dest,
            index,
            partial_tree,
            temp_tree: None,
            umask: process_umask().unwrap_or(0o022),
            server_hashes: ServerHashTrust::default(),
            temp_counter: AtomicU64::new(0),
            deletions: AtomicU64::new(0),
            partial_names: NameLocks::default(),
            partial_dir_used: AtomicBool::new(false),
            progress,
            backup: None,
        }
    }

    fn update_type(&self) -> UpdateType {
        match self.dest.side() {
            Side::Remote => UpdateType::Sent,
            Side::Local => UpdateType::Received,
        }
    }

    /// Takes one deletion from the --max-delete allowance; false once it is used up.
    fn reserve_deletion(&self) -> bool {
        match self.opts.max_delete {
            None => {
                self.deletions.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .deletions
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        }
    }
}

/// One lock per name. In an absolute `--partial-dir` every file's partial is named by its
/// base name alone, so `a/f` and `b/f` copied at once would write, resume from or remove the
/// same file: they take turns instead.
#[derive(Default)]
struct NameLocks(std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>);

impl NameLocks {
    async fn lock(&self, name: &[u8]) -> NameGuard<'_> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_vec())
            .or_default()
            .clone();
        NameGuard {
            locks: self,
            name: name.to_vec(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: Vec<u8>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        // Released under the map's lock: a task that wants the name clones it under that lock
        // too, so a lock nobody else holds or waits for can go from the map here.
        drop(self.guard.take());
        if map
            .get(&self.name)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.name);
        }
    }
}

/// Stops the run: only for errors after which nothing else can work.
pub(crate) struct Fatal(pub TreeError);

/// What one task did, folded into the run's outcome by the walker.
#[derive(Default)]
pub(crate) struct Report {
    pub items: Vec<Item>,
    pub stats: Stats,
    pub errors: Vec<TreeError>,
    pub warnings: Vec<String>,
    /// Messages for `-v`, such as skipped unsafe symlinks.
    pub verbose_infos: Vec<String>,
    /// Messages shown unless -q, such as a directory `--delete` could not empty, each with
    /// the number of items before it.
    pub notices: Vec<(usize, String)>,
    pub vanished: u64,
    pub source_io_error: bool,
    pub deletions_skipped: u64,
    pub fatal: Option<TreeError>,
    /// Files to send again once every other file is done (`--append-verify`).
    pub resends: Vec<Resend>,
    /// `--delay-updates`: files written whole beside their place, to be renamed into it once
    /// every file is written.
    pub delayed: Vec<Delayed>,
    /// Source entries removed after the receiver got them (`--remove-source-files`), by
    /// their paths in their source trees.
    pub removed_sources: Vec<RelPath>,
}

/// A file `--delay-updates` finished in the partial directory: renamed over `dest_path`
/// in the pass after every copy (`Worker::put_in_place`).
pub(crate) struct Delayed {
    src: SourceEntry,
    /// Where the finished file waits, in the destination tree.
    waiting: RelPath,
    dest_path: RelPath,
    meta: SetMeta,
    /// What was written, for the delta index once the file is in place.
    copied: Copied,
    /// A file was there when the walk looked: with `--backup` it is kept before the rename.
    replacing: bool,
}

/// How a source entry came to be on the receiver, for `--remove-source-files` and
/// `--remove-sent-files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Synced {
    /// Its data was sent (or the symlink made) in this run.
    Sent,
    /// The receiver already had it.
    UpToDate,
}

/// A file `--append-verify` appended to, whose receiver's start turned out not to be the
/// source's: it is rewritten whole in a pass after the others, as rsync's redo pass does.
pub(crate) struct Resend {
    src: SourceEntry,
    dest_path: RelPath,
    meta: SetMeta,
}

/// Opens once a directory exists on the destination; entries inside it wait on it. A
/// directory that could not be made keeps its gate shut and its entries are skipped.
#[derive(Clone, Default)]
pub(crate) struct Gate(Option<watch::Receiver<Option<bool>>>);

impl Gate {
    pub fn open() -> Gate {
        Gate(None)
    }

    pub fn pending() -> (watch::Sender<Option<bool>>, Gate) {
        let (tx, rx) = watch::channel(None);
        (tx, Gate(Some(rx)))
    }

    pub async fn passable(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(rx) => matches!(
                rx.wait_for(|v| v.is_some()).await.map(|v| *v),
                Ok(Some(true))
            ),
        }
    }
}

/// A source entry handed to a task.
pub(crate) struct SourceEntry {
    pub tree: Arc<dyn Tree>,
    pub path: RelPath,
    pub meta: Meta,
    /// What the destination's listing showed of a `--partial` file kept for this entry.
    pub kept_partial: KeptPartial,
}

/// A kept `--partial` file as the walk saw it: when the listing tells, no request is needed
/// to look for one.
#[derive(Debug, Clone, Default)]
pub(crate) enum KeptPartial {
    /// Not in a listing the walk has (`--partial-dir`, or a single file copied by name).
    #[default]
    Unknown,
    Absent,
    Present(Meta),
}

type BoxStep<'a> = Pin<Box<dyn Future<Output = Result<(), Fatal>> + Send + 'a>>;

/// Runs one piece of work and collects its report.
pub(crate) struct Worker {
    sh: Arc<Shared>,
    pub report: Report,
}

impl Worker {
    pub fn new(sh: Arc<Shared>) -> Worker {
        Worker {
            sh,
            report: Report::default(),
        }
    }

    fn dest(&self) -> &dyn Tree {
        &*self.sh.dest
    }

    /// Records a per-entry failure, or stops the run when the connection is gone.
    pub fn fail(&mut self, e: TreeError) -> Result<(), Fatal> {
        if e.kind == ErrorKind::Connection {
            return Err(Fatal(e));
        }
        self.report.errors.push(e);
        Ok(())
    }

    pub fn source_error(&mut self, e: TreeError) -> Result<(), Fatal> {
        self.report.source_io_error = true;
        self.fail(e)
    }

    pub fn vanished(&mut self, path: &[u8]) -> Result<(), Fatal> {
        self.report.vanished += 1;
        self.report
            .warnings
            .push(format!("file has vanished: \"{}\"", display_path(path)));
        Ok(())
    }

    fn item(&mut self, item: Item) {
        self.report.items.push(item);
    }

    /// A note in its place after the items so far.
    fn notice(&mut self, text: String) {
        self.report.notices.push((self.report.items.len(), text));
    }

    /// Finishes the task: a fatal error travels inside the report.
    pub fn finish(mut self, r: Result<(), Fatal>) -> Report {
        if let Err(Fatal(e)) = r {
            self.report.fatal = Some(e);
        }
        self.report
    }

    pub fn owner_fix(&self, src: &Meta, dest: Option<&Meta>, fix: &mut SetMeta, item: &mut Item) {
        let opts = &self.sh.opts;
        if !self.dest().can_chown() {
            return;
        }
        if opts.owner {
            if let Some(uid) = src.uid {
                if dest.and_then(|d| d.uid) != Some(uid) {
                    fix.uid = Some(uid);
                    item.owner = dest.is_some();
                }
            }
        }
        if opts.group {
            if let Some(gid) = src.gid {
                if dest.and_then(|d| d.gid) != Some(gid) {
                    fix.gid = Some(gid);
                    item.group = dest.is_some();
                }
            }
        }
        // SFTP v3 sets uid and gid together: fill in the other half from the listing, which
        // saves the remote side a STAT. Never from the source: -o without -g leaves the group
        // alone, as rsync does; a new file keeps its default one.
        if (fix.uid.is_some() || fix.gid.is_some()) && self.dest().side() == Side::Remote {
            fix.uid = fix.uid.or(dest.and_then(|d| d.uid));
            fix.gid = fix.gid.or(dest.and_then(|d| d.gid));
        }
    }

    /// Whether a source entry that reached the receiver this way is to be removed.
    pub fn removes_source(&self, how: Synced) -> bool {
        let opts = &self.sh.opts;
        if opts.dry_run {
            return false;
        }
        match opts.remove_source {
            RemoveSource::Off => false,
            RemoveSource::Synced => true,
            RemoveSource::Sent => how == Synced::Sent,
        }
    }

    /// rsync's `--remove-source-files` for one file or symlink that is now in place at
    /// `dest_path`. Nothing is removed unless every check passes: with `check_dest` the
    /// receiver's file must be a file of the source's size; the source must still have the
    /// size and mtime it was synced with (a file written to meanwhile stays, as in rsync);
    /// and in a local copy the two must not be the same file. A failure is an error that
    /// names the source.
    pub async fn remove_source(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        check_dest: bool,
    ) -> Result<(), Fatal> {
        let refuse = |side, cause: &str| TreeError {
            op: "remove sent file",
            side,
            path: src.path.clone(),
            cause: cause.to_string(),
            kind: ErrorKind::Other,
        };
        let both_local = src.tree.side() == Side::Local && self.dest().side() == Side::Local;
        let dest_now = if check_dest || both_local {
            match self.dest().lstat(dest_path).await {
                Ok(m) => m,
                Err(e) => return self.fail(e),
            }
        } else {
            None
        };
        if check_dest {
            let whole = dest_now
                .as_ref()
                .is_some_and(|d| d.kind == src.meta.kind && d.size == src.meta.size);
            if !whole {
                return self.fail(refuse(
                    src.tree.side(),
                    "the receiver's copy is not the source's size after the transfer; \
                     the source is kept",
                ));
            }
        }
        let listed = match src.tree.lstat(&src.path).await {
            // A symlink the walk followed (-L) is compared as what it points to.
            Ok(Some(m)) if m.kind == Kind::Symlink && src.meta.kind != Kind::Symlink => {
                src.tree.stat(&src.path).await
            }
            other => other,
        };
        let now = match listed {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.report.warnings.push(format!(
                    "sender file already removed: {}",
                    display_path(&src.path)
                ));
                return Ok(());
            }
            Err(e) => {
                return self.fail(TreeError {
                    op: "re-lstat",
                    ..e
                })
            }
        };
        if now.kind != src.meta.kind || now.size != src.meta.size || now.mtime != src.meta.mtime {
            return self.fail(refuse(
                src.tree.side(),
                "it changed since it was synced; it is kept",
            ));
        }
        if both_local
            && now.dev_ino.is_some()
            && dest_now.as_ref().and_then(|d| d.dev_ino) == now.dev_ino
        {
            return self.fail(refuse(
                src.tree.side(),
                "it is the destination file itself; it is kept",
            ));
        }
        match src.tree.remove_file(&src.path).await {
            Ok(()) => {
                self.report.removed_sources.push(src.path.clone());
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                self.report.warnings.push(format!(
                    "sender file already removed: {}",
                    display_path(&src.path)
                ));
                Ok(())
            }
            Err(e) => self.fail(TreeError {
                op: "remove sent file",
                ..e
            }),
        }
    }

    /// Creates a directory once its parent exists; opens `done` with the result.
    pub async fn mkdir(
        &mut self,
        mut parent_gate: Gate,
        path: RelPath,
        mode: u32,
        done: watch::Sender<Option<bool>>,
    ) -> Result<(), Fatal> {
        let made = if parent_gate.passable().await {
            self.dest().mkdir(&path, mode).await.map(|()| true)
        } else {
            Ok(false)
        };
        done.send_replace(Some(matches!(made, Ok(true))));
        match made {
            Ok(_) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    pub async fn set_meta(
        &mut self,
        path: RelPath,
        kind: Kind,
        meta: SetMeta,
    ) -> Result<(), Fatal> {
        match self.dest().set_meta(&path, kind, &meta).await {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Removes whatever is in the way of a new entry of another type (`new_kind`). False if
    /// it could not be (reported).
    pub async fn remove_for_replace(
        &mut self,
        path: &RelPath,
        meta: &Meta,
        new_kind: Kind,
    ) -> Result<bool, Fatal> {
        if meta.kind == Kind::Dir {
            return self.make_way(path, new_kind).await;
        }
        if self.sh.opts.dry_run {
            return Ok(true);
        }
        match self.remove_or_back_up(path).await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.fail(e)?;
                Ok(false)
            }
        }
    }

    /// A directory in the way of a non-directory goes, as in rsync 3: an empty one always;
    /// one with entries only with `--force` or `--delete`, each entry then deleted (itemized
    /// and counted) as an extraneous one would be. Otherwise it stays and the new entry fails.
    async fn make_way(&mut self, path: &RelPath, new_kind: Kind) -> Result<bool, Fatal> {
        let listed = match self.dest().read_dir(path).await {
            Ok(l) => l,
            Err(e) => {
                self.fail(e)?;
                return Ok(false);
            }
        };
        // Only names the listing checks allow; the others were never ours to delete.
        let (entries, _) = validate_listing(self.dest().side(), path, listed);
        let force = self.sh.opts.force_delete();
        let before = (self.report.errors.len(), self.report.deletions_skipped);
        if force {
            let mut kids: Vec<(Vec<u8>, Meta)> = entries
                .iter()
                .map(|e| (e.name.clone(), e.meta.clone()))
                .collect();
            sort_rsync_by(&mut kids, |k| (&k.0, k.1.kind));
            let rules = Arc::new(self.sh.opts.filters.clone());
            for (name, m) in kids.into_iter().rev() {
                self.delete_entry(join(path, &name), m, rules.clone())
                    .await?;
            }
        }
        let emptied = entries.is_empty()
            || (force && (self.report.errors.len(), self.report.deletions_skipped) == before);
        let removed = if !emptied {
            Err(None)
        } else if self.sh.opts.dry_run {
            Ok(())
        } else {
            self.dest().remove_dir(path).await.map_err(Some)
        };
        let what = match new_kind {
            Kind::Symlink => "make way for new symlink",
            Kind::Dir => "make way for new directory",
            _ => "make way for new regular file",
        };
        match removed {
            Ok(()) => Ok(true),
            Err(Some(e)) if e.kind == ErrorKind::Connection => Err(Fatal(e)),
            Err(Some(e)) => {
                self.fail(TreeError { op: what, ..e })?;
                Ok(false)
            }
            Err(None) => {
                self.report.warnings.push(format!(
                    "cannot delete non-empty directory: {}",
                    display_path(path)
                ));
                let cause = if force {
                    "the directory there is not empty".to_string()
                } else {
                    "the directory there is not empty (--force or --delete deletes its contents)"
                        .to_string()
                };
                self.fail(TreeError {
                    op: what,
                    side: self.dest().side(),
                    path: path.clone(),
                    cause,
                    kind: ErrorKind::Other,
                })?;
                Ok(false)
            }
        }
    }

    /// Removes a non-directory, or with `--backup` moves it to its backup name.
    async fn remove_or_back_up(&self, path: &RelPath) -> TreeResult<()> {
        match &self.sh.backup {
            Some(b) => b.keep(self.dest(), path, false).await,
            None => self.dest().remove_file(path).await,
        }
    }

    /// Deletes one extraneous entry: a directory with everything in it that `rules` do not
    /// protect (perishable rules protect nothing there). A directory left holding protected
    /// entries stays, with rsync's note.
    pub fn delete_entry(
        &mut self,
        path: RelPath,
        meta: Meta,
        rules: Arc<FilterRules>,
    ) -> BoxStep<'_> {
        Box::pin(async move {
            if meta.kind == Kind::Dir && !self.delete_contents(&path, &rules).await? {
                return Ok(());
            }
            self.remove_deleted(path, meta).await.map(|_| ())
        })
    }

    /// Deletes the contents of a directory being deleted, deepest first; false when something
    /// stays in it (said as rsync says it: once for what stays inside a directory, and once
    /// more when a directory inside will not go).
    fn delete_contents<'b>(
        &'b mut self,
        dir: &'b RelPath,
        rules: &'b FilterRules,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Fatal>> + Send + 'b>> {
        Box::pin(async move {
            let list = match self.dest().read_dir(dir).await {
                Ok(l) => l,
                Err(e) => {
                    self.fail(e)?;
                    return Ok(false);
                }
            };
            let (list, _) = validate_listing(self.dest().side(), dir, list);
            let mut kids: Vec<(Vec<u8>, Meta)> =
                list.into_iter().map(|e| (e.name, e.meta)).collect();
            sort_rsync_by(&mut kids, |k| (&k.0, k.1.kind));
            let mut emptied = true;
            for (name, m) in kids.into_iter().rev() {
                let path = join(dir, &name);
                if rules.protected_in_deleted_dir(&path, m.kind == Kind::Dir) {
                    emptied = false;
                    continue;
                }
                if m.kind == Kind::Dir && !self.delete_contents(&path, rules).await? {
                    self.notice(not_emptied(&path));
                    emptied = false;
                    continue;
                }
                emptied &= self.remove_deleted(path, m).await?;
            }
            if !emptied {
                self.notice(not_emptied(dir));
            }
            Ok(emptied)
        })
    }

    /// Removes one entry `--delete` found (a directory already emptied), within --max-delete;
    /// false when it stays.
    async fn remove_deleted(&mut self, path: RelPath, meta: Meta) -> Result<bool, Fatal> {
        if !self.sh.reserve_deletion() {
            self.report.deletions_skipped += 1;
            return Ok(false);
        }
        if !self.sh.opts.dry_run {
            let r = if meta.kind == Kind::Dir {
                self.dest().remove_dir(&path).await
            } else {
                self.remove_or_back_up(&path).await
            };
            let backups_beside = self
                .sh
                .backup
                .as_ref()
                .is_some_and(|b| b.dir.is_none() && b.tree.is_none());
            if meta.kind == Kind::Dir && backups_beside && r.is_err() {
                // The backups of its files are still in it, as with rsync.
                self.report.verbose_infos.push(not_emptied(&path));
                return Ok(false);
            }
            if let Err(e) = r {
                self.fail(e)?;
                return Ok(false);
            }
            if meta.kind == Kind::File {
                if let Some(ix) = self.sh.index.clone() {
                    self.report.warnings.extend(ix.removed(&path));
                }
            }
        }
        let stats = &mut self.report.stats;
        stats.deleted_files += 1;
        match meta.kind {
            Kind::Dir => stats.deleted_dirs += 1,
            Kind::Symlink => stats.deleted_symlinks += 1,
            _ => stats.deleted_regular += 1,
        }
        self.item(Item::new(UpdateType::Deleting, meta.kind, path).with_meta(&meta));
        Ok(true)
    }

    pub async fn symlink(
        &mut self,
        src: SourceEntry,
        dest_path: RelPath,
        existing: Option<Meta>,
        link_dest: Option<Arc<LinkDest>>,
    ) -> Result<(), Fatal> {
        let opts = &self.sh.opts;
        let target = match src.tree.read_link(&src.path, Some(src.meta.size)).await {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return self.vanished(&src.path),
            Err(e) => return self.source_error(e),
        };
        if opts.safe_links && unsafe_symlink(&target, &src.path) {
            self.report.verbose_infos.push(format!(
                "ignoring unsafe symlink \"{}\" -> \"{}\"",
                display_path(&src.path),
                display_path(&target)
            ));
            return Ok(());
        }
        let mut item = Item::new(UpdateType::LocalChange, Kind::Symlink, dest_path.clone())
            .with_meta(&src.meta);
        item.link_target = Some(target.clone());
        let mut copied_twin = false;
        if let Some(ld) = link_dest.filter(|_| !opts.existing) {
            match ld.symlink_twin(opts, &dest_path, &target).await {
                Ok(Some(Linked::Done(how))) => {
                    item.update = UpdateType::NoUpdate;
                    item.alt_dest_update = how;
                    self.item(item);
                    return Ok(());
                }
                Ok(Some(_)) => copied_twin = true,
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
        }
        let mut create = true;
        match &existing {
            None if copied_twin => {
                // Made as usual, but rsync shows it as a copy of its --copy-dest twin.
                item.update = UpdateType::NoUpdate;
                item.alt_dest_update = Some(UpdateType::LocalChange);
            }
            None => {
                if opts.existing {
                    return Ok(());
                }
                item.created = true;
            }
            Some(m) if m.kind == Kind::Symlink => {
                match self.dest().read_link(&dest_path, Some(m.size)).await {
                    Ok(t) if t == target => {
                        create = false;
                        item.update = UpdateType::NoUpdate;
                        if opts.link_times()
                            && self.dest().side() == Side::Local
                            && mtimes_differ(src.meta.mtime, m.mtime, opts.modify_window)
                        {
                            item.time = true;
                        }
                    }
                    Ok(_) => {
                        item.checksum = true;
                        if !opts.dry_run {
                            if let Err(e) = self.remove_or_back_up(&dest_path).await {
                                return self.fail(e);
                            }
                        }
                    }
                    Err(e) => return self.fail(e),
                }
            }
            Some(m) => {
                item.created = true;
                let m = m.clone();
                if !self
                    .remove_for_replace(&dest_path, &m, Kind::Symlink)
                    .await?
                {
                    return Ok(());
                }
            }
        }
        let opts = &self.sh.opts;
        if create {
            if item.created {
                self.report.stats.created_files += 1;
                self.report.stats.created_symlinks += 1;
            }
            if !opts.dry_run {
                if let Err(e) = self.dest().symlink(&dest_path, &target).await {
                    return self.fail(e);
                }
            }
        }
        let mut fix = SetMeta::default();
        if opts.link_times() && (create || item.time) {
            fix.mtime = Some(src.meta.mtime);
            // rsync gives a symlink the source's atime only as it makes it: reading an
            // existing one to compare moves its atime, which is then not flagged or fixed.
            if opts.atimes && create {
                fix.atime = Some(src.meta.atime);
            }
        }
        let dry_run = opts.dry_run;
        let dest_link = if create { None } else { existing.as_ref() };
        self.owner_fix(&src.meta, dest_link, &mut fix, &mut item);
        if !fix.is_empty() && !dry_run {
            // Not every server can set a link's own times or owner; no reason to fail.
            let _ = self.dest().set_meta(&dest_path, Kind::Symlink, &fix).await;
        }
        if item.is_change() || item.alt_dest_update.is_some() {
            self.item(item);
        }
        let how = if create {
            Synced::Sent
        } else {
            Synced::UpToDate
        };
        if self.removes_source(how) {
            self.remove_source(&src, &dest_path, false).await?;
        }
        Ok(())
    }

    /// A regular file that the walker decided to look at (skip rules and -H already applied).
    /// `link_basis`: where the destination has no file, the one a `--link-dest` directory
    /// holds, which rsync itemizes the new file against.
    pub async fn file(
        &mut self,
        src: SourceEntry,
        dest_path: RelPath,
        existing: Option<Meta>,
        link_basis: Option<(Arc<LinkDest>, Basis)>,
    ) -> Result<(), Fatal> {
        let sh = self.sh.clone();
        let opts = &sh.opts;
        let existing_file = existing.as_ref().filter(|m| m.kind == Kind::File);
        let mut item =
            Item::new(sh.update_type(), Kind::File, dest_path.clone()).with_meta(&src.meta);
        let mut transfer = true;
        if let Some(d) = existing_file {
            let size_differs = d.size != src.meta.size;
            let times_kept = self.dest().keeps_times();
            let stored = self.dest().stored_mtime(src.meta.mtime);
            let time_differs = times_kept && mtimes_differ(stored, d.mtime, opts.modify_window);
            // Where mtimes cannot be kept, files are compared by size; but a source that is
            // to be removed once the receiver has it is not taken for up to date on its size
            // alone (the user asked for no such thing): without -c it is sent.
            let size_is_proof = !times_kept && !opts.removes_up_to_date();
            transfer = if size_differs {
                // rsync's -c flags a file of another size as having another checksum too.
                item.checksum = opts.checksum;
                true
            } else if opts.size_only || (size_is_proof && !opts.ignore_times) {
                false
            } else if opts.checksum {
                match self.same_content(&src, &dest_path, d).await? {
                    Some(same) => {
                        item.checksum = !same;
                        !same
                    }
                    None => return Ok(()),
                }
            } else if opts.ignore_times {
                true
            } else {
                time_differs || !times_kept
            };
            item.size = size_differs;
            if opts.times {
                item.time = time_differs;
            } else if transfer {
                item.time_now = true;
            }
            item.perms = perms_differ(opts, src.meta.mode, d.mode);
            item.atime = opts.atimes && src.meta.atime != d.atime;
        } else if let Some((_, Basis { meta: b, .. })) = &link_basis {
            item.size = b.size != src.meta.size;
            let stored = self.dest().stored_mtime(src.meta.mtime);
            if opts.times {
                item.time = mtimes_differ(stored, b.mtime, opts.modify_window);
            } else {
                item.time_now = true;
            }
            item.perms = opts.perms && modes_differ(src.meta.mode, b.mode);
        } else {
            item.created = true;
        }

        let mode = if opts.perms {
            src.meta.mode
        } else if let Some(d) = existing_file {
            kept_mode(opts, src.meta.mode, d.mode)
        } else {
            src.meta.mode & 0o777 & !sh.umask
        };
        let mut meta = SetMeta {
            mode: Some(mode),
            mtime: opts.times.then_some(src.meta.mtime),
            atime: opts.atimes.then_some(src.meta.atime),
            ..Default::default()
        };
        self.owner_fix(&src.meta, existing_file, &mut meta, &mut item);
        if transfer {
            // The temp file is new and owned by whoever wrote it, whatever the old one had.
            let mut ignored = item.clone();
            self.owner_fix(&src.meta, None, &mut meta, &mut ignored);
        }

        if transfer
            && opts.append != AppendMode::Off
            && existing_file.is_some_and(|d| d.size >= src.meta.size)
        {
            // rsync's --append passes over a file that did not grow, attributes and all: only
            // one that the quick check finds up to date still has them fixed (below).
            return Ok(());
        }
        if !transfer {
            if item.is_change() {
                let fix = SetMeta {
                    mode: item.perms.then_some(mode),
                    mtime: (opts.times && item.time).then_some(src.meta.mtime),
                    atime: item.atime.then_some(src.meta.atime),
                    uid: meta.uid,
                    gid: meta.gid,
                    times_now: existing_file.map(|d| (d.atime, d.mtime)),
                };
                if !opts.dry_run && !fix.is_empty() {
                    if let Err(e) = self.dest().set_meta(&dest_path, Kind::File, &fix).await {
                        return self.fail(e);
                    }
                }
                item.update = UpdateType::NoUpdate;
                self.item(item);
            }
            if self.removes_source(Synced::UpToDate) {
                self.remove_source(&src, &dest_path, false).await?;
            }
            return Ok(());
        }

        if let Some((ld, basis)) = link_basis.as_ref().filter(|(_, b)| b.quick_match) {
            // rsync copies such a file where it is rather than send it.
            let copied = if opts.dry_run {
                Ok(true)
            } else {
                ld.copy_basis(basis, &dest_path, &meta).await
            };
            match copied {
                Ok(true) => {
                    item.update = UpdateType::NoUpdate;
                    item.alt_dest_update = Some(UpdateType::LocalChange);
                    self.item(item);
                    if self.removes_source(Synced::UpToDate) {
                        self.remove_source(&src, &dest_path, true).await?;
                    }
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) if e.kind == ErrorKind::Connection => return self.fail(e),
                // Another file system, or a server that would not: sending still works.
                Err(_) => {}
            }
        }
        if let Some(m) = existing.as_ref().filter(|m| m.kind != Kind::File) {
            item.created = true;
            let m = m.clone();
            if !self.remove_for_replace(&dest_path, &m, Kind::File).await? {
                return Ok(());
            }
        }
        if item.created {
            self.report.stats.created_files += 1;
            self.report.stats.created_regular += 1;
        }
        if opts.dry_run {
            self.report.stats.transferred_files += 1;
            self.report.stats.transferred_size += src.meta.size;
            self.item(item);
            return Ok(());
        }
        // With --delay-updates the old file stays in place, and is backed up, until the end.
        if let (Some(b), Some(old), false) = (&sh.backup, existing_file, opts.delay_updates) {
            let kept = if opts.inplace || opts.append != AppendMode::Off {
                b.keep_copy(self.dest(), &dest_path, old).await
            } else {
                b.keep(self.dest(), &dest_path, true).await
            };
            if let Err(e) = kept {
                return self.fail(e);
            }
        }
        if let Some(p) = &sh.progress {
            p.file_started(&item);
        }
        let started = Instant::now();
        let copy = match existing_file.filter(|_| opts.append != AppendMode::Off) {
            Some(now) => self.copy_append(&src, &dest_path, &meta, now).await,
            None if opts.inplace => {
                let old = self.index_signature(&dest_path, existing_file);
                self.copy_in_place(&src, &dest_path, &meta, old).await
            }
            None => match self
                .copy_by_server_hashes(&src, &dest_path, &meta, existing_file)
                .await
            {
                Some(done) => done,
                None => {
                    let base = self.delta_base(&dest_path, existing_file);
                    self.copy_file(&src, &dest_path, &meta, base).await
                }
            },
        };
        let replacing = existing_file.is_some();
        self.settle(copy, item, src, dest_path, meta, started, replacing)
            .await
    }

    /// `--append-verify`'s second go at a file whose receiver's start differed: a plain
    /// in-place copy of the whole file, shown as a line with nothing left to flag. In place
    /// rather than through a temp file, as rsync: the user chose in-place writes (--append
    /// implies --inplace), and files that grow in place are often held open, hard-linked, or
    /// in a directory we may not write.
    pub async fn resend(&mut self, r: Resend) -> Result<(), Fatal> {
        let started = Instant::now();
        let mut item = Item::new(self.sh.update_type(), Kind::File, r.dest_path.clone())
            .with_meta(&r.src.meta);
        // Flagged against the file as the failed append left it (its attributes untouched),
        // as rsync's generator sees it on its second go.
        if let Ok(Some(d)) = self.dest().lstat(&r.dest_path).await {
            let (opts, src) = (&self.sh.opts, &r.src.meta);
            item.size = d.size != src.size;
            if opts.times {
                let stored = self.dest().stored_mtime(src.mtime);
                item.time = mtimes_differ(stored, d.mtime, opts.modify_window);
            } else {
                item.time_now = true;
            }
            item.perms = perms_differ(opts, src.mode, d.mode);
            item.atime = opts.atimes && src.atime != d.atime;
            self.owner_fix(src, Some(&d), &mut SetMeta::default(), &mut item);
        }
        let copy = self
            .copy_in_place(&r.src, &r.dest_path, &r.meta, None)
            .await;
        self.settle(copy, item, r.src, r.dest_path, r.meta, started, true)
            .await
    }

    /// Counts and reports how a copy went; once the file is in place, removes its source
    /// when asked to. `replacing`: a file was at `dest_path` when the walk looked.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &mut self,
        copy: Result<CopyResult, CopyError>,
        item: Item,
        src: SourceEntry,
        dest_path: RelPath,
        meta: SetMeta,
        started: Instant,
        replacing: bool,
    ) -> Result<(), Fatal> {
        match copy {
            Ok(CopyResult::Done(copied)) => {
                self.remember(&dest_path, &meta, &copied);
                self.transferred(item, &copied, started);
                if self.removes_source(Synced::Sent) {
                    self.remove_source(&src, &dest_path, true).await?;
                }
                Ok(())
            }
            Ok(CopyResult::Waiting { copied, waiting }) => {
                // Shown now, as rsync shows it when the data has arrived; in place, indexed
                // and its source removed only in the pass after every copy.
                self.transferred(item, &copied, started);
                self.report.delayed.push(Delayed {
                    src,
                    waiting,
                    dest_path,
                    meta,
                    copied,
                    replacing,
                });
                Ok(())
            }
            Ok(CopyResult::StartDiffers(appended)) => {
                // As rsync: the append is counted and shown, and the file is sent again in a
                // pass of its own once the other files are done.
                self.transferred(item, &appended, started);
                self.report.warnings.push(format!(
                    "\"{}\" failed verification: the receiver's copy does not start as the \
                     source does; it is sent again whole",
                    display_path(&dest_path)
                ));
                self.report.resends.push(Resend {
                    src,
                    dest_path,
                    meta,
                });
                Ok(())
            }
            Ok(CopyResult::Vanished) => self.vanished(&src.path),
            Err(CopyError::Source(e)) => self.source_error(e),
            Err(CopyError::Dest(e)) => self.fail(e),
        }
    }

    /// `--delay-updates`' last step for one file: its finished version is renamed from the
    /// partial directory over the old one (kept first with `--backup`), the partial directory
    /// goes once empty, and the source is removed when asked to.
    pub async fn put_in_place(&mut self, d: Delayed) -> Result<(), Fatal> {
        if let (Some(b), true) = (&self.sh.backup, d.replacing) {
            if let Err(e) = b.keep(self.dest(), &d.dest_path, true).await {
                return self.fail(e);
            }
        }
        if let Err(e) = self.dest().rename_replace(&d.waiting, &d.dest_path).await {
            return self.fail(e);
        }
        self.remember(&d.dest_path, &d.meta, &d.copied);
        let _ = self.dest().remove_dir(&parent(&d.waiting).to_vec()).await;
        if self.removes_source(Synced::Sent) {
            self.remove_source(&d.src, &d.dest_path, true).await?;
        }
        Ok(())
    }

    /// Counts one finished copy in the stats and reports its item.
    fn transferred(&mut self, mut item: Item, copied: &Copied, started: Instant) {
        let stats = &mut self.report.stats;
        stats.transferred_files += 1;
        stats.transferred_size += copied.len;
        stats.literal_data += copied.literal;
        stats.matched_data += copied.matched;
        stats.append_checks_from_index += u64::from(copied.start_checked_by_index);
        stats.append_check_data_read += copied.read_to_check;
        item.transferred = copied.literal;
        item.matched = copied.matched;
        item.elapsed = Some(started.elapsed());
        self.item(item);
    }

    /// A later name of an inode already written becomes a hard link to the first name.
    pub async fn hard_link(
        &mut self,
        first: RelPath,
        dest_path: RelPath,
        src: SourceEntry,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let opts = &self.sh.opts;
        // SFTP cannot tell us whether the two names already share an inode; a file that
        // passes the quick check is taken as already linked. With -I its first name was sent
        // again as a new file, so it is linked again, as rsync shows it: not as new.
        let linked_already = existing.as_ref().is_some_and(|d| {
            d.kind == Kind::File
                && d.size == src.meta.size
                && !mtimes_differ(
                    self.dest().stored_mtime(src.meta.mtime),
                    d.mtime,
                    opts.modify_window,
                )
        });
        if linked_already && (!opts.ignore_times || opts.size_only) {
            if self.removes_source(Synced::UpToDate) {
                self.remove_source(&src, &dest_path, false).await?;
            }
            return Ok(());
        }
        let mut item =
            Item::new(UpdateType::HardLink, Kind::File, dest_path.clone()).with_meta(&src.meta);
        item.created = !linked_already;
        if let Some(d) = existing.as_ref().filter(|_| linked_already) {
            // Shown against the file it replaces, as rsync shows it.
            item.perms = opts.perms && modes_differ(src.meta.mode, d.mode);
            self.owner_fix(&src.meta, Some(d), &mut SetMeta::default(), &mut item);
        }
        item.hard_link_to = Some(first.clone());
        if !opts.dry_run {
            if let Some(m) = &existing {
                let m = m.clone();
                if !self.remove_for_replace(&dest_path, &m, Kind::File).await? {
                    return Ok(());
                }
            }
            if let Err(e) = self.dest().hard_link(&first, &dest_path).await {
                return self.fail(e);
            }
        }
        self.report.stats.created_files += 1;
        self.report.stats.created_regular += 1;
        self.item(item);
        // As rsync: a name linked to one sent before counts as synced, not as sent.
        if self.removes_source(Synced::UpToDate) {
            self.remove_source(&src, &dest_path, true).await?;
        }
        Ok(())
    }

    /// Compares contents by hash. `None` when one side could not be read (already reported).
    async fn same_content(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        dest_now: &Meta,
    ) -> Result<Option<bool>, Fatal> {
        if let Some(same) = self.same_by_server_hash(src, dest_path).await {
            self.report.stats.checksums_by_server += 1;
            return Ok(Some(same));
        }
        // What sftpsync itself wrote there, unchanged since, if the user trusts that: a
        // change that kept size and mtime is then not seen, which is what -c is for.
        let indexed = self
            .sh
            .index
            .as_ref()
            .filter(|_| self.sh.opts.trust_index)
            .and_then(|ix| ix.content(dest_path, dest_now));
        let (src_tree, src_path) = (&*src.tree, &src.path);
        let same = match indexed {
            Some(IndexedContent::Blocks(sig)) => {
                let read = matches_signature(src_tree, src_path, &sig).await;
                let Some(same) = self.source_read(src_path, read)? else {
                    return Ok(None);
                };
                self.report.stats.checksums_from_index += 1;
                same
            }
            Some(IndexedContent::Hash(b)) => {
                let read = hash_file(src_tree, src_path).await;
                let Some(a) = self.source_read(src_path, read)? else {
                    return Ok(None);
                };
                self.report.stats.checksums_from_index += 1;
                a == b
            }
            None => {
                let read = hash_file(src_tree, src_path).await;
                let Some(a) = self.source_read(src_path, read)? else {
                    return Ok(None);
                };
                match hash_file(self.dest(), dest_path).await {
                    Ok(b) => {
                        if self.dest().side() == Side::Remote {
                            self.report.stats.checksums_read_remotely += 1;
                        }
                        a == b
                    }
                    Err(e) => {
                        self.fail(e)?;
                        return Ok(None);
                    }
                }
            }
        };
        Ok(Some(same))
    }

    /// What reading the source gave, or `None` once its failure is reported.
    fn source_read<T>(
        &mut self,
        path: &RelPath,
        read: Result<T, TreeError>,
    ) -> Result<Option<T>, Fatal> {
        match read {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => self.vanished(path).map(|()| None),
            Err(e) => self.source_error(e).map(|()| None),
        }
    }

    /// `--checksum` where the remote side hashes files itself (`check-file`): its hash
    /// against ours of the local file, so the remote one is not read over the wire. `None`
    /// when it cannot, or anything goes wrong: the caller then reads both, and reports.
    async fn same_by_server_hash(&self, src: &SourceEntry, dest_path: &RelPath) -> Option<bool> {
        let size = src.meta.size;
        if size == 0 || !self.sh.server_hashes.usable() {
            return None;
        }
        let (remote, remote_path, local, local_path) = match src.tree.side() {
            Side::Remote => (&*src.tree, &src.path, self.dest(), dest_path),
            Side::Local => (self.dest(), dest_path, &*src.tree, &src.path),
        };
        let whole = HashRange {
            offset: 0,
            len: size,
            block_size: 0,
        };
        let theirs = remote.block_hashes(remote_path, whole).await.ok()??;
        if theirs.count() != 1 {
            return None;
        }
        let ours = server_hashes::file_hash(local, local_path, theirs.algorithm)
            .await
            .ok()?;
        Some(theirs.hashes[..] == ours[..])
    }

    /// `--verify`: reads `temp` in `tree` back and compares its hash with what was sent.
    async fn verify_written(
        &self,
        tree: &dyn Tree,
        temp: &RelPath,
        dest_path: &RelPath,
        sent: [u8; 32],
    ) -> Result<(), CopyError> {
        match hash_file(tree, temp).await {
            Ok(h) if h == sent => Ok(()),
            Ok(_) => Err(CopyError::Dest(TreeError {
                op: "verify",
                side: tree.side(),
                path: dest_path.clone(),
                cause: "what was written differs from the source when read back (BLAKE3); \
                        the old file is kept"
                    .into(),
                kind: ErrorKind::Other,
            })),
            Err(e) => Err(CopyError::Dest(e)),
        }
    }

    /// Where `--partial` keeps a file being written: a fixed name, so the next run finds it;
    /// with `--partial-dir`, the file's own name in that directory (in the tree of an absolute
    /// one: see `copy_file`).
    fn partial_name(&self, dest_path: &[u8]) -> RelPath {
        let name = file_name(dest_path);
        if self.sh.partial_tree.is_some() {
            return name.to_vec();
        }
        match &self.sh.opts.partial_dir {
            Some(dir) => join(&join(parent(dest_path), dir), name),
            None => join(parent(dest_path), &partial_file_name(name)),
        }
    }

    /// How much of a kept partial file (in `tree`) can be trusted: its size, if its last
    /// bytes (up to 64 KiB) equal the source's at the same place. A partial that does not fit
    /// is removed.
    async fn resumable(
        &self,
        tree: &dyn Tree,
        src: &SourceEntry,
        partial: &RelPath,
    ) -> Option<u64> {
        const TAIL: u64 = 64 * 1024;
        let meta = match &src.kept_partial {
            KeptPartial::Absent => return None,
            KeptPartial::Present(m) => m.clone(),
            KeptPartial::Unknown => tree.lstat(partial).await.ok()??,
        };
        if meta.kind != Kind::File {
            return None;
        }
        let fits = meta.size > 0 && meta.size <= src.meta.size && {
            let n = meta.size.min(TAIL);
            let at = meta.size - n;
            let (kept, ours) = futures::join!(
                tree.read_range(partial, at, n as u32),
                src.tree.read_range(&src.path, at, n as u32)
            );
            matches!((kept, ours), (Ok(a), Ok(b)) if a == b && a.len() as u64 == n)
        };
        if fits {
            Some(meta.size)
        } else {
            let _ = tree.remove_file(partial).await;
            None
        }
    }

    /// Moves a file finished in the `-T` directory over `dest_path`. A server cannot rename
    /// across file systems (a local tree copies across by itself): the file is then copied
    /// to a temp name beside `dest_path` and renamed over it, so the old version is still
    /// replaced whole or not at all. The caller removes `temp` if this fails.
    async fn move_from_temp_dir(
        &self,
        temp_tree: &Arc<dyn Tree>,
        temp: &RelPath,
        dest_path: &[u8],
        meta: &SetMeta,
    ) -> TreeResult<()> {
        let dest_path = dest_path.to_vec();
        match self
            .dest()
            .rename_replace_from(&temp_tree.anchor(), temp, &dest_path)
            .await
        {
            Err(e) if e.kind != ErrorKind::Connection => {}
            done => return done,
        }
        let size = temp_tree.lstat(temp).await?.map_or(0, |m| m.size);
        let mut reader = temp_tree.open_read(temp, 0, size).await?;
        let beside = self.temp_name(&dest_path);
        let create_mode = meta.mode.map_or(0o600, |m| m & 0o777 | 0o600);
        let mut writer = match self.dest().create_file(&beside, create_mode, size).await {
            Ok(w) => w,
            Err(e) => {
                let _ = reader.close().await;
                return Err(e);
            }
        };
        let copied = async {
            while let Some(chunk) = reader.next_chunk().await? {
                writer.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        let _ = reader.close().await;
        let placed = match copied {
            Ok(()) => match writer.finish(meta).await {
                Ok(()) => self.dest().rename_replace(&beside, &dest_path).await,
                Err(e) => Err(e),
            },
            Err(e) => {
                writer.abandon().await;
                Err(e)
            }
        };
        match placed {
            Ok(()) => {
                let _ = temp_tree.remove_file(temp).await;
                Ok(())
            }
            Err(e) => {
                if e.kind != ErrorKind::Connection {
                    let _ = self.dest().remove_file(&beside).await;
                }
                Err(e)
            }
        }
    }

    fn temp_name(&self, dest_path: &[u8]) -> RelPath {
        let n = self.sh.temp_counter.fetch_add(1, Ordering::Relaxed) + 1;
        let name = file_name(dest_path);
        // Room for the dot, the suffix and a 255-byte name limit.
        let keep = &name[..name.len().min(200)];
        let mut t = Vec::with_capacity(keep.len() + 16);
        t.push(b'.');
        t.extend_from_slice(keep);
        t.extend_from_slice(format!(".{}", temp_suffix(n)).as_bytes());
        join(parent(dest_path), &t)
    }

    /// The old version's signature, when the destination still holds exactly what an earlier
    /// run wrote there and can build the new version from ranges of it.
    fn delta_base(&self, dest_path: &RelPath, existing: Option<&Meta>) -> Option<Signature> {
        if !self.dest().copies_ranges() {
            return None;
        }
        self.index_signature(dest_path, existing)
    }

    /// The index's signature of what is at `dest_path`, if it still describes it.
    fn index_signature(&self, dest_path: &RelPath, existing: Option<&Meta>) -> Option<Signature> {
        let ix = self.sh.index.as_ref()?;
        let now = existing?;
        if self.sh.opts.whole_file || now.size < DELTA_MIN_SIZE {
            return None;
        }
        ix.base_signature(dest_path, now)
    }

    /// `--inplace`: writes into the destination file itself. Against the old version's
    /// signature, blocks that are the same at the same place are passed over; everything
    /// else is written. Not atomic, by the user's choice, as rsync's.
    async fn copy_in_place(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        meta: &SetMeta,
        old: Option<Signature>,
    ) -> Result<CopyResult, CopyError> {
        let mut reader = match src.tree.open_read(&src.path, 0, src.meta.size).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(CopyResult::Vanished),
            Err(e) => return Err(CopyError::Source(e)),
        };
        let create_mode = meta.mode.map_or(0o600, |m| m & 0o777 | 0o600);
        let mut writer = match self.dest().open_in_place(dest_path, create_mode).await {
            Ok(w) => w,
            Err(e) => {
                let _ = reader.close().await;
                return Err(CopyError::Dest(e));
            }
        };
        let mut shaper = Shaper::new(self.wanted(src.meta.size), src.meta.size, None);
        shaper.ticker = self.ticker(dest_path, src.meta.size);
        shaper.sparse = self.sh.opts.sparse;
        if let Some(old) = old {
            shaper.in_place(old);
        }
        let copied = shaper.pump(&mut *reader, &mut *writer).await;
        let _ = reader.close().await;
        match copied {
            Ok(()) => writer.finish(meta).await.map_err(CopyError::Dest)?,
            Err(e) => {
                writer.abandon().await;
                return Err(e);
            }
        }
        let copied = shaper.finish().await;
        if let (true, Some(sent)) = (self.sh.opts.verify, copied.hash) {
            self.verify_written(self.dest(), dest_path, dest_path, sent)
                .await?;
        }
        Ok(CopyResult::Done(copied))
    }

    /// `--append`: writes the source from the receiver's size on onto the end of the
    /// receiver's file (`now` is what the listing showed of it). With `--append-verify` the
    /// receiver's start is compared with the source's meanwhile; when they differ the file's
    /// times are left alone, so that a run cut short before the rewrite cannot leave it
    /// looking up to date.
    async fn copy_append(
        &self,
        src: &SourceEntry,
        dest_path: &RelPath,
        meta: &SetMeta,
        now: &Meta,
    ) -> Result<CopyResult, CopyError> {
        let at = now.size;
        let check = self.sh.opts.append == AppendMode::Verify;
        // The source's start is read only to compare or hash it: a plain append of a pulled
        // file moves nothing but the tail.
        let whole = check || self.sh.opts.verify;
        let from = if whole { 0 } else { at };
        let mut reader = match src.tree.open_read(&src.path, from, src.meta.size).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(CopyResult::Vanished),
            Err(e) => return Err(CopyError::Source(e)),
        };
        let mut writer = match self.dest().reopen_for_append(dest_path, at).await {
            Ok(w) => w,
            Err(e) => {
                let _ = reader.close().await;
                return Err(CopyError::Dest(e));
            }
        };
        let wanted = if whole {
            self.wanted(src.meta.size)
        } else {
            Wanted::NOTHING
        };
        let mut shaper = Shaper::new(wanted, src.meta.size, None);
        shaper.ticker = self.ticker(dest_path, src.meta.size);
        shaper.sparse = self.sh.opts.sparse;
        if whole {
            shaper.skip = at;
            shaper.skip_is_matched = false;
        } else {
            shaper.len = at;
        }
        shaper.prefix = check.then(blake3::Hasher::new);
        let theirs = async {
            if check {
                Some(self.receiver_start(dest_path, now).await)
            } else {
                None
            }
        };
        let (pumped, theirs) = futures::join!(shaper.pump(&mut *reader, &mut *writer), theirs);
        let _ = reader.close().await;
        let (differs, by_index) = match (pumped, theirs) {
            (Err(e), _) => {
                writer.abandon().await;
                return Err(e);
            }
            (Ok(()), Some(Err(e))) => {
                writer.abandon().await;
                return Err(CopyError::Dest(e));
            }
            (Ok(()), None) => (false, false),
            (Ok(()), Some(Ok((hash, by_index)))) => {
                let ours = shaper.prefix.take().map(|h| *h.finalize().as_bytes());
                (hash.is_none() || hash != ours, by_index)
            }
        };
        let kept = SetMeta::default();
        writer
            .finish(if differs { &kept } else { meta })
            .await
            .map_err(CopyError::Dest)?;
        let mut copied = shaper.finish().await;
        if check {
            copied.start_checked_by_index = by_index;
            // What rsync would not move: the source's start on a pull, the receiver's read back
            // on a push.
            let remote = |t: &dyn Tree| u64::from(t.side() == Side::Remote);
            copied.read_to_check =
                at * (remote(&*src.tree) + if by_index { 0 } else { remote(self.dest()) });
        }
        if differs {
            return Ok(CopyResult::StartDiffers(copied));
        }
        if let (true, Some(sent)) = (self.sh.opts.verify, copied.hash) {
            self.verify_written(self.dest(), dest_path, dest_path, sent)
                .await?;
        }
        Ok(CopyResult::Done(copied))
    }

    /// The hash of the receiver's first `now.size` bytes (`None` if it is shorter now), and
    /// whether it came from the index: only with `--trust-index`, on the same terms as `-c`,
    /// since checking the receiver's data is the point of `--append-verify`.
    async fn receiver_start(
        &self,
        dest_path: &RelPath,
        now: &Meta,
    ) -> TreeResult<(Option<[u8; 32]>, bool)> {
        let indexed = self
            .sh
            .index
            .as_ref()
            .filter(|_| self.sh.opts.trust_index)
            .and_then(|ix| match ix.content(dest_path, now) {
                // A big file's entry has block hashes only; its start is then read back.
                Some(IndexedContent::Hash(h)) => Some(h),
                _ => None,
            });
        if let Some(h) = indexed {
            return Ok((Some(h), true));
        }
        Ok((hash_prefix(self.dest(), dest_path, now.size).await?, false))
    }

    fn ticker(&self, dest_path: &RelPath, size: u64) -> Option<Ticker> {
        let progress = self.sh.progress.clone()?;
        Some(Ticker {
            progress,
            path: dest_path.clone(),
            size,
        })
    }

    /// Keeps what was written in the index, for the next run's delta. Only with the mtime
    /// set by us: without it, the next run could not tell the file is still ours.
    /// Whether a file of `size` gets an index entry. Small ones do not: a delta saves
    /// nothing on them, and one SQLite write each made pushes of many small files a quarter
    /// slower. A stale entry left for a file that shrank never matches its size again.
    fn indexed(&self, size: u64) -> bool {
        self.sh.index.is_some() && size >= DELTA_MIN_SIZE
    }

    fn wanted(&self, size: u64) -> Wanted {
        Wanted::for_file(size, self.indexed(size), self.sh.opts.verify)
    }

    fn remember(&mut self, dest_path: &RelPath, meta: &SetMeta, copied: &Copied) {
        let Some(ix) = self.sh.index.clone().filter(|_| self.indexed(copied.len)) else {
            return;
        };
        let warning = match (meta.mtime, copied.hash, &copied.signature) {
            (Some(mtime), file_hash, signature) if file_hash.is_some() || signature.is_some() => ix
                .written(
                    dest_path,
                    sync_index::Entry {
                        size: copied.len,
                        mtime: self.dest().stored_mtime(mtime),
                        file_hash,
                        signature: signature.clone().unwrap_or_default(),
                    },
                ),
            _ => ix.removed(dest_path),
        };
        self.report.warnings.extend(warning);
    }

    /// From a server that hashes blocks itself (`check-file`; a pull): only the blocks that
    /// differ from the old version here are fetched, the rest copied from it. `None` when
    /// that does not apply or does not work out, and the whole file is to be copied.
    async fn copy_by_server_hashes(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        meta: &SetMeta,
        existing: Option<&Meta>,
    ) -> Option<Result<CopyResult, CopyError>> {
        let sh = self.sh.clone();
        let opts = &sh.opts;
        let old = existing?;
        if opts.whole_file
            || src.meta.size < DELTA_MIN_SIZE
            || old.size == 0
            || !sh.server_hashes.usable()
            || !self.dest().copies_ranges()
            // An absolute --partial-dir is another tree: the old version is not at hand there.
            || (opts.partial && sh.partial_tree.is_some())
            // So is a -T directory.
            || (!opts.partial && sh.temp_tree.is_some())
        {
            return None;
        }
        let temp = if opts.partial {
            let temp = self.partial_name(dest_path);
            // A kept partial file is resumed by the plain copy instead.
            if self.resumable(self.dest(), src, &temp).await.is_some() {
                return None;
            }
            temp
        } else {
            self.temp_name(dest_path)
        };
        let versions = Versions {
            source: &*src.tree,
            source_path: &src.path,
            size: src.meta.size,
            base: self.dest(),
            base_path: dest_path,
            base_size: old.size,
        };
        let plan = server_hashes::plan(&versions, !sh.server_hashes.verified())
            .await
            .ok()??;
        if opts.partial && opts.partial_dir.is_some() {
            let _ = self.dest().mkdir(&parent(&temp).to_vec(), 0o700).await;
        }
        let create_mode = meta.mode.map_or(0o600, |m| m & 0o777 | 0o600);
        let mut writer = self
            .dest()
            .create_file_based_on(&temp, create_mode, dest_path)
            .await
            .ok()?;
        let built =
            match server_hashes::build(&versions, &plan, &mut *writer, self.sh.opts.sparse).await {
                Ok(()) => writer.finish(meta).await.map_err(BuildError::Dest),
                Err(e) => {
                    writer.abandon().await;
                    Err(e)
                }
            };
        let built = match built {
            Ok(()) if opts.verify => self.verify_by_server_hash(src, &temp, dest_path).await,
            other => other,
        };
        let waits = opts.delay_updates;
        let result = match built {
            Ok(()) if waits => Ok(()),
            Ok(()) => self
                .dest()
                .rename_replace(&temp, dest_path)
                .await
                .map_err(CopyError::Dest),
            Err(BuildError::Source(e)) => Err(CopyError::Source(e)),
            Err(BuildError::Dest(e)) => Err(CopyError::Dest(e)),
            Err(BuildError::Mismatch) => {
                let _ = self.dest().remove_file(&temp).await;
                if !sh.server_hashes.verified() && sh.server_hashes.fail() {
                    self.report.warnings.push(format!(
                        "{}: the server's check-file hashes do not match the data it sends; \
                         whole files are copied from it for the rest of this run",
                        src.tree.describe()
                    ));
                }
                // Unverified, the server is at fault; verified, the file changed meanwhile.
                return None;
            }
        };
        if result.is_ok() && opts.partial_dir.is_some() && !waits {
            let _ = self.dest().remove_dir(&parent(&temp).to_vec()).await;
        }
        Some(match result {
            Ok(()) => {
                sh.server_hashes.passed();
                let literal = plan.fetched();
                let copied = Copied {
                    len: src.meta.size,
                    literal,
                    matched: src.meta.size - literal,
                    hash: None,
                    signature: None,
                    start_checked_by_index: false,
                    read_to_check: 0,
                };
                if waits {
                    Ok(CopyResult::Waiting {
                        copied,
                        waiting: temp,
                    })
                } else {
                    Ok(CopyResult::Done(copied))
                }
            }
            Err(CopyError::Source(e)) if e.is_not_found() => {
                let _ = self.dest().remove_file(&temp).await;
                Ok(CopyResult::Vanished)
            }
            Err(e) => {
                let dest_lost = matches!(&e, CopyError::Dest(d) if d.kind == ErrorKind::Connection);
                if !dest_lost && !opts.partial {
                    let _ = self.dest().remove_file(&temp).await;
                }
                Err(e.naming(&temp, dest_path))
            }
        })
    }

    /// `--verify` after a build from server hashes: the server's hash of its whole file
    /// against a read-back of what was written here.
    async fn verify_by_server_hash(
        &self,
        src: &SourceEntry,
        temp: &RelPath,
        dest_path: &RelPath,
    ) -> Result<(), BuildError> {
        let whole = HashRange {
            offset: 0,
            len: src.meta.size,
            block_size: 0,
        };
        let theirs = src.tree.block_hashes(&src.path, whole).await;
        let theirs = theirs.map_err(BuildError::Source)?;
        let ours = match &theirs {
            Some(t) => Some(
                server_hashes::file_hash(self.dest(), temp, t.algorithm)
                    .await
                    .map_err(BuildError::Dest)?,
            ),
            None => None,
        };
        match (theirs, ours) {
            (Some(t), Some(o)) if t.count() == 1 && t.hashes[..] == o[..] => Ok(()),
            _ => Err(BuildError::Dest(TreeError {
                op: "verify",
                side: self.dest().side(),
                path: dest_path.clone(),
                cause: "what was written differs from the server's hash of the source when \
                        read back; the old file is kept"
                    .into(),
                kind: ErrorKind::Other,
            })),
        }
    }

    async fn copy_file(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        meta: &SetMeta,
        base: Option<Signature>,
    ) -> Result<CopyResult, CopyError> {
        let mut reader = match src.tree.open_read(&src.path, 0, src.meta.size).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(CopyResult::Vanished),
            Err(e) => return Err(CopyError::Source(e)),
        };
        let partial = self.sh.opts.partial;
        // An absolute --partial-dir is a tree of its own on the destination's side: the file is
        // written there and moved into place at the end, each path resolved in its own tree.
        let partial_outside = self.sh.partial_tree.clone().filter(|_| partial);
        // So is a -T directory, for temp files (a partial one has its own place).
        let temp_dir = self.sh.temp_tree.clone().filter(|_| !partial);
        let outside = partial_outside.clone().or_else(|| temp_dir.clone());
        let temp_tree = outside.clone().unwrap_or_else(|| self.sh.dest.clone());
        let sh = self.sh.clone();
        let _turn = match &partial_outside {
            Some(_) => {
                sh.partial_dir_used.store(true, Ordering::Relaxed);
                Some(sh.partial_names.lock(file_name(dest_path)).await)
            }
            None => None,
        };
        let (temp, resume_at) = if partial {
            let temp = self.partial_name(dest_path);
            let at = self.resumable(&*temp_tree, src, &temp).await;
            if at.is_none() && self.sh.opts.partial_dir.is_some() {
                // Made when needed (only its last component, as rsync); one that is already
                // there is fine.
                let _ = temp_tree.mkdir(&parent(&temp).to_vec(), 0o700).await;
            }
            (temp, at)
        } else if temp_dir.is_some() {
            // One directory for every file: the name alone (the counter keeps them apart).
            (file_name(&self.temp_name(dest_path)).to_vec(), None)
        } else {
            (self.temp_name(dest_path), None)
        };
        // A resumed file is not also a delta: its start is already there. Nor is one written
        // outside the destination: copy-data needs the old version in the same tree.
        let base = if resume_at.is_some() || outside.is_some() {
            None
        } else {
            base
        };
        // Created with the final permission bits, never the special ones, and always writable
        // by us: a server that ignores SETSTAT but honours the mode given at creation then
        // still ends with the right modes. Nobody gains access early: the finished file has
        // the same bits.
        let create_mode = meta.mode.map_or(0o600, |m| m & 0o777 | 0o600);
        let mut base = base;
        let mut created = Err(None);
        if let Some(at) = resume_at {
            created = temp_tree.reopen_for_append(&temp, at).await.map_err(Some);
        }
        if base.is_some() {
            created = self
                .dest()
                .create_file_based_on(&temp, create_mode, dest_path)
                .await
                .map_err(Some);
            // The old version could not be opened after all: send the whole file.
            if matches!(&created, Err(Some(e)) if e.kind != ErrorKind::Connection) {
                base = None;
            }
        }
        if base.is_none() && resume_at.is_none() {
            // A partial must be a clean prefix if cut: one channel writes it, in order (the
            // size is what spreads a file over channels).
            let spread_size = if partial { 0 } else { src.meta.size };
            created = temp_tree
                .create_file(&temp, create_mode, spread_size)
                .await
                .map_err(Some);
        }
        let created = created.map_err(|e| e.expect("a create was tried"));
        let mut writer = match created {
            Ok(w) => w,
            Err(e) => {
                let _ = reader.close().await;
                return Err(CopyError::Dest(e).naming(&temp, dest_path));
            }
        };
        let wanted = self.wanted(src.meta.size);
        let mut shaper = Shaper::new(wanted, src.meta.size, base.as_ref());
        shaper.ticker = self.ticker(dest_path, src.meta.size);
        shaper.sparse = self.sh.opts.sparse;
        shaper.skip = resume_at.unwrap_or(0);
        let copied = shaper.pump(&mut *reader, &mut *writer).await;
        let _ = reader.close().await;
        let result = match copied {
            Ok(()) => match writer.finish(meta).await {
                Ok(()) => {
                    let copied = shaper.finish().await;
                    let verified = match (self.sh.opts.verify, copied.hash) {
                        (true, Some(sent)) => {
                            self.verify_written(&*temp_tree, &temp, dest_path, sent)
                                .await
                        }
                        _ => Ok(()),
                    };
                    match verified {
                        Ok(()) if self.sh.opts.delay_updates => {
                            return Ok(CopyResult::Waiting {
                                copied,
                                waiting: temp,
                            });
                        }
                        Ok(()) => match &outside {
                            None => self.dest().rename_replace(&temp, dest_path).await,
                            Some(t) if temp_dir.is_some() => {
                                self.move_from_temp_dir(t, &temp, dest_path, meta).await
                            }
                            Some(t) => {
                                self.dest()
                                    .rename_replace_from(&t.anchor(), &temp, dest_path)
                                    .await
                            }
                        }
                        .map(|()| copied)
                        .map_err(CopyError::Dest),
                        Err(e) => {
                            // A garbled file is no partial to go on from.
                            let _ = temp_tree.remove_file(&temp).await;
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(CopyError::Dest(e)),
            },
            Err(e) => {
                writer.abandon().await;
                Err(e)
            }
        };
        if result.is_ok() && self.sh.opts.partial_dir.is_some() && outside.is_none() {
            // Gone once empty, as rsync's; one still holding other partials stays. An absolute
            // one is shared by every file in flight: it goes at the end of the run.
            let _ = self.dest().remove_dir(&parent(&temp).to_vec()).await;
        }
        match result {
            Ok(copied) => Ok(CopyResult::Done(copied)),
            Err(e) => {
                // The old file is untouched; only our temp goes, unless the destination can
                // no longer be reached (the CLI clears such temps on the next connection),
                // or it is a partial to resume from next time.
                let dest_lost = matches!(&e, CopyError::Dest(d) if d.kind == ErrorKind::Connection);
                if !dest_lost && !partial {
                    let _ = temp_tree.remove_file(&temp).await;
                }
                Err(e.naming(&temp, dest_path))
            }
        }
    }
}

enum CopyResult {
    Done(Copied),
    /// `--delay-updates`: written whole and finished at `waiting` (in the partial directory),
    /// to be renamed into place after every other copy.
    Waiting {
        copied: Copied,
        waiting: RelPath,
    },
    /// `--append-verify`: the tail was appended, but the receiver's start is not the source's.
    StartDiffers(Copied),
    Vanished,
}

/// What one copy wrote.
struct Copied {
    len: u64,
    /// Bytes sent; the rest were copied from the old version on the destination.
    literal: u64,
    matched: u64,
    /// BLAKE3 of the new contents and their block signature, for the index.
    hash: Option<[u8; 32]>,
    signature: Option<Vec<u8>>,
    /// `--append-verify`: the receiver's start was checked against the index's hash of it.
    start_checked_by_index: bool,
    /// `--append-verify`: bytes read from the remote side only to check the receiver's start.
    read_to_check: u64,
}

/// One thing to do to the file being written.
enum Step {
    Write(Bytes),
    Copy {
        from_offset: u64,
        len: u64,
    },
    /// In place: these bytes are already there.
    Skip(u64),
}

/// Runs of zeros at least this long become holes with `--sparse` (rsync looks at its data in
/// pieces of this size); shorter ones are not worth a seek, or a separate SFTP request.
const SPARSE_RUN: usize = 1024;

/// Writes `data` with its long runs of zeros left as holes (`--sparse`).
pub(crate) async fn write_sparse(writer: &mut dyn FileWriter, data: Bytes) -> TreeResult<()> {
    let (mut at, mut literal_from) = (0, 0);
    while let Some(zero) = data[at..].iter().position(|&b| b == 0) {
        let start = at + zero;
        let end = data[start..]
            .iter()
            .position(|&b| b != 0)
            .map_or(data.len(), |n| start + n);
        if end - start >= SPARSE_RUN {
            if literal_from < start {
                writer.write(data.slice(literal_from..start)).await?;
            }
            writer.write_zeros((end - start) as u64).await?;
            literal_from = end;
        }
        at = end;
    }
    if literal_from < data.len() {
        writer.write(data.slice(literal_from..)).await?;
    }
    Ok(())
}

impl Step {
    async fn send(self, writer: &mut dyn FileWriter, sparse: bool) -> TreeResult<()> {
        match self {
            Step::Write(data) if sparse => write_sparse(writer, data).await,
            Step::Write(data) => writer.write(data).await,
            Step::Copy { from_offset, len } => writer.copy_from_base(from_offset, len).await,
            Step::Skip(len) => writer.skip(len).await,
        }
    }
}

/// `--inplace` against the old version's signature: the new file in blocks at the old
/// block boundaries; a block equal to the old one at the same place needs no writing.
struct AlignedDiff {
    old: Signature,
    pending: Vec<u8>,
    next_block: usize,
    /// The sums of the new blocks compared so far, kept when the index signs the new file
    /// in the same blocks and can take them instead of hashing the blocks again.
    known: Option<Vec<KnownBlock>>,
}

impl AlignedDiff {
    fn new(old: Signature, signer_block_size: Option<u32>) -> AlignedDiff {
        AlignedDiff {
            pending: Vec::with_capacity(old.block_size() as usize),
            known: (signer_block_size == Some(old.block_size())).then(Vec::new),
            old,
            next_block: 0,
        }
    }

    fn feed(&mut self, mut data: &[u8], steps: &mut Vec<Step>) {
        let bs = self.old.block_size() as usize;
        while !data.is_empty() {
            let take = (bs - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == bs {
                self.block(steps);
            }
        }
    }

    fn end(&mut self, steps: &mut Vec<Step>) {
        if !self.pending.is_empty() {
            self.block(steps);
        }
    }

    fn block(&mut self, steps: &mut Vec<Step>) {
        let i = self.next_block;
        self.next_block += 1;
        let data = std::mem::take(&mut self.pending);
        let bs = u64::from(self.old.block_size());
        let old_len = self.old.file_len().saturating_sub(i as u64 * bs).min(bs);
        let sums = (i < self.old.blocks().len() && old_len == data.len() as u64)
            .then(|| delta::BlockSig::of(&data));
        let same = sums.is_some_and(|s| s == self.old.blocks()[i]);
        if let (Some(known), Some(sums), true) = (&mut self.known, sums, old_len == bs) {
            known.push(KnownBlock {
                index: i as u64,
                sums,
            });
        }
        steps.push(if same {
            Step::Skip(data.len() as u64)
        } else {
            Step::Write(Bytes::from(data))
        });
    }
}

/// Where a copy tells its progress.
struct Ticker {
    progress: Arc<dyn Progress>,
    path: RelPath,
    size: u64,
}

/// Turns the source's bytes into steps: as they are, or, against the old version's
/// signature, into ranges to copy and literals; and on the way hashes and signs them for
/// the index.
struct Shaper<'s> {
    encoder: Option<DeltaEncoder<'s>>,
    digest: Option<Digest>,
    /// Source bytes given to the matcher but not yet decided on. They reach the digest only
    /// once decided, after the old blocks found among them: the signer then takes those
    /// blocks' sums instead of hashing them again.
    undecided: VecDeque<Bytes>,
    /// Bytes given to the digest while matching.
    digested: u64,
    /// Bytes at the start that the destination already holds (a resumed partial, or the
    /// file appended to): hashed, not sent.
    skip: u64,
    /// Whether skipped bytes count as matched data: a resumed partial's do (rsync's resume is
    /// a delta against it), an appended file's do not (rsync counts only the tail).
    skip_is_matched: bool,
    /// `--append-verify`: the hash of the skipped bytes, to compare with the receiver's.
    prefix: Option<blake3::Hasher>,
    /// `--inplace` against an old version.
    aligned: Option<AlignedDiff>,
    ticker: Option<Ticker>,
    len: u64,
    literal: u64,
    matched: u64,
    /// `--sparse`: runs of zeros in what is written become holes.
    sparse: bool,
}

impl<'s> Shaper<'s> {
    fn new(wanted: Wanted, size: u64, base: Option<&'s Signature>) -> Shaper<'s> {
        let digest = (wanted.hash || wanted.sign).then(|| Digest::new(size, wanted));
        let mut encoder = base.map(DeltaEncoder::new);
        if let (Some(e), Some(bs)) = (&mut encoder, digest.as_ref().and_then(Digest::block_size)) {
            e.keep_known_blocks(bs);
        }
        Shaper {
            encoder,
            digest,
            undecided: VecDeque::new(),
            digested: 0,
            skip: 0,
            skip_is_matched: true,
            prefix: None,
            aligned: None,
            ticker: None,
            len: 0,
            literal: 0,
            matched: 0,
            sparse: false,
        }
    }

    /// Moves the whole source through: reads, shapes, sends the steps to `writer`.
    async fn pump(
        &mut self,
        reader: &mut dyn FileReader,
        writer: &mut dyn FileWriter,
    ) -> Result<(), CopyError> {
        while let Some(chunk) = reader.next_chunk().await.map_err(CopyError::Source)? {
            for step in self.take(chunk) {
                step.send(writer, self.sparse)
                    .await
                    .map_err(CopyError::Dest)?;
            }
            if let Some(t) = &self.ticker {
                t.progress.file_bytes(&t.path, self.len, t.size);
            }
        }
        for step in self.end() {
            step.send(writer, self.sparse)
                .await
                .map_err(CopyError::Dest)?;
        }
        Ok(())
    }

    /// `--inplace` against the old version's signature.
    fn in_place(&mut self, old: Signature) {
        let signer_block_size = self.digest.as_ref().and_then(Digest::block_size);
        self.aligned = Some(AlignedDiff::new(old, signer_block_size));
    }

    fn take(&mut self, chunk: Bytes) -> Vec<Step> {
        self.len += chunk.len() as u64;
        let steps = self.shape(chunk.clone());
        if let Some(d) = &mut self.digest {
            if self.encoder.is_some() {
                self.undecided.push_back(chunk);
                self.digest_decided();
            } else {
                if let Some(known) = self.aligned.as_mut().and_then(|a| a.known.as_mut()) {
                    d.expect(std::mem::take(known));
                }
                d.update(&chunk);
            }
        }
        steps
    }

    /// Gives the digest what the matcher has decided on, after the known blocks in it.
    fn digest_decided(&mut self) {
        let (Some(d), Some(e)) = (&mut self.digest, &mut self.encoder) else {
            return;
        };
        d.expect(e.known_blocks());
        let decided = e.decided();
        while self.digested < decided {
            let Some(front) = self.undecided.front_mut() else {
                break;
            };
            let n = (decided - self.digested).min(front.len() as u64) as usize;
            d.update(&front.split_to(n));
            self.digested += n as u64;
            if front.is_empty() {
                self.undecided.pop_front();
            }
        }
    }

    fn shape(&mut self, mut chunk: Bytes) -> Vec<Step> {
        if self.skip > 0 {
            let n = self.skip.min(chunk.len() as u64);
            self.skip -= n;
            if self.skip_is_matched {
                self.matched += n;
            }
            if let Some(p) = &mut self.prefix {
                p.update(&chunk[..n as usize]);
            }
            chunk = chunk.slice(n as usize..);
            if chunk.is_empty() {
                return Vec::new();
            }
        }
        if let Some(aligned) = &mut self.aligned {
            let mut steps = Vec::new();
            aligned.feed(&chunk, &mut steps);
            return self.count(steps);
        }
        match &mut self.encoder {
            None => {
                self.literal += chunk.len() as u64;
                vec![Step::Write(chunk)]
            }
            Some(encoder) => {
                let mut steps = Vec::new();
                let _ = encoder.feed(&chunk, &mut |op| {
                    steps.push(op);
                    Ok::<(), std::convert::Infallible>(())
                });
                self.steps(steps)
            }
        }
    }

    fn end(&mut self) -> Vec<Step> {
        if let Some(aligned) = &mut self.aligned {
            let mut steps = Vec::new();
            aligned.end(&mut steps);
            return self.count(steps);
        }
        match self.encoder.take() {
            None => Vec::new(),
            Some(encoder) => {
                let mut steps = Vec::new();
                let _ = encoder.finish(&mut |op| {
                    steps.push(op);
                    Ok::<(), std::convert::Infallible>(())
                });
                // All is decided now.
                if let Some(d) = &mut self.digest {
                    for chunk in self.undecided.drain(..) {
                        d.update(&chunk);
                    }
                }
                self.steps(steps)
            }
        }
    }

    /// Counts in-place steps as rsync's stats do: passed-over bytes as matched.
    fn count(&mut self, steps: Vec<Step>) -> Vec<Step> {
        for s in &steps {
            match s {
                Step::Write(d) => self.literal += d.len() as u64,
                Step::Skip(n) | Step::Copy { len: n, .. } => self.matched += n,
            }
        }
        steps
    }

    fn steps(&mut self, ops: Vec<Op>) -> Vec<Step> {
        ops.into_iter()
            .map(|op| match op {
                Op::Copy { from_offset, len } => {
                    self.matched += len;
                    Step::Copy { from_offset, len }
                }
                Op::Literal(data) => {
                    self.literal += data.len() as u64;
                    Step::Write(Bytes::from(data))
                }
            })
            .collect()
    }

    async fn finish(self) -> Copied {
        let (hash, signature) = match self.digest {
            Some(d) => d.finish().await,
            None => (None, None),
        };
        Copied {
            len: self.len,
            literal: self.literal,
            matched: self.matched,
            hash,
            signature,
            start_checked_by_index: false,
            read_to_check: 0,
        }
    }
}

/// Files at least this big are hashed and signed on a thread of their own, beside the
/// matcher and the writes: signing a 1 GiB file sent whole is about a second of CPU.
const BACKGROUND_DIGEST_MIN: u64 = 16 << 20;

/// Files at least this big go into the index without a whole-file hash, unless `--verify`
/// needs one: their signature stands for their contents (`IndexedContent::Blocks`).
///
/// After a delta the hash would be the one full pass over the file left: the matcher
/// hashes each block once and the signature reuses the old sums of blocks that did not
/// move. What `-c --trust-index` pays instead is hashing the source block by block, nearly
/// as fast as a whole-file hash for blocks of 4 KiB and more (which files this big have),
/// and stopping at the first block that differs. Smaller files keep the hash: their
/// blocks, down to 700 bytes, hash up to four times slower one by one.
const BLOCKS_ONLY_MIN: u64 = 16 << 20;

/// What a copy works out about the bytes it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    /// The whole-file BLAKE3.
    hash: bool,
    /// The block signature, for files big enough to get one.
    sign: bool,
}

impl Wanted {
    /// Neither: a copy whose result goes neither into the index nor through `--verify`.
    const NOTHING: Wanted = Wanted {
        hash: false,
        sign: false,
    };

    /// For a file of `size`: its signature and maybe its hash if it goes into the index,
    /// its hash for `--verify`.
    fn for_file(size: u64, indexed: bool, verify: bool) -> Wanted {
        Wanted {
            sign: indexed,
            hash: verify || (indexed && size < BLOCKS_ONLY_MIN),
        }
    }
}

/// The whole-file hash and the encoded block signature of a file written, each if wanted.
type Digested = (Option<[u8; 32]>, Option<Vec<u8>>);

/// The whole-file hash and block signature the index keeps of a file being written.
struct Hashes {
    hasher: Option<blake3::Hasher>,
    signer: Option<SignatureBuilder>,
}

impl Hashes {
    fn new(size: u64, wanted: Wanted) -> Hashes {
        Hashes {
            hasher: wanted.hash.then(blake3::Hasher::new),
            signer: (wanted.sign && size >= DELTA_MIN_SIZE)
                .then(|| SignatureBuilder::new(delta::block_size_for(size)).ok())
                .flatten(),
        }
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        if let Some(s) = &mut self.signer {
            s.update(data);
        }
    }

    fn expect(&mut self, known: Vec<KnownBlock>) {
        if let Some(s) = &mut self.signer {
            for k in known {
                s.expect(k);
            }
        }
    }

    fn finish(self) -> Digested {
        (
            self.hasher.map(|h| *h.finalize().as_bytes()),
            self.signer.map(|s| s.finish().to_bytes()),
        )
    }
}

/// What the background digest thread is given, in file order.
enum ToDigest {
    Bytes(Bytes),
    Known(Vec<KnownBlock>),
}

enum Digest {
    Inline(Box<Hashes>),
    Background {
        block_size: Option<u32>,
        chunks: std::sync::mpsc::SyncSender<ToDigest>,
        done: std::thread::JoinHandle<Digested>,
    },
}

impl Digest {
    fn new(size: u64, wanted: Wanted) -> Digest {
        let hashes = Hashes::new(size, wanted);
        if size < BACKGROUND_DIGEST_MIN {
            return Digest::Inline(Box::new(hashes));
        }
        let block_size = hashes.signer.as_ref().map(SignatureBuilder::block_size);
        let (chunks, rx) = std::sync::mpsc::sync_channel::<ToDigest>(16);
        let done = std::thread::spawn(move || {
            let mut hashes = hashes;
            for got in rx {
                match got {
                    ToDigest::Bytes(chunk) => hashes.update(&chunk),
                    ToDigest::Known(known) => hashes.expect(known),
                }
            }
            hashes.finish()
        });
        Digest::Background {
            block_size,
            chunks,
            done,
        }
    }

    /// The block size the new file is signed in, if it is signed.
    fn block_size(&self) -> Option<u32> {
        match self {
            Digest::Inline(h) => h.signer.as_ref().map(SignatureBuilder::block_size),
            Digest::Background { block_size, .. } => *block_size,
        }
    }

    fn update(&mut self, chunk: &Bytes) {
        match self {
            Digest::Inline(h) => h.update(chunk),
            Digest::Background { chunks, .. } => {
                // The thread only ends when `chunks` is dropped.
                let _ = chunks.send(ToDigest::Bytes(chunk.clone()));
            }
        }
    }

    /// Sums of blocks still to come that are already known (see `SignatureBuilder::expect`).
    fn expect(&mut self, known: Vec<KnownBlock>) {
        if known.is_empty() {
            return;
        }
        match self {
            Digest::Inline(h) => h.expect(known),
            Digest::Background { chunks, .. } => {
                let _ = chunks.send(ToDigest::Known(known));
            }
        }
    }

    async fn finish(self) -> Digested {
        match self {
            Digest::Inline(h) => h.finish(),
            Digest::Background { chunks, done, .. } => {
                drop(chunks);
                crate::local::joined(tokio::task::spawn_blocking(move || {
                    done.join().expect("digest thread")
                }))
                .await
            }
        }
    }
}

enum CopyError {
    Source(TreeError),
    Dest(TreeError),
}

impl CopyError {
    /// The temp name means nothing to the user; the file it was for does.
    fn naming(mut self, temp: &[u8], dest_path: &RelPath) -> CopyError {
        if let CopyError::Dest(e) = &mut self {
            if e.path == temp {
                e.path = dest_path.clone();
            }
        }
        self
    }
}

/// The process umask, which rsync applies to new entries' modes without `-p`. Read from
/// /proc: umask(2) can only read it by changing it, a race with every thread creating files.
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_umask(&status)
}

fn parse_umask(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok().map(|m| m & 0o777)
}

/// `.NAME.partial`, the name `--partial` keeps a file under beside it (the name cut to leave
/// room under a 255-byte limit).
/// rsync's words for a directory that deleting left in place.
fn not_emptied(path: &[u8]) -> String {
    format!("cannot delete non-empty directory: {}", display_path(path))
}

pub(crate) fn partial_file_name(name: &[u8]) -> Vec<u8> {
    let keep = &name[..name.len().min(200)];
    [&b"."[..], keep, b".partial"].concat()
}

pub(crate) fn modes_differ(a: u32, b: u32) -> bool {
    a & 0o7777 != b & 0o7777
}

/// Whether a regular file's permissions are to be flagged `p`: any bit with `-p`; with `-E`
/// alone, whether one side is executable and the other not.
pub(crate) fn perms_differ(opts: &SyncOptions, src: u32, dest: u32) -> bool {
    if opts.perms {
        modes_differ(src, dest)
    } else {
        opts.executability && (src & 0o111 != 0) != (dest & 0o111 != 0)
    }
}

/// The mode an existing regular file keeps without `-p`: its own, with `-E` made executable
/// like the source (rsync's `dest_mode`): execute bits go when the source has none, and a
/// file that has none gets them where it is readable.
pub(crate) fn kept_mode(opts: &SyncOptions, src: u32, dest: u32) -> u32 {
    if !opts.executability {
        dest
    } else if src & 0o111 == 0 {
        dest & !0o111
    } else if dest & 0o111 == 0 {
        dest | (dest & 0o444) >> 2
    } else {
        dest
    }
}

/// rsync orders a directory's files before its subdirectories, each by bytes.
pub(crate) fn sort_rsync_by<T>(items: &mut [T], key: impl Fn(&T) -> (&Vec<u8>, Kind)) {
    items.sort_by(|a, b| {
        let (an, ak) = key(a);
        let (bn, bk) = key(b);
        (ak == Kind::Dir)
            .cmp(&(bk == Kind::Dir))
            .then_with(|| an.cmp(bn))
    });
}

/// Six characters from `[A-Za-z0-9]` that differ per call and per process, like rsync's.
fn temp_suffix(counter: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x =
        (std::process::id() as u64) << 32 ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos;
    let mut s = String::with_capacity(6);
    for _ in 0..6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
    }
    s
}

/// Hash of the first `len` bytes of one side's file; `None` when it is shorter than that.
async fn hash_prefix(tree: &dyn Tree, path: &RelPath, len: u64) -> TreeResult<Option<[u8; 32]>> {
    let mut hasher = blake3::Hasher::new();
    if len == 0 {
        return Ok(Some(*hasher.finalize().as_bytes()));
    }
    let mut reader = tree.open_read(path, 0, len).await?;
    let mut got = 0u64;
    let result = async {
        while got < len {
            let Some(chunk) = reader.next_chunk().await? else {
                break;
            };
            let take = (len - got).min(chunk.len() as u64);
            hasher.update(&chunk[..take as usize]);
            got += take;
        }
        Ok::<_, TreeError>(())
    }
    .await;
    let _ = reader.close().await;
    result?;
    Ok((got == len).then(|| *hasher.finalize().as_bytes()))
}

/// Whole-file hash of one side's file, read through the tree.
pub async fn hash_file(tree: &dyn Tree, path: &RelPath) -> Result<[u8; 32], TreeError> {
    let mut hasher = blake3::Hasher::new();
    read_whole(tree, path, 0, |chunk| {
        hasher.update(chunk);
        true
    })
    .await?;
    Ok(*hasher.finalize().as_bytes())
}

/// Reads a file through its tree from the start, handing each chunk to `take` until it says
/// to stop; the reader is closed whatever happens. `expected_size` as for `Tree::open_read`.
pub(crate) async fn read_whole(
    tree: &dyn Tree,
    path: &RelPath,
    expected_size: u64,
    mut take: impl FnMut(&[u8]) -> bool + Send,
) -> TreeResult<()> {
    let mut reader = tree.open_read(path, 0, expected_size).await?;
    let result = async {
        while let Some(chunk) = reader.next_chunk().await? {
            if !take(&chunk) {
                break;
            }
        }
        Ok::<_, TreeError>(())
    }
    .await;
    let _ = reader.close().await;
    result
}

/// Whether one side's file holds the contents `sig` was made from (by `delta::BlockCheck`),
/// reading no further than the first block that differs.
async fn matches_signature(
    tree: &dyn Tree,
    path: &RelPath,
    sig: &Signature,
) -> Result<bool, TreeError> {
    let mut check = sig.check();
    read_whole(tree, path, sig.file_len(), |chunk| check.update(chunk)).await?;
    Ok(check.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a writer is asked to do: `W(n)` for n bytes written, `Z(n)` for zeros.
    #[derive(Default)]
    struct Recorder(Vec<(char, usize)>);

    #[async_trait::async_trait]
    impl FileWriter for Recorder {
        async fn write(&mut self, data: Bytes) -> TreeResult<()> {
            self.0.push(('W', data.len()));
            Ok(())
        }
        async fn write_zeros(&mut self, len: u64) -> TreeResult<()> {
            self.0.push(('Z', len as usize));
            Ok(())
        }
        async fn finish(self: Box<Self>, _: &SetMeta) -> TreeResult<()> {
            Ok(())
        }
        async fn abandon(self: Box<Self>) {}
    }

    #[tokio::test]
    async fn sparse_writes_leave_only_long_zero_runs_out() {
        let mut data = vec![1u8; 10];
        data.extend([0u8; 1023]); // too short: written
        data.extend([2u8; 5]);
        data.extend([0u8; 5000]); // a hole
        data.extend([3u8; 7]);
        data.extend([0u8; 1024]); // a hole at the very end
        let mut w = Recorder::default();
        write_sparse(&mut w, Bytes::from(data)).await.unwrap();
        assert_eq!(
            w.0,
            vec![('W', 10 + 1023 + 5), ('Z', 5000), ('W', 7), ('Z', 1024)]
        );
        let mut w = Recorder::default();
        write_sparse(&mut w, Bytes::from(vec![0u8; 4096]))
            .await
            .unwrap();
        assert_eq!(w.0, vec![('Z', 4096)]);
        let mut w = Recorder::default();
        write_sparse(&mut w, Bytes::from_static(b"abc"))
            .await
            .unwrap();
        assert_eq!(w.0, vec![('W', 3)]);
    }

    #[test]
    fn executability_follows_rsyncs_dest_mode() {
        let e = SyncOptions {
            executability: true,
            ..Default::default()
        };
        // Source executable, receiver not: x where readable.
        assert_eq!(kept_mode(&e, 0o755, 0o640), 0o750);
        assert_eq!(kept_mode(&e, 0o700, 0o604), 0o705);
        // Receiver already executable somewhere: left as it is.
        assert_eq!(kept_mode(&e, 0o755, 0o700), 0o700);
        // Source not executable: every x goes.
        assert_eq!(kept_mode(&e, 0o644, 0o751), 0o640);
        assert!(perms_differ(&e, 0o755, 0o640));
        assert!(!perms_differ(&e, 0o755, 0o700));
        assert!(!perms_differ(&e, 0o644, 0o600));
        let plain = SyncOptions::default();
        assert_eq!(kept_mode(&plain, 0o755, 0o640), 0o640);
        assert!(!perms_differ(&plain, 0o755, 0o640));
    }

    #[test]
    fn umask_is_read_from_proc_status() {
        assert_eq!(
            parse_umask("Name:\tx\nUmask:\t0027\nState:\tR\n"),
            Some(0o027)
        );
        assert_eq!(parse_umask("Name:\tx\n"), None);
        assert_eq!(parse_umask("Umask:\tzz\n"), None);
        assert!(
            process_umask().is_some(),
            "Linux has had the Umask line since 4.7"
        );
    }

    #[test]
    fn temp_suffixes_differ() {
        let a = temp_suffix(1);
        let b = temp_suffix(2);
        assert_eq!(a.len(), 6);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    /// Deterministic bytes that neither compress nor repeat.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// What a push to an index-keeping destination works out, with no `--verify`.
    const INDEXED: Wanted = Wanted {
        hash: true,
        sign: true,
    };

    /// Runs `new` through a shaper against `old`'s signature, in `piece`-byte chunks.
    async fn shape(old: &[u8], new: &[u8], piece: usize) -> (Copied, Option<u64>) {
        let base = Signature::of_bytes(old, delta::block_size_for(old.len() as u64)).unwrap();
        let mut shaper = Shaper::new(INDEXED, new.len() as u64, Some(&base));
        for chunk in new.chunks(piece) {
            shaper.take(Bytes::copy_from_slice(chunk));
        }
        shaper.end();
        let reused = match &shaper.digest {
            Some(Digest::Inline(h)) => h.signer.as_ref().map(SignatureBuilder::reused),
            _ => None,
        };
        (shaper.finish().await, reused)
    }

    #[tokio::test]
    async fn index_signature_of_a_delta_reuses_the_old_blocks_and_equals_a_fresh_one() {
        let old = noise(3 << 20, 1);
        let mut new = old.clone();
        new[1_000_000..1_004_096].copy_from_slice(&noise(4096, 2));
        new.truncate(old.len() - 5);
        let bs = delta::block_size_for(new.len() as u64);
        let fresh = Signature::of_bytes(&new, bs).unwrap().to_bytes();
        for piece in [1000, 65_536, 300_001] {
            let (copied, reused) = shape(&old, &new, piece).await;
            assert_eq!(copied.signature.as_ref(), Some(&fresh), "piece {piece}");
            assert_eq!(copied.hash, Some(*blake3::hash(&new).as_bytes()));
            let blocks = new.len().div_ceil(bs as usize) as u64;
            // The 4 KiB rewrite touches three blocks of 1768 bytes; the cut tail is signed
            // afresh. Everything else comes from the old signature.
            assert_eq!(bs, 1768);
            let reused = reused.expect("a small file is digested inline");
            assert_eq!(reused, blocks - 4);
        }
    }

    #[test]
    fn big_files_are_indexed_without_a_hash_unless_verify_needs_one() {
        let (small, big) = (DELTA_MIN_SIZE, BLOCKS_ONLY_MIN);
        let want = |hash, sign| Wanted { hash, sign };
        assert_eq!(Wanted::for_file(small, true, false), want(true, true));
        assert_eq!(Wanted::for_file(big, true, false), want(false, true));
        assert_eq!(Wanted::for_file(big, true, true), want(true, true));
        assert_eq!(Wanted::for_file(big, false, true), want(true, false));
        assert_eq!(Wanted::for_file(small, false, false), want(false, false));
    }

    #[tokio::test]
    async fn index_signature_in_place_reuses_the_compared_blocks() {
        let old = noise(1 << 20, 4);
        let mut new = old.clone();
        new[500_000] ^= 1;
        new.extend_from_slice(b"longer");
        let bs = delta::block_size_for(new.len() as u64);
        assert_eq!(bs, delta::block_size_for(old.len() as u64));
        let mut shaper = Shaper::new(INDEXED, new.len() as u64, None);
        shaper.in_place(Signature::of_bytes(&old, bs).unwrap());
        for chunk in new.chunks(70_000) {
            shaper.take(Bytes::copy_from_slice(chunk));
        }
        shaper.end();
        let Some(Digest::Inline(h)) = &shaper.digest else {
            panic!("a small file is digested inline");
        };
        // Every full block was compared, so none is hashed twice; the longer tail is new.
        let full = new.len() as u64 / u64::from(bs);
        assert_eq!(h.signer.as_ref().map(SignatureBuilder::reused), Some(full));
        let copied = shaper.finish().await;
        let fresh = Signature::of_bytes(&new, bs).unwrap().to_bytes();
        assert!(copied.signature == Some(fresh));
        assert_eq!(copied.literal, u64::from(bs) + 6);
    }

    #[tokio::test]
    async fn index_signature_of_a_big_delta_signed_in_the_background_equals_a_fresh_one() {
        let old = noise(BACKGROUND_DIGEST_MIN as usize + 12_345, 3);
        let mut new = vec![7u8; 100];
        new.extend_from_slice(&old[..old.len() / 2]);
        new.extend_from_slice(&old[old.len() / 2 + 100..]);
        new[9_000_000..9_000_010].copy_from_slice(b"0123456789");
        let (copied, _) = shape(&old, &new, 256 * 1024).await;
        let bs = delta::block_size_for(new.len() as u64);
        let fresh = Signature::of_bytes(&new, bs).unwrap().to_bytes();
        assert!(copied.signature == Some(fresh));
        assert_eq!(copied.hash, Some(*blake3::hash(&new).as_bytes()));
        assert!(copied.matched > new.len() as u64 - 200_000);
    }

    #[tokio::test]
    async fn prefix_hash_covers_exactly_the_prefix_and_none_when_shorter() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let tree = crate::LocalTree::new(dir.path());
        let f = b"f".to_vec();
        for len in [0, 1, 300_000, 700_000] {
            let want = *blake3::hash(&data[..len]).as_bytes();
            let got = hash_prefix(&tree, &f, len as u64).await.unwrap();
            assert_eq!(got, Some(want), "{len}");
        }
        assert_eq!(hash_prefix(&tree, &f, 700_001).await.unwrap(), None);
    }

    #[test]
    fn appended_start_is_hashed_not_sent_and_not_matched() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let run = |matched_skip: bool| {
            let mut shaper = Shaper::new(Wanted::NOTHING, data.len() as u64, None);
            shaper.skip = 2500;
            shaper.skip_is_matched = matched_skip;
            shaper.prefix = Some(blake3::Hasher::new());
            let mut sent = Vec::new();
            for chunk in data.chunks(1000) {
                for step in shaper.take(Bytes::copy_from_slice(chunk)) {
                    match step {
                        Step::Write(d) => sent.extend_from_slice(&d),
                        _ => panic!("only writes without a base"),
                    }
                }
            }
            let prefix = shaper.prefix.take().unwrap().finalize();
            (sent, prefix, shaper.literal, shaper.matched)
        };
        let (sent, prefix, literal, matched) = run(false);
        assert_eq!(sent, &data[2500..]);
        assert_eq!(prefix, blake3::hash(&data[..2500]));
        assert_eq!((literal, matched), (7500, 0));
        assert_eq!(
            run(true).3,
            2500,
            "a resumed partial's start counts as matched"
        );
    }

    #[tokio::test]
    async fn same_names_take_turns_and_their_locks_are_dropped() {
        let locks = Arc::new(NameLocks::default());
        let first = locks.lock(b"f").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _turn = locks.lock(b"f").await;
                tx.send(()).unwrap();
            })
        };
        // Another name is not held up.
        drop(locks.lock(b"g").await);
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "the second holder of f must wait");
        drop(first);
        waiter.await.unwrap();
        assert!(rx.try_recv().is_ok());
        assert!(
            locks.0.lock().unwrap().is_empty(),
            "no lock kept for names not in use"
        );
    }

    #[tokio::test]
    async fn gates_open_close_and_fail_shut() {
        assert!(Gate::open().passable().await);
        let (tx, mut gate) = Gate::pending();
        let mut other = gate.clone();
        tx.send_replace(Some(true));
        assert!(gate.passable().await);
        assert!(other.passable().await);
        let (tx, mut gate) = Gate::pending();
        tx.send_replace(Some(false));
        assert!(!gate.passable().await);
        let (tx, mut gate) = Gate::pending();
        drop(tx);
        assert!(
            !gate.passable().await,
            "a mkdir task that died must not open its gate"
        );
    }
}

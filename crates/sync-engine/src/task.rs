//! Work on single entries that runs concurrently with the walk: copies, links, deletions,
//! attribute fixes. Each task reports back what it did instead of touching shared state.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use delta::{DeltaEncoder, KnownBlock, Op, Signature, SignatureBuilder};
use tokio::sync::watch;

use crate::delta_index::{IndexedContent, RemoteIndex, DELTA_MIN_SIZE};
use crate::mtime::mtimes_differ;
use crate::options::SyncOptions;
use crate::path::{display_path, file_name, join, parent, unsafe_symlink, RelPath};
use crate::report::{Item, Stats, UpdateType};
use crate::tree::{
    ErrorKind, FileReader, FileWriter, Kind, Meta, SetMeta, Side, Tree, TreeError, TreeResult,
};
use crate::validate::validate_listing;

/// What every task needs, shared by the whole run.
pub(crate) struct Shared {
    pub opts: SyncOptions,
    pub dest: Arc<dyn Tree>,
    pub index: Option<Arc<RemoteIndex>>,
    pub umask: u32,
    temp_counter: AtomicU64,
    deletions: AtomicU64,
}

impl Shared {
    pub fn new(opts: SyncOptions, dest: Arc<dyn Tree>, index: Option<Arc<RemoteIndex>>) -> Shared {
        Shared {
            opts,
            dest,
            index,
            umask: process_umask().unwrap_or(0o022),
            temp_counter: AtomicU64::new(0),
            deletions: AtomicU64::new(0),
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
    pub vanished: u64,
    pub source_io_error: bool,
    pub deletions_skipped: u64,
    pub fatal: Option<TreeError>,
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

    fn vanished(&mut self, path: &[u8]) -> Result<(), Fatal> {
        self.report.vanished += 1;
        self.report
            .warnings
            .push(format!("file has vanished: \"{}\"", display_path(path)));
        Ok(())
    }

    fn item(&mut self, item: Item) {
        self.report.items.push(item);
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

    /// Removes whatever is in the way of a new entry of another type. False if it could not be.
    pub async fn remove_for_replace(&mut self, path: &RelPath, meta: &Meta) -> Result<bool, Fatal> {
        if self.sh.opts.dry_run {
            return Ok(true);
        }
        let r = if meta.kind == Kind::Dir {
            self.remove_tree(path).await
        } else {
            self.dest().remove_file(path).await
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) => {
                self.fail(e)?;
                Ok(false)
            }
        }
    }

    fn remove_tree<'b>(
        &'b self,
        path: &'b RelPath,
    ) -> Pin<Box<dyn Future<Output = Result<(), TreeError>> + Send + 'b>> {
        Box::pin(async move {
            // Only names the listing checks allow; the others were never ours to delete.
            let (entries, _) =
                validate_listing(self.dest().side(), path, self.dest().read_dir(path).await?);
            for e in entries {
                let p = join(path, &e.name);
                if e.meta.kind == Kind::Dir {
                    self.remove_tree(&p).await?;
                } else {
                    self.dest().remove_file(&p).await?;
                }
            }
            self.dest().remove_dir(path).await
        })
    }

    /// Deletes one extraneous entry, a directory with everything in it.
    pub fn delete_entry(&mut self, path: RelPath, meta: Meta) -> BoxStep<'_> {
        Box::pin(async move {
            if meta.kind == Kind::Dir {
                let list = match self.dest().read_dir(&path).await {
                    Ok(l) => l,
                    Err(e) => return self.fail(e),
                };
                let (list, _) = validate_listing(self.dest().side(), &path, list);
                let mut kids: Vec<(Vec<u8>, Meta)> =
                    list.into_iter().map(|e| (e.name, e.meta)).collect();
                sort_rsync_by(&mut kids, |k| (&k.0, k.1.kind));
                for (name, m) in kids.into_iter().rev() {
                    self.delete_entry(join(&path, &name), m).await?;
                }
            }
            if !self.sh.reserve_deletion() {
                self.report.deletions_skipped += 1;
                return Ok(());
            }
            if !self.sh.opts.dry_run {
                let r = if meta.kind == Kind::Dir {
                    self.dest().remove_dir(&path).await
                } else {
                    self.dest().remove_file(&path).await
                };
                if let Err(e) = r {
                    return self.fail(e);
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
            self.item(Item::new(UpdateType::Deleting, meta.kind, path));
            Ok(())
        })
    }

    pub async fn symlink(
        &mut self,
        src: SourceEntry,
        dest_path: RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let opts = &self.sh.opts;
        let target = match src.tree.read_link(&src.path).await {
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
        let mut item = Item::new(UpdateType::LocalChange, Kind::Symlink, dest_path.clone());
        item.link_target = Some(target.clone());
        let mut create = true;
        match &existing {
            None => {
                if opts.existing {
                    return Ok(());
                }
                item.created = true;
            }
            Some(m) if m.kind == Kind::Symlink => match self.dest().read_link(&dest_path).await {
                Ok(t) if t == target => {
                    create = false;
                    item.update = UpdateType::NoUpdate;
                    if opts.times
                        && self.dest().side() == Side::Local
                        && mtimes_differ(src.meta.mtime, m.mtime, opts.modify_window)
                    {
                        item.time = true;
                    }
                }
                Ok(_) => {
                    item.checksum = true;
                    if !opts.dry_run {
                        if let Err(e) = self.dest().remove_file(&dest_path).await {
                            return self.fail(e);
                        }
                    }
                }
                Err(e) => return self.fail(e),
            },
            Some(m) => {
                item.created = true;
                let m = m.clone();
                if !self.remove_for_replace(&dest_path, &m).await? {
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
        if opts.times && (create || item.time) {
            fix.mtime = Some(src.meta.mtime);
        }
        let dry_run = opts.dry_run;
        let dest_link = if create { None } else { existing.as_ref() };
        self.owner_fix(&src.meta, dest_link, &mut fix, &mut item);
        if !fix.is_empty() && !dry_run {
            // Not every server can set a link's own times or owner; no reason to fail.
            let _ = self.dest().set_meta(&dest_path, Kind::Symlink, &fix).await;
        }
        if item.is_change() {
            self.item(item);
        }
        Ok(())
    }

    /// A regular file that the walker decided to look at (skip rules and -H already applied).
    pub async fn file(
        &mut self,
        src: SourceEntry,
        dest_path: RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let sh = self.sh.clone();
        let opts = &sh.opts;
        let existing_file = existing.as_ref().filter(|m| m.kind == Kind::File);
        let mut item = Item::new(sh.update_type(), Kind::File, dest_path.clone());
        let mut transfer = true;
        if let Some(d) = existing_file {
            let size_differs = d.size != src.meta.size;
            let times_kept = self.dest().keeps_times();
            let stored = self.dest().stored_mtime(src.meta.mtime);
            let time_differs = times_kept && mtimes_differ(stored, d.mtime, opts.modify_window);
            transfer = if size_differs {
                true
            } else if opts.size_only || !times_kept {
                false
            } else if opts.checksum {
                match self.same_content(&src, &dest_path, d).await? {
                    Some(same) => {
                        item.checksum = !same;
                        !same
                    }
                    None => return Ok(()),
                }
            } else {
                time_differs
            };
            item.size = size_differs;
            if opts.times {
                item.time = time_differs;
            } else if transfer {
                item.time_now = true;
            }
            if opts.perms && modes_differ(src.meta.mode, d.mode) {
                item.perms = true;
            }
        } else {
            item.created = true;
        }

        let mode = if opts.perms {
            src.meta.mode
        } else if let Some(d) = existing_file {
            d.mode
        } else {
            src.meta.mode & 0o777 & !sh.umask
        };
        let mut meta = SetMeta {
            mode: Some(mode),
            mtime: opts.times.then_some(src.meta.mtime),
            ..Default::default()
        };
        self.owner_fix(&src.meta, existing_file, &mut meta, &mut item);
        if transfer {
            // The temp file is new and owned by whoever wrote it, whatever the old one had.
            let mut ignored = item.clone();
            self.owner_fix(&src.meta, None, &mut meta, &mut ignored);
        }

        if !transfer {
            if !item.is_change() {
                return Ok(());
            }
            let fix = SetMeta {
                mode: item.perms.then_some(mode),
                mtime: (opts.times && item.time).then_some(src.meta.mtime),
                uid: meta.uid,
                gid: meta.gid,
            };
            if !opts.dry_run && !fix.is_empty() {
                if let Err(e) = self.dest().set_meta(&dest_path, Kind::File, &fix).await {
                    return self.fail(e);
                }
            }
            item.update = UpdateType::NoUpdate;
            self.item(item);
            return Ok(());
        }

        if let Some(m) = existing.as_ref().filter(|m| m.kind != Kind::File) {
            item.created = true;
            let m = m.clone();
            if !self.remove_for_replace(&dest_path, &m).await? {
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
        let started = Instant::now();
        let copy = if opts.inplace {
            let old = self.index_signature(&dest_path, existing_file);
            self.copy_in_place(&src, &dest_path, &meta, old).await
        } else {
            let base = self.delta_base(&dest_path, existing_file);
            self.copy_file(&src, &dest_path, &meta, base).await
        };
        match copy {
            Ok(CopyResult::Done(copied)) => {
                self.remember(&dest_path, &meta, &copied);
                let stats = &mut self.report.stats;
                stats.transferred_files += 1;
                stats.transferred_size += copied.len;
                stats.literal_data += copied.literal;
                stats.matched_data += copied.matched;
                item.transferred = copied.literal;
                item.elapsed = Some(started.elapsed());
                self.item(item);
                Ok(())
            }
            Ok(CopyResult::Vanished) => self.vanished(&src.path),
            Err(CopyError::Source(e)) => self.source_error(e),
            Err(CopyError::Dest(e)) => self.fail(e),
        }
    }

    /// A later name of an inode already written becomes a hard link to the first name.
    pub async fn hard_link(
        &mut self,
        first: RelPath,
        dest_path: RelPath,
        src: Meta,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let opts = &self.sh.opts;
        if let Some(d) = &existing {
            // SFTP cannot tell us whether the two names already share an inode; a file that
            // passes the quick check is taken as already linked.
            if d.kind == Kind::File
                && d.size == src.size
                && !mtimes_differ(
                    self.dest().stored_mtime(src.mtime),
                    d.mtime,
                    opts.modify_window,
                )
            {
                return Ok(());
            }
        }
        let mut item = Item::new(UpdateType::HardLink, Kind::File, dest_path.clone());
        item.created = true;
        item.hard_link_to = Some(first.clone());
        if !opts.dry_run {
            if let Some(m) = &existing {
                let m = m.clone();
                if !self.remove_for_replace(&dest_path, &m).await? {
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
        Ok(())
    }

    /// Compares contents by hash. `None` when one side could not be read (already reported).
    async fn same_content(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        dest_now: &Meta,
    ) -> Result<Option<bool>, Fatal> {
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

    /// `--verify`: reads `temp` back and compares its hash with what was sent.
    async fn verify_written(
        &self,
        temp: &RelPath,
        dest_path: &RelPath,
        sent: [u8; 32],
    ) -> Result<(), CopyError> {
        match hash_file(self.dest(), temp).await {
            Ok(h) if h == sent => Ok(()),
            Ok(_) => Err(CopyError::Dest(TreeError {
                op: "verify",
                side: self.dest().side(),
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
    /// with `--partial-dir`, the file's own name in that directory.
    fn partial_name(&self, dest_path: &[u8]) -> RelPath {
        let name = file_name(dest_path);
        match &self.sh.opts.partial_dir {
            Some(dir) => join(&join(parent(dest_path), dir), name),
            None => join(parent(dest_path), &partial_file_name(name)),
        }
    }

    /// How much of a kept partial file can be trusted: its size, if its last bytes (up to
    /// 64 KiB) equal the source's at the same place. A partial that does not fit is removed.
    async fn resumable(&self, src: &SourceEntry, partial: &RelPath) -> Option<u64> {
        const TAIL: u64 = 64 * 1024;
        let meta = match &src.kept_partial {
            KeptPartial::Absent => return None,
            KeptPartial::Present(m) => m.clone(),
            KeptPartial::Unknown => self.dest().lstat(partial).await.ok()??,
        };
        if meta.kind != Kind::File {
            return None;
        }
        let fits = meta.size > 0 && meta.size <= src.meta.size && {
            let n = meta.size.min(TAIL);
            let at = meta.size - n;
            let (kept, ours) = futures::join!(
                self.dest().read_range(partial, at, n as u32),
                src.tree.read_range(&src.path, at, n as u32)
            );
            matches!((kept, ours), (Ok(a), Ok(b)) if a == b && a.len() as u64 == n)
        };
        if fits {
            Some(meta.size)
        } else {
            let _ = self.dest().remove_file(partial).await;
            None
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
        let mut reader = match src.tree.open_read(&src.path, src.meta.size).await {
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
            self.verify_written(dest_path, dest_path, sent).await?;
        }
        Ok(CopyResult::Done(copied))
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

    async fn copy_file(
        &mut self,
        src: &SourceEntry,
        dest_path: &RelPath,
        meta: &SetMeta,
        base: Option<Signature>,
    ) -> Result<CopyResult, CopyError> {
        let mut reader = match src.tree.open_read(&src.path, src.meta.size).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(CopyResult::Vanished),
            Err(e) => return Err(CopyError::Source(e)),
        };
        let partial = self.sh.opts.partial;
        let (temp, resume_at) = if partial {
            let temp = self.partial_name(dest_path);
            let at = self.resumable(src, &temp).await;
            if at.is_none() && self.sh.opts.partial_dir.is_some() {
                // Made when needed; one that is already there is fine.
                let _ = self.dest().mkdir(&parent(&temp).to_vec(), 0o700).await;
            }
            (temp, at)
        } else {
            (self.temp_name(dest_path), None)
        };
        // A resumed file is not also a delta: its start is already there.
        let base = if resume_at.is_some() { None } else { base };
        // Created with the final permission bits, never the special ones, and always writable
        // by us: a server that ignores SETSTAT but honours the mode given at creation then
        // still ends with the right modes. Nobody gains access early: the finished file has
        // the same bits.
        let create_mode = meta.mode.map_or(0o600, |m| m & 0o777 | 0o600);
        let mut base = base;
        let mut created = Err(None);
        if let Some(at) = resume_at {
            created = self.dest().reopen_for_append(&temp, at).await.map_err(Some);
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
            created = self
                .dest()
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
        shaper.skip = resume_at.unwrap_or(0);
        let copied = shaper.pump(&mut *reader, &mut *writer).await;
        let _ = reader.close().await;
        let result = match copied {
            Ok(()) => match writer.finish(meta).await {
                Ok(()) => {
                    let copied = shaper.finish().await;
                    let verified = match (self.sh.opts.verify, copied.hash) {
                        (true, Some(sent)) => self.verify_written(&temp, dest_path, sent).await,
                        _ => Ok(()),
                    };
                    match verified {
                        Ok(()) => self
                            .dest()
                            .rename_replace(&temp, dest_path)
                            .await
                            .map(|()| copied)
                            .map_err(CopyError::Dest),
                        Err(e) => {
                            // A garbled file is no partial to go on from.
                            let _ = self.dest().remove_file(&temp).await;
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
        if result.is_ok() && self.sh.opts.partial_dir.is_some() {
            // Gone once empty, as rsync's; one still holding other partials stays.
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
                    let _ = self.dest().remove_file(&temp).await;
                }
                Err(e.naming(&temp, dest_path))
            }
        }
    }
}

enum CopyResult {
    Done(Copied),
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

impl Step {
    async fn send(self, writer: &mut dyn FileWriter) -> TreeResult<()> {
        match self {
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
    /// Bytes at the start that a resumed partial already holds: hashed, not sent.
    skip: u64,
    /// `--inplace` against an old version.
    aligned: Option<AlignedDiff>,
    len: u64,
    literal: u64,
    matched: u64,
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
            aligned: None,
            len: 0,
            literal: 0,
            matched: 0,
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
                step.send(writer).await.map_err(CopyError::Dest)?;
            }
        }
        for step in self.end() {
            step.send(writer).await.map_err(CopyError::Dest)?;
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
            self.matched += n;
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
                tokio::task::spawn_blocking(move || done.join().expect("digest thread"))
                    .await
                    .expect("digest thread")
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
pub(crate) fn partial_file_name(name: &[u8]) -> Vec<u8> {
    let keep = &name[..name.len().min(200)];
    [&b"."[..], keep, b".partial"].concat()
}

pub(crate) fn modes_differ(a: u32, b: u32) -> bool {
    a & 0o7777 != b & 0o7777
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

/// Whole-file hash of one side's file, read through the tree.
pub async fn hash_file(tree: &dyn Tree, path: &RelPath) -> Result<[u8; 32], TreeError> {
    let mut reader = tree.open_read(path, 0).await?;
    let mut hasher = blake3::Hasher::new();
    let result = async {
        while let Some(chunk) = reader.next_chunk().await? {
            hasher.update(&chunk);
        }
        Ok::<_, TreeError>(())
    }
    .await;
    let _ = reader.close().await;
    result?;
    Ok(*hasher.finalize().as_bytes())
}

/// Whether one side's file holds the contents `sig` was made from (by `delta::BlockCheck`),
/// reading no further than the first block that differs.
async fn matches_signature(
    tree: &dyn Tree,
    path: &RelPath,
    sig: &Signature,
) -> Result<bool, TreeError> {
    let mut reader = tree.open_read(path, sig.file_len()).await?;
    let mut check = sig.check();
    let result = async {
        while let Some(chunk) = reader.next_chunk().await? {
            if !check.update(&chunk) {
                break;
            }
        }
        Ok::<_, TreeError>(())
    }
    .await;
    let _ = reader.close().await;
    result?;
    Ok(check.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

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

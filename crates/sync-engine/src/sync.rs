//! The sync itself: walk source and destination together in rsync's order, decide, apply.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::options::SyncOptions;
use crate::path::{display_path, file_name, invalid_name_reason, join, parent, RelPath};
use crate::report::{Item, Reporter, Stats, UpdateType};
use crate::tree::{ErrorKind, Kind, Meta, SetMeta, Side, Tree, TreeError};

/// What a source argument contributes to the top of the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceContent {
    /// `src/`: the directory's contents go into the destination itself.
    Contents,
    /// `src` (no trailing slash): the entry of this name, inside the tree's root.
    Named(Vec<u8>),
}

/// One source argument: a tree rooted at the directory that holds what is sent.
pub struct SourceRoot {
    pub tree: Arc<dyn Tree>,
    pub content: SourceContent,
}

/// Everything one run needs.
pub struct SyncJob {
    pub sources: Vec<SourceRoot>,
    pub dest: Arc<dyn Tree>,
    /// A single non-directory source copied under a new name: the destination tree is rooted at
    /// the parent directory and the entry is written under this name.
    pub dest_file_name: Option<Vec<u8>>,
}

/// How the run went, for the caller's exit code and summary.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub stats: Stats,
    /// Entries that failed (rsync's code 23).
    pub errors: u64,
    /// Source files that vanished during the run (rsync's code 24).
    pub vanished: u64,
    /// A source could not be read completely, so deletions were skipped.
    pub source_io_error: bool,
    /// Deletions stopped at --max-delete (rsync's code 25).
    pub max_delete_reached: bool,
    /// The run could not go on at all: the connection died, or the destination could not be
    /// set up. Carries the error; the caller maps it to 10/11/12.
    pub fatal: Option<TreeError>,
}

/// Stops the walk: only for errors after which nothing else can work.
struct Fatal(TreeError);

type Step<'a> = Pin<Box<dyn Future<Output = Result<(), Fatal>> + Send + 'a>>;

struct Child {
    name: Vec<u8>,
    meta: Meta,
    source: usize,
}

struct DirFix {
    path: RelPath,
    meta: SetMeta,
}

struct Run<'a> {
    job: &'a SyncJob,
    opts: &'a SyncOptions,
    reporter: &'a dyn Reporter,
    outcome: SyncOutcome,
    dir_fixes: Vec<DirFix>,
    /// For -H: first destination path written for each source inode.
    hard_links: HashMap<(u64, u64), RelPath>,
    deletions: u64,
    /// Extraneous destination entries, deleted once the whole source has been read without
    /// error: a source that could not be listed completely must never cause a deletion.
    pending_deletions: Vec<(RelPath, Meta)>,
    temp_counter: u64,
    umask: u32,
}

/// Runs one sync. Never panics on bad input and never prints: everything goes to `reporter`.
pub async fn run(job: &SyncJob, opts: &SyncOptions, reporter: &dyn Reporter) -> SyncOutcome {
    let mut run = Run {
        job,
        opts,
        reporter,
        outcome: SyncOutcome::default(),
        dir_fixes: Vec::new(),
        hard_links: HashMap::new(),
        deletions: 0,
        pending_deletions: Vec::new(),
        temp_counter: 0,
        umask: 0o022,
    };
    if let Err(Fatal(e)) = run.top().await {
        run.outcome.fatal = Some(e);
    }
    if run.outcome.fatal.is_none() {
        if let Err(Fatal(e)) = run.delete_pending().await {
            run.outcome.fatal = Some(e);
        }
    }
    if run.outcome.fatal.is_none() {
        run.apply_dir_fixes().await;
    }
    run.outcome
}

fn sort_rsync(children: &mut [Child]) {
    // rsync orders a directory's files before its subdirectories, each by bytes.
    children.sort_by(|a, b| {
        let ad = a.meta.kind == Kind::Dir;
        let bd = b.meta.kind == Kind::Dir;
        ad.cmp(&bd).then_with(|| a.name.cmp(&b.name))
    });
}

fn modes_differ(a: u32, b: u32) -> bool {
    a & 0o7777 != b & 0o7777
}

impl<'a> Run<'a> {
    fn dest(&self) -> &dyn Tree {
        &*self.job.dest
    }

    fn update_type(&self) -> UpdateType {
        match self.dest().side() {
            Side::Remote => UpdateType::Sent,
            Side::Local => UpdateType::Received,
        }
    }

    /// Records a per-entry failure, or stops the run when the connection is gone.
    fn fail(&mut self, e: TreeError) -> Result<(), Fatal> {
        if e.kind == ErrorKind::Connection {
            return Err(Fatal(e));
        }
        self.reporter.error(&e);
        self.outcome.errors += 1;
        Ok(())
    }

    fn source_error(&mut self, e: TreeError) -> Result<(), Fatal> {
        self.outcome.source_io_error = true;
        self.fail(e)
    }

    fn item(&mut self, item: Item) {
        self.reporter.item(&item);
    }

    async fn top(&mut self) -> Result<(), Fatal> {
        if let Some(name) = self.job.dest_file_name.clone() {
            return self.top_single_file(name).await;
        }
        let root_meta = match self.dest().lstat(&Vec::new()).await {
            Ok(m) => m,
            Err(e) => {
                return Err(Fatal(e));
            }
        };
        let mut root_created = false;
        match root_meta.as_ref().map(|m| m.kind) {
            Some(Kind::Dir) => {}
            Some(_) => {
                return Err(Fatal(TreeError {
                    op: "use destination",
                    side: self.dest().side(),
                    path: Vec::new(),
                    cause: "destination must be a directory when copying more than one file or a directory".into(),
                    kind: ErrorKind::Other,
                }));
            }
            None => {
                if !self.opts.dry_run {
                    if let Err(e) = self.dest().mkdir(&Vec::new(), 0o755).await {
                        return Err(Fatal(e));
                    }
                }
                root_created = true;
                self.reporter
                    .info(&format!("created directory {}", self.dest().describe()));
            }
        }

        // Gather the top level from every source, in argument order.
        let mut children = Vec::new();
        let mut root_source: Option<(usize, Meta)> = None;
        for (i, src) in self.job.sources.iter().enumerate() {
            match &src.content {
                SourceContent::Contents => {
                    match src.tree.lstat(&Vec::new()).await {
                        Ok(Some(m)) if m.kind == Kind::Dir => {
                            if root_source.is_none() {
                                root_source = Some((i, m));
                            }
                        }
                        Ok(Some(_)) => {
                            // `file/` names a file: rsync sends the file itself.
                        }
                        Ok(None) => {
                            let root = src.tree.describe().into_bytes();
                            self.source_error(not_found("link_stat", src.tree.side(), &root))?;
                            continue;
                        }
                        Err(e) => {
                            self.source_error(e)?;
                            continue;
                        }
                    }
                    if !self.opts.recursive {
                        self.reporter.info("skipping directory .");
                        continue;
                    }
                    match self.list_source(i, &Vec::new()).await? {
                        Some(list) => children.extend(list),
                        None => continue,
                    }
                }
                SourceContent::Named(name) => match src.tree.lstat(name).await {
                    Ok(Some(meta)) => children.push(Child {
                        name: name.clone(),
                        meta,
                        source: i,
                    }),
                    Ok(None) => self.source_error(not_found("link_stat", src.tree.side(), name))?,
                    Err(e) => self.source_error(e)?,
                },
            }
        }

        if let Some((_, meta)) = root_source {
            self.dir_entry(&Vec::new(), &meta, root_meta.as_ref(), root_created)
                .await?;
        }
        let listed_dest = !root_created;
        self.contents(Vec::new(), children, listed_dest).await
    }

    async fn top_single_file(&mut self, dest_name: Vec<u8>) -> Result<(), Fatal> {
        let src = &self.job.sources[0];
        let SourceContent::Named(name) = &src.content else {
            return Ok(());
        };
        let meta = match src.tree.lstat(name).await {
            Ok(Some(m)) => m,
            Ok(None) => return self.source_error(not_found("link_stat", src.tree.side(), name)),
            Err(e) => return self.source_error(e),
        };
        let dest_meta = match self.dest().lstat(&dest_name).await {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        let child = Child {
            name: name.clone(),
            meta,
            source: 0,
        };
        self.non_dir(&child, dest_name, dest_meta).await.map(|_| ())
    }

    /// Lists a source directory, dropping excluded and invalid names. `None` when the listing
    /// failed (already reported).
    async fn list_source(
        &mut self,
        source: usize,
        dir: &RelPath,
    ) -> Result<Option<Vec<Child>>, Fatal> {
        let tree = self.job.sources[source].tree.clone();
        let entries = match tree.read_dir(dir).await {
            Ok(e) => e,
            Err(e) => {
                self.source_error(e)?;
                return Ok(None);
            }
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let path = join(dir, &e.name);
            if let Some(reason) = invalid_name_reason(&e.name) {
                self.source_error(TreeError {
                    op: "accept name in",
                    side: tree.side(),
                    path: dir.clone(),
                    cause: format!("{reason}: \"{}\"", display_path(&e.name)),
                    kind: ErrorKind::Other,
                })?;
                continue;
            }
            if !seen.insert(e.name.clone()) {
                self.source_error(TreeError {
                    op: "accept listing of",
                    side: tree.side(),
                    path: dir.clone(),
                    cause: format!("name \"{}\" appears twice", display_path(&e.name)),
                    kind: ErrorKind::Other,
                })?;
                continue;
            }
            if self
                .opts
                .filters
                .excluded_on_sender(&path, e.meta.kind == Kind::Dir)
            {
                continue;
            }
            out.push(Child {
                name: e.name,
                meta: e.meta,
                source,
            });
        }
        Ok(Some(out))
    }

    /// Handles the contents of one directory (the directory itself is done by the caller).
    /// Returns whether the destination directory was modified (its mtime needs restoring).
    fn contents(&mut self, dir: RelPath, mut children: Vec<Child>, dest_exists: bool) -> Step<'_> {
        Box::pin(async move {
            sort_rsync(&mut children);
            let mut dest_entries: HashMap<Vec<u8>, Meta> = HashMap::new();
            if dest_exists {
                match self.dest().read_dir(&dir).await {
                    Ok(list) => {
                        for e in list {
                            // Names the destination reports are only used to compare and
                            // delete; refuse the ones that could point elsewhere.
                            if invalid_name_reason(&e.name).is_none() {
                                dest_entries.insert(e.name, e.meta);
                            }
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => self.fail(e)?,
                }
            }

            if self.opts.delete && self.opts.recursive {
                self.delete_extraneous(&dir, &children, &dest_entries)
                    .await?;
            }

            let mut subdirs = Vec::new();
            for child in children {
                let path = join(&dir, &child.name);
                let existing = dest_entries.get(&child.name).cloned();
                if child.meta.kind == Kind::Dir {
                    subdirs.push((child, path, existing));
                    continue;
                }
                self.non_dir(&child, path, existing).await?;
            }
            for (child, path, existing) in subdirs {
                if !self.opts.recursive {
                    self.reporter
                        .info(&format!("skipping directory {}", display_path(&path)));
                    continue;
                }
                let created = match &existing {
                    Some(m) if m.kind == Kind::Dir => false,
                    Some(m) => {
                        let m = m.clone();
                        if !self.remove_for_replace(&path, &m).await? {
                            continue;
                        }
                        true
                    }
                    None => {
                        if self.opts.existing {
                            continue;
                        }
                        true
                    }
                };
                let existing_dir = existing.filter(|m| m.kind == Kind::Dir);
                if !self
                    .dir_entry(&path, &child.meta, existing_dir.as_ref(), false)
                    .await?
                {
                    continue;
                }
                let Some(list) = self.list_source(child.source, &path).await? else {
                    continue;
                };
                self.contents(path, list, !created).await?;
            }
            Ok(())
        })
    }

    /// Creates or updates one directory entry (not its contents). `already_created` is for the
    /// destination root made before the walk. Returns false when the directory is unusable.
    async fn dir_entry(
        &mut self,
        path: &RelPath,
        src: &Meta,
        existing: Option<&Meta>,
        already_created: bool,
    ) -> Result<bool, Fatal> {
        let final_mode = if self.opts.perms {
            src.mode
        } else {
            existing.map(|m| m.mode).unwrap_or(src.mode & !self.umask)
        };
        let mut item = Item::new(UpdateType::LocalChange, Kind::Dir, path.clone());
        let mut fix = SetMeta::default();
        if existing.is_none() || already_created {
            item.created = true;
            if !self.opts.dry_run && !already_created {
                // Owner needs write access while we fill it; final bits are set afterwards.
                if let Err(e) = self.dest().mkdir(path, final_mode | 0o700).await {
                    self.fail(e)?;
                    return Ok(false);
                }
            }
            self.outcome.stats.created_dirs += 1;
            self.outcome.stats.created_files += 1;
            fix.mode = Some(final_mode);
            if self.opts.times {
                fix.mtime = Some(src.mtime);
            }
            self.owner_fix(src, None, &mut fix, &mut item);
        } else if let Some(dest) = existing {
            item.update = UpdateType::NoUpdate;
            if self.opts.times && (src.mtime - dest.mtime).abs() > self.opts.modify_window {
                item.time = true;
            }
            if self.opts.perms && modes_differ(src.mode, dest.mode) {
                item.perms = true;
            }
            self.owner_fix(src, Some(dest), &mut fix, &mut item);
            if self.opts.times {
                // Always restored at the end: filling the directory changes its mtime.
                fix.mtime = Some(src.mtime);
            }
            if item.perms {
                fix.mode = Some(final_mode);
            }
        }
        self.outcome.stats.dirs += 1;
        self.outcome.stats.files += 1;
        if item.is_change() {
            self.item(item);
        }
        if !fix.is_empty() {
            self.dir_fixes.push(DirFix {
                path: path.clone(),
                meta: fix,
            });
        }
        Ok(true)
    }

    fn owner_fix(&self, src: &Meta, dest: Option<&Meta>, fix: &mut SetMeta, item: &mut Item) {
        if !self.dest().can_chown() {
            return;
        }
        if self.opts.owner {
            if let Some(uid) = src.uid {
                if dest.and_then(|d| d.uid) != Some(uid) {
                    fix.uid = Some(uid);
                    item.owner = dest.is_some();
                }
            }
        }
        if self.opts.group {
            if let Some(gid) = src.gid {
                if dest.and_then(|d| d.gid) != Some(gid) {
                    fix.gid = Some(gid);
                    item.group = dest.is_some();
                }
            }
        }
        // SFTP v3 sets uid and gid together: fill in the other half from what is there.
        if fix.uid.is_some() || fix.gid.is_some() {
            fix.uid = fix.uid.or(dest.and_then(|d| d.uid)).or(src.uid);
            fix.gid = fix.gid.or(dest.and_then(|d| d.gid)).or(src.gid);
        }
    }

    async fn apply_dir_fixes(&mut self) {
        if self.opts.dry_run {
            return;
        }
        // Deepest first, so nothing we do afterwards touches a fixed directory again.
        let fixes = std::mem::take(&mut self.dir_fixes);
        for fix in fixes.into_iter().rev() {
            if let Err(e) = self.dest().set_meta(&fix.path, Kind::Dir, &fix.meta).await {
                if self.fail(e).is_err() {
                    return;
                }
            }
        }
    }

    /// Removes whatever is in the way of a new entry of another type. False if it could not be.
    async fn remove_for_replace(&mut self, path: &RelPath, meta: &Meta) -> Result<bool, Fatal> {
        if self.opts.dry_run {
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
            for e in self.dest().read_dir(path).await? {
                if invalid_name_reason(&e.name).is_some() {
                    continue;
                }
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

    async fn delete_extraneous(
        &mut self,
        dir: &RelPath,
        children: &[Child],
        dest_entries: &HashMap<Vec<u8>, Meta>,
    ) -> Result<(), Fatal> {
        if dest_entries.is_empty() {
            return Ok(());
        }
        let wanted: HashSet<&[u8]> = children.iter().map(|c| c.name.as_slice()).collect();
        let mut extra: Vec<Child> = dest_entries
            .iter()
            .filter(|(name, _)| !wanted.contains(name.as_slice()))
            .map(|(name, meta)| Child {
                name: name.clone(),
                meta: meta.clone(),
                source: 0,
            })
            .collect();
        sort_rsync(&mut extra);
        for e in extra.into_iter().rev() {
            let path = join(dir, &e.name);
            if self
                .opts
                .filters
                .protected_on_receiver(&path, e.meta.kind == Kind::Dir)
            {
                continue;
            }
            self.pending_deletions.push((path, e.meta));
        }
        Ok(())
    }

    async fn delete_pending(&mut self) -> Result<(), Fatal> {
        if self.outcome.source_io_error && !self.opts.ignore_errors {
            return Ok(());
        }
        for (path, meta) in std::mem::take(&mut self.pending_deletions) {
            self.delete_entry(path, meta).await?;
        }
        Ok(())
    }

    fn max_delete_reached(&mut self) -> bool {
        let reached = self
            .opts
            .max_delete
            .is_some_and(|max| self.deletions >= max);
        self.outcome.max_delete_reached |= reached;
        reached
    }

    fn delete_entry(&mut self, path: RelPath, meta: Meta) -> Step<'_> {
        Box::pin(async move {
            if self.max_delete_reached() {
                return Ok(());
            }
            if meta.kind == Kind::Dir {
                let list = match self.dest().read_dir(&path).await {
                    Ok(l) => l,
                    Err(e) => return self.fail(e),
                };
                let mut kids: Vec<Child> = list
                    .into_iter()
                    .filter(|e| invalid_name_reason(&e.name).is_none())
                    .map(|e| Child {
                        name: e.name,
                        meta: e.meta,
                        source: 0,
                    })
                    .collect();
                sort_rsync(&mut kids);
                for k in kids.into_iter().rev() {
                    let p = join(&path, &k.name);
                    self.delete_entry(p, k.meta).await?;
                }
            }
            if self.max_delete_reached() {
                return Ok(());
            }
            if !self.opts.dry_run {
                let r = if meta.kind == Kind::Dir {
                    self.dest().remove_dir(&path).await
                } else {
                    self.dest().remove_file(&path).await
                };
                if let Err(e) = r {
                    return self.fail(e);
                }
            }
            self.deletions += 1;
            self.outcome.stats.deleted_files += 1;
            match meta.kind {
                Kind::Dir => self.outcome.stats.deleted_dirs += 1,
                Kind::Symlink => self.outcome.stats.deleted_symlinks += 1,
                _ => self.outcome.stats.deleted_regular += 1,
            }
            self.item(Item::new(UpdateType::Deleting, meta.kind, path));
            Ok(())
        })
    }

    /// Files, symlinks and special files. `dest_path` differs from the source path only for a
    /// single file copied under a new name.
    async fn non_dir(
        &mut self,
        child: &Child,
        dest_path: RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let src_tree = self.job.sources[child.source].tree.clone();
        let src_path = if self.job.dest_file_name.is_some() {
            child.name.clone()
        } else {
            dest_path.clone()
        };
        self.outcome.stats.files += 1;
        match child.meta.kind {
            Kind::File => {
                self.outcome.stats.regular_files += 1;
                self.outcome.stats.total_size += child.meta.size;
                self.file(&*src_tree, &src_path, &child.meta, dest_path, existing)
                    .await
            }
            Kind::Symlink => {
                self.outcome.stats.symlinks += 1;
                self.outcome.stats.total_size += child.meta.size;
                if !self.opts.links {
                    self.reporter.warning(&format!(
                        "skipping non-regular file \"{}\"",
                        display_path(&src_path)
                    ));
                    return Ok(());
                }
                self.symlink(&*src_tree, &src_path, &child.meta, dest_path, existing)
                    .await
            }
            Kind::Device | Kind::Special | Kind::Unknown => {
                if child.meta.kind == Kind::Device {
                    self.outcome.stats.devices += 1;
                } else {
                    self.outcome.stats.specials += 1;
                }
                let wanted = match child.meta.kind {
                    Kind::Device => self.opts.devices,
                    _ => self.opts.specials,
                };
                let why = if wanted {
                    // Neither SFTP nor this port's local side creates device nodes or FIFOs.
                    " (device and special files cannot be created over SFTP)"
                } else {
                    ""
                };
                self.reporter.warning(&format!(
                    "skipping non-regular file \"{}\"{why}",
                    display_path(&src_path)
                ));
                Ok(())
            }
            Kind::Dir => Ok(()),
        }
    }

    async fn symlink(
        &mut self,
        src_tree: &dyn Tree,
        src_path: &RelPath,
        src: &Meta,
        dest_path: RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let target = match src_tree.read_link(src_path).await {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return self.vanished(src_path),
            Err(e) => return self.source_error(e),
        };
        let mut item = Item::new(UpdateType::LocalChange, Kind::Symlink, dest_path.clone());
        item.link_target = Some(target.clone());
        let mut create = true;
        match &existing {
            None => {
                if self.opts.existing {
                    return Ok(());
                }
                item.created = true;
            }
            Some(m) if m.kind == Kind::Symlink => match self.dest().read_link(&dest_path).await {
                Ok(t) if t == target => {
                    create = false;
                    item.update = UpdateType::NoUpdate;
                    if self.opts.times
                        && self.dest().side() == Side::Local
                        && (src.mtime - m.mtime).abs() > self.opts.modify_window
                    {
                        item.time = true;
                    }
                }
                Ok(_) => {
                    item.checksum = true;
                    if !self.opts.dry_run {
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
        if create {
            if item.created {
                self.outcome.stats.created_files += 1;
                self.outcome.stats.created_symlinks += 1;
            }
            if !self.opts.dry_run {
                if let Err(e) = self.dest().symlink(&dest_path, &target).await {
                    return self.fail(e);
                }
            }
        }
        let mut fix = SetMeta::default();
        if self.opts.times && (create || item.time) {
            fix.mtime = Some(src.mtime);
        }
        let dest_link = if create { None } else { existing.as_ref() };
        self.owner_fix(src, dest_link, &mut fix, &mut item);
        if !fix.is_empty() && !self.opts.dry_run {
            // Not every server can set a link's own times or owner; no reason to fail.
            let _ = self.dest().set_meta(&dest_path, Kind::Symlink, &fix).await;
        }
        if item.is_change() {
            self.item(item);
        }
        Ok(())
    }

    fn vanished(&mut self, path: &[u8]) -> Result<(), Fatal> {
        self.outcome.vanished += 1;
        self.reporter
            .warning(&format!("file has vanished: \"{}\"", display_path(path)));
        Ok(())
    }

    async fn file(
        &mut self,
        src_tree: &dyn Tree,
        src_path: &RelPath,
        src: &Meta,
        dest_path: RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let opts = self.opts;
        let existing_file = existing.as_ref().filter(|m| m.kind == Kind::File);
        if existing.is_none() && opts.existing {
            return Ok(());
        }
        if existing_file.is_some() && opts.ignore_existing {
            return Ok(());
        }
        if let Some(d) = existing_file {
            if opts.update && d.mtime > src.mtime {
                return Ok(());
            }
        }

        // -H: a later name of an inode already written becomes a hard link to it.
        if opts.hard_links && src.nlink > 1 {
            if let Some(id) = src.dev_ino {
                if let Some(first) = self.hard_links.get(&id).cloned() {
                    return self.hard_link(first, dest_path, src, existing).await;
                }
                self.hard_links.insert(id, dest_path.clone());
            }
        }

        let mut item = Item::new(self.update_type(), Kind::File, dest_path.clone());
        let mut transfer = true;
        if let Some(d) = existing_file {
            let size_differs = d.size != src.size;
            let time_differs = (src.mtime - d.mtime).abs() > opts.modify_window;
            transfer = if size_differs {
                true
            } else if opts.size_only {
                false
            } else if opts.checksum {
                match self.same_content(src_tree, src_path, &dest_path).await? {
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
            if opts.perms && modes_differ(src.mode, d.mode) {
                item.perms = true;
            }
        } else {
            item.created = true;
        }

        let mode = if opts.perms {
            src.mode
        } else if let Some(d) = existing_file {
            d.mode
        } else {
            src.mode & 0o777 & !self.umask
        };
        let mut meta = SetMeta {
            mode: Some(mode),
            mtime: opts.times.then_some(src.mtime),
            ..Default::default()
        };
        self.owner_fix(src, existing_file, &mut meta, &mut item);
        if transfer {
            // The temp file is new and owned by whoever wrote it, whatever the old one had.
            let mut ignored = item.clone();
            self.owner_fix(src, None, &mut meta, &mut ignored);
        }

        if !transfer {
            if !item.is_change() {
                return Ok(());
            }
            let fix = SetMeta {
                mode: item.perms.then_some(mode),
                mtime: (opts.times && item.time).then_some(src.mtime),
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
            self.outcome.stats.created_files += 1;
            self.outcome.stats.created_regular += 1;
        }
        if opts.dry_run {
            self.outcome.stats.transferred_files += 1;
            self.outcome.stats.transferred_size += src.size;
            self.item(item);
            return Ok(());
        }
        match self
            .copy_file(src_tree, src_path, src, &dest_path, &meta)
            .await
        {
            Ok(CopyResult::Done(bytes)) => {
                self.outcome.stats.transferred_files += 1;
                self.outcome.stats.transferred_size += bytes;
                self.outcome.stats.literal_data += bytes;
                item.transferred = bytes;
                self.item(item);
                Ok(())
            }
            Ok(CopyResult::Vanished) => self.vanished(src_path),
            Err(CopyError::Source(e)) => self.source_error(e),
            Err(CopyError::Dest(e)) => self.fail(e),
        }
    }

    async fn hard_link(
        &mut self,
        first: RelPath,
        dest_path: RelPath,
        src: &Meta,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        if let Some(d) = &existing {
            // SFTP cannot tell us whether the two names already share an inode; a file that
            // passes the quick check is taken as already linked.
            if d.kind == Kind::File
                && d.size == src.size
                && (d.mtime - src.mtime).abs() <= self.opts.modify_window
            {
                return Ok(());
            }
        }
        let mut item = Item::new(UpdateType::HardLink, Kind::File, dest_path.clone());
        item.created = true;
        item.hard_link_to = Some(first.clone());
        if !self.opts.dry_run {
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
        self.outcome.stats.created_files += 1;
        self.outcome.stats.created_regular += 1;
        self.item(item);
        Ok(())
    }

    /// Compares contents by hash. `None` when one side could not be read (already reported).
    async fn same_content(
        &mut self,
        src_tree: &dyn Tree,
        src_path: &RelPath,
        dest_path: &RelPath,
    ) -> Result<Option<bool>, Fatal> {
        let a = match hash_file(src_tree, src_path).await {
            Ok(h) => h,
            Err(e) if e.is_not_found() => {
                self.vanished(src_path)?;
                return Ok(None);
            }
            Err(e) => {
                self.source_error(e)?;
                return Ok(None);
            }
        };
        let b = match hash_file(self.dest(), dest_path).await {
            Ok(h) => h,
            Err(e) => {
                self.fail(e)?;
                return Ok(None);
            }
        };
        Ok(Some(a == b))
    }

    fn temp_name(&mut self, dest_path: &[u8]) -> RelPath {
        self.temp_counter += 1;
        let name = file_name(dest_path);
        // Room for the dot, the suffix and a 255-byte name limit.
        let keep = &name[..name.len().min(200)];
        let mut t = Vec::with_capacity(keep.len() + 16);
        t.push(b'.');
        t.extend_from_slice(keep);
        t.extend_from_slice(format!(".{}", temp_suffix(self.temp_counter)).as_bytes());
        join(parent(dest_path), &t)
    }

    async fn copy_file(
        &mut self,
        src_tree: &dyn Tree,
        src_path: &RelPath,
        src: &Meta,
        dest_path: &RelPath,
        meta: &SetMeta,
    ) -> Result<CopyResult, CopyError> {
        let mut reader = match src_tree.open_read(src_path).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(CopyResult::Vanished),
            Err(e) => return Err(CopyError::Source(e)),
        };
        let temp = self.temp_name(dest_path);
        let mut writer = match self.dest().create_file(&temp, 0o600).await {
            Ok(w) => w,
            Err(e) => {
                let _ = reader.close().await;
                return Err(CopyError::Dest(e));
            }
        };
        let mut done: u64 = 0;
        let copied: Result<(), CopyError> = async {
            while let Some(chunk) = reader.next_chunk().await.map_err(CopyError::Source)? {
                done += chunk.len() as u64;
                writer.write(chunk).await.map_err(CopyError::Dest)?;
                self.reporter.progress(dest_path, done, src.size.max(done));
            }
            Ok(())
        }
        .await;
        let _ = reader.close().await;
        let result = match copied {
            Ok(()) => match writer.finish(meta).await {
                Ok(()) => self
                    .dest()
                    .rename_replace(&temp, dest_path)
                    .await
                    .map_err(CopyError::Dest),
                Err(e) => Err(CopyError::Dest(e)),
            },
            Err(e) => {
                writer.abandon().await;
                Err(e)
            }
        };
        match result {
            Ok(()) => Ok(CopyResult::Done(done)),
            Err(e) => {
                // The old file is untouched; only our temp goes.
                let connection_lost = matches!(&e, CopyError::Dest(d) | CopyError::Source(d) if d.kind == ErrorKind::Connection);
                if !connection_lost {
                    let _ = self.dest().remove_file(&temp).await;
                }
                Err(e)
            }
        }
    }
}

enum CopyResult {
    Done(u64),
    Vanished,
}

enum CopyError {
    Source(TreeError),
    Dest(TreeError),
}

fn not_found(op: &'static str, side: Side, path: &[u8]) -> TreeError {
    TreeError {
        op,
        side,
        path: path.to_vec(),
        cause: "No such file or directory (2)".into(),
        kind: ErrorKind::NotFound,
    }
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
    let mut reader = tree.open_read(path).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_suffixes_differ() {
        let a = temp_suffix(1);
        let b = temp_suffix(2);
        assert_eq!(a.len(), 6);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}

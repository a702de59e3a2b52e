//! The sync itself: walk source and destination together in rsync's order, decide, apply.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::backup::Backup;
use crate::delta_index::RemoteIndex;
use crate::filter::FilterRules;
use crate::link_dest::{AltDest, LinkDest, Linked};
use crate::mtime::mtimes_differ;
use crate::options::{DeleteWhen, MissingArgs, SyncOptions};
use crate::path::{display_path, join, parent, unsafe_symlink, RelPath};
use crate::prune::{self, PruneScan};
use crate::report::{Item, Progress, Reporter, Skipped, Stats, UpdateType};
use crate::task::{
    modes_differ, partial_file_name, sort_rsync_by, Delayed, Fatal, Gate, KeptPartial, Report,
    Resend, Shared, SourceEntry, Synced, Worker,
};
use crate::tree::{DirEntry, ErrorKind, Kind, Meta, SetMeta, Side, Tree, TreeError, TreeResult};
use crate::validate::validate_listing;

/// What a source argument contributes to the top of the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceContent {
    /// `src/`: the directory's contents go into the destination itself.
    Contents,
    /// `src` (no trailing slash): the entry of this name, inside the tree's root.
    Named(Vec<u8>),
    /// `-R` and `--files-from`: the entry at this path below the tree's root, recreated at
    /// the same path below the destination with the directories above it ("implied").
    /// `contents`: a directory's own entries come too, one level deep, even without `-r`
    /// (a `--files-from` line ending in `/`).
    Relative { path: Vec<u8>, contents: bool },
}

/// Entries sent by path (`SourceContent::Relative`), merged into one tree of names.
#[derive(Default)]
struct Planned {
    /// The first source that names this path or a path below it.
    source: usize,
    /// Named itself, not only implied by a path below it.
    explicit: bool,
    contents: bool,
    children: BTreeMap<Vec<u8>, Planned>,
}

impl Planned {
    fn add(&mut self, source: usize, path: &[u8], contents: bool) {
        let mut node = self;
        for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            node = node
                .children
                .entry(name.to_vec())
                .or_insert_with(|| Planned {
                    source,
                    ..Planned::default()
                });
        }
        node.explicit = true;
        node.contents |= contents;
    }

    /// The paths named at or below this node (at `path`), parents first.
    fn named_paths(&self, path: &[u8], out: &mut Vec<RelPath>) {
        if self.explicit {
            out.push(path.to_vec());
        }
        for (name, child) in &self.children {
            child.named_paths(&join(path, name), out);
        }
    }
}

/// One line of output in its place: an item, or a note between items.
enum Told {
    Item(Item),
    Notice(String),
}

impl Told {
    fn item(&self) -> Option<&Item> {
        match self {
            Told::Item(item) => Some(item),
            Told::Notice(_) => None,
        }
    }
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
    /// The one non-directory entry the sources send (all named ones, the others left out),
    /// copied under a new name: the destination tree is rooted at the parent directory and
    /// the entry is written under this name.
    pub dest_file_name: Option<Vec<u8>>,
    /// The destination was named as a directory (with a trailing `/`): a missing one is
    /// made even when nothing goes into it. Otherwise, as rsync, it is made only for
    /// something to put in it.
    pub dest_is_dir: bool,
    /// Entries worked on at once (copies, links, deletions) per lane of the busiest side
    /// (`Tree::lanes`); each keeps its own requests in flight, so this is what hides round
    /// trips.
    pub tasks_per_lane: usize,
    /// What earlier runs wrote to a remote destination, for delta transfer; `None` sends
    /// changed files whole.
    pub index: Option<Arc<RemoteIndex>>,
    /// With an absolute `--partial-dir=DIR`: a tree rooted at DIR on the destination's side
    /// (and, when remote, on its session). Partial files live there under their base names
    /// and are renamed into the destination from there.
    pub partial_dir_tree: Option<Arc<dyn Tree>>,
    /// `-T DIR`: a tree rooted at DIR on the destination's side (and session). New versions
    /// are written there under temp names and renamed into the destination from there.
    pub temp_dir_tree: Option<Arc<dyn Tree>>,
    /// Told how far the run has got while it runs, for progress displays.
    pub progress: Option<Arc<dyn Progress>>,
    /// `--backup`: where replaced and deleted destination entries are kept.
    pub backup: Option<Arc<Backup>>,
    /// `--link-dest`: where unchanged files are linked from instead of sent.
    pub link_dest: Option<Arc<LinkDest>>,
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
    /// Deletions left undone because of --max-delete (rsync's code 25 when not zero).
    pub deletions_skipped: u64,
    /// The run could not go on at all: the connection died, or the destination could not be
    /// set up. Carries the error; the caller maps it to 10/11/12.
    pub fatal: Option<TreeError>,
}

/// What one finished task has to tell, kept until the tasks started before it have told
/// theirs.
struct Held {
    /// Items and notices, in the order they are told.
    told: Vec<Told>,
    /// Source entries removed (`--remove-source-files`), told after the items.
    removed_sources: Vec<RelPath>,
}

impl Held {
    /// `notices` are placed before the item at their index.
    fn new(items: Vec<Item>, notices: Vec<(usize, String)>, removed_sources: Vec<RelPath>) -> Self {
        let mut told = Vec::with_capacity(items.len() + notices.len());
        let mut notices = notices.into_iter().peekable();
        for (i, item) in items.into_iter().enumerate() {
            while let Some((_, n)) = notices.next_if(|(at, _)| *at <= i) {
                told.push(Told::Notice(n));
            }
            told.push(Told::Item(item));
        }
        told.extend(notices.map(|(_, n)| Told::Notice(n)));
        Held {
            told,
            removed_sources,
        }
    }
}

/// Directories whose listings are fetched ahead of the walk.
const LISTINGS_AHEAD: usize = 128;
/// `-m`: subdirectories looked through at once for something that keeps them.
const PRUNE_LOOKS_AT_ONCE: usize = 16;
/// Finished tasks whose items may wait for an earlier, slower one before being printed.
const MAX_HELD: usize = 4096;

type Step<'a> = Pin<Box<dyn Future<Output = Result<(), Fatal>> + Send + 'a>>;

struct Child {
    name: Vec<u8>,
    meta: Meta,
    source: usize,
    /// `--delete-missing-args`: a named source that does not exist, listed (as a file, like
    /// rsync's entry of mode 0) so that the destination's entry of its name is deleted.
    missing: bool,
}

struct DirFix {
    path: RelPath,
    meta: SetMeta,
    /// The directory's own attributes differ; otherwise the fix only restores an mtime that
    /// changes to its contents would have moved.
    differs: bool,
    /// Opens once the directory exists; closed when making it failed, which was reported
    /// then, and a fix would only fail again with a confusing "no such file".
    made: Gate,
}

/// A later name of an inode, linked once every file has been written.
struct LinkJob {
    first: RelPath,
    dest_path: RelPath,
    src: SourceEntry,
    existing: Option<Meta>,
}

/// Both sides' listings of one directory.
pub(crate) struct Listing {
    pub(crate) source: TreeResult<Vec<DirEntry>>,
    /// Source symlinks that were to be followed but lead nowhere; dropped from `source`.
    pub(crate) dangling: Vec<TreeError>,
    /// `None` when the destination directory does not exist yet.
    dest: Option<TreeResult<Vec<DirEntry>>>,
}

/// Which source symlinks are sent as what they point to (`-L`, `--copy-unsafe-links`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowLinks {
    None,
    All,
    Unsafe,
}

impl FollowLinks {
    pub(crate) fn from_options(opts: &SyncOptions) -> FollowLinks {
        if opts.copy_links {
            FollowLinks::All
        } else if opts.copy_unsafe_links {
            FollowLinks::Unsafe
        } else {
            FollowLinks::None
        }
    }
}

pub(crate) async fn list_source(
    source: &dyn Tree,
    path: &RelPath,
    follow: FollowLinks,
) -> (TreeResult<Vec<DirEntry>>, Vec<TreeError>) {
    match source.read_dir(path).await {
        Ok(mut entries) => {
            let dangling = follow_links(source, path, &mut entries, follow).await;
            (Ok(entries), dangling)
        }
        Err(e) => (Err(e), Vec::new()),
    }
}

async fn list_both(
    source: Arc<dyn Tree>,
    dest: Option<Arc<dyn Tree>>,
    path: RelPath,
    follow: FollowLinks,
) -> Listing {
    match dest {
        None => {
            let (source, dangling) = list_source(&*source, &path, follow).await;
            Listing {
                source,
                dangling,
                dest: None,
            }
        }
        Some(dest) => {
            let ((source, dangling), d) =
                futures::join!(list_source(&*source, &path, follow), dest.read_dir(&path));
            Listing {
                source,
                dangling,
                dest: Some(d),
            }
        }
    }
}

/// Gives each symlink that is to be followed its referent's metadata, so the walk copies a
/// file or enters a directory there. Links that lead nowhere are taken out and returned as
/// errors, as rsync's "symlink has no referent".
async fn follow_links(
    tree: &dyn Tree,
    dir: &RelPath,
    entries: &mut Vec<DirEntry>,
    follow: FollowLinks,
) -> Vec<TreeError> {
    if follow == FollowLinks::None {
        return Vec::new();
    }
    let lookups = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.meta.kind == Kind::Symlink)
        .map(|(i, e)| {
            let path = join(dir, &e.name);
            let size = e.meta.size;
            async move { (i, referent(tree, &path, Some(size), follow).await) }
        });
    let mut dropped = HashSet::new();
    let mut errors = Vec::new();
    for (i, r) in futures::future::join_all(lookups).await {
        match r {
            Ok(Some(meta)) => entries[i].meta = meta,
            Ok(None) => {}
            Err(e) => {
                dropped.insert(i);
                errors.push(e);
            }
        }
    }
    if !dropped.is_empty() {
        let mut i = 0;
        entries.retain(|_| {
            i += 1;
            !dropped.contains(&(i - 1))
        });
    }
    errors
}

/// The metadata to use for a symlink at `path`: its referent's when it is to be followed,
/// `None` when it stays a link.
pub(crate) async fn referent(
    tree: &dyn Tree,
    path: &RelPath,
    listed_size: Option<u64>,
    follow: FollowLinks,
) -> TreeResult<Option<Meta>> {
    if follow == FollowLinks::Unsafe
        && !unsafe_symlink(&tree.read_link(path, listed_size).await?, path)
    {
        return Ok(None);
    }
    match tree.stat(path).await? {
        Some(meta) => Ok(Some(meta)),
        None => Err(TreeError {
            op: "follow symlink",
            side: tree.side(),
            path: path.clone(),
            cause: "symlink has no referent".into(),
            kind: ErrorKind::Other,
        }),
    }
}

/// An entry named on the command line (`SRC` without a trailing slash), followed when it
/// is a symlink to be followed.
pub(crate) async fn top_entry_meta(
    tree: &dyn Tree,
    name: &RelPath,
    follow: FollowLinks,
) -> TreeResult<Option<Meta>> {
    match tree.lstat(name).await? {
        Some(m) if m.kind == Kind::Symlink && follow != FollowLinks::None => Ok(Some(
            referent(tree, name, Some(m.size), follow)
                .await?
                .unwrap_or(m),
        )),
        other => Ok(other),
    }
}

/// What becomes of an entry named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopEntry {
    Sent,
    /// Left out by the filter rules, silently.
    Excluded,
    /// A directory with neither `-r` nor `-d`: left out with rsync's "skipping directory".
    SkippedDir,
}

/// Judges a name given on the command line as rsync's file list does: the filter rules
/// apply to it like to any name, as `name` (the last component of the operand, the top of
/// the transfer), and only what they keep is then skipped for being a directory. Only the
/// rules given on the command line count: no per-directory file is read above it.
pub fn top_entry(opts: &SyncOptions, name: &[u8], is_dir: bool) -> TopEntry {
    if opts.filters.excluded_on_sender(name, is_dir) {
        TopEntry::Excluded
    } else if is_dir && !opts.recursive && !opts.dirs {
        TopEntry::SkippedDir
    } else {
        TopEntry::Sent
    }
}

/// A directory the walk will enter, maybe already being listed.
pub(crate) struct Upcoming {
    pub(crate) path: RelPath,
    pub(crate) source: Arc<dyn Tree>,
    pub(crate) dest: Option<Arc<dyn Tree>>,
    pub(crate) follow: FollowLinks,
    pub(crate) started: Option<JoinHandle<Listing>>,
}

impl Upcoming {
    pub(crate) async fn listing(self) -> Listing {
        match self.started {
            Some(handle) => match handle.await {
                Ok(listing) => listing,
                Err(e) => Listing {
                    source: Err(listing_task_failed(self.source.side(), self.path, e)),
                    dangling: Vec::new(),
                    dest: None,
                },
            },
            None => list_both(self.source, self.dest, self.path, self.follow).await,
        }
    }
}

/// Lists directories ahead of the walk, in the order the walk will visit them, so that round
/// trips overlap. At most `LISTINGS_AHEAD` are held at once, which bounds memory.
#[derive(Default)]
pub(crate) struct Prefetch {
    upcoming: VecDeque<Upcoming>,
}

impl Prefetch {
    /// The subdirectories of the directory being walked come next, before anything queued.
    pub(crate) fn announce(&mut self, dirs: Vec<Upcoming>) {
        for d in dirs.into_iter().rev() {
            self.upcoming.push_front(d);
        }
        self.pump();
    }

    fn pump(&mut self) {
        for u in self.upcoming.iter_mut().take(LISTINGS_AHEAD) {
            if u.started.is_none() {
                let (s, d, p) = (u.source.clone(), u.dest.clone(), u.path.clone());
                u.started = Some(tokio::spawn(list_both(s, d, p, u.follow)));
            }
        }
    }

    /// The next directory of the walk; always the front, since the walk is depth first.
    pub(crate) fn take(&mut self, path: &RelPath) -> Option<Upcoming> {
        let u = if self.upcoming.front().is_some_and(|u| &u.path == path) {
            self.upcoming.pop_front()
        } else {
            let at = self.upcoming.iter().position(|u| &u.path == path)?;
            self.upcoming.remove(at)
        };
        self.pump();
        u
    }
}

struct Run<'a> {
    job: &'a SyncJob,
    sh: Arc<Shared>,
    reporter: &'a dyn Reporter,
    outcome: SyncOutcome,
    tasks: JoinSet<(u64, Report)>,
    /// Items come out in the order the walk started their tasks, like rsync's: each task
    /// gets a number, and finished ones wait in `held` until those before them are printed.
    next_seq: u64,
    next_to_print: u64,
    held: BTreeMap<u64, Held>,
    tasks_per_lane: usize,
    prefetch: Prefetch,
    dir_fixes: Vec<DirFix>,
    /// Directories whose entries were added, replaced or removed: their mtime moved.
    touched_dirs: HashSet<RelPath>,
    /// For -H: first destination path written for each source inode.
    hard_links: HashMap<(u64, u64), RelPath>,
    links: Vec<LinkJob>,
    /// `--append-verify` files to send again after the walk.
    resends: Vec<Resend>,
    /// `--delay-updates` files waiting to be renamed into place after every copy.
    delayed: Vec<Delayed>,
    /// Extraneous destination entries, deleted once the whole source has been read without
    /// error: a source that could not be listed completely must never cause a deletion.
    /// Each with the receiver's rules that protect what is inside it.
    pending_deletions: Vec<(RelPath, Meta, Arc<FilterRules>)>,
    /// The `--delete-before` pass: the walk only lists and finds what to delete.
    scan_only: bool,
    /// The rules before any per-directory filter file is read.
    base_filters: Arc<FilterRules>,
    /// Rules for the entries of directories whose per-directory files were read, while the
    /// walk is inside them.
    dir_filters: HashMap<RelPath, Arc<FilterRules>>,
    /// The same from the destination's filter files, for what `--delete` spares.
    dest_dir_filters: HashMap<RelPath, Arc<FilterRules>>,
    /// The names `dir-merge` rules look for.
    merge_names: Arc<Vec<Vec<u8>>>,
    /// `-m`: directories rsync's list would hold twice, which it never prunes.
    listed_twice: Arc<HashSet<RelPath>>,
    /// `-m`: directories a look ahead found to be kept, not to be looked through again.
    kept_known: HashSet<RelPath>,
    /// `-m`: directories above or named by `-R`/`--files-from` paths that are left out.
    pruned_planned: HashSet<RelPath>,
}

/// An entry of rsync's file list, for finding its last one (`Run::last_listed_dir`).
struct Listed<'p> {
    name: Vec<u8>,
    is_dir: bool,
    /// Named or implied by `-R`/`--files-from` paths: what is named below it.
    node: Option<&'p Planned>,
    /// Its contents are in the list: reached by the recursion, or named with `-r`.
    walked: bool,
    source: usize,
}

/// Whether directories above entries sent by path get their source attributes
/// (`--no-implied-dirs` turns it off).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Implied {
    WithAttributes,
    Plain,
}

/// Runs one sync. Never panics on bad input and never prints: everything goes to `reporter`.
pub async fn run(job: &SyncJob, opts: &SyncOptions, reporter: &dyn Reporter) -> SyncOutcome {
    let mut shared = Shared::new(
        opts.clone(),
        job.dest.clone(),
        job.index.clone(),
        job.partial_dir_tree.clone(),
        job.progress.clone(),
    );
    shared.backup = job.backup.clone();
    shared.temp_tree = job.temp_dir_tree.clone();
    let mut run = Run {
        job,
        sh: Arc::new(shared),
        reporter,
        outcome: SyncOutcome::default(),
        tasks: JoinSet::new(),
        next_seq: 0,
        next_to_print: 0,
        held: BTreeMap::new(),
        tasks_per_lane: job.tasks_per_lane.max(1),
        prefetch: Prefetch::default(),
        dir_fixes: Vec::new(),
        touched_dirs: HashSet::new(),
        hard_links: HashMap::new(),
        links: Vec::new(),
        resends: Vec::new(),
        delayed: Vec::new(),
        pending_deletions: Vec::new(),
        scan_only: false,
        base_filters: Arc::new(opts.filters.clone()),
        dir_filters: HashMap::new(),
        dest_dir_filters: HashMap::new(),
        merge_names: Arc::new(opts.filters.dir_merge_names()),
        listed_twice: Arc::default(),
        kept_known: HashSet::new(),
        pruned_planned: HashSet::new(),
    };
    if let Err(Fatal(e)) = run.phases().await {
        run.outcome.fatal = Some(e);
    }
    run.print_held(usize::MAX);
    let partial_dir_used = run
        .sh
        .partial_dir_used
        .load(std::sync::atomic::Ordering::Relaxed);
    if let (Some(t), None, true) = (&job.partial_dir_tree, &run.outcome.fatal, partial_dir_used) {
        // As rsync, the partial dir goes once empty; one in use by every file can only be
        // tried when all are done. One holding kept partials (or the user's files) stays.
        let _ = t.remove_dir(&Vec::new()).await;
    }
    if let Some(w) = job.index.as_ref().and_then(|ix| ix.flush()) {
        reporter.warning(&w);
    }
    // Whatever is still running after a fatal error can only fail; stop it.
    run.tasks.abort_all();
    run.outcome
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

fn sort_rsync(children: &mut [Child]) {
    sort_rsync_by(children, |c| (&c.name, c.meta.kind));
}

impl<'a> Run<'a> {
    fn dest(&self) -> &dyn Tree {
        &*self.job.dest
    }

    fn opts(&self) -> &SyncOptions {
        &self.sh.opts
    }

    async fn phases(&mut self) -> Result<(), Fatal> {
        if self.opts().delete && self.opts().delete_when == DeleteWhen::Before {
            self.scan_only = true;
            let scanned = self.top().await;
            self.scan_only = false;
            scanned?;
            self.delete_pending().await?;
            self.drain().await?;
        }
        self.top().await?;
        if let Some(p) = &self.job.progress {
            p.walk_done();
        }
        self.drain().await?;
        for resend in std::mem::take(&mut self.resends) {
            let sh = self.sh.clone();
            self.spawn(async move {
                let mut w = Worker::new(sh);
                let r = w.resend(resend).await;
                w.finish(r)
            })
            .await?;
        }
        self.drain().await?;
        // --delay-updates: every file written, now all go into place in quick succession.
        for delayed in std::mem::take(&mut self.delayed) {
            let sh = self.sh.clone();
            self.spawn(async move {
                let mut w = Worker::new(sh);
                let r = w.put_in_place(delayed).await;
                w.finish(r)
            })
            .await?;
        }
        self.drain().await?;
        // Links need their first name in place, so they wait for every copy.
        for link in std::mem::take(&mut self.links) {
            let sh = self.sh.clone();
            self.spawn(async move {
                let mut w = Worker::new(sh);
                let r = w
                    .hard_link(link.first, link.dest_path, link.src, link.existing)
                    .await;
                w.finish(r)
            })
            .await?;
        }
        self.drain().await?;
        self.delete_pending().await?;
        self.drain().await?;
        self.apply_dir_fixes().await
    }

    /// Folds a finished task's report into the outcome. `seq` places its items in the
    /// output; `None` prints them at once.
    fn absorb(&mut self, seq: Option<u64>, report: Report) -> Result<(), Fatal> {
        self.release(
            seq,
            Held::new(report.items, report.notices, report.removed_sources),
        );
        for w in &report.warnings {
            self.reporter.warning(w);
        }
        for i in &report.verbose_infos {
            self.reporter.verbose_info(i);
        }
        for e in &report.errors {
            self.reporter.error(e);
        }
        self.outcome.errors += report.errors.len() as u64;
        self.outcome.vanished += report.vanished;
        self.outcome.source_io_error |= report.source_io_error;
        self.outcome.deletions_skipped += report.deletions_skipped;
        self.outcome.stats += report.stats;
        self.resends.extend(report.resends);
        self.delayed.extend(report.delayed);
        match report.fatal {
            Some(e) => Err(Fatal(e)),
            None => Ok(()),
        }
    }

    /// Remembers which directories the items touched and prints them in walk order, each
    /// notice before the item at its position.
    fn release(&mut self, seq: Option<u64>, held: Held) {
        for item in held.told.iter().filter_map(Told::item) {
            let adds_or_removes = item.created
                || matches!(
                    item.update,
                    UpdateType::Sent | UpdateType::Received | UpdateType::Deleting
                )
                || item.checksum && item.kind == Kind::Symlink;
            if adds_or_removes && !item.path.is_empty() {
                self.touched_dirs.insert(parent(&item.path).to_vec());
            }
        }
        match seq {
            Some(seq) if seq >= self.next_to_print => {
                self.held.insert(seq, held);
                self.print_held(MAX_HELD);
            }
            _ => self.tell(held),
        }
    }

    fn tell(&self, held: Held) {
        for t in &held.told {
            match t {
                Told::Item(item) => self.reporter.item(item),
                Told::Notice(n) => self.reporter.notice(n),
            }
        }
        for path in &held.removed_sources {
            self.reporter.source_removed(path);
        }
    }

    /// Prints held items whose turn has come. Past `limit` held results, one slow transfer
    /// no longer holds up the output: the oldest are printed even with gaps before them.
    fn print_held(&mut self, limit: usize) {
        loop {
            let over_limit = self.held.len() > limit;
            let Some(entry) = self.held.first_entry() else {
                return;
            };
            let seq = *entry.key();
            if seq != self.next_to_print && !over_limit {
                return;
            }
            let held = entry.remove();
            self.tell(held);
            self.next_to_print = seq + 1;
        }
    }

    /// A walker-side item, in its place among the tasks' items.
    fn walker_item(&mut self, item: Item) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.release(Some(seq), Held::new(vec![item], Vec::new(), Vec::new()));
    }

    fn joined(&mut self, r: Result<(u64, Report), JoinError>) -> Result<(), Fatal> {
        self.tell_progress();
        match r {
            Ok((seq, report)) => self.absorb(Some(seq), report),
            Err(_) => Ok(()), // cancelled: only after a fatal error
        }
    }

    fn tell_progress(&self) {
        if let Some(p) = &self.job.progress {
            let s = &self.outcome.stats;
            p.walked(s.files, s.total_size, self.tasks.len() as u64);
        }
    }

    /// How many tasks may run: more as channels come up, so that the first burst of work
    /// does not all land on the first channel.
    fn max_tasks(&self) -> usize {
        let lanes = self
            .job
            .sources
            .iter()
            .map(|s| s.tree.lanes())
            .chain(std::iter::once(self.job.dest.lanes()))
            .max()
            .unwrap_or(1);
        self.tasks_per_lane * lanes
    }

    /// Starts a task once fewer than `max_tasks()` are running.
    async fn spawn<F>(&mut self, work: F) -> Result<(), Fatal>
    where
        F: Future<Output = Report> + Send + 'static,
    {
        while let Some(r) = self.tasks.try_join_next() {
            self.joined(r)?;
        }
        while self.tasks.len() >= self.max_tasks() {
            if let Some(r) = self.tasks.join_next().await {
                self.joined(r)?;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let side = self.dest().side();
        self.tasks.spawn(async move {
            let report = AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let mut report = Report::default();
                    report.errors.push(TreeError {
                        op: "finish",
                        side,
                        path: Vec::new(),
                        cause: format!("internal error in a transfer task: {}", panic_text(&panic)),
                        kind: ErrorKind::Other,
                    });
                    report
                });
            (seq, report)
        });
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), Fatal> {
        while let Some(r) = self.tasks.join_next().await {
            self.joined(r)?;
        }
        Ok(())
    }

    /// Runs one worker step inline, for the few things the walk must see finished.
    fn worker(&self) -> Worker {
        Worker::new(self.sh.clone())
    }

    fn fail(&mut self, e: TreeError) -> Result<(), Fatal> {
        if self.scan_only {
            // The walk after the scan meets the same error and reports it.
            return match e.kind {
                ErrorKind::Connection => Err(Fatal(e)),
                _ => Ok(()),
            };
        }
        let mut w = self.worker();
        let r = w.fail(e);
        self.absorb(None, w.finish(r))
    }

    fn source_error(&mut self, e: TreeError) -> Result<(), Fatal> {
        if self.scan_only {
            self.outcome.source_io_error = true;
            return self.fail(e);
        }
        let mut w = self.worker();
        let r = w.source_error(e);
        self.absorb(None, w.finish(r))
    }

    async fn top(&mut self) -> Result<(), Fatal> {
        if let Some(name) = self.job.dest_file_name.clone() {
            if self.scan_only {
                return Ok(());
            }
            return self.top_single_file(name).await;
        }
        // The root's listing and metadata are asked for at once, in case the root turns out
        // to exist: one round trip less before the first comparison.
        let dest = self.job.dest.clone();
        let root_listing = tokio::spawn(async move { dest.read_dir(&Vec::new()).await });
        let dest = self.job.dest.clone();
        let root_stat = tokio::spawn(async move { dest.lstat(&Vec::new()).await });

        // Gather the top level from every source, in argument order, as rsync's sender
        // builds its file list before the receiver looks at the destination.
        let mut children = Vec::new();
        let mut root_source: Option<(usize, Meta)> = None;
        let mut planned = Planned::default();
        let mut whole_sources = false;
        let gathered = self
            .gather_top(
                &mut children,
                &mut root_source,
                &mut planned,
                &mut whole_sources,
            )
            .await;
        if let Err(e) = gathered {
            root_listing.abort();
            root_stat.abort();
            return Err(e);
        }

        let side = self.dest().side();
        let root_meta = match root_stat
            .await
            .unwrap_or_else(|e| Err(listing_task_failed(side, Vec::new(), e)))
        {
            Ok(m) => m,
            Err(e) => {
                root_listing.abort();
                return Err(Fatal(self.at_dest_root(e)));
            }
        };
        let mut root_created = false;
        match root_meta.as_ref().map(|m| m.kind) {
            Some(Kind::Dir) => {}
            Some(_) => {
                root_listing.abort();
                return Err(Fatal(self.at_dest_root(TreeError {
                    op: "use destination",
                    side: self.dest().side(),
                    path: Vec::new(),
                    cause: "destination must be a directory when copying more than one file or a directory".into(),
                    kind: ErrorKind::Selection,
                })));
            }
            None if self.scan_only => {
                root_listing.abort();
                return Ok(());
            }
            None => {
                // As rsync: a missing destination is made when something goes into it, or
                // when it was named as a directory; with nothing to send and no trailing
                // slash there is nothing to make.
                let sends =
                    root_source.is_some() || !children.is_empty() || !planned.children.is_empty();
                if !sends && !self.job.dest_is_dir {
                    root_listing.abort();
                    return Ok(());
                }
                if !self.opts().dry_run {
                    if let Err(e) = self.dest().mkdir(&Vec::new(), 0o755).await {
                        return Err(Fatal(self.at_dest_root(e)));
                    }
                }
                root_created = true;
                self.reporter
                    .info(&format!("created directory {}", self.dest().describe()));
            }
        }

        if self.opts().prune_empty_dirs {
            let opts = self.opts();
            let mut twice =
                prune::listed_twice(&self.job.sources, !opts.no_implied_dirs, opts.recursive);
            // The same directory named by two sources is listed twice too.
            let mut seen = HashSet::new();
            for c in children.iter().filter(|c| c.meta.kind == Kind::Dir) {
                if !seen.insert(&c.name) {
                    twice.insert(c.name.clone());
                }
            }
            if !twice.is_empty() {
                // rsync reaches a directory's second listing only when an entry follows it.
                if let Some(last) = self.last_listed_dir(&planned.children, &children).await {
                    twice.remove(&last);
                }
            }
            self.listed_twice = Arc::new(twice);
        }

        // As rsync, only a directory whose contents are sent has its extraneous entries
        // deleted: the destination itself only when a source is `dir/` (or `.`), not when
        // sources are only named entries inside it.
        let deletes_here = root_source.is_some();
        if let (Some((_, meta)), false) = (root_source, self.scan_only) {
            self.dir_entry(
                &Vec::new(),
                &meta,
                root_meta.as_ref(),
                root_created,
                &Gate::open(),
            )
            .await?;
        }
        let dest_entries = if root_created {
            root_listing.abort();
            HashMap::new()
        } else {
            let side = self.dest().side();
            let listed = root_listing
                .await
                .unwrap_or_else(|e| Err(listing_task_failed(side, Vec::new(), e)));
            self.enter_dir_filters(None, &Vec::new(), Some(&listed))
                .await?;
            self.accept_dest(&Vec::new(), Some(listed))?
        };
        if !planned.children.is_empty() {
            if self.opts().prune_empty_dirs {
                self.pruned_planned.clear();
                self.plan_pruning(Vec::new(), &planned.children).await?;
            }
            let root_entries = dest_entries.clone();
            self.planned(Vec::new(), planned.children, root_entries, Gate::open())
                .await?;
            if !whole_sources {
                // Only named paths: nothing at the top was sent whole, so nothing there is
                // extraneous.
                return Ok(());
            }
        }
        self.contents(
            Vec::new(),
            children,
            dest_entries,
            deletes_here,
            Gate::open(),
        )
        .await
    }

    /// Entries sent by path: each named one as `contents` would treat it, and the
    /// directories above them created (or updated) on the way, with nothing deleted in them.
    fn planned(
        &mut self,
        dir: RelPath,
        nodes: BTreeMap<Vec<u8>, Planned>,
        dest_entries: HashMap<Vec<u8>, Meta>,
        gate: Gate,
    ) -> Step<'_> {
        Box::pin(async move {
            // Every node's metadata first: in rsync's list a directory's files come before its
            // subdirectories.
            let mut looked = Vec::with_capacity(nodes.len());
            for (name, node) in nodes {
                let path = join(&dir, &name);
                if self.pruned_planned.contains(&path) {
                    continue;
                }
                let meta = self.top_entry_meta(node.source, &path).await;
                looked.push((name, node, path, meta));
            }
            // A missing name that is only above others sorts as their directory.
            let (dirs, others): (Vec<_>, Vec<_>) =
                looked.into_iter().partition(|(_, node, _, m)| match m {
                    Ok(Some(m)) => m.kind == Kind::Dir,
                    Ok(None) => !node.explicit,
                    Err(_) => false,
                });
            for (name, node, path, meta) in others.into_iter().chain(dirs) {
                let meta = match meta {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let existing = dest_entries.get(&name).cloned();
                        self.missing_planned(node, path, existing).await?;
                        continue;
                    }
                    Err(e) => {
                        self.source_error(e)?;
                        continue;
                    }
                };
                let is_dir = meta.kind == Kind::Dir;
                if node.explicit && self.filters_at(&dir).excluded_on_sender(&path, is_dir) {
                    continue;
                }
                let existing = dest_entries.get(&name).cloned();
                let child = Child {
                    name,
                    meta,
                    source: node.source,
                    missing: false,
                };
                if !is_dir {
                    if self.scan_only {
                        continue;
                    }
                    let kept = KeptPartial::Unknown;
                    self.non_dir(&child, path.clone(), path, existing, kept, &gate)
                        .await?;
                    continue;
                }
                if node.explicit && self.opts().recursive {
                    // Sent whole, exactly like a directory met in a walk.
                    self.subdir(child, path, existing, &gate).await?;
                    continue;
                }
                if node.explicit && !self.opts().dirs && node.children.is_empty() {
                    if !self.scan_only {
                        self.reporter.skipped(Skipped::Directory, &path);
                    }
                    continue;
                }
                let implied = if node.explicit || !self.opts().no_implied_dirs {
                    Implied::WithAttributes
                } else {
                    Implied::Plain
                };
                let Some((sub_gate, entries)) = self
                    .implied_dir(&child, &path, existing, implied, &gate)
                    .await?
                else {
                    continue;
                };
                if node.contents {
                    let source = child.source;
                    self.one_level(source, &path, &entries, &sub_gate).await?;
                }
                self.planned(path, node.children, entries, sub_gate).await?;
            }
            Ok(())
        })
    }

    /// A directory above (or named without `-r`): made or updated, never emptied. Returns
    /// its gate and the destination's entries in it, `None` when it is unusable.
    async fn implied_dir(
        &mut self,
        child: &Child,
        path: &RelPath,
        existing: Option<Meta>,
        implied: Implied,
        gate: &Gate,
    ) -> Result<Option<(Gate, HashMap<Vec<u8>, Meta>)>, Fatal> {
        if let Some(m) = existing.as_ref().filter(|m| m.kind != Kind::Dir) {
            if self.scan_only {
                return Ok(None);
            }
            let mut w = self.worker();
            let r = w.remove_for_replace(path, m, Kind::Dir).await;
            let removed = matches!(r, Ok(true));
            self.absorb(None, w.finish(r.map(|_| ())))?;
            if !removed {
                return Ok(None);
            }
        }
        let existing_dir = existing.filter(|m| m.kind == Kind::Dir);
        let sub_gate = if self.scan_only {
            if existing_dir.is_none() {
                return Ok(None);
            }
            Gate::open()
        } else if implied == Implied::Plain {
            // --no-implied-dirs: an existing directory is left as it is, a missing one made
            // with default permissions.
            if existing_dir.is_some() || self.opts().dry_run {
                Gate::open()
            } else {
                let (done, new_gate) = Gate::pending();
                let (sh, parent_gate, p) = (self.sh.clone(), gate.clone(), path.clone());
                let mode = 0o777 & !self.sh.umask;
                self.spawn(async move {
                    let mut w = Worker::new(sh);
                    let r = w.mkdir(parent_gate, p, mode, done).await;
                    w.finish(r)
                })
                .await?;
                new_gate
            }
        } else {
            match self
                .dir_entry(path, &child.meta, existing_dir.as_ref(), false, gate)
                .await?
            {
                Some(g) => g,
                None => return Ok(None),
            }
        };
        let entries = match existing_dir {
            Some(_) => {
                let listed = self.dest().read_dir(path).await;
                self.accept_dest(path, Some(listed))?
            }
            None => HashMap::new(),
        };
        Ok(Some((sub_gate, entries)))
    }

    /// A directory sent whole from a named path, as `contents` handles one it meets.
    async fn subdir(
        &mut self,
        child: Child,
        path: RelPath,
        existing: Option<Meta>,
        gate: &Gate,
    ) -> Result<(), Fatal> {
        match &existing {
            Some(m) if m.kind == Kind::Dir => {}
            Some(m) => {
                if self.scan_only {
                    return Ok(());
                }
                let m = m.clone();
                let mut w = self.worker();
                let r = w.remove_for_replace(&path, &m, Kind::Dir).await;
                let removed = matches!(r, Ok(true));
                self.absorb(None, w.finish(r.map(|_| ())))?;
                if !removed {
                    return Ok(());
                }
            }
            None if self.scan_only => return Ok(()),
            None if self.opts().existing => {
                self.not_creating_dir(&path);
                return Ok(());
            }
            None => {}
        }
        let existing_dir = existing.filter(|m| m.kind == Kind::Dir);
        let sub_gate = if self.scan_only {
            Gate::open()
        } else {
            match self
                .dir_entry(&path, &child.meta, existing_dir.as_ref(), false, gate)
                .await?
            {
                Some(g) => g,
                None => return Ok(()),
            }
        };
        let listing = self
            .upcoming(&child, &path, existing_dir.as_ref())
            .listing()
            .await;
        for e in listing.dangling {
            self.source_error(e)?;
        }
        self.enter_dir_filters(Some(child.source), &path, Some(&listing.source))
            .await?;
        self.enter_dir_filters(None, &path, listing.dest.as_ref())
            .await?;
        let Some(list) = self.accept_source(child.source, &path, listing.source)? else {
            return Ok(());
        };
        let dest_entries = self.accept_dest(&path, listing.dest)?;
        self.contents(path, list, dest_entries, true, sub_gate)
            .await
    }

    /// A directory sent without its contents (`-d` without `-r`): made, or its attributes
    /// updated, and an entry of another kind in its place replaced.
    async fn dir_only(
        &mut self,
        child: &Child,
        path: &RelPath,
        existing: Option<Meta>,
        gate: &Gate,
    ) -> Result<(), Fatal> {
        if self.scan_only {
            return Ok(());
        }
        match &existing {
            Some(m) if m.kind != Kind::Dir => {
                let m = m.clone();
                let mut w = self.worker();
                let r = w.remove_for_replace(path, &m, Kind::Dir).await;
                let removed = matches!(r, Ok(true));
                self.absorb(None, w.finish(r.map(|_| ())))?;
                if !removed {
                    return Ok(());
                }
            }
            None if self.opts().existing => return Ok(()),
            _ => {}
        }
        let existing_dir = existing.filter(|m| m.kind == Kind::Dir);
        self.dir_entry(path, &child.meta, existing_dir.as_ref(), false, gate)
            .await?;
        Ok(())
    }

    /// A directory's own entries without going deeper (a `--files-from` line ending in `/`
    /// without `-r`): files as usual, directories made but not entered. Its contents are
    /// sent, so with `--delete` what the source lacks goes, as in rsync.
    async fn one_level(
        &mut self,
        source: usize,
        dir: &RelPath,
        dest_entries: &HashMap<Vec<u8>, Meta>,
        gate: &Gate,
    ) -> Result<(), Fatal> {
        let when = self.opts().delete_when;
        let deletes = self.opts().delete && (when != DeleteWhen::Before || self.scan_only);
        if self.scan_only && !deletes {
            return Ok(());
        }
        let follow = FollowLinks::from_options(self.opts());
        let tree = self.job.sources[source].tree.clone();
        let (listed, dangling) = list_source(&*tree, dir, follow).await;
        for e in dangling {
            self.source_error(e)?;
        }
        self.enter_dir_filters(Some(source), dir, Some(&listed))
            .await?;
        let Some(mut children) = self.accept_source(source, dir, listed)? else {
            return Ok(());
        };
        if self.opts().prune_empty_dirs {
            // Listed without their contents: only what keeps them as they are stays.
            let scan = self.prune_scan(source);
            children.retain(|c| c.meta.kind != Kind::Dir || scan.kept_as_is(&join(dir, &c.name)));
        }
        sort_rsync(&mut children);
        if deletes {
            self.delete_extraneous(dir, &children, dest_entries);
            if when == DeleteWhen::During {
                self.delete_pending().await?;
            }
        }
        if self.scan_only {
            return Ok(());
        }
        for child in children {
            let path = join(dir, &child.name);
            let existing = dest_entries.get(&child.name).cloned();
            if child.meta.kind == Kind::Dir {
                self.implied_dir(&child, &path, existing, Implied::WithAttributes, gate)
                    .await?;
            } else {
                let kept = KeptPartial::Unknown;
                self.non_dir(&child, path.clone(), path, existing, kept, gate)
                    .await?;
            }
        }
        Ok(())
    }

    /// A name sent by path that the source does not have (nor, then, anything below it), as
    /// `--ignore-missing-args` and `--delete-missing-args` say. `existing` is the
    /// destination's entry of that name.
    fn missing_planned(
        &mut self,
        node: Planned,
        path: RelPath,
        existing: Option<Meta>,
    ) -> Step<'_> {
        Box::pin(async move {
            match self.opts().missing_args {
                MissingArgs::Ignore => return Ok(()),
                MissingArgs::Error => {
                    // One error per name, as rsync reports each; not an I/O error that stops
                    // deletions.
                    let side = self.job.sources[node.source].tree.side();
                    let mut named = Vec::new();
                    node.named_paths(&path, &mut named);
                    for p in named {
                        self.fail(not_found("link_stat", side, &p))?;
                    }
                    return Ok(());
                }
                MissingArgs::Delete => {}
            }
            if self.scan_only {
                return Ok(());
            }
            if node.explicit {
                if !self
                    .filters_at(parent(&path))
                    .excluded_on_sender(&path, false)
                {
                    self.delete_missing(&path, existing).await?;
                }
            } else {
                // rsync sends the directories above a missing name too; one that is not there
                // either has vanished.
                let mut w = self.worker();
                let r = w.vanished(&path);
                self.absorb(None, w.finish(r))?;
                if self.opts().incremental_list() {
                    // rsync's incremental list then drops the names below it.
                    return Ok(());
                }
            }
            if node.children.is_empty() {
                return Ok(());
            }
            let entries = match self.dest().lstat(&path).await {
                Ok(Some(m)) if m.kind == Kind::Dir => {
                    let listed = self.dest().read_dir(&path).await;
                    self.accept_dest(&path, Some(listed))?
                }
                Ok(_) => HashMap::new(),
                Err(e) => {
                    self.fail(e)?;
                    HashMap::new()
                }
            };
            for (name, child) in node.children {
                let child_path = join(&path, &name);
                let existing = entries.get(&name).cloned();
                self.missing_planned(child, child_path, existing).await?;
            }
            Ok(())
        })
    }

    /// `--delete-missing-args`: removes the destination's entry for a source name that does
    /// not exist, as rsync deletes an entry it was sent as missing: a directory with its
    /// contents only under `--delete` or `--force`, else only when it is empty.
    async fn delete_missing(
        &mut self,
        path: &RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let Some(meta) = existing else {
            return Ok(());
        };
        // rsync checks the name against the receiver's rules as a file: its entry has no type.
        if self
            .dest_filters_at(parent(path))
            .protected_on_receiver(path, false)
        {
            return Ok(());
        }
        if meta.kind == Kind::Dir && !self.opts().force_delete() {
            match self.dest().read_dir(path).await {
                Ok(entries) if entries.is_empty() => {}
                Ok(_) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let notice =
                        format!("cannot delete non-empty directory: {}", display_path(path));
                    self.release(
                        Some(seq),
                        Held::new(Vec::new(), vec![(0, notice)], Vec::new()),
                    );
                    return Ok(());
                }
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return self.fail(e),
            }
        }
        // Inline, in its place among the items: these are few.
        let mut w = self.worker();
        let rules = self.dest_filters_at(parent(path));
        let r = w.delete_entry(path.clone(), meta, rules).await;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.absorb(Some(seq), w.finish(r))
    }

    /// `-m`: the last entry of rsync's whole file list (sorted: in each directory the files,
    /// then the subdirectories), when it is a directory.
    async fn last_listed_dir(
        &mut self,
        planned: &BTreeMap<Vec<u8>, Planned>,
        children: &[Child],
    ) -> Option<RelPath> {
        let mut entries: Vec<Listed<'_>> = children
            .iter()
            .map(|c| Listed {
                name: c.name.clone(),
                is_dir: c.meta.kind == Kind::Dir,
                node: None,
                walked: true,
                source: c.source,
            })
            .collect();
        let mut dir = Vec::new();
        self.listed_planned(&dir, planned, &mut entries).await;
        loop {
            let Some(last) = entries
                .iter()
                .filter(|e| e.is_dir)
                .max_by(|a, b| a.name.cmp(&b.name))
            else {
                return (entries.is_empty() && !dir.is_empty()).then_some(dir);
            };
            let (node, walked, source) = (last.node, last.walked, last.source);
            dir = join(&dir, &last.name);
            let mut next = Vec::new();
            if walked || node.is_some_and(|n| n.contents) {
                for (name, is_dir) in self.listed_source(source, &dir).await {
                    next.push(Listed {
                        name,
                        is_dir,
                        node: None,
                        walked,
                        source,
                    });
                }
            }
            if let Some(node) = node {
                self.listed_planned(&dir, &node.children, &mut next).await;
            }
            entries = next;
        }
    }

    /// The entries rsync's list has for the nodes below `dir`, merged into `out`.
    async fn listed_planned<'p>(
        &mut self,
        dir: &RelPath,
        nodes: &'p BTreeMap<Vec<u8>, Planned>,
        out: &mut Vec<Listed<'p>>,
    ) {
        let (recursive, dirs, missing_args) = {
            let o = self.opts();
            (o.recursive, o.dirs, o.missing_args)
        };
        for (name, node) in nodes {
            let path = join(dir, name);
            let entry = match self.top_entry_meta(node.source, &path).await {
                Ok(Some(m)) => {
                    let is_dir = m.kind == Kind::Dir;
                    let excluded =
                        node.explicit && self.filters_at(dir).excluded_on_sender(&path, is_dir);
                    let skipped =
                        is_dir && node.explicit && !recursive && !dirs && node.children.is_empty();
                    if excluded || skipped {
                        continue;
                    }
                    Listed {
                        name: name.clone(),
                        is_dir,
                        node: Some(node),
                        walked: is_dir && node.explicit && recursive,
                        source: node.source,
                    }
                }
                Ok(None) if missing_args == MissingArgs::Delete => Listed {
                    name: name.clone(),
                    is_dir: false,
                    node: None,
                    walked: false,
                    source: node.source,
                },
                _ => continue,
            };
            match out.iter_mut().find(|e| e.name == entry.name) {
                Some(e) => {
                    e.walked |= entry.walked;
                    e.node = entry.node;
                }
                None => out.push(entry),
            }
        }
    }

    /// A source directory's entries as the walk would accept them: names and whether each is a
    /// directory. Errors count as nothing here; the walk reports them.
    async fn listed_source(&mut self, source: usize, dir: &RelPath) -> Vec<(Vec<u8>, bool)> {
        let scan = self.prune_scan(source);
        let Ok(entries) = list_source(&*scan.tree, dir, scan.follow).await.0 else {
            return Vec::new();
        };
        let (entries, _) = validate_listing(scan.tree.side(), dir, entries);
        let mut ignored = prune::Scanned::default();
        let rules = scan
            .rules_in(dir, &entries, self.filters_at(parent(dir)), &mut ignored)
            .await;
        entries
            .into_iter()
            .filter(|e| !rules.excluded_on_sender(&join(dir, &e.name), e.meta.kind == Kind::Dir))
            .map(|e| {
                let is_dir = e.meta.kind == Kind::Dir;
                (e.name, is_dir)
            })
            .collect()
    }

    /// `--existing` passes over a directory the receiver lacks, and what is in it.
    fn not_creating_dir(&self, path: &[u8]) {
        self.reporter.skip_note(&format!(
            "not creating new directory \"{}\"",
            display_path(path)
        ));
    }

    /// `-m`'s view of one source.
    fn prune_scan(&self, source: usize) -> PruneScan {
        PruneScan {
            tree: self.job.sources[source].tree.clone(),
            follow: FollowLinks::from_options(self.opts()),
            merge_names: self.merge_names.clone(),
            listed_twice: self.listed_twice.clone(),
            receiver_rules: self.base_filters.clone(),
        }
    }

    /// `-m`: drops the subdirectories of `dir` that would hold no file, before anything is done
    /// in `dir`, so that `--delete` sees them gone as in rsync's pruned list. Several are
    /// looked through at once.
    async fn prune_children(
        &mut self,
        dir: &RelPath,
        children: &mut Vec<Child>,
    ) -> Result<(), Fatal> {
        let above = self.filters_at(dir);
        let mut looks = Vec::new();
        for (i, c) in children.iter().enumerate() {
            if c.meta.kind != Kind::Dir {
                continue;
            }
            let path = join(dir, &c.name);
            let scan = self.prune_scan(c.source);
            if self.kept_known.remove(&path) || scan.kept_as_is(&path) {
                continue;
            }
            looks.push((i, scan, path));
        }
        if looks.is_empty() {
            return Ok(());
        }
        let mut pending = Vec::with_capacity(looks.len());
        for (_, scan, path) in &looks {
            pending.push(scan.keeps(path.clone(), above.clone()));
        }
        let found: Vec<prune::Scanned> = futures::stream::iter(pending)
            .buffered(PRUNE_LOOKS_AT_ONCE)
            .collect()
            .await;
        let mut pruned = HashSet::new();
        for ((i, _, _), f) in looks.iter().zip(found) {
            if f.keeps {
                self.kept_known.extend(f.kept_below);
                continue;
            }
            // Never walked: what could not be read is reported now, as rsync's sender does.
            for e in f.errors {
                self.source_error(e)?;
            }
            pruned.insert(*i);
        }
        let mut i = 0;
        children.retain(|_| {
            i += 1;
            !pruned.contains(&(i - 1))
        });
        Ok(())
    }

    /// `-m` for paths sent by name: records in `pruned_planned` the directories among `nodes`
    /// (below `dir`) that rsync's list would lose, and returns whether any node stays.
    fn plan_pruning<'s>(
        &'s mut self,
        dir: RelPath,
        nodes: &'s BTreeMap<Vec<u8>, Planned>,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Fatal>> + Send + 's>> {
        Box::pin(async move {
            let mut any = false;
            for (name, node) in nodes {
                let path = join(&dir, name);
                let meta = match self.top_entry_meta(node.source, &path).await {
                    Ok(Some(m)) => m,
                    // rsync lists a missing name only to delete it, and then as a file.
                    Ok(None) => {
                        any |= self.opts().missing_args == MissingArgs::Delete;
                        continue;
                    }
                    // The walk reports it.
                    Err(_) => continue,
                };
                let is_dir = meta.kind == Kind::Dir;
                let excluded =
                    node.explicit && self.filters_at(&dir).excluded_on_sender(&path, is_dir);
                if !is_dir {
                    any |= !excluded;
                    continue;
                }
                let scan = self.prune_scan(node.source);
                let mut errors = Vec::new();
                let keeps = if excluded {
                    false
                } else if node.explicit && self.opts().recursive {
                    // Sent whole: like a directory met in the walk.
                    if scan.kept_as_is(&path) {
                        true
                    } else {
                        let found = scan.keeps(path.clone(), self.filters_at(&dir)).await;
                        self.kept_known.extend(found.kept_below);
                        errors = found.errors;
                        found.keeps
                    }
                } else if node.explicit && !self.opts().dirs && node.children.is_empty() {
                    // Skipped without -r: not in the list at all.
                    false
                } else {
                    let mut keeps = scan.kept_as_is(&path);
                    if node.contents {
                        let (listed, dangling) = list_source(&*scan.tree, &path, scan.follow).await;
                        errors.extend(dangling);
                        match listed {
                            Ok(entries) => {
                                let (entries, bad) =
                                    validate_listing(scan.tree.side(), &path, entries);
                                errors.extend(bad);
                                let mut found = prune::Scanned::default();
                                let rules = scan
                                    .rules_in(&path, &entries, self.filters_at(&dir), &mut found)
                                    .await;
                                errors.extend(found.errors);
                                keeps |= entries.iter().any(|e| {
                                    let p = join(&path, &e.name);
                                    let d = e.meta.kind == Kind::Dir;
                                    !rules.excluded_on_sender(&p, d) && (!d || scan.kept_as_is(&p))
                                });
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                    // Always, so that what is pruned further down is known too.
                    let below = self.plan_pruning(path.clone(), &node.children).await?;
                    keeps || below
                };
                if keeps {
                    any = true;
                } else {
                    // Never walked: what could not be read is reported now.
                    for e in errors {
                        self.source_error(e)?;
                    }
                    self.pruned_planned.insert(path);
                }
            }
            Ok(any)
        })
    }

    /// An error about the destination's root names it as the user gave it, not as ".".
    fn at_dest_root(&self, mut e: TreeError) -> TreeError {
        if e.path.is_empty() {
            e.path = self.dest().describe().into_bytes();
        }
        e
    }

    /// An entry of a source named by path, followed if it is a symlink to be followed.
    async fn top_entry_meta(&self, source: usize, path: &RelPath) -> TreeResult<Option<Meta>> {
        let follow = FollowLinks::from_options(self.opts());
        top_entry_meta(&*self.job.sources[source].tree, path, follow).await
    }

    /// The top level of every source, in argument order: the entries of `dir/` sources and
    /// the named ones rsync's file list keeps (into `children`), the first `dir/` source's
    /// root (`root_source`), and the paths sent by `-R`/`--files-from` (`planned`).
    /// `whole_sources`: some source is not sent by path.
    async fn gather_top(
        &mut self,
        children: &mut Vec<Child>,
        root_source: &mut Option<(usize, Meta)>,
        planned: &mut Planned,
        whole_sources: &mut bool,
    ) -> Result<(), Fatal> {
        let follow = FollowLinks::from_options(self.opts());
        for (i, src) in self.job.sources.iter().enumerate() {
            if let SourceContent::Relative { path, contents } = &src.content {
                planned.add(i, path, *contents);
                continue;
            }
            *whole_sources = true;
            match &src.content {
                SourceContent::Contents => {
                    // Listed along with the lstat, for the same reason as the destination.
                    let root = Vec::new();
                    let (meta, (listed, dangling)) = futures::join!(
                        src.tree.lstat(&root),
                        list_source(&*src.tree, &root, follow)
                    );
                    for e in dangling {
                        self.source_error(e)?;
                    }
                    let meta = match meta {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            let root = src.tree.describe().into_bytes();
                            self.source_error(not_found("link_stat", src.tree.side(), &root))?;
                            continue;
                        }
                        Err(e) => {
                            self.source_error(e)?;
                            continue;
                        }
                    };
                    // The `.` of a `dir/` source is not subject to the filter rules.
                    if !self.opts().recursive && !self.opts().dirs {
                        if !self.scan_only {
                            self.reporter.skipped(Skipped::Directory, &root);
                        }
                        continue;
                    }
                    // (`file/` names a file: rsync sends the file itself.)
                    if meta.kind == Kind::Dir && root_source.is_none() {
                        *root_source = Some((i, meta));
                    }
                    self.enter_dir_filters(Some(i), &root, Some(&listed))
                        .await?;
                    if let Some(list) = self.accept_source(i, &root, listed)? {
                        children.extend(list);
                    }
                }
                SourceContent::Named(name) => {
                    let meta = match top_entry_meta(&*src.tree, name, follow).await {
                        Ok(Some(meta)) => meta,
                        Ok(None) => {
                            match self.opts().missing_args {
                                // Not an I/O error in rsync's sense: deletions still happen.
                                MissingArgs::Error => {
                                    let shown = operand_path(&*src.tree, name);
                                    self.fail(not_found("link_stat", src.tree.side(), &shown))?
                                }
                                MissingArgs::Ignore => {}
                                MissingArgs::Delete => {
                                    if top_entry(self.opts(), name, false) != TopEntry::Excluded {
                                        children.push(Child {
                                            name: name.clone(),
                                            meta: missing_meta(),
                                            source: i,
                                            missing: true,
                                        });
                                    }
                                }
                            }
                            continue;
                        }
                        Err(e) => {
                            self.source_error(e)?;
                            continue;
                        }
                    };
                    match top_entry(self.opts(), name, meta.kind == Kind::Dir) {
                        TopEntry::Sent => children.push(Child {
                            name: name.clone(),
                            meta,
                            source: i,
                            missing: false,
                        }),
                        TopEntry::Excluded => {}
                        TopEntry::SkippedDir => {
                            if !self.scan_only {
                                self.reporter.skipped(Skipped::Directory, name);
                            }
                        }
                    }
                }
                SourceContent::Relative { .. } => {}
            }
        }
        Ok(())
    }

    /// One file copied under a new name: the one entry the sources send (rsync's rule is on
    /// its file list, so others may have been named and left out by the filters, skipped as
    /// directories or found missing, which is reported).
    async fn top_single_file(&mut self, dest_name: Vec<u8>) -> Result<(), Fatal> {
        let mut children = Vec::new();
        let mut root_source = None;
        let mut planned = Planned::default();
        let mut whole_sources = false;
        self.gather_top(
            &mut children,
            &mut root_source,
            &mut planned,
            &mut whole_sources,
        )
        .await?;
        // The run was planned for one file; a directory that has come since is not sent.
        let Some(child) = children.into_iter().find(|c| c.meta.kind != Kind::Dir) else {
            return Ok(());
        };
        let dest_meta = match self.dest().lstat(&dest_name).await {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        if child.missing {
            // As rsync: the one name in the list is the destination's.
            return self.delete_missing(&dest_name, dest_meta).await;
        }
        let src_path = child.name.clone();
        let kept = KeptPartial::Unknown;
        self.non_dir(&child, src_path, dest_name, dest_meta, kept, &Gate::open())
            .await
    }

    /// Checks a source listing, dropping excluded and invalid names. `None` when the listing
    /// failed (already reported).
    fn accept_source(
        &mut self,
        source: usize,
        dir: &RelPath,
        listed: TreeResult<Vec<DirEntry>>,
    ) -> Result<Option<Vec<Child>>, Fatal> {
        let side = self.job.sources[source].tree.side();
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                self.source_error(e)?;
                return Ok(None);
            }
        };
        let (entries, bad) = validate_listing(side, dir, entries);
        for e in bad {
            self.source_error(e)?;
        }
        let rules = self.filters_at(dir);
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let path = join(dir, &e.name);
            if rules.excluded_on_sender(&path, e.meta.kind == Kind::Dir) {
                continue;
            }
            out.push(Child {
                name: e.name,
                meta: e.meta,
                source,
                missing: false,
            });
        }
        Ok(Some(out))
    }

    /// The destination's entries by name. Names the destination reports are only used to
    /// compare and delete; the ones that could point elsewhere, or are listed twice, are errors
    /// and dropped.
    fn accept_dest(
        &mut self,
        dir: &RelPath,
        listed: Option<TreeResult<Vec<DirEntry>>>,
    ) -> Result<HashMap<Vec<u8>, Meta>, Fatal> {
        let mut entries = HashMap::new();
        match listed {
            None => {}
            Some(Ok(list)) => {
                let (list, bad) = validate_listing(self.dest().side(), dir, list);
                for e in bad {
                    self.fail(e)?;
                }
                for e in list {
                    entries.insert(e.name, e.meta);
                }
            }
            Some(Err(e)) if e.is_not_found() => {}
            Some(Err(e)) => self.fail(e)?,
        }
        Ok(entries)
    }

    /// Handles the contents of one directory (the directory itself is done by the caller).
    /// Entries are handed to tasks that wait on `gate` until the directory exists.
    /// `deletes_here`: the directory's contents are sent as a whole, so with `--delete` what
    /// the source lacks goes.
    fn contents(
        &mut self,
        dir: RelPath,
        mut children: Vec<Child>,
        dest_entries: HashMap<Vec<u8>, Meta>,
        deletes_here: bool,
        gate: Gate,
    ) -> Step<'_> {
        Box::pin(async move {
            sort_rsync(&mut children);
            // Without -r the subdirectories are only named as skipped, pruned or not.
            if self.opts().prune_empty_dirs && self.opts().recursive {
                self.prune_children(&dir, &mut children).await?;
            }
            let when = self.opts().delete_when;
            // With --delete-before the scan has found them already.
            if self.opts().delete && deletes_here && (when != DeleteWhen::Before || self.scan_only)
            {
                self.delete_extraneous(&dir, &children, &dest_entries);
                if when == DeleteWhen::During {
                    self.delete_pending().await?;
                }
            }

            let mut subdirs = Vec::new();
            for child in children {
                let path = join(&dir, &child.name);
                let existing = dest_entries.get(&child.name).cloned();
                if child.meta.kind == Kind::Dir {
                    // The scan only needs directories that are directories on both sides.
                    if !self.scan_only || existing.as_ref().is_some_and(|m| m.kind == Kind::Dir) {
                        subdirs.push((child, path, existing));
                    }
                    continue;
                }
                if self.scan_only {
                    continue;
                }
                if child.missing {
                    self.delete_missing(&path, existing).await?;
                    continue;
                }
                let kept = self.kept_partial(&child.name, &dest_entries);
                self.non_dir(&child, path.clone(), path, existing, kept, &gate)
                    .await?;
            }
            drop(dest_entries);
            if !self.opts().recursive {
                for (child, path, existing) in subdirs {
                    if self.opts().dirs {
                        // -d: the directory itself is sent, its contents are not.
                        self.dir_only(&child, &path, existing, &gate).await?;
                    } else if !self.scan_only {
                        self.reporter.skipped(Skipped::Directory, &path);
                    }
                }
                return Ok(());
            }

            let upcoming = subdirs
                .iter()
                .map(|(child, path, existing)| self.upcoming(child, path, existing.as_ref()))
                .collect();
            self.prefetch.announce(upcoming);

            for (child, path, existing) in subdirs {
                let upcoming = match self.prefetch.take(&path) {
                    Some(u) => u,
                    None => self.upcoming(&child, &path, existing.as_ref()),
                };
                match &existing {
                    Some(m) if m.kind == Kind::Dir => {}
                    Some(m) => {
                        let m = m.clone();
                        let mut w = self.worker();
                        let r = w.remove_for_replace(&path, &m, Kind::Dir).await;
                        let removed = matches!(r, Ok(true));
                        self.absorb(None, w.finish(r.map(|_| ())))?;
                        if !removed {
                            continue;
                        }
                    }
                    None => {
                        if self.opts().existing {
                            if !self.scan_only {
                                self.not_creating_dir(&path);
                            }
                            continue;
                        }
                    }
                }
                let existing_dir = existing.filter(|m| m.kind == Kind::Dir);
                let sub_gate = if self.scan_only {
                    Gate::open()
                } else {
                    match self
                        .dir_entry(&path, &child.meta, existing_dir.as_ref(), false, &gate)
                        .await?
                    {
                        Some(g) => g,
                        None => continue,
                    }
                };
                let listing = upcoming.listing().await;
                for e in listing.dangling {
                    self.source_error(e)?;
                }
                self.enter_dir_filters(Some(child.source), &path, Some(&listing.source))
                    .await?;
                self.enter_dir_filters(None, &path, listing.dest.as_ref())
                    .await?;
                let Some(list) = self.accept_source(child.source, &path, listing.source)? else {
                    continue;
                };
                let dest_entries = self.accept_dest(&path, listing.dest)?;
                self.contents(path, list, dest_entries, true, sub_gate)
                    .await?;
            }
            self.dir_filters.remove(&dir);
            self.dest_dir_filters.remove(&dir);
            Ok(())
        })
    }

    /// The rules for the entries of `dir` on one side: its own, when per-directory filter
    /// files were read for it, else its nearest ancestor's.
    fn filters_at(&self, dir: &[u8]) -> Arc<FilterRules> {
        Self::nearest(&self.dir_filters, dir, &self.base_filters)
    }

    /// The receiver's: rsync takes the rules that protect from deletion from the filter
    /// files on the receiving side, as they are when the walk reaches the directory.
    fn dest_filters_at(&self, dir: &[u8]) -> Arc<FilterRules> {
        Self::nearest(&self.dest_dir_filters, dir, &self.base_filters)
    }

    fn nearest(
        map: &HashMap<RelPath, Arc<FilterRules>>,
        dir: &[u8],
        base: &Arc<FilterRules>,
    ) -> Arc<FilterRules> {
        let mut d = dir;
        loop {
            if let Some(f) = map.get(d) {
                return f.clone();
            }
            if d.is_empty() {
                return base.clone();
            }
            d = parent(d);
        }
    }

    /// Reads `dir`'s per-directory filter files (`dir-merge`) named in its listing, from a
    /// source (`Some`) or the destination (`None`), and keeps the rules they make for its
    /// entries and those below.
    async fn enter_dir_filters(
        &mut self,
        source: Option<usize>,
        dir: &RelPath,
        listed: Option<&TreeResult<Vec<DirEntry>>>,
    ) -> Result<(), Fatal> {
        if self.merge_names.is_empty() {
            return Ok(());
        }
        let tree = match source {
            Some(i) => self.job.sources[i].tree.clone(),
            None => self.job.dest.clone(),
        };
        let mut files = HashMap::new();
        for e in listed.and_then(|l| l.as_ref().ok()).into_iter().flatten() {
            if e.meta.kind != Kind::File || !self.merge_names.contains(&e.name) {
                continue;
            }
            match read_all(&*tree, &join(dir, &e.name)).await {
                Ok(data) => {
                    files.insert(e.name.clone(), data);
                }
                Err(e) if source.is_some() => self.source_error(e)?,
                Err(e) => self.fail(e)?,
            }
        }
        let above = match (dir.is_empty(), source) {
            (true, _) => self.base_filters.clone(),
            (false, Some(_)) => self.filters_at(parent(dir)),
            (false, None) => self.dest_filters_at(parent(dir)),
        };
        match above.for_subdir(dir, |name| files.get(name).cloned()) {
            Ok(rules) if source.is_some() => {
                self.dir_filters.insert(dir.clone(), Arc::new(rules));
            }
            Ok(rules) => {
                self.dest_dir_filters.insert(dir.clone(), Arc::new(rules));
            }
            Err(e) => {
                // Like a directory that cannot be read: reported, and nothing deleted.
                self.source_error(TreeError {
                    op: "read filter rules in",
                    side: tree.side(),
                    path: dir.clone(),
                    cause: e.to_string(),
                    kind: ErrorKind::Other,
                })?;
            }
        }
        Ok(())
    }

    /// A subdirectory the walk will enter; the destination side is listed only if it exists.
    fn upcoming(&self, child: &Child, path: &RelPath, existing: Option<&Meta>) -> Upcoming {
        Upcoming {
            path: path.clone(),
            source: self.job.sources[child.source].tree.clone(),
            dest: existing
                .filter(|m| m.kind == Kind::Dir)
                .map(|_| self.job.dest.clone()),
            follow: FollowLinks::from_options(self.opts()),
            started: None,
        }
    }

    /// Creates or updates one directory entry (not its contents). `already_created` is for the
    /// destination root made before the walk. Returns the gate its entries wait on, or `None`
    /// when the directory is unusable.
    async fn dir_entry(
        &mut self,
        path: &RelPath,
        src: &Meta,
        existing: Option<&Meta>,
        already_created: bool,
        parent_gate: &Gate,
    ) -> Result<Option<Gate>, Fatal> {
        let sh = self.sh.clone();
        let opts = &sh.opts;
        let final_mode = if opts.perms {
            src.mode
        } else {
            // Without -p a new directory gets no setuid, setgid or sticky bit from the source.
            existing
                .map(|m| m.mode)
                .unwrap_or(src.mode & 0o777 & !sh.umask)
        };
        let mut item = Item::new(UpdateType::LocalChange, Kind::Dir, path.clone()).with_meta(src);
        let mut fix = SetMeta::default();
        let w = self.worker();
        let mut gate = Gate::open();
        if existing.is_none() || already_created {
            let link_basis = match &self.job.link_dest {
                Some(ld) => ld.find_dir(path).await,
                None => None,
            };
            if let Some(b) = &link_basis {
                item.update = UpdateType::NoUpdate;
                item.alt_dest_update = Some(UpdateType::LocalChange);
                let stored = self.dest().stored_mtime(src.mtime);
                item.time = opts.times && mtimes_differ(stored, b.mtime, opts.modify_window);
                item.perms = opts.perms && modes_differ(src.mode, b.mode);
            } else {
                item.created = true;
                self.outcome.stats.created_dirs += 1;
                self.outcome.stats.created_files += 1;
            }
            if !opts.dry_run && !already_created {
                // Owner needs write access while we fill it; final bits are set afterwards.
                let (done, new_gate) = Gate::pending();
                gate = new_gate;
                let (sh, parent_gate, p) = (self.sh.clone(), parent_gate.clone(), path.clone());
                self.spawn(async move {
                    let mut w = Worker::new(sh);
                    let r = w.mkdir(parent_gate, p, final_mode | 0o700, done).await;
                    w.finish(r)
                })
                .await?;
            }
            fix.mode = Some(final_mode);
            if opts.dir_times() {
                fix.mtime = Some(src.mtime);
            }
            w.owner_fix(src, None, &mut fix, &mut item);
        } else if let Some(dest) = existing {
            item.update = UpdateType::NoUpdate;
            let stored = self.dest().stored_mtime(src.mtime);
            if opts.dir_times() && mtimes_differ(stored, dest.mtime, opts.modify_window) {
                item.time = true;
            }
            if opts.perms && modes_differ(src.mode, dest.mode) {
                item.perms = true;
            }
            w.owner_fix(src, Some(dest), &mut fix, &mut item);
            if opts.dir_times() {
                // Always restored at the end: filling the directory changes its mtime.
                fix.mtime = Some(src.mtime);
            }
            fix.times_now = Some((dest.atime, dest.mtime));
            if item.perms {
                fix.mode = Some(final_mode);
            }
        }
        self.outcome.stats.dirs += 1;
        self.outcome.stats.files += 1;
        self.tell_progress();
        if item.is_change() || item.alt_dest_update.is_some() || self.reporter.wants_unchanged() {
            self.walker_item(item.clone());
        }
        if !fix.is_empty() {
            self.dir_fixes.push(DirFix {
                path: path.clone(),
                meta: fix,
                // A directory new here but like its link-dest twin shows no change, yet
                // still needs its attributes.
                differs: item.is_change() || item.alt_dest_update.is_some(),
                made: gate.clone(),
            });
        }
        Ok(Some(gate))
    }

    /// Sets directories' final modes and times once nothing else will touch them: deepest
    /// first, one depth at a time, so a parent never loses search permission before its
    /// children are done.
    async fn apply_dir_fixes(&mut self) -> Result<(), Fatal> {
        if self.opts().dry_run {
            return Ok(());
        }
        let touched = std::mem::take(&mut self.touched_dirs);
        let mut fixes = std::mem::take(&mut self.dir_fixes);
        // A directory that matched and kept its entries needs nothing: no-change runs cost
        // the listings alone.
        fixes.retain(|f| f.differs || touched.contains(&f.path));
        let depth =
            |p: &RelPath| p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty());
        fixes.sort_by_key(|f| std::cmp::Reverse(depth(&f.path)));
        let mut current = None;
        for mut fix in fixes {
            if !fix.made.passable().await {
                continue;
            }
            let d = depth(&fix.path);
            if current.is_some_and(|c| c != d) {
                self.drain().await?;
            }
            current = Some(d);
            let sh = self.sh.clone();
            self.spawn(async move {
                let mut w = Worker::new(sh);
                let r = w.set_meta(fix.path, Kind::Dir, fix.meta).await;
                w.finish(r)
            })
            .await?;
        }
        self.drain().await
    }

    fn delete_extraneous(
        &mut self,
        dir: &RelPath,
        children: &[Child],
        dest_entries: &HashMap<Vec<u8>, Meta>,
    ) {
        if dest_entries.is_empty() {
            return;
        }
        let mut wanted: HashSet<Vec<u8>> = children.iter().map(|c| c.name.clone()).collect();
        if self.opts().partial {
            // A kept partial of a file still in the source is what the next copy resumes.
            for c in children {
                wanted.insert(partial_file_name(&c.name));
            }
        }
        let mut extra: Vec<Child> = dest_entries
            .iter()
            .filter(|(name, _)| !wanted.contains(*name))
            .map(|(name, meta)| Child {
                name: name.clone(),
                meta: meta.clone(),
                source: 0,
                missing: false,
            })
            .collect();
        sort_rsync(&mut extra);
        let rules = self.dest_filters_at(dir);
        for e in extra.into_iter().rev() {
            let path = join(dir, &e.name);
            if rules.protected_on_receiver(&path, e.meta.kind == Kind::Dir) {
                continue;
            }
            self.pending_deletions.push((path, e.meta, rules.clone()));
        }
    }

    /// Deletes what `delete_extraneous` found, unless a source could not be read completely
    /// so far: an entry missing from a listing that failed must not be taken for extraneous.
    async fn delete_pending(&mut self) -> Result<(), Fatal> {
        if self.outcome.source_io_error && !self.opts().ignore_errors {
            return Ok(());
        }
        for (path, meta, rules) in std::mem::take(&mut self.pending_deletions) {
            if self.opts().max_delete.is_some() {
                // One at a time, in rsync's order, so that the limit stops at the same entries.
                let mut w = self.worker();
                let r = w.delete_entry(path, meta, rules).await;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.absorb(Some(seq), w.finish(r))?;
                continue;
            }
            let sh = self.sh.clone();
            self.spawn(async move {
                let mut w = Worker::new(sh);
                let r = w.delete_entry(path, meta, rules).await;
                w.finish(r)
            })
            .await?;
        }
        Ok(())
    }

    /// Whether the destination directory's listing holds a `--partial` file for `name`.
    fn kept_partial(&self, name: &[u8], dest_entries: &HashMap<Vec<u8>, Meta>) -> KeptPartial {
        let opts = self.opts();
        if !opts.partial {
            return KeptPartial::Absent;
        }
        let looked_up = match &opts.partial_dir {
            // Outside the destination: not in any listing the walk has.
            Some(_) if self.job.partial_dir_tree.is_some() => return KeptPartial::Unknown,
            // Inside the directory, which was not listed: only its absence tells.
            Some(dir) if dest_entries.contains_key(dir) => return KeptPartial::Unknown,
            Some(_) => None,
            None => dest_entries.get(&partial_file_name(name)),
        };
        match looked_up {
            Some(m) => KeptPartial::Present(m.clone()),
            None => KeptPartial::Absent,
        }
    }

    /// Files, symlinks and special files. `src_path` differs from `dest_path` only for a
    /// single file copied under a new name.
    async fn non_dir(
        &mut self,
        child: &Child,
        src_path: RelPath,
        dest_path: RelPath,
        existing: Option<Meta>,
        kept_partial: KeptPartial,
        gate: &Gate,
    ) -> Result<(), Fatal> {
        let tree = self.job.sources[child.source].tree.clone();
        let meta = child.meta.clone();
        self.outcome.stats.files += 1;
        match meta.kind {
            Kind::File => {
                self.outcome.stats.regular_files += 1;
                self.outcome.stats.total_size += meta.size;
                self.tell_progress();
                if let Some(why) = self.skip_file(&meta, existing.as_ref(), &dest_path) {
                    self.reporter.skip_note(&why);
                    return Ok(());
                }
                if self.opts().hard_links && meta.nlink > 1 {
                    if let Some(id) = meta.dev_ino {
                        if let Some(first) = self.hard_links.get(&id) {
                            let src = SourceEntry {
                                tree,
                                path: src_path,
                                meta,
                                kept_partial: KeptPartial::Unknown,
                            };
                            self.links.push(LinkJob {
                                first: first.clone(),
                                dest_path,
                                src,
                                existing,
                            });
                            return Ok(());
                        }
                        self.hard_links.insert(id, dest_path.clone());
                    }
                }
                if self.unchanged(&meta, existing.as_ref()) {
                    if self.reporter.wants_unchanged() {
                        let item = Item::new(UpdateType::NoUpdate, Kind::File, dest_path.clone())
                            .with_meta(&meta);
                        self.walker_item(item);
                    }
                    let src = SourceEntry {
                        tree,
                        path: src_path,
                        meta,
                        kept_partial: KeptPartial::Unknown,
                    };
                    return self.remove_up_to_date(src, dest_path).await;
                }
                let src = SourceEntry {
                    tree,
                    path: src_path,
                    meta,
                    kept_partial,
                };
                self.spawn_entry(gate, src, dest_path, existing).await
            }
            Kind::Symlink => {
                self.outcome.stats.symlinks += 1;
                self.outcome.stats.total_size += meta.size;
                self.tell_progress();
                if !self.opts().links {
                    self.reporter.skipped(Skipped::NonRegular, &src_path);
                    return Ok(());
                }
                if self.opts().ignore_existing && existing.is_some() {
                    return Ok(());
                }
                let src = SourceEntry {
                    tree,
                    path: src_path,
                    meta,
                    kept_partial: KeptPartial::Unknown,
                };
                self.spawn_entry(gate, src, dest_path, existing).await
            }
            Kind::Device | Kind::Special | Kind::Unknown => {
                let wanted = if meta.kind == Kind::Device {
                    self.outcome.stats.devices += 1;
                    self.opts().devices
                } else {
                    self.outcome.stats.specials += 1;
                    self.opts().specials
                };
                if wanted {
                    // Neither SFTP nor this port's local side creates device nodes or FIFOs:
                    // where rsync would make one this is a warning, not rsync's note.
                    self.reporter.warning(&format!(
                        "skipping non-regular file \"{}\" (device and special files cannot be created over SFTP)",
                        display_path(&src_path)
                    ));
                } else {
                    self.reporter.skipped(Skipped::NonRegular, &src_path);
                }
                Ok(())
            }
            Kind::Dir => Ok(()),
        }
    }

    /// Hands a file or symlink to a task, which waits until its directory exists.
    async fn spawn_entry(
        &mut self,
        gate: &Gate,
        src: SourceEntry,
        dest_path: RelPath,
        existing: Option<Meta>,
    ) -> Result<(), Fatal> {
        let (sh, mut gate) = (self.sh.clone(), gate.clone());
        let link_dest = self.job.link_dest.clone().filter(|ld| match &existing {
            None => true,
            // rsync looks for a copy only where the destination has nothing.
            Some(m) => m.kind == Kind::File && ld.kind != AltDest::Copy,
        });
        self.spawn(async move {
            let mut w = Worker::new(sh.clone());
            // A directory that could not be made has had its error reported already.
            if !gate.passable().await {
                return w.report;
            }
            let mut basis = None;
            if let (Some(ld), Kind::File) = (&link_dest, src.meta.kind) {
                let replacing = existing.is_some();
                match ld
                    .link(&sh.opts, &*sh.dest, &src.meta, &dest_path, replacing)
                    .await
                {
                    Ok(Linked::Done(how)) => {
                        // rsync shows these only with -ii, as unchanged.
                        let mut item =
                            Item::new(UpdateType::NoUpdate, Kind::File, dest_path.clone())
                                .with_meta(&src.meta);
                        item.alt_dest_update = how;
                        w.report.items.push(item);
                        let r = if w.removes_source(Synced::UpToDate) {
                            w.remove_source(&src, &dest_path, false).await
                        } else {
                            Ok(())
                        };
                        return w.finish(r);
                    }
                    Ok(Linked::No(found)) => {
                        basis = found
                            .filter(|_| existing.is_none())
                            .map(|b| (ld.clone(), b))
                    }
                    Ok(Linked::Unsupported(warning)) => w.report.warnings.push(warning),
                    Err(e) => return w.finish(Err(Fatal(e))),
                }
            }
            let r = if src.meta.kind == Kind::Symlink {
                let link_dest = link_dest.filter(|_| existing.is_none());
                w.symlink(src, dest_path, existing, link_dest).await
            } else {
                w.file(src, dest_path, existing, basis).await
            };
            w.finish(r)
        })
        .await
    }

    /// `--remove-source-files` for a file the listings show to be up to date: a task of its
    /// own, as no other is started for it.
    async fn remove_up_to_date(
        &mut self,
        src: SourceEntry,
        dest_path: RelPath,
    ) -> Result<(), Fatal> {
        if !self.worker().removes_source(Synced::UpToDate) {
            return Ok(());
        }
        let sh = self.sh.clone();
        self.spawn(async move {
            let mut w = Worker::new(sh);
            let r = w.remove_source(&src, &dest_path, false).await;
            w.finish(r)
        })
        .await
    }

    /// A file the listings already show to be up to date in every way the options look at:
    /// no task is started for it, which keeps no-change runs cheap.
    fn unchanged(&self, src: &Meta, existing: Option<&Meta>) -> bool {
        let opts = self.opts();
        let Some(d) = existing.filter(|d| d.kind == Kind::File) else {
            return false;
        };
        let chown = self.dest().can_chown();
        let stored = self.dest().stored_mtime(src.mtime);
        // Without kept mtimes the size decides, except for a source that is then removed:
        // the task sends it rather than trust its size (see `Worker::file`).
        let times_match = if self.dest().keeps_times() {
            !mtimes_differ(stored, d.mtime, opts.modify_window)
        } else {
            !opts.removes_up_to_date()
        };
        !opts.checksum
            && (!opts.ignore_times || opts.size_only)
            && d.size == src.size
            && times_match
            && !crate::task::perms_differ(opts, src.mode, d.mode)
            && !(opts.atimes && src.atime != d.atime)
            && !(opts.owner && chown && src.uid.is_some() && d.uid != src.uid)
            && !(opts.group && chown && src.gid.is_some() && d.gid != src.gid)
    }

    /// --existing, --ignore-existing, --max-size, --min-size and --update, decided from the
    /// listings alone and in rsync's order. Returns why the file is passed over, in rsync's
    /// words for `--info=skip`.
    fn skip_file(&self, src: &Meta, existing: Option<&Meta>, dest_path: &[u8]) -> Option<String> {
        let opts = self.opts();
        let name = display_path(dest_path);
        match existing {
            None if opts.existing => return Some(format!("not creating new file \"{name}\"")),
            // As rsync: whatever is there stays, a directory too.
            Some(_) if opts.ignore_existing => return Some(format!("{name} exists")),
            _ => {}
        }
        if opts.max_size.is_some_and(|max| src.size > max) {
            return Some(format!("{name} is over max-size"));
        }
        if opts.min_size.is_some_and(|min| src.size < min) {
            return Some(format!("{name} is under min-size"));
        }
        match existing {
            Some(d)
                if d.kind == Kind::File
                    && opts.update
                    && d.mtime > self.dest().stored_mtime(src.mtime) =>
            {
                Some(format!("{name} is newer"))
            }
            _ => None,
        }
    }
}

/// The stand-in for a missing named source under `--delete-missing-args`: no type, as rsync's
/// entry of mode 0, so it sorts and counts as a file.
fn missing_meta() -> Meta {
    Meta {
        kind: Kind::File,
        size: 0,
        mtime: 0,
        atime: 0,
        file_type: 0,
        mode: 0,
        uid: None,
        gid: None,
        dev_ino: None,
        nlink: 0,
    }
}

/// A whole (small) file from a tree: a per-directory filter file.
pub(crate) async fn read_all(tree: &dyn Tree, path: &RelPath) -> TreeResult<Vec<u8>> {
    let mut reader = tree.open_read(path, 0, 0).await?;
    let mut data = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        data.extend_from_slice(&chunk);
    }
    reader.close().await?;
    Ok(data)
}

fn listing_task_failed(side: Side, path: RelPath, e: JoinError) -> TreeError {
    TreeError {
        op: "list",
        side,
        path,
        cause: format!("listing task failed: {e}"),
        kind: ErrorKind::Other,
    }
}

/// A source named on the command line as the user wrote it: the root of its tree (which
/// names the host for a remote one) joined with the name.
pub(crate) fn operand_path(tree: &dyn Tree, name: &[u8]) -> Vec<u8> {
    let root = tree.describe();
    if root.is_empty() || root == "." {
        return name.to_vec();
    }
    let mut path = root.into_bytes();
    if !path.ends_with(b"/") && !path.ends_with(b":") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

pub(crate) fn not_found(op: &'static str, side: Side, path: &[u8]) -> TreeError {
    TreeError {
        op,
        side,
        path: path.to_vec(),
        cause: "No such file or directory (2)".into(),
        kind: ErrorKind::NotFound,
    }
}

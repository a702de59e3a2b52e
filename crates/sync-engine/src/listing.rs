//! rsync's listing mode (`--list-only`, or a source with no destination): the sources'
//! entries in the order rsync's file list has them, with the same filters, walked over the
//! [`Tree`] trait. Nothing is compared or written.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::filter::FilterRules;
use crate::options::SyncOptions;
use crate::path::{join, RelPath};
use crate::report::{Reporter, Skipped, Stats};
use crate::sync::{
    list_source, not_found, operand_path, read_all, top_entry, top_entry_meta, FollowLinks,
    Prefetch, SourceContent, SourceRoot, TopEntry, Upcoming,
};
use crate::task::sort_rsync_by;
use crate::tree::{DirEntry, ErrorKind, Kind, Meta, Tree, TreeError, TreeResult};
use crate::validate::validate_listing;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// As rsync prints it: below the root of the source's tree (`dir/sub/f` for a source
    /// `dir`, `sub/f` for `dir/`). Empty for the directory of a `dir/` source itself, which
    /// rsync shows as `.`.
    pub path: RelPath,
    /// The entry's own metadata, or with `-L` (and `--copy-unsafe-links` for unsafe links)
    /// that of what a symlink leads to.
    pub meta: Meta,
    /// What a symlink holds, when symlinks are kept (`-l`); rsync shows it after `->`.
    pub symlink_target: Option<Vec<u8>>,
}

/// Where a listing goes, in rsync's order.
pub trait ListSink: Send {
    fn entry(&mut self, entry: &Listed);
}

/// How a listing went.
#[derive(Debug, Default)]
pub struct ListOutcome {
    /// What was listed, counted as rsync's `--stats` counts a file list.
    pub stats: Stats,
    /// Entries or directories that could not be read (rsync's code 23); each was told to
    /// the reporter.
    pub errors: u64,
    /// The listing could not go on (the connection died).
    pub fatal: Option<TreeError>,
}

/// Lists the sources as rsync's listing mode does, using `opts.recursive`, `opts.dirs`
/// (without either, directories are skipped and told to `reporter`), `opts.links` (symlink targets),
/// `opts.copy_links`/`opts.copy_unsafe_links` and `opts.filters`. The top-level entries of
/// all sources are merged into one sorted list (a name given twice is listed once, a
/// directory in preference to anything else), and each directory is followed by its
/// contents. Errors go to `reporter`; sources sent by path (`SourceContent::Relative`)
/// cannot be listed and end the listing with an `Unsupported` error.
pub async fn list(
    sources: &[SourceRoot],
    opts: &SyncOptions,
    reporter: &dyn Reporter,
    sink: &mut dyn ListSink,
) -> ListOutcome {
    let mut lister = Lister {
        sources,
        opts,
        follow: FollowLinks::from_options(opts),
        merge_names: opts.filters.dir_merge_names(),
        reporter,
        sink,
        prefetch: Prefetch::default(),
        outcome: ListOutcome::default(),
    };
    if let Err(e) = lister.top().await {
        lister.outcome.fatal = Some(e);
    }
    lister.outcome
}

/// Where a directory's entries come from in one source, and the filter rules in force in
/// the directory that holds it there.
#[derive(Clone)]
struct Origin {
    source: usize,
    rules: Arc<FilterRules>,
}

/// An entry waiting to be listed; a directory found in several sources has each of them.
struct Node {
    name: Vec<u8>,
    meta: Meta,
    origins: Vec<Origin>,
}

/// `Err` ends the listing.
type Step<'a> = Pin<Box<dyn Future<Output = Result<(), TreeError>> + Send + 'a>>;

struct Lister<'a> {
    sources: &'a [SourceRoot],
    opts: &'a SyncOptions,
    follow: FollowLinks,
    merge_names: Vec<Vec<u8>>,
    reporter: &'a dyn Reporter,
    sink: &'a mut dyn ListSink,
    prefetch: Prefetch,
    outcome: ListOutcome,
}

impl Lister<'_> {
    fn tree(&self, source: usize) -> &Arc<dyn Tree> {
        &self.sources[source].tree
    }

    /// Reports an error about one entry; one that means the session is gone ends the listing.
    fn error(&mut self, e: TreeError) -> Result<(), TreeError> {
        if e.kind == ErrorKind::Connection {
            return Err(e);
        }
        self.reporter.error(&e);
        self.outcome.errors += 1;
        Ok(())
    }

    fn emit(&mut self, path: RelPath, meta: Meta, symlink_target: Option<Vec<u8>>) {
        let s = &mut self.outcome.stats;
        s.files += 1;
        match meta.kind {
            Kind::File => s.regular_files += 1,
            Kind::Dir => s.dirs += 1,
            Kind::Symlink => s.symlinks += 1,
            Kind::Device => s.devices += 1,
            Kind::Special | Kind::Unknown => s.specials += 1,
        }
        if meta.kind != Kind::Dir {
            s.total_size += meta.size;
        }
        self.sink.entry(&Listed {
            path,
            meta,
            symlink_target,
        });
    }

    /// Directories are sent at all: with `-r`, or `-d` (which listing implies unless
    /// `--no-d`).
    fn sends_dirs(&self) -> bool {
        self.opts.recursive || self.opts.dirs
    }

    async fn top(&mut self) -> Result<(), TreeError> {
        let base = Arc::new(self.opts.filters.clone());
        let mut root: Option<Meta> = None;
        let mut nodes = Vec::new();
        for (i, src) in self.sources.iter().enumerate() {
            match &src.content {
                SourceContent::Contents => {
                    let tree = src.tree.clone();
                    let shown = tree.describe().into_bytes();
                    let meta = match tree.stat(&Vec::new()).await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            self.error(not_found("change_dir", tree.side(), &shown))?;
                            continue;
                        }
                        Err(e) => {
                            // As rsync 3 words it: it changes into a `dir/` source.
                            let e = TreeError {
                                op: "change_dir",
                                ..at_root(e, &shown)
                            };
                            self.error(e)?;
                            continue;
                        }
                    };
                    if meta.kind != Kind::Dir {
                        // rsync 3 changes into a `dir/` source, which fails for a file.
                        self.error(TreeError {
                            op: "change_dir",
                            side: tree.side(),
                            path: shown,
                            cause: "Not a directory (20)".into(),
                            kind: ErrorKind::Selection,
                        })?;
                        continue;
                    }
                    if !self.sends_dirs() {
                        self.reporter.skipped(Skipped::Directory, &Vec::new());
                        continue;
                    }
                    root.get_or_insert(meta);
                    let origin = Origin {
                        source: i,
                        rules: base.clone(),
                    };
                    let (listed, dangling) = list_source(&*tree, &Vec::new(), self.follow).await;
                    for e in dangling {
                        self.error(e)?;
                    }
                    nodes.extend(self.accept(&origin, &Vec::new(), listed).await?);
                }
                SourceContent::Named(name) => {
                    let meta = match top_entry_meta(&*src.tree, name, self.follow).await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            let shown = operand_path(&*src.tree, name);
                            self.error(not_found("link_stat", src.tree.side(), &shown))?;
                            continue;
                        }
                        Err(e) => {
                            self.error(e)?;
                            continue;
                        }
                    };
                    match top_entry(self.opts, name, meta.kind == Kind::Dir) {
                        TopEntry::Sent => {}
                        TopEntry::Excluded => continue,
                        TopEntry::SkippedDir => {
                            self.reporter.skipped(Skipped::Directory, name);
                            continue;
                        }
                    }
                    nodes.push(Node {
                        name: name.clone(),
                        meta,
                        origins: vec![Origin {
                            source: i,
                            rules: base.clone(),
                        }],
                    });
                }
                SourceContent::Relative { .. } => {
                    return Err(TreeError {
                        op: "list",
                        side: src.tree.side(),
                        path: Vec::new(),
                        cause: "listing sources sent by path (-R, --files-from) is not supported"
                            .into(),
                        kind: ErrorKind::Unsupported,
                    });
                }
            }
        }
        if let Some(meta) = root {
            self.emit(Vec::new(), meta, None);
        }
        self.level(Vec::new(), nodes).await
    }

    /// The entries of directory `dir` as one source listed them: checked, with the rules of
    /// its per-directory filter files applied. `origin.rules` are those of the directory
    /// that holds `dir`.
    async fn accept(
        &mut self,
        origin: &Origin,
        dir: &RelPath,
        listed: TreeResult<Vec<DirEntry>>,
    ) -> Result<Vec<Node>, TreeError> {
        let tree = self.tree(origin.source).clone();
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                self.error(e)?;
                return Ok(Vec::new());
            }
        };
        let (entries, bad) = validate_listing(tree.side(), dir, entries);
        for e in bad {
            self.error(e)?;
        }
        let Some(rules) = self.rules_in(&*tree, origin, dir, &entries).await? else {
            return Ok(Vec::new());
        };
        let inner = Origin {
            source: origin.source,
            rules: rules.clone(),
        };
        Ok(entries
            .into_iter()
            .filter(|e| !rules.excluded_on_sender(&join(dir, &e.name), e.meta.kind == Kind::Dir))
            .map(|e| Node {
                name: e.name,
                meta: e.meta,
                origins: vec![inner.clone()],
            })
            .collect())
    }

    /// The rules for the entries of `dir`: those above it with its `dir-merge` files read.
    /// `None` when a filter file is bad, which is reported (the directory is then left out,
    /// as rsync leaves out what it cannot read).
    async fn rules_in(
        &mut self,
        tree: &dyn Tree,
        origin: &Origin,
        dir: &RelPath,
        entries: &[DirEntry],
    ) -> Result<Option<Arc<FilterRules>>, TreeError> {
        if self.merge_names.is_empty() {
            return Ok(Some(origin.rules.clone()));
        }
        let mut files = HashMap::new();
        for e in entries {
            if e.meta.kind != Kind::File || !self.merge_names.contains(&e.name) {
                continue;
            }
            match read_all(tree, &join(dir, &e.name)).await {
                Ok(data) => {
                    files.insert(e.name.clone(), data);
                }
                Err(e) => self.error(e)?,
            }
        }
        match origin
            .rules
            .for_subdir(dir, |name| files.get(name).cloned())
        {
            Ok(rules) => Ok(Some(Arc::new(rules))),
            Err(e) => {
                self.error(TreeError {
                    op: "read filter rules in",
                    side: tree.side(),
                    path: dir.clone(),
                    cause: e.to_string(),
                    kind: ErrorKind::Other,
                })?;
                Ok(None)
            }
        }
    }

    /// Lists the entries of one directory, each directory followed by its own contents
    /// with `-r`.
    fn level(&mut self, dir: RelPath, nodes: Vec<Node>) -> Step<'_> {
        Box::pin(async move {
            let mut nodes = merge_names(nodes);
            sort_rsync_by(&mut nodes, |n| (&n.name, n.meta.kind));
            let targets = symlink_targets(self.sources, self.opts.links, &dir, &nodes).await;
            if self.opts.recursive {
                let upcoming = nodes
                    .iter()
                    .filter(|n| n.meta.kind == Kind::Dir)
                    .map(|n| Upcoming {
                        path: join(&dir, &n.name),
                        source: self.tree(n.origins[0].source).clone(),
                        dest: None,
                        follow: self.follow,
                        started: None,
                    })
                    .collect();
                self.prefetch.announce(upcoming);
            }
            for (node, target) in nodes.into_iter().zip(targets) {
                let path = join(&dir, &node.name);
                let target = match target {
                    Some(Ok(t)) => Some(t),
                    Some(Err(e)) => {
                        // rsync leaves out a symlink it cannot read.
                        self.error(e)?;
                        continue;
                    }
                    None => None,
                };
                let is_dir = node.meta.kind == Kind::Dir;
                self.emit(path.clone(), node.meta, target);
                if is_dir && self.opts.recursive {
                    let mut children = Vec::new();
                    for (k, origin) in node.origins.iter().enumerate() {
                        // Only the first source's listing was asked for ahead.
                        let ahead = if k == 0 {
                            self.prefetch.take(&path)
                        } else {
                            None
                        };
                        let listing = match ahead {
                            Some(u) => u.listing().await,
                            None => {
                                let tree = self.tree(origin.source).clone();
                                Upcoming {
                                    path: path.clone(),
                                    source: tree,
                                    dest: None,
                                    follow: self.follow,
                                    started: None,
                                }
                                .listing()
                                .await
                            }
                        };
                        for e in listing.dangling {
                            self.error(e)?;
                        }
                        children.extend(self.accept(origin, &path, listing.source).await?);
                    }
                    self.level(path, children).await?;
                }
            }
            Ok(())
        })
    }
}

/// With `-l`, what each symlink among `nodes` holds, read all at once; `None` for the other
/// entries.
async fn symlink_targets(
    sources: &[SourceRoot],
    links: bool,
    dir: &RelPath,
    nodes: &[Node],
) -> Vec<Option<TreeResult<Vec<u8>>>> {
    let reads = nodes.iter().map(|n| async move {
        if !links || n.meta.kind != Kind::Symlink {
            return None;
        }
        let tree = &sources[n.origins[0].source].tree;
        Some(tree.read_link(&join(dir, &n.name), Some(n.meta.size)).await)
    });
    futures::future::join_all(reads).await
}

/// One node per name, as rsync cleans its file list: a directory wins over anything else of
/// its name (its contents are listed, from every source that has it), otherwise the first.
fn merge_names(nodes: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
    for node in nodes {
        match at.get(&node.name) {
            None => {
                at.insert(node.name.clone(), out.len());
                out.push(node);
            }
            Some(&i) => {
                let kept = &mut out[i];
                match (kept.meta.kind == Kind::Dir, node.meta.kind == Kind::Dir) {
                    (true, true) => kept.origins.extend(node.origins),
                    (false, true) => *kept = node,
                    _ => {}
                }
            }
        }
    }
    out
}

/// An error about a source's root names it as the user gave it, not as ".".
fn at_root(mut e: TreeError, shown: &[u8]) -> TreeError {
    if e.path.is_empty() {
        e.path = shown.to_vec();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: Kind, source: usize) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            meta: Meta {
                kind,
                size: 0,
                mtime: 0,
                atime: 0,
                mode: 0o644,
                uid: None,
                gid: None,
                dev_ino: None,
                nlink: 1,
                file_type: 0,
            },
            origins: vec![Origin {
                source,
                rules: Arc::new(FilterRules::new()),
            }],
        }
    }

    #[test]
    fn a_name_given_twice_is_listed_once_and_directories_win() {
        let merged = merge_names(vec![
            node("f", Kind::File, 0),
            node("f", Kind::File, 1),
            node("x", Kind::File, 0),
            node("x", Kind::Dir, 1),
            node("d", Kind::Dir, 0),
            node("d", Kind::Dir, 1),
            node("d", Kind::File, 2),
        ]);
        let shown: Vec<(&[u8], Kind, Vec<usize>)> = merged
            .iter()
            .map(|n| {
                let sources = n.origins.iter().map(|o| o.source).collect();
                (&n.name[..], n.meta.kind, sources)
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (&b"f"[..], Kind::File, vec![0]),
                (&b"x"[..], Kind::Dir, vec![1]),
                (&b"d"[..], Kind::Dir, vec![0, 1]),
            ]
        );
    }
}

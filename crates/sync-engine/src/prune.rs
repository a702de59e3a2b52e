//! `-m` (`--prune-empty-dirs`): which directories rsync's file list would lose for holding
//! nothing but other such directories.
//!
//! rsync prunes on the receiver, over the whole file list: a directory stays when a
//! non-directory (of any kind, even one a later rule such as `--max-size` passes over) is
//! listed below it, when a receiver-side rule (`protect`) matches it, or when the list holds it
//! twice. That last case is an artefact of how rsync sends the directories above `-R` and
//! `--files-from` names; a directory it sends twice is never pruned, so [`listed_twice`]
//! retraces that. The walk here asks [`PruneScan::keeps`] before it enters a directory.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::filter::FilterRules;
use crate::path::{join, RelPath};
use crate::sync::{list_source, read_all, FollowLinks, SourceContent, SourceRoot};
use crate::tree::{ErrorKind, Kind, Tree, TreeError};
use crate::validate::validate_listing;

/// The paths sent by path (`-R`, `--files-from`) that rsync's file list holds more than once:
/// named, sent as a directory above a named path, or reached by the recursion or the
/// one-level listing (`--files-from` line ending in `/`) of a named directory.
pub(crate) fn listed_twice(
    sources: &[SourceRoot],
    implied_dirs: bool,
    recursive: bool,
) -> HashSet<RelPath> {
    let mut counts: HashMap<RelPath, u32> = HashMap::new();
    let mut named: Vec<(RelPath, bool)> = Vec::new();
    let mut last_sent = Vec::new();
    for src in sources {
        let SourceContent::Relative { path, contents } = &src.content else {
            continue;
        };
        *counts.entry(path.clone()).or_default() += 1;
        named.push((path.clone(), *contents));
        if !implied_dirs {
            continue;
        }
        if let Some(slash) = path.iter().rposition(|&b| b == b'/') {
            for dir in implied_sends(&path[..slash], &mut last_sent) {
                *counts.entry(dir).or_default() += 1;
            }
        }
    }
    let below = |dir: &[u8], path: &[u8]| {
        path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
    };
    for (path, count) in counts.iter_mut() {
        for (dir, contents) in &named {
            let reached = if recursive {
                below(dir, path)
            } else {
                *contents && below(dir, path) && !path[dir.len() + 1..].contains(&b'/')
            };
            if reached {
                *count += 1;
            }
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(p, _)| p)
        .collect()
}

/// The directories rsync sends above a name whose parent is `parent`, given the parent of the
/// last name that needed any (`last_sent`, updated). rsync skips only the leading directories
/// that the two have in common up to a `/` both share; a parent that is a leading part of the
/// last one sends nothing.
fn implied_sends(parent: &[u8], last_sent: &mut Vec<u8>) -> Vec<RelPath> {
    let mut common_end = 0;
    let mut i = 0;
    loop {
        if i == parent.len() {
            if last_sent.get(i).is_none_or(|&c| c == b'/') {
                return Vec::new();
            }
            break;
        }
        if last_sent.get(i) != Some(&parent[i]) {
            break;
        }
        if parent[i] == b'/' {
            common_end = i;
        }
        i += 1;
    }
    let mut sends: Vec<RelPath> = parent
        .iter()
        .enumerate()
        .skip(common_end + 1)
        .filter(|(_, &c)| c == b'/')
        .map(|(j, _)| parent[..j].to_vec())
        .collect();
    sends.push(parent.to_vec());
    *last_sent = parent.to_vec();
    sends
}

/// What one look below a directory found.
#[derive(Default)]
pub(crate) struct Scanned {
    pub keeps: bool,
    /// Directories below it found to be kept, so the walk need not look again.
    pub kept_below: Vec<RelPath>,
    /// What could not be read. Only worth reporting when the directory is pruned: one that
    /// is kept is walked, and the walk meets the same errors.
    pub errors: Vec<TreeError>,
}

/// Looks through a source directory the way the walk would, with the same filters, for
/// anything that keeps it.
pub(crate) struct PruneScan {
    pub tree: Arc<dyn Tree>,
    pub follow: FollowLinks,
    /// The names `dir-merge` rules read in each directory.
    pub merge_names: Arc<Vec<Vec<u8>>>,
    /// Directories listed twice ([`listed_twice`]).
    pub listed_twice: Arc<HashSet<RelPath>>,
    /// The rules before any per-directory file, for the receiver's `protect` rules.
    pub receiver_rules: Arc<FilterRules>,
}

type ScanStep<'a> = Pin<Box<dyn Future<Output = Scanned> + Send + 'a>>;

impl PruneScan {
    /// Whether a directory at `path` stays in the list without looking inside it.
    pub fn kept_as_is(&self, path: &[u8]) -> bool {
        self.listed_twice.contains(path) || self.receiver_rules.protected_on_receiver(path, true)
    }

    /// Whether `dir` holds anything that keeps it; `above` are the rules in force for its
    /// entries before its own filter files are read.
    pub fn keeps(&self, dir: RelPath, above: Arc<FilterRules>) -> ScanStep<'_> {
        Box::pin(async move {
            let mut out = Scanned::default();
            let (listed, dangling) = list_source(&*self.tree, &dir, self.follow).await;
            out.errors.extend(dangling);
            let entries = match listed {
                Ok(e) => e,
                Err(e) => {
                    out.errors.push(e);
                    return out;
                }
            };
            let (entries, bad) = validate_listing(self.tree.side(), &dir, entries);
            out.errors.extend(bad);
            let rules = self.rules_in(&dir, &entries, above, &mut out).await;
            let mut subdirs = Vec::new();
            for e in entries {
                let path = join(&dir, &e.name);
                let is_dir = e.meta.kind == Kind::Dir;
                if rules.excluded_on_sender(&path, is_dir) {
                    continue;
                }
                if !is_dir {
                    out.keeps = true;
                    return out;
                }
                subdirs.push(path);
            }
            subdirs.sort();
            for path in subdirs {
                if self.kept_as_is(&path) {
                    out.keeps = true;
                    out.kept_below.push(path);
                    return out;
                }
                let sub = self.keeps(path.clone(), rules.clone()).await;
                out.errors.extend(sub.errors);
                if sub.keeps {
                    out.keeps = true;
                    out.kept_below.push(path);
                    out.kept_below.extend(sub.kept_below);
                    return out;
                }
            }
            out
        })
    }

    /// The rules for `dir`'s entries: `above` with its own `dir-merge` files, as the walk
    /// reads them.
    pub(crate) async fn rules_in(
        &self,
        dir: &RelPath,
        entries: &[crate::tree::DirEntry],
        above: Arc<FilterRules>,
        out: &mut Scanned,
    ) -> Arc<FilterRules> {
        if self.merge_names.is_empty() {
            return above;
        }
        let mut files = HashMap::new();
        for e in entries {
            if e.meta.kind != Kind::File || !self.merge_names.contains(&e.name) {
                continue;
            }
            match read_all(&*self.tree, &join(dir, &e.name)).await {
                Ok(data) => {
                    files.insert(e.name.clone(), data);
                }
                Err(e) => out.errors.push(e),
            }
        }
        match above.for_subdir(dir, |name| files.get(name).cloned()) {
            Ok(rules) => Arc::new(rules),
            Err(e) => {
                out.errors.push(TreeError {
                    op: "read filter rules in",
                    side: self.tree.side(),
                    path: dir.clone(),
                    cause: e.to_string(),
                    kind: ErrorKind::Other,
                });
                above
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalTree;

    fn sources(paths: &[&str]) -> Vec<SourceRoot> {
        let tree: Arc<dyn Tree> = Arc::new(LocalTree::new(std::path::PathBuf::from("/")));
        paths
            .iter()
            .map(|p| SourceRoot {
                tree: tree.clone(),
                content: SourceContent::Relative {
                    path: p.trim_end_matches('/').as_bytes().to_vec(),
                    contents: p.ends_with('/'),
                },
            })
            .collect()
    }

    fn twice(paths: &[&str], recursive: bool) -> Vec<String> {
        let mut out: Vec<String> = listed_twice(&sources(paths), true, recursive)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        out.sort();
        out
    }

    /// The cases below were each run through rsync 3 with `-m` to see which empty directories
    /// it keeps.
    #[test]
    fn directories_rsync_lists_twice() {
        // "a" goes with a/b, again with a/b/e (the last one sent was only "a"), again with
        // a/c/f; a/b is named and sent above a/b/e; x is named and sent above x/y.
        assert_eq!(
            twice(&["a/b", "a/b/e", "x", "x/y", "a/c/f"], false),
            ["a", "a/b", "x"]
        );
        // After P/Q, P is a leading part of what was sent: P/D sends nothing above it.
        assert_eq!(twice(&["P/Q/z", "P/D", "P/D/x"], false), ["P/D"]);
        // With -r, P/D's recursion reaches P/D/x a second time.
        assert_eq!(twice(&["P/Q/z", "P/D", "P/D/x"], true), ["P/D", "P/D/x"]);
        // a is sent again after x.
        assert_eq!(twice(&["a/b", "x/y", "a/c"], false), ["a"]);
        assert_eq!(twice(&["a/b", "a/c"], false), Vec::<String>::new());
        // A line ending in '/' lists the directory's entries once more.
        assert_eq!(twice(&["d/", "d/e"], false), ["d", "d/e"]);
        assert_eq!(twice(&["d/", "d/e/f"], false), ["d", "d/e"]);
        assert!(listed_twice(&sources(&["a/b", "a/b/c"]), false, false).is_empty());
    }

    #[test]
    fn implied_sends_skip_only_whole_shared_directories() {
        let mut last = Vec::new();
        let mut sends = |parent: &str| -> Vec<String> {
            implied_sends(parent.as_bytes(), &mut last)
                .into_iter()
                .map(|p| String::from_utf8(p).unwrap())
                .collect()
        };
        assert_eq!(sends("a/b"), ["a", "a/b"]);
        assert_eq!(sends("a/b"), Vec::<String>::new());
        assert_eq!(sends("a"), Vec::<String>::new());
        assert_eq!(sends("a/c"), ["a/c"]);
        assert_eq!(sends("ab"), ["ab"]);
        assert_eq!(sends("a"), ["a"]);
        assert_eq!(sends("a/b/c"), ["a", "a/b", "a/b/c"]);
    }
}

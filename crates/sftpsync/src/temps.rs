//! Remembers the temp files a run created on the destination and has not yet renamed or
//! removed, so a run cut short can clear them away on the next connection.
//!
//! The engine removes its temp file when a copy fails, except when the connection is gone:
//! then nothing can be removed through it. The names are kept here, across reconnects, and
//! removed as soon as a tree that can reach them is at hand.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use sync_engine::path::RelPath;
use sync_engine::tree::{Anchor, DirEntry, FileReader, FileWriter, TreeResult};
use sync_engine::{BlockHashes, HashRange, Kind, Meta, SetMeta, Side, Tree};

/// Temp names created and not yet renamed over their target or removed, relative to the
/// destination tree's root. Shared by every attempt of one run.
#[derive(Default)]
pub struct TempLog {
    names: Mutex<BTreeSet<RelPath>>,
}

impl TempLog {
    /// Removes every remembered temp through `tree`; names that could not be removed are
    /// kept for the next try. A name already gone counts as removed.
    pub async fn clear(&self, tree: &dyn Tree) {
        let names: Vec<RelPath> = self.names.lock().unwrap().iter().cloned().collect();
        for name in names {
            match tree.remove_file(&name).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(_) => continue,
            }
            self.names.lock().unwrap().remove(&name);
        }
    }
}

/// The destination tree, with every file it creates noted in a [`TempLog`] until it is
/// renamed or removed. Everything else passes straight through.
pub struct TrackingTree {
    inner: Arc<dyn Tree>,
    log: Arc<TempLog>,
}

impl TrackingTree {
    pub fn new(inner: Arc<dyn Tree>, log: Arc<TempLog>) -> TrackingTree {
        TrackingTree { inner, log }
    }

    fn forget(&self, path: &RelPath) {
        self.log.names.lock().unwrap().remove(path);
    }

    /// A create that failed for any reason but a lost connection made nothing to clear.
    fn noted_create(
        &self,
        path: &RelPath,
        created: TreeResult<Box<dyn FileWriter>>,
    ) -> TreeResult<Box<dyn FileWriter>> {
        if let Err(e) = &created {
            if e.kind != sync_engine::ErrorKind::Connection {
                self.forget(path);
            }
        }
        created
    }
}

#[async_trait]
impl Tree for TrackingTree {
    fn side(&self) -> Side {
        self.inner.side()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        self.inner.lstat(path).await
    }
    async fn stat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        self.inner.stat(path).await
    }
    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>> {
        self.inner.read_dir(path).await
    }
    async fn read_link(&self, path: &RelPath, listed_size: Option<u64>) -> TreeResult<Vec<u8>> {
        self.inner.read_link(path, listed_size).await
    }
    async fn open_read(
        &self,
        path: &RelPath,
        offset: u64,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>> {
        self.inner.open_read(path, offset, expected_size).await
    }
    async fn create_file(
        &self,
        path: &RelPath,
        mode: u32,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        // Noted before the request goes out: the server may create the file and the
        // connection die before the reply comes back.
        self.log.names.lock().unwrap().insert(path.clone());
        let created = self.inner.create_file(path, mode, expected_size).await;
        self.noted_create(path, created)
    }
    async fn create_file_based_on(
        &self,
        path: &RelPath,
        mode: u32,
        base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.log.names.lock().unwrap().insert(path.clone());
        let created = self.inner.create_file_based_on(path, mode, base).await;
        self.noted_create(path, created)
    }
    fn copies_ranges(&self) -> bool {
        self.inner.copies_ranges()
    }
    async fn reopen_for_append(
        &self,
        path: &RelPath,
        offset: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.inner.reopen_for_append(path, offset).await
    }
    async fn open_in_place(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>> {
        self.inner.open_in_place(path, mode).await
    }
    async fn block_hashes(
        &self,
        path: &RelPath,
        range: HashRange,
    ) -> TreeResult<Option<BlockHashes>> {
        self.inner.block_hashes(path, range).await
    }
    async fn read_range(&self, path: &RelPath, offset: u64, len: u32) -> TreeResult<Bytes> {
        self.inner.read_range(path, offset, len).await
    }
    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        self.inner.mkdir(path, mode).await
    }
    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        self.inner.symlink(path, target).await
    }
    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        self.inner.hard_link(existing, new).await
    }
    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        let r = self.inner.remove_file(path).await;
        if r.is_ok() || r.as_ref().is_err_and(|e| e.is_not_found()) {
            self.forget(path);
        }
        r
    }
    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        self.inner.remove_dir(path).await
    }
    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        let r = self.inner.rename_replace(from, to).await;
        if r.is_ok() {
            self.forget(from);
        }
        r
    }
    fn anchor(&self) -> Anchor {
        self.inner.anchor()
    }
    async fn rename_replace_from(
        &self,
        from_tree: &Anchor,
        from: &RelPath,
        to: &RelPath,
    ) -> TreeResult<()> {
        // `from` is another tree's (an absolute --partial-dir): never one of our temps.
        self.inner.rename_replace_from(from_tree, from, to).await
    }
    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        self.inner.set_meta(path, kind, meta).await
    }
    fn can_chown(&self) -> bool {
        self.inner.can_chown()
    }
    fn keeps_times(&self) -> bool {
        self.inner.keeps_times()
    }
    fn stored_mtime(&self, mtime: i64) -> i64 {
        self.inner.stored_mtime(mtime)
    }
    fn lanes(&self) -> usize {
        self.inner.lanes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::LocalTree;

    #[tokio::test]
    async fn temps_left_by_a_cut_copy_are_removed_and_renamed_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(TempLog::default());
        let tree = TrackingTree::new(Arc::new(LocalTree::new(dir.path())), log.clone());
        let (done, cut) = (b".a.XXXXXX".to_vec(), b".b.YYYYYY".to_vec());
        for name in [&done, &cut] {
            let w = tree.create_file(name, 0o600, 0).await.unwrap();
            w.finish(&SetMeta::default()).await.unwrap();
        }
        tree.rename_replace(&done, &b"a".to_vec()).await.unwrap();
        log.clear(&tree).await;
        assert!(dir.path().join("a").exists());
        assert!(!dir.path().join(".b.YYYYYY").exists());
        assert!(log.names.lock().unwrap().is_empty());
    }
}

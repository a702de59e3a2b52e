//! The delta index seen from a sync: which entry belongs to which destination file, when an
//! entry may be used as the old version's signature, and keeping it current as files are
//! written and deleted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use delta::Signature;
use sync_index::{Entry, Index};

use crate::path::{join, RelPath};
use crate::tree::Meta;

/// Files smaller than this are always sent whole: a delta saves little on them and costs a
/// copy request and a signature in the index.
pub const DELTA_MIN_SIZE: u64 = 64 * 1024;

/// What the index holds that stands for a file's contents.
pub enum IndexedContent {
    /// BLAKE3 of the whole file.
    Hash([u8; 32]),
    /// Its block signature: contents are compared block by block (`delta::BlockCheck`).
    Blocks(Signature),
}

/// The index for one remote destination.
pub struct RemoteIndex {
    index: Arc<Index>,
    /// Whose files these are: the server as ssh resolves it (`user@host:port`).
    server: String,
    /// The destination root as given to the server; entries are keyed by it plus the path.
    root: Vec<u8>,
    /// One failed index write is reported; the run goes on without the entries.
    warned: AtomicBool,
}

impl RemoteIndex {
    pub fn new(index: Arc<Index>, server: String, root: &[u8]) -> RemoteIndex {
        let mut root = root.to_vec();
        while root.len() > 1 && root.ends_with(b"/") {
            root.pop();
        }
        RemoteIndex {
            index,
            server,
            root,
            warned: AtomicBool::new(false),
        }
    }

    fn key(&self, path: &RelPath) -> Vec<u8> {
        if self.root.is_empty() {
            path.clone()
        } else {
            join(&self.root, path)
        }
    }

    /// The signature of what is at `path` now, if the index has one and the file is still
    /// exactly what sftpsync wrote there: same size, same mtime. Anything else (no entry, a
    /// stale or unreadable one) means "send the whole file".
    pub fn base_signature(&self, path: &RelPath, now: &Meta) -> Option<Signature> {
        let entry = self.index.get(&self.server, &self.key(path)).ok()??;
        if entry.size != now.size || entry.mtime != now.mtime || entry.signature.is_empty() {
            return None;
        }
        let sig = Signature::from_bytes(&entry.signature).ok()?;
        (sig.file_len() == now.size).then_some(sig)
    }

    /// What the index knows of the contents at `path`, on the same terms as
    /// `base_signature`: the whole-file hash, or for a big file kept without one, its
    /// signature.
    pub fn content(&self, path: &RelPath, now: &Meta) -> Option<IndexedContent> {
        let entry = self.index.get(&self.server, &self.key(path)).ok()??;
        if entry.size != now.size || entry.mtime != now.mtime {
            return None;
        }
        if let Some(hash) = entry.file_hash {
            return Some(IndexedContent::Hash(hash));
        }
        let sig = Signature::from_bytes(&entry.signature).ok()?;
        (sig.file_len() == now.size).then_some(IndexedContent::Blocks(sig))
    }

    /// Records what was just written. Returns a warning the first time the index cannot be
    /// written.
    pub fn written(&self, path: &RelPath, entry: Entry) -> Option<String> {
        let r = self.index.put(&self.server, &self.key(path), &entry);
        self.once(r)
    }

    /// Forgets `path` and anything below it, after it was deleted or replaced by something
    /// that is not a file.
    pub fn removed(&self, path: &RelPath) -> Option<String> {
        let r = self.index.remove_tree(&self.server, &self.key(path));
        self.once(r)
    }

    fn once(&self, r: Result<(), sync_index::IndexError>) -> Option<String> {
        match r {
            Ok(()) => None,
            Err(e) if !self.warned.swap(true, Ordering::Relaxed) => Some(format!(
                "cannot update the delta index, later runs will send more: {e}"
            )),
            Err(_) => None,
        }
    }

    pub fn flush(&self) -> Option<String> {
        let r = self.index.flush();
        self.once(r)
    }
}

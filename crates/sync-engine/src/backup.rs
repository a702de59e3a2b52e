//! `--backup`: a destination entry about to be replaced or deleted is first kept under its
//! backup name, beside it (NAME + suffix) or in a backup directory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::path::{join, parent, temp_beside, RelPath};
use crate::tree::{ErrorKind, FileWriter, Kind, Meta, SetMeta, Tree, TreeResult};

/// Where backups go.
pub struct Backup {
    /// A relative `--backup-dir`: a path inside the destination tree. `None` with `tree`
    /// `None`: beside each file.
    pub dir: Option<RelPath>,
    /// An absolute `--backup-dir`: a tree of its own on the destination's side (and session).
    pub tree: Option<Arc<dyn Tree>>,
    /// Appended to each backup's name (rsync's default `~`; empty with a backup dir).
    pub suffix: Vec<u8>,
    /// Directories of the backup tree known to exist, so each is looked for once.
    made: Mutex<HashSet<RelPath>>,
    /// Numbers the temp names of backup copies.
    copies: AtomicU64,
}

impl Backup {
    pub fn new(dir: Option<RelPath>, tree: Option<Arc<dyn Tree>>, suffix: Vec<u8>) -> Backup {
        Backup {
            dir,
            tree,
            suffix,
            made: Mutex::new(HashSet::new()),
            copies: AtomicU64::new(0),
        }
    }

    /// The backup name of `path`, in the tree the backup goes to.
    pub fn name(&self, path: &[u8]) -> RelPath {
        let mut p = match &self.dir {
            Some(d) => join(d, path),
            None => path.to_vec(),
        };
        p.extend_from_slice(&self.suffix);
        p
    }

    /// Keeps the entry at `path` of `dest` under its backup name. `replaced`: a new version
    /// is about to be renamed over it, so within one tree the backup is made a hard link
    /// and the name stays in place until then, atomic as before; a server or file system
    /// without hard links gets a rename, as rsync does.
    pub async fn keep(&self, dest: &dyn Tree, path: &RelPath, replaced: bool) -> TreeResult<()> {
        let target = self.name(path);
        let tree: &dyn Tree = self.tree.as_deref().unwrap_or(dest);
        self.make_parents(tree, &target).await?;
        if self.tree.is_some() {
            return tree
                .rename_replace_from(&dest.anchor(), path, &target)
                .await;
        }
        if replaced {
            match dest.remove_file(&target).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            match dest.hard_link(path, &target).await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind == ErrorKind::Connection => return Err(e),
                Err(_) => {}
            }
        }
        dest.rename_replace(path, &target).await
    }

    /// Keeps a copy of the file at `path` of `dest`, whose attributes are `meta`, under its
    /// backup name, for a file about to be rewritten where it is (`--inplace`, `--append`):
    /// a hard link or a rename would hand the backup the very bytes about to change. The
    /// copy is made where the file is when the tree can (`copy-data` on a server), else its
    /// bytes are read and written back; it is made under a temp name and renamed, so a
    /// backup is whole or absent.
    pub async fn keep_copy(&self, dest: &dyn Tree, path: &RelPath, meta: &Meta) -> TreeResult<()> {
        let target = self.name(path);
        let tree: &dyn Tree = self.tree.as_deref().unwrap_or(dest);
        self.make_parents(tree, &target).await?;
        let temp = temp_beside(
            &target,
            "backup",
            self.copies.fetch_add(1, Ordering::Relaxed),
        );
        let attrs = SetMeta {
            mode: Some(meta.mode & 0o7777),
            mtime: Some(meta.mtime),
            ..SetMeta::default()
        };
        let made = if self.tree.is_none() && dest.copies_ranges() {
            let mut writer = dest.create_file_based_on(&temp, 0o600, path).await?;
            let copied = writer.copy_from_base(0, meta.size).await;
            finish_or_abandon(writer, copied, &attrs).await
        } else {
            let mut reader = dest.open_read(path, 0, meta.size).await?;
            let mut writer = tree.create_file(&temp, 0o600, meta.size).await?;
            let mut copied = Ok(());
            loop {
                match reader.next_chunk().await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = writer.write(chunk).await {
                            copied = Err(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        copied = Err(e);
                        break;
                    }
                }
            }
            let _ = reader.close().await;
            finish_or_abandon(writer, copied, &attrs).await
        };
        let placed = match made {
            Ok(()) => tree.rename_replace(&temp, &target).await,
            Err(e) => Err(e),
        };
        if placed.is_err() {
            let _ = tree.remove_file(&temp).await;
        }
        placed
    }

    /// Makes the missing directories above `target` (its root too, for a tree of its own).
    async fn make_parents(&self, tree: &dyn Tree, target: &[u8]) -> TreeResult<()> {
        let mut missing = Vec::new();
        let mut dir = parent(target).to_vec();
        loop {
            if dir.is_empty() && self.tree.is_none() {
                break;
            }
            if self.made.lock().unwrap().contains(&dir) {
                break;
            }
            match tree.lstat(&dir).await? {
                Some(m) if m.kind == Kind::Dir => {
                    self.made.lock().unwrap().insert(dir.clone());
                    break;
                }
                // Something else in the way: the rename reports it.
                Some(_) => return Ok(()),
                None => missing.push(dir.clone()),
            }
            if dir.is_empty() {
                break;
            }
            dir = parent(&dir).to_vec();
        }
        for d in missing.into_iter().rev() {
            if let Err(e) = tree.mkdir(&d, 0o755).await {
                // Another task may have made it meanwhile.
                if !matches!(tree.lstat(&d).await, Ok(Some(m)) if m.kind == Kind::Dir) {
                    return Err(e);
                }
            }
            self.made.lock().unwrap().insert(d);
        }
        Ok(())
    }
}

/// Completes a writer whose bytes went in as `copied` says, or abandons it.
pub(crate) async fn finish_or_abandon(
    writer: Box<dyn FileWriter>,
    copied: TreeResult<()>,
    attrs: &SetMeta,
) -> TreeResult<()> {
    match copied {
        Ok(()) => writer.finish(attrs).await,
        Err(e) => {
            writer.abandon().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalTree;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn backups_go_beside_or_into_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let tree = LocalTree::new(dir.path());
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"old").unwrap();

        let beside = Backup::new(None, None, b"~".to_vec());
        beside.keep(&tree, &b"d/f".to_vec(), true).await.unwrap();
        // A link: the file keeps its name until its new version replaces it.
        let (f, b) = (dir.path().join("d/f"), dir.path().join("d/f~"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().ino(),
            std::fs::metadata(&b).unwrap().ino()
        );
        // An older backup is replaced.
        std::fs::write(&f, b"newer").unwrap();
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&b, b"stale").unwrap();
        beside.keep(&tree, &b"d/f".to_vec(), false).await.unwrap();
        assert!(!f.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"newer");

        let into = Backup::new(Some(b"bak/x".to_vec()), None, Vec::new());
        assert_eq!(into.name(b"d/f~"), b"bak/x/d/f~");
        into.keep(&tree, &b"d/f~".to_vec(), false).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("bak/x/d/f~")).unwrap(),
            b"newer"
        );

        let elsewhere = tempfile::tempdir().unwrap();
        let root = elsewhere.path().join("new");
        std::fs::write(dir.path().join("g"), b"g").unwrap();
        let own = Backup::new(None, Some(Arc::new(LocalTree::new(&root))), b".1".to_vec());
        own.keep(&tree, &b"g".to_vec(), true).await.unwrap();
        assert_eq!(std::fs::read(root.join("g.1")).unwrap(), b"g");
        assert!(!dir.path().join("g").exists());
    }
}

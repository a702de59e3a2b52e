//! `Tree` over an SFTP session: a directory on the server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sftp_client::{
    Attrs, FileKind, Handle, OpenFlags, PendingReply, SftpClient, SftpError, StatusCode,
};

use crate::path::RelPath;
use crate::tree::{
    DirEntry, ErrorKind, FileReader, FileWriter, Kind, Meta, SetMeta, Side, Tree, TreeError,
    TreeResult,
};

/// Reads kept in flight per open file.
const READ_AHEAD: usize = 16;
/// Writes kept in flight per open file.
const WRITE_BEHIND: usize = 16;

/// Things learned about the server once per session, shared by all trees on it.
#[derive(Default)]
pub struct ServerQuirks {
    /// Replacement is not atomic here (no posix-rename); warned once.
    pub warned_non_atomic_rename: AtomicBool,
    /// The server refused ownership changes; stop trying.
    pub chown_refused: AtomicBool,
}

/// A directory on an SFTP server. `base` is as the user gave it: relative paths resolve
/// against the login directory.
pub struct SftpTree {
    client: SftpClient,
    base: Vec<u8>,
    describe: String,
    quirks: Arc<ServerQuirks>,
    warnings: Arc<dyn Fn(String) + Send + Sync>,
}

impl SftpTree {
    pub fn new(
        client: SftpClient,
        base: Vec<u8>,
        describe: String,
        quirks: Arc<ServerQuirks>,
        warnings: Arc<dyn Fn(String) + Send + Sync>,
    ) -> SftpTree {
        // Trailing slashes mean nothing to the server and would double up when joining.
        let mut base = base;
        while base.len() > 1 && base.ends_with(b"/") {
            base.pop();
        }
        SftpTree {
            client,
            base,
            describe,
            quirks,
            warnings,
        }
    }

    fn full(&self, rel: &[u8]) -> Vec<u8> {
        match (self.base.is_empty(), rel.is_empty()) {
            (true, true) => b".".to_vec(),
            (true, false) => rel.to_vec(),
            (false, true) => self.base.clone(),
            (false, false) => {
                let mut p = self.base.clone();
                if !p.ends_with(b"/") {
                    p.push(b'/');
                }
                p.extend_from_slice(rel);
                p
            }
        }
    }
}

pub(crate) fn sftp_error(op: &'static str, path: &[u8], e: SftpError) -> TreeError {
    let kind = match &e {
        SftpError::Status { code, .. } => match code {
            StatusCode::NoSuchFile => ErrorKind::NotFound,
            StatusCode::PermissionDenied => ErrorKind::PermissionDenied,
            StatusCode::OpUnsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        },
        SftpError::Unsupported { .. } => ErrorKind::Unsupported,
        _ if e.is_connection_error() => ErrorKind::Connection,
        _ => ErrorKind::Other,
    };
    TreeError {
        op,
        side: Side::Remote,
        path: path.to_vec(),
        cause: e.to_string(),
        kind,
    }
}

pub(crate) fn meta_from_attrs(a: &Attrs) -> Meta {
    let kind = match a.kind() {
        FileKind::Regular => Kind::File,
        FileKind::Directory => Kind::Dir,
        FileKind::Symlink => Kind::Symlink,
        FileKind::CharDevice | FileKind::BlockDevice => Kind::Device,
        FileKind::Fifo | FileKind::Socket => Kind::Special,
        FileKind::Unknown => Kind::Unknown,
    };
    Meta {
        kind,
        size: a.size.unwrap_or(0),
        mtime: a.mtime().map(i64::from).unwrap_or(0),
        mode: a.permissions.unwrap_or(0) & 0o7777,
        uid: a.uid_gid.map(|(u, _)| u),
        gid: a.uid_gid.map(|(_, g)| g),
        dev_ino: None,
        nlink: 1,
    }
}

/// SFTP v3 times are unsigned 32-bit seconds: clamp what cannot be represented.
fn wire_time(t: i64) -> u32 {
    t.clamp(0, u32::MAX as i64) as u32
}

fn attrs_for(meta: &SetMeta, with_owner: bool) -> Attrs {
    Attrs {
        permissions: meta.mode,
        atime_mtime: meta.mtime.map(|m| (wire_time(m), wire_time(m))),
        uid_gid: match (with_owner, meta.uid, meta.gid) {
            (true, Some(u), Some(g)) => Some((u, g)),
            _ => None,
        },
        ..Default::default()
    }
}

#[async_trait]
impl Tree for SftpTree {
    fn side(&self) -> Side {
        Side::Remote
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        match self.client.lstat(&self.full(path)).await {
            Ok(a) => Ok(Some(meta_from_attrs(&a))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(sftp_error("lstat", path, e)),
        }
    }

    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>> {
        let names = self
            .client
            .read_dir(&self.full(path))
            .await
            .map_err(|e| sftp_error("opendir", path, e))?;
        Ok(names
            .into_iter()
            .filter(|n| n.filename != b"." && n.filename != b"..")
            .map(|n| DirEntry {
                meta: meta_from_attrs(&n.attrs),
                name: n.filename,
            })
            .collect())
    }

    async fn read_link(&self, path: &RelPath) -> TreeResult<Vec<u8>> {
        self.client
            .readlink(&self.full(path))
            .await
            .map_err(|e| sftp_error("readlink", path, e))
    }

    async fn open_read(&self, path: &RelPath) -> TreeResult<Box<dyn FileReader>> {
        let handle = self
            .client
            .open(&self.full(path), OpenFlags::READ, &Attrs::default())
            .await
            .map_err(|e| sftp_error("open", path, e))?;
        Ok(Box::new(SftpReader {
            client: self.client.clone(),
            handle,
            path: path.clone(),
            next_offset: 0,
            in_flight: VecDeque::new(),
            eof: false,
        }))
    }

    async fn create_file(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>> {
        let attrs = Attrs {
            permissions: Some(mode & 0o777),
            ..Default::default()
        };
        let handle = self
            .client
            .open(
                &self.full(path),
                OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::EXCL,
                &attrs,
            )
            .await
            .map_err(|e| sftp_error("create", path, e))?;
        Ok(Box::new(SftpWriter {
            client: self.client.clone(),
            handle,
            path: path.clone(),
            offset: 0,
            in_flight: VecDeque::new(),
            quirks: self.quirks.clone(),
        }))
    }

    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        let attrs = Attrs {
            permissions: Some(mode & 0o7777),
            ..Default::default()
        };
        self.client
            .mkdir(&self.full(path), &attrs)
            .await
            .map_err(|e| sftp_error("mkdir", path, e))
    }

    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        self.client
            .symlink(target, &self.full(path))
            .await
            .map_err(|e| sftp_error("symlink", path, e))
    }

    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        self.client
            .hardlink(&self.full(existing), &self.full(new))
            .await
            .map_err(|e| sftp_error("link", new, e))
    }

    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        self.client
            .remove(&self.full(path))
            .await
            .map_err(|e| sftp_error("unlink", path, e))
    }

    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        self.client
            .rmdir(&self.full(path))
            .await
            .map_err(|e| sftp_error("rmdir", path, e))
    }

    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        let (a, b) = (self.full(from), self.full(to));
        if self.client.extensions().posix_rename {
            return self
                .client
                .posix_rename(&a, &b)
                .await
                .map_err(|e| sftp_error("rename", to, e));
        }
        // Plain RENAME refuses to replace: remove the target first. Between the two requests
        // the target is missing, so say once per run that replacement is not atomic here.
        match self.client.rename(&a, &b).await {
            Ok(()) => Ok(()),
            Err(_) => {
                if !self
                    .quirks
                    .warned_non_atomic_rename
                    .swap(true, Ordering::Relaxed)
                {
                    (self.warnings)(format!(
                        "{} does not offer posix-rename: files are replaced by remove + rename, \
                         not atomically",
                        self.describe
                    ));
                }
                match self.client.remove(&b).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(sftp_error("rename", to, e)),
                }
                self.client
                    .rename(&a, &b)
                    .await
                    .map_err(|e| sftp_error("rename", to, e))
            }
        }
    }

    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        let full = self.full(path);
        let with_owner = !self.quirks.chown_refused.load(Ordering::Relaxed);
        if kind == Kind::Symlink {
            // Only lsetstat leaves the target alone; a link's mode means nothing.
            if !self.client.extensions().lsetstat {
                return Ok(());
            }
            let attrs = Attrs {
                permissions: None,
                ..attrs_for(meta, with_owner)
            };
            if attrs == Attrs::default() {
                return Ok(());
            }
            return self
                .client
                .lsetstat(&full, &attrs)
                .await
                .map_err(|e| sftp_error("set times of", path, e));
        }
        let attrs = attrs_for(meta, with_owner);
        match self.client.setstat(&full, &attrs).await {
            Ok(()) => Ok(()),
            Err(e) if attrs.uid_gid.is_some() => {
                // Most SFTP logins are not root: keep the rest, drop ownership from now on.
                self.quirks.chown_refused.store(true, Ordering::Relaxed);
                let attrs = attrs_for(meta, false);
                self.client
                    .setstat(&full, &attrs)
                    .await
                    .map_err(|_| sftp_error("setstat", path, e))
            }
            Err(e) => Err(sftp_error("setstat", path, e)),
        }
    }

    fn can_chown(&self) -> bool {
        !self.quirks.chown_refused.load(Ordering::Relaxed)
    }
}

struct SftpReader {
    client: SftpClient,
    handle: Handle,
    path: RelPath,
    next_offset: u64,
    in_flight: VecDeque<(u64, u32, PendingReply)>,
    eof: bool,
}

impl SftpReader {
    async fn fill(&mut self) -> TreeResult<()> {
        let size = self.client.read_size();
        while !self.eof && self.in_flight.len() < READ_AHEAD {
            let off = self.next_offset;
            let p = self
                .client
                .send_read(&self.handle, off, size)
                .await
                .map_err(|e| sftp_error("read", &self.path, e))?;
            self.in_flight.push_back((off, size, p));
            self.next_offset += size as u64;
        }
        Ok(())
    }
}

#[async_trait]
impl FileReader for SftpReader {
    async fn next_chunk(&mut self) -> TreeResult<Option<Bytes>> {
        self.fill().await?;
        let Some((off, len, pending)) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        match pending
            .data()
            .await
            .map_err(|e| sftp_error("read", &self.path, e))?
        {
            None => {
                // End of file: replies to reads beyond it are EOF too; drain them.
                self.eof = true;
                for (_, _, p) in self.in_flight.drain(..) {
                    let _ = p.response().await;
                }
                Ok(None)
            }
            Some(data) => {
                let got = data.len() as u32;
                if got < len && !self.eof {
                    // A short read before EOF: servers may do this. Ask again for the rest,
                    // after throwing away the reads sent past it so order stays simple.
                    for (_, _, p) in self.in_flight.drain(..) {
                        let _ = p.response().await;
                    }
                    self.next_offset = off + got as u64;
                }
                if got == 0 {
                    self.eof = true;
                    return Ok(None);
                }
                Ok(Some(data))
            }
        }
    }

    async fn close(self: Box<Self>) -> TreeResult<()> {
        for (_, _, p) in self.in_flight {
            let _ = p.response().await;
        }
        self.client
            .close(&self.handle)
            .await
            .map_err(|e| sftp_error("close", &self.path, e))
    }
}

struct SftpWriter {
    client: SftpClient,
    handle: Handle,
    path: RelPath,
    offset: u64,
    in_flight: VecDeque<PendingReply>,
    quirks: Arc<ServerQuirks>,
}

impl SftpWriter {
    async fn drain_to(&mut self, max: usize) -> TreeResult<()> {
        while self.in_flight.len() > max {
            let p = self.in_flight.pop_front().expect("non-empty");
            p.ok()
                .await
                .map_err(|e| sftp_error("write", &self.path, e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl FileWriter for SftpWriter {
    async fn write(&mut self, data: Bytes) -> TreeResult<()> {
        let size = self.client.write_size() as usize;
        for chunk in data.chunks(size) {
            self.drain_to(WRITE_BEHIND - 1).await?;
            let p = self
                .client
                .send_write(&self.handle, self.offset, chunk)
                .await
                .map_err(|e| sftp_error("write", &self.path, e))?;
            self.in_flight.push_back(p);
            self.offset += chunk.len() as u64;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, meta: &SetMeta) -> TreeResult<()> {
        let result = async {
            self.drain_to(0).await?;
            if !meta.is_empty() {
                let with_owner = !self.quirks.chown_refused.load(Ordering::Relaxed);
                let attrs = attrs_for(meta, with_owner);
                if let Err(e) = self.client.fsetstat(&self.handle, &attrs).await {
                    if attrs.uid_gid.is_none() {
                        return Err(sftp_error("fsetstat", &self.path, e));
                    }
                    self.quirks.chown_refused.store(true, Ordering::Relaxed);
                    self.client
                        .fsetstat(&self.handle, &attrs_for(meta, false))
                        .await
                        .map_err(|e| sftp_error("fsetstat", &self.path, e))?;
                }
            }
            if self.client.extensions().fsync {
                self.client
                    .fsync(&self.handle)
                    .await
                    .map_err(|e| sftp_error("fsync", &self.path, e))?;
            }
            Ok(())
        }
        .await;
        let closed = self.client.close(&self.handle).await;
        result?;
        closed.map_err(|e| sftp_error("close", &self.path, e))
    }

    async fn abandon(self: Box<Self>) {
        for p in self.in_flight {
            let _ = p.response().await;
        }
        let _ = self.client.close(&self.handle).await;
    }
}

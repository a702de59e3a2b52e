//! `Tree` over an SFTP session: a directory on the server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sftp_client::{
    Attrs, FileKind, Handle, HandleRoom, OpenFlags, PendingReply, Request, SftpClient, SftpError,
    StatusCode,
};

use crate::mtime::{fits_wire, wire_mtime};
use crate::path::{file_name, join, parent, RelPath};
use crate::tree::{
    Anchor, BlockHashes, DirEntry, ErrorKind, FileReader, FileWriter, HashAlgorithm, HashRange,
    Kind, Meta, SetMeta, Side, Tree, TreeError, TreeResult,
};

/// Reads kept in flight per open handle.
const READ_AHEAD: usize = 16;
/// Writes kept in flight per open handle.
const WRITE_BEHIND: usize = 16;
/// Length of the read that checks a file ends where its listing said.
const PROBE_SIZE: u32 = 4096;
/// Files at least this big are spread over every channel, one handle on each.
const SPREAD_MIN_SIZE: u64 = 16 << 20;

/// Things learned about the server once per session, shared by all trees on it.
#[derive(Default)]
pub struct ServerQuirks {
    /// Replacement is not atomic here (no posix-rename); warned once.
    pub warned_non_atomic_rename: AtomicBool,
    /// The server refused ownership changes; stop trying.
    pub chown_refused: AtomicBool,
    /// The server refuses SETSTAT/FSETSTAT on files we created: no times or modes are kept,
    /// so compares go by size. Warned once.
    pub setstat_refused: AtomicBool,
    /// The server answers SETSTAT with OK but keeps its own mtime (read back once).
    pub setstat_ignored: AtomicBool,
    /// One written file's mtime has been read back.
    times_read_back: AtomicBool,
    /// A time outside what SFTP v3 carries was clamped; warned once.
    warned_clamped_mtime: AtomicBool,
    /// Whether the server answers `check-file-name`: one of the `CHECK_FILE_*` values.
    check_file: AtomicU8,
    /// A relative symlink target came back absolute and could not be restored; warned once.
    warned_absolute_links: AtomicBool,
    /// The server lists files without modification times: nothing to compare them by but
    /// size. Warned once.
    listed_without_mtimes: AtomicBool,
    /// Whether copy-data, where announced, works: one of the `COPY_DATA_*` values.
    copy_data: AtomicU8,
    /// Whether hard links made here are real: one of the `HARD_LINKS_*` values.
    hard_links: AtomicU8,
    /// The server keeps its own permissions whatever SETSTAT asks (read back once); warned.
    warned_mode_ignored: AtomicBool,
    /// Whether the server takes WRITEs only at the end of what was written so far (found by
    /// a probe the first time it matters): then no file is written out of order, through
    /// several handles, or in place. Warned once.
    writes_in_order_only: tokio::sync::OnceCell<bool>,
}

// 0: not known yet.
const COPY_DATA_WORKS: u8 = 1;
/// Announced, but refused when asked: ranges are not copied on this server.
const COPY_DATA_REFUSED: u8 = 2;

// 0: not known yet.
/// One link was seen to exist after the server said it made it.
const HARD_LINKS_WORK: u8 = 1;
/// No hard links here (not offered, or answered OK without linking): names are copies.
const HARD_LINKS_COPIED: u8 = 2;

const CHECK_FILE_UNKNOWN: u8 = 0;
const CHECK_FILE_WORKS: u8 = 1;
const CHECK_FILE_ABSENT: u8 = 2;

/// The hashes asked of `check-file`, preferred first: SHA-256 is strong and fast on both
/// sides where the CPU has SHA instructions. None is longer than 32 bytes, which keeps a
/// reply of 65536 hashes within the client's packet limit.
const CHECK_FILE_ALGORITHMS: &[u8] = b"sha256,sha224,sha1,md5";

/// The relative target a symlink holds, from a server's absolute answer for it, the true
/// length of the target and the absolute path of the link's directory: what follows that
/// directory in the answer, when it is as long as the target and holds no `.` or `..` (which
/// the server would have resolved, changing the text). `None` when it cannot be told.
fn stored_relative_target<'a>(answer: &'a [u8], len: u64, dir: &[u8]) -> Option<&'a [u8]> {
    let prefix = if dir.ends_with(b"/") {
        dir.to_vec()
    } else {
        [dir, b"/"].concat()
    };
    let tail = answer.strip_prefix(&prefix[..])?;
    let plain = tail
        .split(|&b| b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b"..");
    (tail.len() as u64 == len && plain).then_some(tail)
}

/// The server takes attribute changes as a failure of the whole file only for these causes;
/// anything else (a full disk, say) is a real error.
fn refuses_setstat(e: &SftpError) -> bool {
    matches!(
        e,
        SftpError::Status {
            code: StatusCode::PermissionDenied | StatusCode::OpUnsupported,
            ..
        }
    )
}

impl ServerQuirks {
    /// Whether mtimes set on this server stay set.
    pub fn keeps_times(&self) -> bool {
        !self.setstat_refused.load(Ordering::Relaxed)
            && !self.setstat_ignored.load(Ordering::Relaxed)
            && !self.listed_without_mtimes.load(Ordering::Relaxed)
    }

    /// Notes a regular file listed without its mtime, which would otherwise look like one
    /// from 1970 and be sent again on every run.
    fn check_listed(&self, a: &Attrs, server: &str, warn: &(dyn Fn(String) + Send + Sync)) {
        if a.atime_mtime.is_none()
            && a.kind() == FileKind::Regular
            && !self.listed_without_mtimes.swap(true, Ordering::Relaxed)
        {
            warn(format!(
                "{server} lists files without modification times: files there are compared by \
                 size for the rest of this run; use --size-only on this server"
            ));
        }
    }

    fn note_refused(&self, server: &str, warn: &(dyn Fn(String) + Send + Sync)) {
        if !self.setstat_refused.swap(true, Ordering::Relaxed) {
            warn(format!(
                "{server} refuses to set attributes (SETSTAT): modification times and \
                 permissions cannot be kept, so files are compared by size for the rest of this \
                 run; use --size-only on this server or ask its admin to allow SETSTAT"
            ));
        }
    }

    /// Says once per run that a time the wire cannot carry was stored clamped (see
    /// [`crate::mtime`]).
    fn note_clamped(&self, meta: &SetMeta, server: &str, warn: &(dyn Fn(String) + Send + Sync)) {
        if meta.mtime.is_some_and(|t| !fits_wire(t))
            && !self.warned_clamped_mtime.swap(true, Ordering::Relaxed)
        {
            warn(format!(
                "{server} speaks SFTP v3, which cannot carry modification times before 1970 or \
                 after 2106: such times are stored as the nearest one it can"
            ));
        }
    }

    fn note_absolute_links(&self, server: &str, warn: &(dyn Fn(String) + Send + Sync)) {
        if !self.warned_absolute_links.swap(true, Ordering::Relaxed) {
            warn(format!(
                "{server} reads relative symlink targets back as absolute paths, and some \
                 (with . or ..) cannot be restored: those links are copied as the server \
                 shows them"
            ));
        }
    }

    fn note_mode_ignored(&self, server: &str, warn: &(dyn Fn(String) + Send + Sync)) {
        if !self.warned_mode_ignored.swap(true, Ordering::Relaxed) {
            warn(format!(
                "{server} accepts but does not apply permissions: files keep the server's own \
                 modes there"
            ));
        }
    }

    fn note_ignored(&self, server: &str, warn: &(dyn Fn(String) + Send + Sync)) {
        if !self.setstat_ignored.swap(true, Ordering::Relaxed) {
            warn(format!(
                "{server} accepts but does not apply modification times: they cannot be kept, \
                 so files are compared by size for the rest of this run; use --size-only on \
                 this server"
            ));
        }
    }
}

/// The SFTP channels to one server, which may grow while a sync runs: work starts on the
/// first channel while the others are still being opened.
pub struct ChannelPool {
    channels: RwLock<Vec<SftpClient>>,
    next: AtomicUsize,
    /// True once no more channels will be added.
    settled: tokio::sync::watch::Sender<bool>,
    /// True once a file's contents are to be moved: runs that only list, compare and fix
    /// attributes never open more than the first channel.
    demand: tokio::sync::watch::Sender<bool>,
}

impl ChannelPool {
    pub fn new(first: SftpClient) -> ChannelPool {
        ChannelPool {
            channels: RwLock::new(vec![first]),
            next: AtomicUsize::new(0),
            settled: tokio::sync::watch::Sender::new(false),
            demand: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn add(&self, channel: SftpClient) {
        self.channels.write().unwrap().push(channel);
    }

    /// Waits until some file needs its contents moved.
    pub async fn demanded(&self) {
        let mut rx = self.demand.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    pub fn is_demanded(&self) -> bool {
        *self.demand.borrow()
    }

    fn demand(&self) {
        self.demand
            .send_if_modified(|d| !std::mem::replace(d, true));
    }

    /// No more channels are coming; big files stop waiting for them.
    pub fn settle(&self) {
        self.settled.send_replace(true);
    }

    async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn count(&self) -> usize {
        self.channels.read().unwrap().len()
    }

    pub fn all(&self) -> Vec<SftpClient> {
        self.channels.read().unwrap().clone()
    }

    fn first(&self) -> SftpClient {
        self.channels.read().unwrap()[0].clone()
    }

    /// `n` channels (fewer if there are fewer), starting with the next one round robin.
    fn pick(&self, n: usize) -> Vec<SftpClient> {
        let channels = self.channels.read().unwrap();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n.min(channels.len()))
            .map(|i| channels[(start + i) % channels.len()].clone())
            .collect()
    }
}

/// A directory on an SFTP server. `base` is as the user gave it: relative paths resolve
/// against the login directory. Work is spread over the pool's channels.
pub struct SftpTree {
    pool: Arc<ChannelPool>,
    base: Vec<u8>,
    describe: String,
    quirks: Arc<ServerQuirks>,
    warnings: Arc<dyn Fn(String) + Send + Sync>,
    /// Refuse to replace a file where the server cannot rename over it atomically.
    atomic_replace_only: bool,
    /// `--sparse`: new files get holes where runs of zeros are, by writing past them, on a
    /// server that takes writes out of order.
    sparse: bool,
}

impl SftpTree {
    pub fn new(
        pool: Arc<ChannelPool>,
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
            pool,
            base,
            describe,
            quirks,
            warnings,
            atomic_replace_only: false,
            sparse: false,
        }
    }

    /// Leaves runs of zeros in new files as holes (`--sparse`), where the server allows.
    pub fn sparse(mut self, sparse: bool) -> SftpTree {
        self.sparse = sparse;
        self
    }

    /// Whether a new file near `path` may be written past runs of zeros (`--sparse` on a
    /// server that takes writes out of order).
    async fn makes_holes(&self, path: &RelPath) -> bool {
        self.sparse && !self.writes_in_order_only(path).await
    }

    /// A writer for `path` through `handles` (the first is where it was opened), starting at
    /// `offset`; `base` is the old version open for copy-data.
    fn writer(
        &self,
        path: &RelPath,
        full: Vec<u8>,
        handles: Vec<WriteHandle>,
        offset: u64,
        base: Option<Handle>,
    ) -> Box<dyn FileWriter> {
        self.sftp_writer(path, full, handles, offset, base)
    }

    fn sftp_writer(
        &self,
        path: &RelPath,
        full: Vec<u8>,
        handles: Vec<WriteHandle>,
        offset: u64,
        base: Option<Handle>,
    ) -> Box<SftpWriter> {
        let home = handles[0].client.clone();
        Box::new(SftpWriter {
            write_size: home.write_size() as usize,
            home,
            handles,
            path: path.clone(),
            full,
            pending: BytesMut::new(),
            offset,
            writes_sent: 0,
            quirks: self.quirks.clone(),
            server: self.describe.clone(),
            warnings: self.warnings.clone(),
            base,
            in_place: false,
            rewrite: None,
            holes_allowed: false,
            holes: false,
        })
    }

    /// Whether a refused SETSTAT was the server refusing the request itself rather than this
    /// file's permissions: a SETSTAT that changes nothing is refused only then.
    async fn refuses_every_setstat(&self, full: &[u8]) -> bool {
        match self.client().setstat(full, &Attrs::default()).await {
            Ok(()) => false,
            Err(e) => refuses_setstat(&e),
        }
    }

    /// Without posix-rename, an existing file can only be replaced by removing it first;
    /// with this set, such replacements fail instead and the old file stays.
    pub fn atomic_replace_only(mut self, only: bool) -> SftpTree {
        self.atomic_replace_only = only;
        self
    }

    /// Whether this server takes WRITEs only at the end of what was written so far; found
    /// out, near `path`, the first time it matters, and said once.
    async fn writes_in_order_only(&self, path: &RelPath) -> bool {
        *self
            .quirks
            .writes_in_order_only
            .get_or_init(|| async {
                let in_order = self.probe_write_order(path).await;
                if in_order {
                    (self.warnings)(format!(
                        "{} takes writes only in order: big files go through one channel, and \
                         files are never changed in place there (--inplace, --append and \
                         resumed partial files rewrite the whole file through a temp file)",
                        self.describe
                    ));
                }
                in_order
            })
            .await
    }

    /// Writes one byte at offset 1 of a new file before anything at 0: a POSIX file gets a
    /// hole, rclone's VFS refuses the write (after waiting a second for the missing bytes).
    /// One that takes the write without making the file 2 bytes long ignored the offset.
    async fn probe_write_order(&self, near: &RelPath) -> bool {
        let name = format!(".sftpsync-write-probe.{}", std::process::id());
        let full = self.full(&join(parent(near), name.as_bytes()));
        let client = self.client();
        let attrs = Attrs {
            permissions: Some(0o600),
            ..Default::default()
        };
        let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
        let _room = client.room_for_handles(1).await;
        // A directory we cannot write to says nothing; the real write will fail there anyway.
        let Ok(h) = client.open(&full, flags, &attrs).await else {
            return false;
        };
        let wrote = client.write(&h, 1, b"?").await;
        let size = client.fstat(&h).await.ok().and_then(|a| a.size);
        let _ = client.close(&h).await;
        let _ = client.remove(&full).await;
        wrote.is_err() || size != Some(2)
    }

    /// Where writes go only in order: a writer that builds the new version of `path` in a
    /// temp file beside it and renames it over `path` at the end. Its first `keep` bytes, and
    /// every range the writer passes over, are read from the old version.
    async fn rewrite_writer(
        &self,
        path: &RelPath,
        mode: Option<u32>,
        keep: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        let full = self.full(path);
        let client = self.client();
        let room = client.room_for_handles(2).await;
        let old = match client.open(&full, OpenFlags::READ, &Attrs::default()).await {
            Ok(h) => Some(h),
            Err(e) if e.is_not_found() && keep == 0 => None,
            Err(e) => return Err(sftp_error("open", path, e)),
        };
        let mode = match (mode, &old) {
            (Some(m), _) => m,
            (None, Some(h)) => client
                .fstat(h)
                .await
                .ok()
                .and_then(|a| a.permissions)
                .unwrap_or(0o600),
            (None, None) => 0o600,
        };
        let mut name = b".".to_vec();
        name.extend_from_slice(&file_name(path)[..file_name(path).len().min(200)]);
        name.extend_from_slice(format!(".sftpsync-rewrite.{}", std::process::id()).as_bytes());
        let temp = self.full(&join(parent(path), &name));
        let attrs = Attrs {
            permissions: Some(mode & 0o777),
            ..Default::default()
        };
        let flags = OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
        let handle = match client.open(&temp, flags, &attrs).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(h) = &old {
                    let _ = client.close(h).await;
                }
                return Err(sftp_error("create", path, e));
            }
        };
        let mut writer = self.sftp_writer(
            path,
            temp,
            vec![WriteHandle::new(client, handle, room)],
            0,
            None,
        );
        writer.rewrite = Some(Rewrite { old, target: full });
        if keep > 0 {
            if let Err(e) = writer.skip(keep).await {
                writer.abandon().await;
                return Err(e);
            }
        }
        Ok(writer)
    }

    /// Makes `to` a copy of `from`, contents, permissions and mtime: what a hard link becomes
    /// where the server cannot make one. Server-side with copy-data, else read and written
    /// back.
    async fn copy_within(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        let attrs = self
            .client()
            .stat(&self.full(from))
            .await
            .map_err(|e| sftp_error("stat", from, e))?;
        let size = attrs.size.unwrap_or(0);
        let meta = SetMeta {
            mode: attrs.permissions.map(|p| p & 0o7777),
            mtime: attrs.mtime().map(i64::from),
            ..Default::default()
        };
        let mode = meta.mode.unwrap_or(0o600) & 0o777;
        if self.copies_ranges() {
            match self.create_file_based_on(to, mode, from).await {
                Ok(mut w) => {
                    if let Err(e) = w.copy_from_base(0, size).await {
                        w.abandon().await;
                        return Err(e);
                    }
                    return w.finish(&meta).await;
                }
                // Refused after all (and now known): the bytes go by way of this end.
                Err(e) if e.kind == ErrorKind::Unsupported => {}
                Err(e) => return Err(e),
            }
        }
        let mut r = self.open_read(from, 0, size).await?;
        let mut w = self.create_file(to, mode, size).await?;
        let copied = async {
            while let Some(chunk) = r.next_chunk().await? {
                w.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        let _ = r.close().await;
        match copied {
            Ok(()) => w.finish(&meta).await,
            Err(e) => {
                w.abandon().await;
                Err(e)
            }
        }
    }

    /// READLINK said there is no such file: either the link went away, or the server cannot
    /// read the target of a link it lists (asyncssh's chroot resolves relative targets
    /// against its own working directory and loses those that land outside the chroot).
    /// Only the first is a vanished file.
    async fn unreadable_link(&self, path: &RelPath, full: &[u8], e: SftpError) -> TreeError {
        let mut err = sftp_error("readlink", path, e);
        if let Ok(a) = self.client().lstat(full).await {
            if a.kind() == FileKind::Symlink {
                err.kind = ErrorKind::Other;
                err.cause = format!(
                    "{}; the server lists this symlink but will not say where it points",
                    err.cause
                );
            }
        }
        err
    }

    /// The channel for the next piece of work, round robin.
    fn client(&self) -> SftpClient {
        self.pool.pick(1).remove(0)
    }

    /// Channels for one file of `size` bytes: the first is where it is opened; big files
    /// also get a handle on each of the others.
    async fn channels_for(&self, size: u64) -> Vec<SftpClient> {
        self.pool.demand();
        if size < SPREAD_MIN_SIZE {
            return self.pool.pick(1);
        }
        // Worth the wait for the channels still being opened: this file will use them all.
        self.pool.settled().await;
        self.pool.pick(usize::MAX)
    }

    fn full(&self, rel: &[u8]) -> Vec<u8> {
        full_path(&self.base, rel)
    }

    /// Renames the full path `a` over `b` (`to` is `b` as the user knows it, for messages),
    /// atomically where the server can.
    async fn rename_full(&self, a: &[u8], b: &[u8], to: &RelPath) -> TreeResult<()> {
        if self.pool.first().extensions().posix_rename {
            return self
                .client()
                .posix_rename(a, b)
                .await
                .map_err(|e| sftp_error("rename", to, e));
        }
        // Plain RENAME refuses to replace: remove the target first. Between the two requests
        // the target is missing, so say once per run that replacement is not atomic here.
        match self.client().rename(a, b).await {
            Ok(()) => Ok(()),
            Err(e) if self.atomic_replace_only => Err(TreeError {
                op: "rename",
                side: Side::Remote,
                path: to.clone(),
                cause: format!(
                    "{e}; the server offers no posix-rename, and replacing the file by remove + \
                     rename is refused (--require-atomic-replace)"
                ),
                kind: ErrorKind::Unsupported,
            }),
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
                match self.client().remove(b).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(sftp_error("rename", to, e)),
                }
                self.client()
                    .rename(a, b)
                    .await
                    .map_err(|e| sftp_error("rename", to, e))
            }
        }
    }
}

/// `rel` below `base` as the server is to see it: `base` alone when `rel` is empty, and
/// relative to the login directory when `base` is.
fn full_path(base: &[u8], rel: &[u8]) -> Vec<u8> {
    match (base.is_empty(), rel.is_empty()) {
        (true, true) => b".".to_vec(),
        (true, false) => rel.to_vec(),
        (false, true) => base.to_vec(),
        (false, false) => {
            let mut p = base.to_vec();
            if !p.ends_with(b"/") {
                p.push(b'/');
            }
            p.extend_from_slice(rel);
            p
        }
    }
}

/// Renames `from` over `to`: atomically with posix-rename, else by removing `to` first.
async fn replace_file(client: &SftpClient, from: &[u8], to: &[u8]) -> Result<(), SftpError> {
    if client.extensions().posix_rename {
        return client.posix_rename(from, to).await;
    }
    match client.remove(to).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    client.rename(from, to).await
}

/// Another tree's root on the same session, for `rename_replace_from`.
struct RemoteAnchor {
    pool: Arc<ChannelPool>,
    base: Vec<u8>,
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
        atime: a.atime_mtime.map_or(0, |(at, _)| i64::from(at)),
        mode: a.permissions.unwrap_or(0) & 0o7777,
        uid: a.uid_gid.map(|(u, _)| u),
        gid: a.uid_gid.map(|(_, g)| g),
        dev_ino: None,
        nlink: 1,
        file_type: a.permissions.unwrap_or(0) & 0o170000,
    }
}

/// SFTP v3 sets atime and mtime together: the one not to change goes as it is now, where
/// the caller knows it, else as the current time (what a file just written has).
fn wire_times(meta: &SetMeta) -> Option<(u32, u32)> {
    if meta.mtime.is_none() && meta.atime.is_none() {
        return None;
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    let (atime_now, mtime_now) = meta.times_now.unzip();
    let atime = meta.atime.or(atime_now).unwrap_or_else(now);
    let mtime = meta.mtime.or(mtime_now).unwrap_or_else(now);
    Some((wire_mtime(atime), wire_mtime(mtime)))
}

fn attrs_for(meta: &SetMeta, with_owner: bool) -> Attrs {
    Attrs {
        permissions: meta.mode,
        atime_mtime: wire_times(meta),
        uid_gid: match (with_owner, meta.uid, meta.gid) {
            (true, Some(u), Some(g)) => Some((u, g)),
            _ => None,
        },
        ..Default::default()
    }
}

/// SFTP v3 sets uid and gid together: when only one is to change, the other is taken from what
/// the file has now (`current`, only asked for then). If that cannot be read, ownership is left.
async fn with_both_owners(
    meta: &SetMeta,
    with_owner: bool,
    current: impl std::future::Future<Output = Result<Attrs, SftpError>>,
) -> SetMeta {
    let mut m = meta.clone();
    if with_owner && m.uid.is_some() != m.gid.is_some() {
        if let Ok(Attrs {
            uid_gid: Some((uid, gid)),
            ..
        }) = current.await
        {
            m.uid = m.uid.or(Some(uid));
            m.gid = m.gid.or(Some(gid));
        }
    }
    m
}

/// The mode again, alone, after a SETSTAT that also changes the owner and sets setuid or
/// setgid: the server's chown clears those bits, and OpenSSH applies the mode before the owner.
fn mode_after_chown(attrs: &Attrs) -> Option<Attrs> {
    match (attrs.uid_gid, attrs.permissions) {
        (Some(_), Some(p)) if p & 0o6000 != 0 => Some(Attrs {
            permissions: Some(p),
            ..Default::default()
        }),
        _ => None,
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
        match self.client().lstat(&self.full(path)).await {
            Ok(a) => {
                self.quirks
                    .check_listed(&a, &self.describe, &*self.warnings);
                Ok(Some(meta_from_attrs(&a)))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(sftp_error("lstat", path, e)),
        }
    }

    async fn stat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        match self.client().stat(&self.full(path)).await {
            Ok(a) => Ok(Some(meta_from_attrs(&a))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(sftp_error("stat", path, e)),
        }
    }

    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>> {
        let client = self.client();
        let room = client.room_for_handles(1).await;
        let names = client.read_dir(&self.full(path)).await;
        drop(room);
        let names = names.map_err(|e| sftp_error("opendir", path, e))?;
        Ok(names
            .into_iter()
            // The usual `.` and `..` entries are skipped; a `.` or `..` listed as anything but
            // a directory is a lie the sync must see and refuse.
            .filter(|n| {
                !((n.filename == b"." || n.filename == b"..")
                    && matches!(n.attrs.kind(), FileKind::Directory | FileKind::Unknown))
            })
            .map(|n| {
                self.quirks
                    .check_listed(&n.attrs, &self.describe, &*self.warnings);
                DirEntry {
                    meta: meta_from_attrs(&n.attrs),
                    name: n.filename,
                }
            })
            .collect())
    }

    async fn read_link(&self, path: &RelPath, listed_size: Option<u64>) -> TreeResult<Vec<u8>> {
        let client = self.client();
        let full = self.full(path);
        let target = match client.readlink(&full).await {
            Ok(target) => target,
            Err(e) if e.is_not_found() => return Err(self.unreadable_link(path, &full, e).await),
            Err(e) => return Err(sftp_error("readlink", path, e)),
        };
        // ProFTPD answers a relative target with the absolute path it leads to. The link's
        // size in its listing is the length of what it holds, which tells such an answer from
        // a real one. (Not LSTAT's: ProFTPD's follows the link.)
        let Some(len) =
            listed_size.filter(|&n| target.starts_with(b"/") && n != target.len() as u64)
        else {
            return Ok(target);
        };
        let dir = match crate::path::parent(&full) {
            b"" => client.realpath(b".").await,
            parent => client.realpath(parent).await,
        };
        match dir
            .ok()
            .and_then(|d| stored_relative_target(&target, len, &d).map(<[u8]>::to_vec))
        {
            Some(relative) => Ok(relative),
            None => {
                self.quirks
                    .note_absolute_links(&self.describe, &*self.warnings);
                Ok(target)
            }
        }
    }

    async fn open_read(
        &self,
        path: &RelPath,
        offset: u64,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>> {
        let full = self.full(path);
        let open = |(c, room): (SftpClient, HandleRoom)| {
            let full = full.clone();
            async move {
                let h = c.open(&full, OpenFlags::READ, &Attrs::default()).await?;
                Ok::<_, SftpError>((c, h, room))
            }
        };
        let mut channels = self
            .channels_for(expected_size.saturating_sub(offset))
            .await
            .into_iter();
        let first = channels.next().expect("at least one channel");
        let room = first.room_for_handles(1).await;
        // The other channels help only where they have a handle to spare right now.
        let with_room = std::iter::once((first, room))
            .chain(channels.filter_map(|c| c.try_room_for_handles(1).map(|room| (c, room))));
        let (mut handles, mut rooms) = (Vec::new(), Vec::new());
        for r in futures::future::join_all(with_room.map(open)).await {
            match r {
                Ok((c, h, room)) => {
                    handles.push((c, h));
                    rooms.push(room);
                }
                // A big file read through fewer channels is still read.
                Err(e) if handles.is_empty() => {
                    return Err(sftp_error("open", path, e));
                }
                Err(_) => {}
            }
        }
        let read_size = handles[0].0.read_size();
        Ok(Box::new(SftpReader {
            handles,
            _rooms: rooms,
            path: path.clone(),
            expected: expected_size,
            read_size,
            next_offset: offset,
            reads_sent: 0,
            in_flight: VecDeque::new(),
            eof: false,
        }))
    }

    async fn create_file(
        &self,
        path: &RelPath,
        mode: u32,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        let attrs = Attrs {
            permissions: Some(mode & 0o777),
            ..Default::default()
        };
        let full = self.full(path);
        let mut channels = self.channels_for(expected_size).await;
        if channels.len() > 1 && self.writes_in_order_only(path).await {
            channels.truncate(1);
        }
        let mut channels = channels.into_iter();
        let first = channels.next().expect("at least one channel");
        let room = first.room_for_handles(1).await;
        let handle = first
            .open(
                &full,
                OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::EXCL,
                &attrs,
            )
            .await
            .map_err(|e| sftp_error("create", path, e))?;
        let mut handles = vec![WriteHandle::new(first, handle, room)];
        let extra = channels
            .filter_map(|c| c.try_room_for_handles(1).map(|room| (c, room)))
            .map(|(c, room)| {
                let full = full.clone();
                async move {
                    let h = c.open(&full, OpenFlags::WRITE, &Attrs::default()).await?;
                    Ok::<_, SftpError>(WriteHandle::new(c, h, room))
                }
            });
        // A channel that cannot open the file just takes no part in writing it.
        handles.extend(
            futures::future::join_all(extra)
                .await
                .into_iter()
                .filter_map(Result::ok),
        );
        let mut writer = self.sftp_writer(path, full, handles, 0, None);
        writer.holes_allowed = self.makes_holes(path).await;
        Ok(writer)
    }

    async fn create_file_based_on(
        &self,
        path: &RelPath,
        mode: u32,
        base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>> {
        let full = self.full(path);
        // copy-data copies between handles of one session: both files go on one channel.
        let client = self.client();
        let attrs = Attrs {
            permissions: Some(mode & 0o777),
            ..Default::default()
        };
        let (base_full, no_attrs) = (self.full(base), Attrs::default());
        let room = client.room_for_handles(2).await;
        let (base_handle, handle) = futures::join!(
            client.open(&base_full, OpenFlags::READ, &no_attrs),
            client.open(
                &full,
                OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::EXCL,
                &attrs,
            )
        );
        let (base_handle, handle) = match (base_handle, handle) {
            (Ok(b), Ok(h)) => (b, h),
            (Err(e), Ok(h)) => {
                let _ = client.close(&h).await;
                let _ = client.remove(&full).await;
                return Err(sftp_error("open", base, e));
            }
            (b, Err(e)) => {
                if let Ok(b) = b {
                    let _ = client.close(&b).await;
                }
                return Err(sftp_error("create", path, e));
            }
        };
        let state = &self.quirks.copy_data;
        if state.load(Ordering::Relaxed) != COPY_DATA_WORKS {
            // Some servers announce copy-data and refuse it. One byte copied to where the new
            // file starts, and is written again, tells before anything depends on it.
            match client.copy_data(&base_handle, 0, 1, &handle, 0).await {
                Ok(()) => state.store(COPY_DATA_WORKS, Ordering::Relaxed),
                Err(e) => {
                    let _ = client.close(&base_handle).await;
                    let _ = client.close(&handle).await;
                    let _ = client.remove(&full).await;
                    if e.is_connection_error() {
                        return Err(sftp_error("copy-data", path, e));
                    }
                    if state.swap(COPY_DATA_REFUSED, Ordering::Relaxed) != COPY_DATA_REFUSED {
                        (self.warnings)(format!(
                            "{} announces copy-data but refuses it ({e}): changed files are \
                             sent whole",
                            self.describe
                        ));
                    }
                    return Err(TreeError {
                        op: "copy-data",
                        side: Side::Remote,
                        path: path.clone(),
                        cause: e.to_string(),
                        kind: ErrorKind::Unsupported,
                    });
                }
            }
        }
        let handles = vec![WriteHandle::new(client, handle, room)];
        let mut writer = self.sftp_writer(path, full, handles, 0, Some(base_handle));
        writer.holes_allowed = self.makes_holes(path).await;
        Ok(writer)
    }

    fn copies_ranges(&self) -> bool {
        self.pool.first().extensions().copy_data
            && self.quirks.copy_data.load(Ordering::Relaxed) != COPY_DATA_REFUSED
    }

    async fn reopen_for_append(
        &self,
        path: &RelPath,
        offset: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        if self.writes_in_order_only(path).await {
            return self.rewrite_writer(path, None, offset).await;
        }
        let full = self.full(path);
        let client = self.client();
        let room = client.room_for_handles(1).await;
        let handle = client
            .open(&full, OpenFlags::WRITE, &Attrs::default())
            .await
            .map_err(|e| sftp_error("open", path, e))?;
        // Whatever lies past the verified part goes, so the file ends up exactly as written.
        let cut = Attrs {
            size: Some(offset),
            ..Default::default()
        };
        if let Err(e) = client.fsetstat(&handle, &cut).await {
            // A server that refuses attribute changes can still be appended to when there is
            // nothing to cut, which is the usual case for --append.
            let fits = refuses_setstat(&e)
                && matches!(client.fstat(&handle).await, Ok(a) if a.size == Some(offset));
            if !fits {
                let _ = client.close(&handle).await;
                return Err(sftp_error("truncate", path, e));
            }
        }
        let handles = vec![WriteHandle::new(client, handle, room)];
        Ok(self.writer(path, full, handles, offset, None))
    }

    async fn open_in_place(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>> {
        if self.writes_in_order_only(path).await {
            return self.rewrite_writer(path, Some(mode), 0).await;
        }
        let full = self.full(path);
        let client = self.client();
        let attrs = Attrs {
            permissions: Some(mode & 0o777),
            ..Default::default()
        };
        let room = client.room_for_handles(1).await;
        let handle = client
            .open(&full, OpenFlags::WRITE | OpenFlags::CREAT, &attrs)
            .await
            .map_err(|e| sftp_error("open", path, e))?;
        let handles = vec![WriteHandle::new(client, handle, room)];
        let mut writer = self.sftp_writer(path, full, handles, 0, None);
        writer.in_place = true;
        Ok(writer)
    }

    async fn block_hashes(
        &self,
        path: &RelPath,
        range: HashRange,
    ) -> TreeResult<Option<BlockHashes>> {
        let known = &self.quirks.check_file;
        if known.load(Ordering::Relaxed) == CHECK_FILE_ABSENT {
            return Ok(None);
        }
        let reply = self
            .client()
            .check_file_name(
                &self.full(path),
                CHECK_FILE_ALGORITHMS,
                range.offset,
                range.len,
                range.block_size,
            )
            .await;
        let refused_for_this_file = |e: &SftpError| {
            matches!(
                e.status(),
                Some(StatusCode::NoSuchFile | StatusCode::PermissionDenied)
            )
        };
        let hashes = match reply {
            Ok(h) => h,
            // Until it has worked once, any other refusal means the server does not know it.
            Err(e)
                if known.load(Ordering::Relaxed) == CHECK_FILE_UNKNOWN
                    && !e.is_connection_error()
                    && !refused_for_this_file(&e) =>
            {
                known.store(CHECK_FILE_ABSENT, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(sftp_error("check-file", path, e)),
        };
        let Some(algorithm) = HashAlgorithm::from_name(&hashes.algorithm) else {
            // Not one we asked for: nothing here can compute it to compare.
            known.store(CHECK_FILE_ABSENT, Ordering::Relaxed);
            return Ok(None);
        };
        if hashes.hashes.len() % algorithm.hash_len() != 0 {
            return Err(sftp_error(
                "check-file",
                path,
                SftpError::Invalid {
                    op: "check-file-name",
                    detail: format!(
                        "{} bytes of {} hashes, not a whole number of them",
                        hashes.hashes.len(),
                        algorithm.name()
                    ),
                },
            ));
        }
        known.store(CHECK_FILE_WORKS, Ordering::Relaxed);
        Ok(Some(BlockHashes {
            algorithm,
            hashes: hashes.hashes,
        }))
    }

    async fn read_range(&self, path: &RelPath, offset: u64, len: u32) -> TreeResult<Bytes> {
        let client = self.client();
        let _room = client.room_for_handles(1).await;
        let handle = client
            .open(&self.full(path), OpenFlags::READ, &Attrs::default())
            .await
            .map_err(|e| sftp_error("open", path, e))?;
        let mut out = BytesMut::new();
        let result = async {
            while out.len() < len as usize {
                let want = (len as usize - out.len()).min(client.read_size() as usize) as u32;
                match client.read(&handle, offset + out.len() as u64, want).await {
                    Ok(Some(data)) if !data.is_empty() => out.extend_from_slice(&data),
                    Ok(_) => break,
                    Err(e) => return Err(sftp_error("read", path, e)),
                }
            }
            Ok(())
        }
        .await;
        let _ = client.send(&Request::Close { handle: &handle.0 }, 0).await;
        result.map(|()| out.freeze())
    }

    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        let attrs = Attrs {
            permissions: Some(mode & 0o7777),
            ..Default::default()
        };
        self.client()
            .mkdir(&self.full(path), &attrs)
            .await
            .map_err(|e| sftp_error("mkdir", path, e))
    }

    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        self.client()
            .symlink(target, &self.full(path))
            .await
            .map_err(|e| sftp_error("symlink", path, e))
    }

    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        let state = &self.quirks.hard_links;
        let offered = self.pool.first().extensions().hardlink;
        if offered && state.load(Ordering::Relaxed) != HARD_LINKS_COPIED {
            let new_full = self.full(new);
            self.client()
                .hardlink(&self.full(existing), &new_full)
                .await
                .map_err(|e| sftp_error("link", new, e))?;
            if state.load(Ordering::Relaxed) == HARD_LINKS_WORK {
                return Ok(());
            }
            // rclone answers OK and links nothing: the first link is looked for.
            match self.client().lstat(&new_full).await {
                Ok(_) => {
                    state.store(HARD_LINKS_WORK, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.is_not_found() => {
                    if state.swap(HARD_LINKS_COPIED, Ordering::Relaxed) != HARD_LINKS_COPIED {
                        (self.warnings)(format!(
                            "{} answers hard-link requests with OK but makes no link: linked \
                             files are stored there as separate copies",
                            self.describe
                        ));
                    }
                }
                Err(e) => return Err(sftp_error("link", new, e)),
            }
        } else if !offered && state.swap(HARD_LINKS_COPIED, Ordering::Relaxed) != HARD_LINKS_COPIED
        {
            (self.warnings)(format!(
                "{} offers no hard links (hardlink@openssh.com): linked files are stored there \
                 as separate copies",
                self.describe
            ));
        }
        self.copy_within(existing, new).await
    }

    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        self.client()
            .remove(&self.full(path))
            .await
            .map_err(|e| sftp_error("unlink", path, e))
    }

    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        self.client()
            .rmdir(&self.full(path))
            .await
            .map_err(|e| sftp_error("rmdir", path, e))
    }

    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        self.rename_full(&self.full(from), &self.full(to), to).await
    }

    fn anchor(&self) -> Anchor {
        Anchor(Arc::new(RemoteAnchor {
            pool: self.pool.clone(),
            base: self.base.clone(),
        }))
    }

    async fn rename_replace_from(
        &self,
        from_tree: &Anchor,
        from: &RelPath,
        to: &RelPath,
    ) -> TreeResult<()> {
        let from_base = match from_tree.0.downcast_ref::<RemoteAnchor>() {
            Some(a) if Arc::ptr_eq(&a.pool, &self.pool) => a.base.clone(),
            _ => {
                return Err(TreeError {
                    op: "rename",
                    side: Side::Remote,
                    path: to.clone(),
                    cause: "the file to move is not on this server session".into(),
                    kind: ErrorKind::Unsupported,
                })
            }
        };
        let a = full_path(&from_base, from);
        self.rename_full(&a, &self.full(to), to)
            .await
            .map_err(|mut e| {
                if e.kind == ErrorKind::Other {
                    // SFTP v3 has no code for EXDEV: the likeliest cause is worth naming.
                    e.cause.push_str(
                        " (is the partial directory on another file system than the destination? \
                     The server can only rename within one)",
                    );
                }
                e
            })
    }

    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        if self.quirks.setstat_refused.load(Ordering::Relaxed) {
            // Said once already; one error per entry would only repeat it.
            return Ok(());
        }
        let full = self.full(path);
        let with_owner = !self.quirks.chown_refused.load(Ordering::Relaxed);
        let meta = &with_both_owners(meta, with_owner, self.client().lstat(&full)).await;
        if kind == Kind::Symlink {
            // Only lsetstat leaves the target alone; a link's mode means nothing.
            if !self.pool.first().extensions().lsetstat {
                return Ok(());
            }
            self.quirks
                .note_clamped(meta, &self.describe, &*self.warnings);
            let attrs = Attrs {
                permissions: None,
                ..attrs_for(meta, with_owner)
            };
            if attrs == Attrs::default() {
                return Ok(());
            }
            return self
                .client()
                .lsetstat(&full, &attrs)
                .await
                .map_err(|e| sftp_error("set times of", path, e));
        }
        self.quirks
            .note_clamped(meta, &self.describe, &*self.warnings);
        let attrs = attrs_for(meta, with_owner);
        let result = match self.client().setstat(&full, &attrs).await {
            Err(e) if attrs.uid_gid.is_some() => {
                // Most SFTP logins are not root: keep the rest, drop ownership from now on.
                self.quirks.chown_refused.store(true, Ordering::Relaxed);
                self.client()
                    .setstat(&full, &attrs_for(meta, false))
                    .await
                    .map_err(|second| if refuses_setstat(&second) { second } else { e })
            }
            other => other,
        };
        let result = match (result, mode_after_chown(&attrs)) {
            (Ok(()), Some(again)) => self.client().setstat(&full, &again).await,
            (result, _) => result,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if refuses_setstat(&e) && self.refuses_every_setstat(&full).await => {
                self.quirks.note_refused(&self.describe, &*self.warnings);
                Ok(())
            }
            Err(e) => Err(sftp_error("setstat", path, e)),
        }
    }

    fn can_chown(&self) -> bool {
        !self.quirks.chown_refused.load(Ordering::Relaxed)
    }

    fn keeps_times(&self) -> bool {
        self.quirks.keeps_times()
    }

    fn stored_mtime(&self, mtime: i64) -> i64 {
        i64::from(wire_mtime(mtime))
    }

    fn lanes(&self) -> usize {
        self.pool.count()
    }
}

struct SftpReader {
    /// One handle per channel taking part; the first is the file's home.
    handles: Vec<(SftpClient, Handle)>,
    /// Room for those handles among what the server allows.
    _rooms: Vec<HandleRoom>,
    path: RelPath,
    /// Size from the listing: reads are planned to end exactly there, and one more read
    /// checks that the file really ends there.
    expected: u64,
    read_size: u32,
    next_offset: u64,
    reads_sent: usize,
    in_flight: VecDeque<(u64, u32, PendingReply)>,
    eof: bool,
}

impl SftpReader {
    async fn fill(&mut self) -> TreeResult<()> {
        let max = READ_AHEAD * self.handles.len();
        while !self.eof && self.in_flight.len() < max {
            let off = self.next_offset;
            let len = if off < self.expected {
                u32::try_from(self.expected - off).map_or(self.read_size, |r| r.min(self.read_size))
            } else if self
                .in_flight
                .back()
                .is_some_and(|(o, _, _)| *o >= self.expected)
            {
                // Past the expected end, one read at a time until the real end shows.
                break;
            } else if off == self.expected {
                // The read that should come back EOF. Kept small: every byte asked for counts
                // against the channel's budget until the reply arrives, and a full-size probe
                // per small file would crowd out real reads.
                PROBE_SIZE.min(self.read_size)
            } else {
                self.read_size
            };
            let (client, handle) = &self.handles[self.reads_sent % self.handles.len()];
            self.reads_sent += 1;
            let p = client
                .send_read(handle, off, len)
                .await
                .map_err(|e| sftp_error("read", &self.path, e))?;
            self.in_flight.push_back((off, len, p));
            // Saturates rather than wraps: a listed size near u64::MAX is a lie, not a reason
            // to read offset 0 again.
            self.next_offset = self.next_offset.saturating_add(u64::from(len));
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
                // End of file: whatever was sent past it is dropped unread.
                self.eof = true;
                self.in_flight.clear();
                Ok(None)
            }
            Some(data) => {
                let got = data.len() as u64;
                if got == 0 {
                    self.eof = true;
                    self.in_flight.clear();
                    return Ok(None);
                }
                if got < u64::from(len) {
                    // A short read before EOF: servers may do this. Ask again for the rest,
                    // after dropping the reads sent past it so order stays simple.
                    self.in_flight.clear();
                    self.next_offset = off.saturating_add(got);
                }
                Ok(Some(data))
            }
        }
    }

    async fn close(self: Box<Self>) -> TreeResult<()> {
        // Nothing waits for the closes: the server handles them in order, before anything
        // sent later on the same channel, and a failed close of a read handle changes nothing.
        for (client, handle) in &self.handles {
            let _ = client.send(&Request::Close { handle: &handle.0 }, 0).await;
        }
        Ok(())
    }
}

/// One open handle of a file being written, with the writes sent through it.
struct WriteHandle {
    client: SftpClient,
    handle: Handle,
    in_flight: VecDeque<PendingReply>,
    /// Room for this handle (and the old version's, where one is open beside it) among
    /// those the server allows.
    _room: HandleRoom,
}

impl WriteHandle {
    fn new(client: SftpClient, handle: Handle, room: HandleRoom) -> WriteHandle {
        WriteHandle {
            client,
            handle,
            in_flight: VecDeque::new(),
            _room: room,
        }
    }

    async fn drain_to(&mut self, max: usize, path: &[u8]) -> TreeResult<()> {
        while self.in_flight.len() > max {
            let p = self.in_flight.pop_front().expect("non-empty");
            p.ok().await.map_err(|e| sftp_error("write", path, e))?;
        }
        Ok(())
    }

    async fn send(
        &self,
        req: &Request<'_>,
        op: &'static str,
        path: &[u8],
    ) -> TreeResult<PendingReply> {
        self.client
            .send(req, 0)
            .await
            .map_err(|e| sftp_error(op, path, e))
    }
}

impl SftpWriter {
    /// Most servers answer a write that hit a full disk or a quota with a bare "Failure";
    /// the free space where the file is tells the user which it was.
    async fn explain(home: &SftpClient, full: &[u8], mut e: TreeError) -> TreeError {
        let storage_op = matches!(e.op, "write" | "fsync" | "close");
        if e.kind != ErrorKind::Other || !storage_op || !home.extensions().statvfs {
            return e;
        }
        if let Ok(v) = home.statvfs(full).await {
            let free = v.bavail.saturating_mul(v.frsize);
            let why = if free < (1 << 20) {
                "the disk is full"
            } else {
                "a quota may be the limit"
            };
            e.cause = format!("{}; the server has {free} bytes free there: {why}", e.cause);
        }
        e
    }

    /// Sends what is left, then sets attributes, syncs and closes, in one batch.
    async fn complete(mut self: Box<Self>, meta: &SetMeta) -> TreeResult<()> {
        self.flush_pending().await?;
        let path = self.path.clone();
        // Writes through other channels must land before the times are set on the file.
        let mut extra_result = Ok(());
        for mut h in self.handles.drain(1..) {
            let drained = h.drain_to(0, &path).await;
            let closed = h.client.close(&h.handle).await;
            if extra_result.is_ok() {
                extra_result = drained.and(closed.map_err(|e| sftp_error("close", &path, e)));
            }
        }
        let mut home = self.handles.pop().expect("the home handle");
        let rewrite = self.rewrite.take();
        if let Some(Rewrite { old: Some(old), .. }) = &rewrite {
            let _ = home
                .send(&Request::Close { handle: &old.0 }, "close", &path)
                .await;
        }
        if let Some(base) = self.base.take() {
            // After every copy-data on this channel, since the server takes requests in order.
            let _ = home
                .send(&Request::Close { handle: &base.0 }, "close", &path)
                .await;
        }
        if let Err(e) = extra_result {
            let _ = home
                .send(
                    &Request::Close {
                        handle: &home.handle.0,
                    },
                    "close",
                    &path,
                )
                .await;
            return Err(e);
        }
        if self.in_place || self.holes {
            // Old bytes past the new end must go; a server that will not cut the file leaves
            // it wrong, which must not pass for success. A hole at the end of a new file is
            // made the same way: the file is extended to where the writing ended.
            let cut = Attrs {
                size: Some(self.offset),
                ..Default::default()
            };
            let truncated = home
                .send(
                    &Request::Fsetstat {
                        handle: &home.handle.0,
                        attrs: &cut,
                    },
                    "truncate",
                    &path,
                )
                .await?
                .ok()
                .await;
            if let Err(e) = truncated {
                let _ = home.client.close(&home.handle).await;
                return Err(sftp_error("truncate", &path, e));
            }
        }
        // The rest goes out in one batch behind the writes: one round trip, not four.
        let with_owner = !self.quirks.chown_refused.load(Ordering::Relaxed);
        let meta = &with_both_owners(meta, with_owner, home.client.fstat(&home.handle)).await;
        let attrs = attrs_for(meta, with_owner);
        let handle = home.handle.0.clone();
        let setstat = if meta.is_empty() || self.quirks.setstat_refused.load(Ordering::Relaxed) {
            None
        } else {
            self.quirks
                .note_clamped(meta, &self.server, &*self.warnings);
            Some(
                home.send(
                    &Request::Fsetstat {
                        handle: &handle,
                        attrs: &attrs,
                    },
                    "fsetstat",
                    &path,
                )
                .await?,
            )
        };
        let remode = match (&setstat, mode_after_chown(&attrs)) {
            (Some(_), Some(again)) => Some(
                home.send(
                    &Request::Fsetstat {
                        handle: &handle,
                        attrs: &again,
                    },
                    "fsetstat",
                    &path,
                )
                .await?,
            ),
            _ => None,
        };
        // Some servers answer OK and keep their own mtime: read the first one back.
        let read_back = match (&setstat, meta.mtime) {
            (Some(_), Some(mtime))
                if !self.quirks.times_read_back.swap(true, Ordering::Relaxed) =>
            {
                let reply = home
                    .send(&Request::Fstat { handle: &handle }, "fstat", &path)
                    .await?;
                Some((reply, mtime, meta.mode))
            }
            _ => None,
        };
        let fsync = if home.client.extensions().fsync {
            Some(
                home.send(&Request::Fsync { handle: &handle }, "fsync", &path)
                    .await?,
            )
        } else {
            None
        };
        let close = home
            .send(&Request::Close { handle: &handle }, "close", &path)
            .await?;

        let written = home.drain_to(0, &path).await;
        let set = match setstat {
            Some(p) => p.ok().await,
            None => Ok(()),
        };
        let set = match (set, remode) {
            (Ok(()), Some(p)) => p.ok().await,
            (set, _) => set,
        };
        let synced = match fsync {
            Some(p) => p.ok().await.map_err(|e| sftp_error("fsync", &path, e)),
            None => Ok(()),
        };
        let closed = close.ok().await.map_err(|e| sftp_error("close", &path, e));
        let read_back = match read_back {
            Some((reply, mtime, mode)) => Some((reply.response().await, mtime, mode)),
            None => None,
        };
        written?;
        let set = match set {
            Err(_) if attrs.uid_gid.is_some() => {
                // Most SFTP logins are not root: keep the rest, drop ownership from now on.
                self.quirks.chown_refused.store(true, Ordering::Relaxed);
                home.client
                    .setstat(&self.full, &attrs_for(meta, false))
                    .await
            }
            other => other,
        };
        match set {
            Ok(()) => {
                if let Some((Ok(sftp_proto::Response::Attrs(a)), mtime, mode)) = read_back {
                    // Compared as sent: a clamped time is not the server ignoring it.
                    if a.atime_mtime.is_some_and(|(_, m)| m != wire_mtime(mtime)) {
                        self.quirks.note_ignored(&self.server, &*self.warnings);
                    }
                    // Only the permission bits: servers may well drop setuid and the like.
                    let kept = |p: u32| p & 0o777;
                    if let (Some(want), Some(got)) = (mode, a.permissions) {
                        if kept(want) != kept(got) {
                            self.quirks.note_mode_ignored(&self.server, &*self.warnings);
                        }
                    }
                }
            }
            // The file itself is complete: keep it, and stop asking for attributes.
            Err(e) if refuses_setstat(&e) => {
                self.quirks.note_refused(&self.server, &*self.warnings)
            }
            Err(e) => return Err(sftp_error("fsetstat", &path, e)),
        }
        synced?;
        closed?;
        match rewrite {
            Some(r) => replace_file(&home.client, &self.full, &r.target)
                .await
                .map_err(|e| sftp_error("rename", &path, e)),
            None => Ok(()),
        }
    }

    /// Writes the next `len` bytes as the old version has them at the same offset.
    async fn copy_from_old(&mut self, len: u64) -> TreeResult<()> {
        let Some(old) = self.rewrite.as_ref().and_then(|r| r.old.clone()) else {
            return Err(self.unsupported("seek", "there is no old version to keep bytes of"));
        };
        let client = self.home.clone();
        let step = u64::from(client.read_size());
        let mut at = self.offset + self.pending.len() as u64;
        let end = at + len;
        while at < end {
            // A few reads in flight: one round trip each would crawl.
            let mut reads = Vec::new();
            let mut next = at;
            while next < end && reads.len() < READ_AHEAD {
                let n = (end - next).min(step);
                let p = client
                    .send_read(&old, next, n as u32)
                    .await
                    .map_err(|e| sftp_error("read", &self.path, e))?;
                reads.push((next, p));
                next += n;
            }
            for (offset, p) in reads {
                if offset != at {
                    // A short read came before: the rest is asked for again from `at`.
                    break;
                }
                match p
                    .data()
                    .await
                    .map_err(|e| sftp_error("read", &self.path, e))?
                {
                    Some(d) if !d.is_empty() => {
                        at += d.len() as u64;
                        self.write(d).await?;
                    }
                    _ => {
                        return Err(TreeError {
                            op: "read",
                            side: Side::Remote,
                            path: self.path.clone(),
                            cause: format!("the old version ends at {at}, before {end}"),
                            kind: ErrorKind::Other,
                        })
                    }
                }
            }
        }
        Ok(())
    }

    fn unsupported(&self, op: &'static str, cause: &str) -> TreeError {
        TreeError {
            op,
            side: Side::Remote,
            path: self.path.clone(),
            cause: cause.into(),
            kind: ErrorKind::Unsupported,
        }
    }

    /// Sends what `write` held back for a whole request, short as it may be.
    async fn flush_pending(&mut self) -> TreeResult<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending).freeze();
            self.send_write(rest).await?;
        }
        Ok(())
    }

    /// Sends one WRITE through the next channel in turn.
    async fn send_write(&mut self, chunk: Bytes) -> TreeResult<()> {
        let n = self.handles.len();
        let h = &mut self.handles[self.writes_sent % n];
        self.writes_sent += 1;
        h.drain_to(WRITE_BEHIND - 1, &self.path).await?;
        let p = h
            .client
            .send_write(&h.handle, self.offset, &chunk)
            .await
            .map_err(|e| sftp_error("write", &self.path, e))?;
        h.in_flight.push_back(p);
        self.offset += chunk.len() as u64;
        Ok(())
    }
}

struct SftpWriter {
    /// The first handle created the file; big files have one more on each other channel.
    handles: Vec<WriteHandle>,
    path: RelPath,
    full: Vec<u8>,
    write_size: usize,
    /// Data not yet sent: less than one write request's worth.
    pending: BytesMut,
    offset: u64,
    writes_sent: usize,
    quirks: Arc<ServerQuirks>,
    server: String,
    warnings: Arc<dyn Fn(String) + Send + Sync>,
    /// Where a failed write is explained from (statvfs).
    home: SftpClient,
    /// The old version that ranges are copied from (`create_file_based_on`), open for reading
    /// on the same channel.
    base: Option<Handle>,
    /// Rewritten in place (`open_in_place`): cut to where the writing ended at `finish`.
    in_place: bool,
    /// Written to a temp file in place of the target, for a server that takes writes only
    /// in order (`SftpTree::rewrite_writer`).
    rewrite: Option<Rewrite>,
    /// A new file that `write_zeros` may leave holes in, by writing past them.
    holes_allowed: bool,
    /// It did: the file's size is set at `finish`.
    holes: bool,
}

struct Rewrite {
    /// The old version, on the home channel, where skipped ranges are read from.
    old: Option<Handle>,
    /// The file the temp file replaces at the end.
    target: Vec<u8>,
}

#[async_trait]
impl FileWriter for SftpWriter {
    async fn write(&mut self, data: Bytes) -> TreeResult<()> {
        // Whole write_size requests only: chunks of another size would leave a small
        // remainder every time, and taking turns between channels would then send every big
        // request down the same ones.
        self.pending.extend_from_slice(&data);
        while self.pending.len() >= self.write_size {
            let chunk = self.pending.split_to(self.write_size).freeze();
            if let Err(e) = self.send_write(chunk).await {
                return Err(SftpWriter::explain(&self.home, &self.full, e).await);
            }
        }
        Ok(())
    }

    async fn skip(&mut self, len: u64) -> TreeResult<()> {
        if self.rewrite.is_some() {
            return self.copy_from_old(len).await;
        }
        if !self.in_place {
            return Err(self.unsupported("seek", "this file is not being rewritten in place"));
        }
        self.flush_pending().await?;
        self.offset += len;
        Ok(())
    }

    async fn write_zeros(&mut self, len: u64) -> TreeResult<()> {
        // SFTP v3 cannot punch holes: in a file rewritten in place the zeros are written.
        if !self.holes_allowed || self.in_place || self.rewrite.is_some() {
            let mut left = len;
            while left > 0 {
                let n = left.min(self.write_size as u64);
                self.write(Bytes::from(vec![0u8; n as usize])).await?;
                left -= n;
            }
            return Ok(());
        }
        self.flush_pending().await?;
        self.offset += len;
        self.holes = true;
        Ok(())
    }

    async fn copy_from_base(&mut self, from_offset: u64, len: u64) -> TreeResult<()> {
        let Some(base) = self.base.clone() else {
            return Err(self.unsupported("copy", "this file was not created from a base"));
        };
        // Bytes written so far go first, so that offsets stay in order.
        self.flush_pending().await?;
        let h = &mut self.handles[0];
        h.drain_to(WRITE_BEHIND - 1, &self.path).await?;
        let reply = h
            .client
            .send(
                &Request::CopyData {
                    read_handle: &base.0,
                    read_offset: from_offset,
                    len,
                    write_handle: &h.handle.0,
                    write_offset: self.offset,
                },
                0,
            )
            .await
            .map_err(|e| sftp_error("copy-data", &self.path, e))?;
        h.in_flight.push_back(reply);
        self.offset += len;
        Ok(())
    }

    async fn finish(self: Box<Self>, meta: &SetMeta) -> TreeResult<()> {
        let (home, full) = (self.home.clone(), self.full.clone());
        let temp = self.rewrite.is_some();
        match self.complete(meta).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if temp {
                    let _ = home.remove(&full).await;
                }
                Err(SftpWriter::explain(&home, &full, e).await)
            }
        }
    }

    async fn abandon(self: Box<Self>) {
        if let Some(Rewrite { old: Some(old), .. }) = &self.rewrite {
            let _ = self.home.close(old).await;
        }
        if let (Some(base), Some(h)) = (&self.base, self.handles.first()) {
            let _ = h
                .send(&Request::Close { handle: &base.0 }, "close", &self.path)
                .await;
        }
        for h in &self.handles {
            let _ = h
                .send(
                    &Request::Close {
                        handle: &h.handle.0,
                    },
                    "close",
                    &self.path,
                )
                .await;
        }
        if self.rewrite.is_some() {
            // After the closes, which the server takes first on this channel.
            let _ = self.home.remove(&self.full).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_link_targets_are_restored_from_absolute_answers() {
        // `sub/t` in /d comes back as /d/sub/t; the link holds 5 bytes.
        assert_eq!(
            stored_relative_target(b"/d/sub/t", 5, b"/d"),
            Some(&b"sub/t"[..])
        );
        assert_eq!(stored_relative_target(b"/t", 1, b"/"), Some(&b"t"[..]));
        // `../x` in /d resolved to /x, and `./x` in /a to /a/x: the text is gone.
        assert_eq!(stored_relative_target(b"/x", 4, b"/d"), None);
        assert_eq!(stored_relative_target(b"/a/x", 3, b"/a"), None);
        assert_eq!(stored_relative_target(b"/a/x", 3, b"/"), Some(&b"a/x"[..]));
        // Somewhere else than the link's directory, or with dot components left in.
        assert_eq!(stored_relative_target(b"/dsub/t", 5, b"/d"), None);
        assert_eq!(stored_relative_target(b"/d/./t", 3, b"/d"), None);
    }
    use sftp_client::{ClientConfig, Transport};

    async fn tree_over_pipes(root: &std::path::Path) -> SftpTree {
        let t = Transport::sftp_server("/usr/lib/openssh/sftp-server".as_ref(), &[])
            .expect("spawn sftp-server");
        let client = SftpClient::connect(t, ClientConfig::default())
            .await
            .expect("handshake");
        use std::os::unix::ffi::OsStrExt;
        SftpTree::new(
            Arc::new(ChannelPool::new(client)),
            root.as_os_str().as_bytes().to_vec(),
            "test".into(),
            Arc::new(ServerQuirks::default()),
            Arc::new(|_| {}),
        )
    }

    #[tokio::test]
    async fn file_based_on_another_mixes_copied_ranges_and_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("old"), &old).unwrap();
        let tree = tree_over_pipes(dir.path()).await;
        assert!(tree.copies_ranges());

        let mut w = tree
            .create_file_based_on(&b"new".to_vec(), 0o644, &b"old".to_vec())
            .await
            .unwrap();
        w.write(Bytes::from_static(b"head")).await.unwrap();
        w.copy_from_base(1000, 300_000).await.unwrap();
        w.write(Bytes::from(vec![7u8; 70_000])).await.unwrap();
        w.copy_from_base(0, 10).await.unwrap();
        w.finish(&SetMeta::default()).await.unwrap();

        let mut want = b"head".to_vec();
        want.extend_from_slice(&old[1000..301_000]);
        want.extend_from_slice(&[7u8; 70_000]);
        want.extend_from_slice(&old[..10]);
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), want);
        assert_eq!(std::fs::read(dir.path().join("old")).unwrap(), old);
    }

    #[tokio::test]
    async fn rename_from_another_tree_of_the_session_and_only_that() {
        let (dest_dir, part_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dest = tree_over_pipes(dest_dir.path()).await;
        use std::os::unix::ffi::OsStrExt;
        let part = SftpTree::new(
            dest.pool.clone(),
            part_dir.path().as_os_str().as_bytes().to_vec(),
            "partials".into(),
            dest.quirks.clone(),
            Arc::new(|_| {}),
        );
        let w = part.create_file(&b"f".to_vec(), 0o644, 0).await.unwrap();
        w.finish(&SetMeta::default()).await.unwrap();
        std::fs::write(dest_dir.path().join("g"), b"old").unwrap();

        let stranger = tree_over_pipes(part_dir.path()).await;
        let e = dest
            .rename_replace_from(&stranger.anchor(), &b"f".to_vec(), &b"g".to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");

        dest.rename_replace_from(&part.anchor(), &b"f".to_vec(), &b"g".to_vec())
            .await
            .unwrap();
        assert_eq!(std::fs::read(dest_dir.path().join("g")).unwrap(), b"");
        assert!(!part_dir.path().join("f").exists());
    }

    #[tokio::test]
    async fn a_rewrite_keeps_the_old_bytes_it_passes_over_and_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
        std::fs::write(dir.path().join("f"), &old).unwrap();
        let tree = tree_over_pipes(dir.path()).await;
        let mut w = tree
            .rewrite_writer(&b"f".to_vec(), None, 100_000)
            .await
            .unwrap();
        w.write(Bytes::from(vec![1u8; 50_000])).await.unwrap();
        w.skip(200_000).await.unwrap();
        w.write(Bytes::from_static(b"end")).await.unwrap();
        // Nothing shows at the file's name until the new version is complete.
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), old);
        w.finish(&SetMeta::default()).await.unwrap();

        let mut want = old[..100_000].to_vec();
        want.extend_from_slice(&[1u8; 50_000]);
        want.extend_from_slice(&old[150_000..350_000]);
        want.extend_from_slice(b"end");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), want);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temp file is gone");
    }

    #[tokio::test]
    async fn reads_start_at_the_offset_asked() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let tree = tree_over_pipes(dir.path()).await;
        let mut r = tree
            .open_read(&b"f".to_vec(), 123_456, data.len() as u64)
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            got.extend_from_slice(&c);
        }
        assert_eq!(got, &data[123_456..]);
    }

    #[tokio::test]
    async fn missing_base_fails_and_leaves_no_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree_over_pipes(dir.path()).await;
        let r = tree
            .create_file_based_on(&b"new".to_vec(), 0o644, &b"gone".to_vec())
            .await;
        assert!(r.is_err());
        assert!(!dir.path().join("new").exists());
    }

    #[test]
    fn attrs_for_clamps_out_of_range_mtimes_not_wraps() {
        for (t, wire) in [
            (-1, 0),
            (i64::MIN, 0),
            ((1 << 32) + 5, u32::MAX),
            (1 << 33, u32::MAX),
            (i64::MAX, u32::MAX),
            (1_700_000_000, 1_700_000_000),
        ] {
            let a = attrs_for(
                &SetMeta {
                    mtime: Some(t),
                    atime: Some(t),
                    ..Default::default()
                },
                false,
            );
            assert_eq!(a.atime_mtime, Some((wire, wire)), "mtime {t}");
        }
    }

    #[test]
    fn the_time_not_changed_goes_as_it_is_now() {
        let meta = |atime, mtime, times_now| SetMeta {
            atime,
            mtime,
            times_now,
            ..Default::default()
        };
        assert_eq!(wire_times(&meta(None, None, Some((1, 2)))), None);
        assert_eq!(wire_times(&meta(None, Some(7), Some((5, 6)))), Some((5, 7)));
        assert_eq!(wire_times(&meta(Some(8), None, Some((5, 6)))), Some((8, 6)));
        // Unknown: a file just written was touched now, not at its new mtime.
        let (atime, _) = wire_times(&meta(None, Some(7), None)).unwrap();
        assert!(atime > 1_700_000_000);
    }

    #[test]
    fn mode_is_sent_again_only_after_a_chown_of_a_setuid_or_setgid_file() {
        let with = |perms, owner| Attrs {
            permissions: Some(perms),
            uid_gid: owner,
            ..Default::default()
        };
        let again = mode_after_chown(&with(0o4755, Some((1, 1)))).unwrap();
        assert_eq!((again.permissions, again.uid_gid), (Some(0o4755), None));
        assert!(mode_after_chown(&with(0o2750, Some((1, 1)))).is_some());
        assert!(mode_after_chown(&with(0o1777, Some((1, 1)))).is_none());
        assert!(mode_after_chown(&with(0o4755, None)).is_none());
    }

    #[test]
    fn meta_from_attrs_takes_wire_extremes_as_they_are() {
        for m in [0, u32::MAX] {
            let a = Attrs {
                permissions: Some(0o100644),
                atime_mtime: Some((m, m)),
                ..Default::default()
            };
            assert_eq!(meta_from_attrs(&a).mtime, i64::from(m));
        }
    }

    #[test]
    fn attrs_for_sends_ownership_only_when_asked_and_allowed() {
        let meta = SetMeta {
            mode: Some(0o755),
            uid: Some(0),
            gid: Some(0),
            ..Default::default()
        };
        assert_eq!(attrs_for(&meta, true).uid_gid, Some((0, 0)));
        assert_eq!(attrs_for(&meta, false).uid_gid, None);
        assert_eq!(attrs_for(&meta, true).permissions, Some(0o755));
    }
}

//! `Tree` over the local file system, confined to its root: nothing below the root is reached
//! through a symlink (see the private `confined` module).

mod confined;

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::path::RelPath;
use crate::tree::{
    Anchor, BlockHashes, DirEntry, ErrorKind, FileReader, FileWriter, HashRange, Kind, Meta,
    SetMeta, Side, Tree, TreeError, TreeResult,
};
pub use confined::{openat2_in_use, PARENT_SYMLINK};
use confined::{DirFd, Root};

const READ_CHUNK: usize = 256 * 1024;

/// A directory on this machine.
pub struct LocalTree {
    root: Arc<Root>,
    /// A source read with `-L`/`--copy-unsafe-links`: paths are resolved through symlinks,
    /// which is what the user asked for. Never a destination.
    follow_links: bool,
    /// `--open-noatime`: files are read without moving their access time, where the kernel
    /// lets us (O_NOATIME needs the file's owner or CAP_FOWNER; others are read as usual).
    open_noatime: bool,
    /// `--preallocate`: each new file's expected size is allocated before it is written.
    preallocate: bool,
}

impl LocalTree {
    pub fn new(root: impl Into<PathBuf>) -> LocalTree {
        LocalTree {
            root: Arc::new(Root::new(root.into(), true)),
            follow_links: false,
            open_noatime: false,
            preallocate: false,
        }
    }

    /// The same tree, resolving paths the way kernels before Linux 5.6 (no `openat2`) and 6.6
    /// (no `fchmodat2`) make us: only for tests of that fallback.
    #[doc(hidden)]
    pub fn with_legacy_syscalls(root: impl Into<PathBuf>) -> LocalTree {
        LocalTree {
            root: Arc::new(Root::new(root.into(), false)),
            follow_links: false,
            open_noatime: false,
            preallocate: false,
        }
    }

    /// A source whose symlinks the user asked to be copied as what they point to: reads
    /// follow symlinks in every path component. Only for sources, which are never written.
    pub fn following_links(mut self, follow: bool) -> LocalTree {
        self.follow_links = follow;
        self
    }

    /// Reads files without changing their access times where allowed (`--open-noatime`).
    pub fn opening_noatime(mut self, noatime: bool) -> LocalTree {
        self.open_noatime = noatime;
        self
    }

    /// Allocates the space of each new file before writing it (`--preallocate`).
    pub fn preallocating(mut self, preallocate: bool) -> LocalTree {
        self.preallocate = preallocate;
        self
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.path().to_path_buf()
        } else {
            self.root.path().join(OsStr::from_bytes(rel))
        }
    }
}

fn error(op: &'static str, path: &[u8], e: std::io::Error) -> TreeError {
    let kind = match e.kind() {
        IoKind::NotFound => ErrorKind::NotFound,
        IoKind::PermissionDenied => ErrorKind::PermissionDenied,
        IoKind::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Other,
    };
    TreeError {
        op,
        side: Side::Local,
        path: path.to_vec(),
        cause: io_cause(&e),
        kind,
    }
}

/// rsync's style: the OS message plus the errno.
fn io_cause(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    match e.raw_os_error() {
        Some(n) => format!("{text} ({n})"),
        None => text.to_string(),
    }
}

fn is_errno(e: &std::io::Error, errno: rustix::io::Errno) -> bool {
    rustix::io::Errno::from_io_error(e) == Some(errno)
}

fn kind_of(file_type: FileType) -> Kind {
    match file_type {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::BlockDevice | FileType::CharacterDevice => Kind::Device,
        FileType::Fifo | FileType::Socket => Kind::Special,
        FileType::Unknown => Kind::Unknown,
    }
}

// Field widths of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn meta_from_stat(st: &rustix::fs::Stat) -> Meta {
    let kind = kind_of(FileType::from_raw_mode(st.st_mode as _));
    Meta {
        kind,
        size: listed_size(kind, st.st_size as u64),
        mtime: st.st_mtime as i64,
        atime: st.st_atime as i64,
        mode: st.st_mode as u32 & 0o7777,
        uid: Some(st.st_uid as u32),
        gid: Some(st.st_gid as u32),
        dev_ino: Some((st.st_dev as u64, st.st_ino as u64)),
        nlink: st.st_nlink as u64,
        file_type: st.st_mode as u32 & S_IFMT,
    }
}

fn meta_from_std(m: &fs::Metadata) -> Meta {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_block_device() || ft.is_char_device() {
        Kind::Device
    } else if ft.is_fifo() || ft.is_socket() {
        Kind::Special
    } else {
        Kind::Unknown
    };
    Meta {
        kind,
        size: listed_size(kind, m.len()),
        mtime: m.mtime(),
        atime: m.atime(),
        mode: m.mode() & 0o7777,
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        dev_ino: Some((m.dev(), m.ino())),
        nlink: m.nlink(),
        file_type: m.mode() & S_IFMT,
    }
}

/// The file-type bits of a mode.
const S_IFMT: u32 = 0o170000;

/// The size an entry is shown with, as rsync takes it from `lstat`: a directory's too (what
/// its filesystem says), but none for devices and special files, whose `st_size` means
/// nothing.
fn listed_size(kind: Kind, st_size: u64) -> u64 {
    match kind {
        Kind::File | Kind::Symlink | Kind::Dir => st_size,
        _ => 0,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    joined(tokio::task::spawn_blocking(f)).await
}

/// What a blocking task returned. A panic in it goes on here; a task cancelled before it ran
/// means the runtime is shutting down (a run that ended early), and the task waiting here is
/// dropped with it, so it waits for nothing.
pub(crate) async fn joined<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}

/// Only the mtime: atime is left as it is.
fn mtime_only(mtime: i64) -> Timestamps {
    times(None, Some(mtime))
}

/// Whole-second times for utimensat; `None` leaves that one as it is.
fn times(atime: Option<i64>, mtime: Option<i64>) -> Timestamps {
    let spec = |t: Option<i64>| match t {
        Some(t) => Timespec {
            tv_sec: t as _,
            tv_nsec: 0,
        },
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    };
    Timestamps {
        last_access: spec(atime),
        last_modification: spec(mtime),
    }
}

/// Sets the mtime of `path` itself, never a symlink's target, to whole seconds; atime is left
/// alone.
pub fn set_mtime_nofollow(path: &Path, mtime: i64) -> std::io::Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &mtime_only(mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// `-1` asks chown to leave an id alone, so it cannot be applied as an id.
fn owner_ids(meta: &SetMeta) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        meta.uid
            .filter(|&u| u != u32::MAX)
            .map(rustix::fs::Uid::from_raw),
        meta.gid
            .filter(|&g| g != u32::MAX)
            .map(rustix::fs::Gid::from_raw),
    )
}

/// Applies attributes to `name` in `dir` without following it if it is a symlink.
fn apply_meta_at(
    root: &Root,
    dir: BorrowedFd<'_>,
    name: &[u8],
    kind: Kind,
    meta: &SetMeta,
) -> Result<(), (&'static str, std::io::Error)> {
    let (uid, gid) = owner_ids(meta);
    if uid.is_some() || gid.is_some() {
        // Ownership first: chown clears setuid/setgid bits, which chmod then restores.
        rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ("chown", e.into()))?;
    }
    if let (Some(mode), false) = (meta.mode, kind == Kind::Symlink) {
        root.chmod_nofollow(dir, name, mode & 0o7777)
            .map_err(|e| ("chmod", e))?;
    }
    if meta.mtime.is_some() || meta.atime.is_some() {
        let t = times(meta.atime, meta.mtime);
        rustix::fs::utimensat(dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ("set times of", e.into()))?;
    }
    Ok(())
}

/// Applies attributes to an open file or directory: no name is looked up at all.
fn apply_meta_fd(fd: BorrowedFd<'_>, meta: &SetMeta) -> Result<(), (&'static str, std::io::Error)> {
    let (uid, gid) = owner_ids(meta);
    if uid.is_some() || gid.is_some() {
        rustix::fs::fchown(fd, uid, gid).map_err(|e| ("chown", e.into()))?;
    }
    if let Some(mode) = meta.mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| ("chmod", e.into()))?;
    }
    if meta.mtime.is_some() || meta.atime.is_some() {
        rustix::fs::futimens(fd, &times(meta.atime, meta.mtime))
            .map_err(|e| ("set times of", e.into()))?;
    }
    Ok(())
}

/// The root's own attributes. Its descriptor is used when it could be opened for reading; a
/// root we may only search is changed by the path the user gave.
fn apply_meta_root(root: &Root, meta: &SetMeta) -> Result<(), (&'static str, std::io::Error)> {
    let fd = root.fd().map_err(|e| ("open", e))?;
    match apply_meta_fd(fd.as_fd(), meta) {
        Err((_, e)) if is_errno(&e, rustix::io::Errno::BADF) => {}
        r => return r,
    }
    let path = root.path();
    let (uid, gid) = owner_ids(meta);
    if uid.is_some() || gid.is_some() {
        rustix::fs::chown(path, uid, gid).map_err(|e| ("chown", e.into()))?;
    }
    if let Some(mode) = meta.mode {
        rustix::fs::chmod(path, Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| ("chmod", e.into()))?;
    }
    if meta.mtime.is_some() || meta.atime.is_some() {
        let t = times(meta.atime, meta.mtime);
        rustix::fs::utimensat(rustix::fs::CWD, path, &t, AtFlags::empty())
            .map_err(|e| ("set times of", e.into()))?;
    }
    Ok(())
}

fn lstat_at(root: &Root, rel: &[u8]) -> std::io::Result<Option<Meta>> {
    let not_found = |e: &std::io::Error| e.kind() == IoKind::NotFound;
    if rel.is_empty() {
        return match root.fd() {
            Ok(fd) => Ok(Some(meta_from_stat(&rustix::fs::fstat(&fd)?))),
            // Not a directory (or a dangling symlink): the caller wants to know what it is.
            Err(e) if not_found(&e) || is_errno(&e, rustix::io::Errno::NOTDIR) => {
                match fs::symlink_metadata(root.path()) {
                    Ok(m) => Ok(Some(meta_from_std(&m))),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
    }
    let (dir, name) = match root.parent(rel) {
        Ok(p) => p,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(meta_from_stat(&st))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_dir_at(root: &Root, rel: &RelPath) -> TreeResult<Vec<DirEntry>> {
    let dir = root
        .open_dir(rel, OFlags::RDONLY)
        .map_err(|e| error("opendir", rel, e))?;
    let mut listing = rustix::fs::Dir::new(dir).map_err(|e| error("opendir", rel, e.into()))?;
    let mut names = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry.map_err(|e| error("readdir", rel, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    // Each entry is looked up in the directory just listed, not by its path again.
    let dir = listing.fd().map_err(|e| error("readdir", rel, e.into()))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let meta = match rustix::fs::statat(dir, &name[..], AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => meta_from_stat(&st),
            // Vanished between readdir and stat: as if it never was there.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(error("lstat", &crate::path::join(rel, &name), e.into())),
        };
        out.push(DirEntry { name, meta });
    }
    Ok(out)
}

/// A listing through whatever symlinks lead to `full` (a source read with `-L`).
fn read_dir_following(full: &Path, rel: &RelPath) -> TreeResult<Vec<DirEntry>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(full).map_err(|e| error("opendir", rel, e))? {
        let entry = entry.map_err(|e| error("readdir", rel, e))?;
        let name = entry.file_name().into_encoded_bytes();
        let meta = match entry.metadata() {
            Ok(m) => meta_from_std(&m),
            // Vanished between readdir and stat: as if it never was there.
            Err(e) if e.kind() == IoKind::NotFound => continue,
            Err(e) => return Err(error("lstat", &crate::path::join(rel, &name), e)),
        };
        out.push(DirEntry { name, meta });
    }
    Ok(out)
}

/// Opens a regular file below the root for reading, never through a symlink; with `noatime`,
/// without changing its access time where the kernel allows it.
fn open_read_at(root: &Root, rel: &[u8], noatime: bool) -> std::io::Result<fs::File> {
    let (dir, name) = root.parent(rel)?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match noatime {
        true => match rustix::fs::openat(&dir, name, flags | OFlags::NOATIME, Mode::empty()) {
            // Only the owner (or CAP_FOWNER) may: anyone else's file is still read.
            Err(rustix::io::Errno::PERM) => rustix::fs::openat(&dir, name, flags, Mode::empty()),
            r => r,
        },
        false => rustix::fs::openat(&dir, name, flags, Mode::empty()),
    }?;
    Ok(fs::File::from(fd))
}

#[async_trait]
impl Tree for LocalTree {
    fn side(&self) -> Side {
        Side::Local
    }

    fn describe(&self) -> String {
        let s = self.root.path().display().to_string();
        match s.trim_end_matches('/') {
            "" => s,
            t => t.to_string(),
        }
    }

    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        let root = self.root.clone();
        let rel = path.clone();
        if self.follow_links {
            let full = self.full(path);
            return blocking(move || match fs::symlink_metadata(&full) {
                Ok(m) => Ok(Some(meta_from_std(&m))),
                Err(e) if e.kind() == IoKind::NotFound => Ok(None),
                Err(e) => Err(error("lstat", &rel, e)),
            })
            .await;
        }
        blocking(move || lstat_at(&root, &rel).map_err(|e| error("lstat", &rel, e))).await
    }

    async fn stat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || match fs::metadata(&full) {
            Ok(m) => Ok(Some(meta_from_std(&m))),
            Err(e) if e.kind() == IoKind::NotFound => Ok(None),
            Err(e) => Err(error("stat", &rel, e)),
        })
        .await
    }

    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>> {
        let root = self.root.clone();
        let rel = path.clone();
        if self.follow_links {
            let full = self.full(path);
            return blocking(move || read_dir_following(&full, &rel)).await;
        }
        blocking(move || read_dir_at(&root, &rel)).await
    }

    async fn read_link(&self, path: &RelPath, _listed_size: Option<u64>) -> TreeResult<Vec<u8>> {
        let root = self.root.clone();
        let rel = path.clone();
        if self.follow_links {
            let full = self.full(path);
            return blocking(move || {
                fs::read_link(&full)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .map_err(|e| error("readlink", &rel, e))
            })
            .await;
        }
        blocking(move || {
            let (dir, name) = root.parent(&rel).map_err(|e| error("readlink", &rel, e))?;
            rustix::fs::readlinkat(&dir, name, Vec::new())
                .map(|t| t.into_bytes())
                .map_err(|e| error("readlink", &rel, e.into()))
        })
        .await
    }

    async fn open_read(
        &self,
        path: &RelPath,
        offset: u64,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>> {
        let root = self.root.clone();
        let rel = path.clone();
        let (follow, full) = (self.follow_links, self.full(path));
        let noatime = self.open_noatime;
        // One trip to the blocking pool opens the file and, for a small one, reads all of it.
        blocking(move || {
            let file = if follow {
                let mut options = fs::OpenOptions::new();
                options.read(true);
                if noatime {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.custom_flags(OFlags::NOATIME.bits() as i32);
                }
                options.open(&full).or_else(|e| match e.raw_os_error() {
                    Some(code) if noatime && code == rustix::io::Errno::PERM.raw_os_error() => {
                        fs::File::open(&full)
                    }
                    _ => Err(e),
                })
            } else {
                open_read_at(&root, &rel, noatime)
            }
            .map_err(|e| error("open", &rel, e))?;
            if offset > 0 {
                use std::io::Seek;
                (&file)
                    .seek(std::io::SeekFrom::Start(offset))
                    .map_err(|e| error("seek", &rel, e))?;
            }
            let mut reader = LocalReader {
                file: Arc::new(file),
                path: rel,
                first: None,
                ahead: None,
                eof: false,
            };
            let expected_rest = expected_size.saturating_sub(offset);
            if expected_rest < READ_CHUNK as u64 {
                // One byte more than expected shows whether the file grew since the listing.
                let chunk = read_chunk(&reader.file, &reader.path, expected_rest as usize + 1)?;
                reader.eof = chunk.len() <= expected_rest as usize;
                reader.first = Some(chunk);
            }
            Ok(Box::new(reader) as Box<dyn FileReader>)
        })
        .await
    }

    async fn create_file(
        &self,
        path: &RelPath,
        mode: u32,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        let mut writer = LocalWriter::new(self, path, mode, None);
        if self.preallocate {
            writer.allocate = expected_size;
        }
        let allocate = writer.allocate;
        // A small file is created, written, stamped and synced in one trip to the blocking
        // pool at `finish`; a big one is created now and written as it comes.
        if expected_size > WRITE_BUFFER as u64 {
            let (root, rel) = (writer.root.clone(), writer.path.clone());
            writer.file = Some(blocking(move || create_new(&root, mode, &rel, allocate)).await?);
        }
        Ok(Box::new(writer))
    }

    async fn reopen_for_append(
        &self,
        path: &RelPath,
        offset: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        let (root, rel) = (self.root.clone(), path.clone());
        let file = blocking(move || {
            let (dir, name) = root.parent(&rel).map_err(|e| error("open", &rel, e))?;
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| error("open", &rel, e.into()))?;
            let file = fs::File::from(fd);
            file.set_len(offset)
                .map_err(|e| error("truncate", &rel, e))?;
            use std::io::Seek;
            (&file)
                .seek(std::io::SeekFrom::Start(offset))
                .map_err(|e| error("seek", &rel, e))?;
            Ok::<_, TreeError>(Arc::new(file))
        })
        .await?;
        Ok(Box::new(LocalWriter::new(self, path, 0o600, Some(file))))
    }

    async fn open_in_place(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>> {
        let (root, rel) = (self.root.clone(), path.clone());
        let file = blocking(move || {
            let (dir, name) = root.parent(&rel).map_err(|e| error("open", &rel, e))?;
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::NOFOLLOW
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode & 0o777),
            )
            .map_err(|e| error("open", &rel, e.into()))?;
            Ok::<_, TreeError>(Arc::new(fs::File::from(fd)))
        })
        .await?;
        Ok(Box::new(LocalWriter {
            in_place: true,
            ..LocalWriter::new(self, path, mode, Some(file))
        }))
    }

    async fn read_range(&self, path: &RelPath, offset: u64, len: u32) -> TreeResult<Bytes> {
        let (root, rel, noatime) = (self.root.clone(), path.clone(), self.open_noatime);
        blocking(move || {
            let file = open_read_at(&root, &rel, noatime).map_err(|e| error("open", &rel, e))?;
            let mut buf = vec![0u8; len as usize];
            let mut filled = 0;
            while filled < buf.len() {
                use std::os::unix::fs::FileExt;
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == IoKind::Interrupted => {}
                    Err(e) => return Err(error("read", &rel, e)),
                }
            }
            buf.truncate(filled);
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        let root = self.root.clone();
        let rel = path.clone();
        blocking(move || {
            if rel.is_empty() {
                // The destination itself, where the user named it.
                return fs::DirBuilder::new()
                    .mode(mode & 0o7777)
                    .create(root.path())
                    .map_err(|e| error("mkdir", &rel, e));
            }
            let (dir, name) = root.parent(&rel).map_err(|e| error("mkdir", &rel, e))?;
            rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o7777))
                .map_err(|e| error("mkdir", &rel, e.into()))
        })
        .await
    }

    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        let root = self.root.clone();
        let rel = path.clone();
        let target = target.to_vec();
        blocking(move || {
            let (dir, name) = root.parent(&rel).map_err(|e| error("symlink", &rel, e))?;
            rustix::fs::symlinkat(&target[..], &dir, name)
                .map_err(|e| error("symlink", &rel, e.into()))
        })
        .await
    }

    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        let root = self.root.clone();
        let (from, to) = (existing.clone(), new.clone());
        blocking(move || {
            let (from_dir, from_name) = root.parent(&from).map_err(|e| error("link", &to, e))?;
            let (to_dir, to_name) = root.parent(&to).map_err(|e| error("link", &to, e))?;
            // No AT_SYMLINK_FOLLOW: a symlink is linked itself, never its target.
            rustix::fs::linkat(&from_dir, from_name, &to_dir, to_name, AtFlags::empty())
                .map_err(|e| error("link", &to, e.into()))
        })
        .await
    }

    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        let root = self.root.clone();
        let rel = path.clone();
        blocking(move || {
            let (dir, name) = root.parent(&rel).map_err(|e| error("unlink", &rel, e))?;
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                .map_err(|e| error("unlink", &rel, e.into()))
        })
        .await
    }

    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        let root = self.root.clone();
        let rel = path.clone();
        blocking(move || {
            if rel.is_empty() {
                // The root itself, where the user named it, as `mkdir` makes it.
                return fs::remove_dir(root.path()).map_err(|e| error("rmdir", &rel, e));
            }
            let (dir, name) = root.parent(&rel).map_err(|e| error("rmdir", &rel, e))?;
            rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)
                .map_err(|e| error("rmdir", &rel, e.into()))
        })
        .await
    }

    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        let root = self.root.clone();
        let (from, to) = (from.clone(), to.clone());
        blocking(move || {
            let (from_dir, from_name) = root.parent(&from).map_err(|e| error("rename", &to, e))?;
            let (to_dir, to_name) = root.parent(&to).map_err(|e| error("rename", &to, e))?;
            rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name)
                .map_err(|e| error("rename", &to, e.into()))
        })
        .await
    }

    fn anchor(&self) -> Anchor {
        Anchor(Arc::new(self.root.clone()))
    }

    async fn rename_replace_from(
        &self,
        from_tree: &Anchor,
        from: &RelPath,
        to: &RelPath,
    ) -> TreeResult<()> {
        let Some(from_root) = from_tree.0.downcast_ref::<Arc<Root>>().cloned() else {
            return Err(TreeError {
                op: "rename",
                side: Side::Local,
                path: to.clone(),
                cause: "the file to move is not on this machine".into(),
                kind: ErrorKind::Unsupported,
            });
        };
        let root = self.root.clone();
        let (from, to) = (from.clone(), to.clone());
        blocking(move || {
            let (from_dir, from_name) = from_root
                .parent(&from)
                .map_err(|e| error("rename", &to, e))?;
            let (to_dir, to_name) = root.parent(&to).map_err(|e| error("rename", &to, e))?;
            match rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name) {
                Err(rustix::io::Errno::XDEV) => {
                    copy_across(&from_dir, from_name, &to_dir, to_name, &to)
                }
                r => r.map_err(|e| error("rename", &to, e.into())),
            }
        })
        .await
    }

    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        let root = self.root.clone();
        let rel = path.clone();
        let meta = meta.clone();
        blocking(move || {
            if rel.is_empty() {
                return apply_meta_root(&root, &meta).map_err(|(op, e)| error(op, &rel, e));
            }
            let (dir, name) = root.parent(&rel).map_err(|e| error("open", &rel, e))?;
            apply_meta_at(&root, dir.as_fd(), name, kind, &meta)
                .map_err(|(op, e)| error(op, &rel, e))
        })
        .await
    }

    fn can_chown(&self) -> bool {
        rustix::process::geteuid().is_root()
    }

    async fn create_file_based_on(
        &self,
        path: &RelPath,
        mode: u32,
        base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>> {
        let (root, rel, base_rel) = (self.root.clone(), path.clone(), base.clone());
        let (file, base) = blocking(move || {
            let base =
                open_read_at(&root, &base_rel, false).map_err(|e| error("open", &base_rel, e))?;
            Ok((create_new(&root, mode, &rel, 0)?, Arc::new(base)))
        })
        .await?;
        Ok(Box::new(LocalWriter {
            base: Some(base),
            ..LocalWriter::new(self, path, mode, Some(file))
        }))
    }

    fn copies_ranges(&self) -> bool {
        true
    }

    async fn block_hashes(
        &self,
        _path: &RelPath,
        _range: HashRange,
    ) -> TreeResult<Option<BlockHashes>> {
        Ok(None)
    }

    fn keeps_times(&self) -> bool {
        true
    }

    fn stored_mtime(&self, mtime: i64) -> i64 {
        mtime
    }

    fn lanes(&self) -> usize {
        1
    }
}

struct LocalReader {
    file: Arc<fs::File>,
    path: RelPath,
    /// Read when the file was opened.
    first: Option<Bytes>,
    /// The next chunk, read while the caller works on the last one.
    ahead: Option<tokio::task::JoinHandle<TreeResult<Bytes>>>,
    eof: bool,
}

impl LocalReader {
    fn read_next(&self) -> tokio::task::JoinHandle<TreeResult<Bytes>> {
        let (file, path) = (self.file.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || read_chunk(&file, &path, READ_CHUNK))
    }
}

/// Reads up to `len` bytes; fewer only at end of file.
fn read_chunk(file: &fs::File, path: &RelPath, len: usize) -> TreeResult<Bytes> {
    // Into the vector's spare capacity, which `read_to_end` does not zero first: zeroing
    // was a few percent of the CPU a delta of a big file takes.
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut buf)
        .map_err(|e| error("read", path, e))?;
    Ok(Bytes::from(buf))
}

#[async_trait]
impl FileReader for LocalReader {
    async fn next_chunk(&mut self) -> TreeResult<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Ok((!first.is_empty()).then_some(first));
        }
        if self.eof {
            return Ok(None);
        }
        let next = self.ahead.take().unwrap_or_else(|| self.read_next());
        let chunk = next.await.expect("blocking file read panicked")?;
        self.eof = chunk.len() < READ_CHUNK;
        if !self.eof {
            // Reading a big file then overlaps with what the caller does with each chunk
            // (matching, hashing, sending) instead of taking turns with it.
            self.ahead = Some(self.read_next());
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    async fn close(self: Box<Self>) -> TreeResult<()> {
        Ok(())
    }
}

/// `rename_replace_from` between two file systems, as rsync does it: the finished file is
/// copied to a temp name beside `to_name` with its mode, owner and mtime, synced, renamed over
/// it, and only then removed from where it was. Both ends stay relative to their directories.
// Field widths of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn copy_across(
    from_dir: &DirFd,
    from_name: &[u8],
    to_dir: &DirFd,
    to_name: &[u8],
    rel: &RelPath,
) -> TreeResult<()> {
    let fail = |op, e: rustix::io::Errno| error(op, rel, e.into());
    let source = rustix::fs::openat(
        from_dir,
        from_name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("open", e))?;
    let st = rustix::fs::fstat(&source).map_err(|e| fail("stat", e))?;
    let mut temp = Vec::with_capacity(to_name.len().min(200) + 16);
    temp.push(b'.');
    temp.extend_from_slice(&to_name[..to_name.len().min(200)]);
    temp.extend_from_slice(format!(".{}.copy", std::process::id()).as_bytes());
    let target = rustix::fs::openat(
        to_dir,
        &temp[..],
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| fail("create", e))?;
    let (mut source, target) = (fs::File::from(source), fs::File::from(target));
    let copied = std::io::copy(&mut source, &mut &target)
        .map_err(|e| error("copy", rel, e))
        .and_then(|_| {
            let meta = SetMeta {
                mode: Some(st.st_mode as u32 & 0o7777),
                mtime: Some(st.st_mtime as i64),
                atime: None,
                times_now: None,
                // Only root may give a file away; anyone else keeps it as their own.
                uid: rustix::process::geteuid()
                    .is_root()
                    .then_some(st.st_uid as u32),
                gid: rustix::process::geteuid()
                    .is_root()
                    .then_some(st.st_gid as u32),
            };
            apply_meta_fd(target.as_fd(), &meta).map_err(|(op, e)| error(op, rel, e))?;
            target.sync_all().map_err(|e| error("fsync", rel, e))?;
            rustix::fs::renameat(to_dir, &temp[..], to_dir, to_name).map_err(|e| fail("rename", e))
        });
    if let Err(e) = copied {
        let _ = rustix::fs::unlinkat(to_dir, &temp[..], AtFlags::empty());
        return Err(e);
    }
    // The file is in place; a copy left behind is only a partial that matches to its end.
    let _ = rustix::fs::unlinkat(from_dir, from_name, AtFlags::empty());
    Ok(())
}

/// What a writer keeps in memory before it has to go to the file.
const WRITE_BUFFER: usize = 1 << 20;

/// Creates `rel`, which must not exist: O_EXCL also refuses a symlink in its place.
/// `allocate` bytes are reserved for it (`--preallocate`), which makes it that long until
/// the writer's `finish` cuts it where the writing ended (as rsync does: holes punched in
/// space allocated past the end of a file would not free it).
fn create_new(root: &Root, mode: u32, rel: &RelPath, allocate: u64) -> TreeResult<Arc<fs::File>> {
    let (dir, name) = root.parent(rel).map_err(|e| error("create", rel, e))?;
    let fd: OwnedFd = rustix::fs::openat(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode & 0o777),
    )
    .map_err(|e| error("create", rel, e.into()))?;
    if allocate > 0 {
        // A file system that cannot allocate ahead (tmpfs before 2.6.x, some FUSE ones) still
        // takes the data: as rsync, only real failures count.
        match rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, allocate) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(error("preallocate", rel, e.into())),
        }
    }
    Ok(Arc::new(fs::File::from(fd)))
}

/// Makes the `len` bytes after the file position zeros without writing them: a hole punched
/// where the file has (or may have) blocks there, a seek past them where it ends before.
fn zeros_at_position(file: &fs::File, len: u64, punch: bool) -> std::io::Result<()> {
    use std::io::Seek;
    let at = (&*file).stream_position()?;
    if punch && len > 0 {
        let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(file, flags, at, len) {
            if e != rustix::io::Errno::OPNOTSUPP {
                return Err(e.into());
            }
            // No holes here: real zeros, then.
            use std::os::unix::fs::FileExt;
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at + done)?;
                done += n as u64;
            }
        }
    }
    (&*file).seek(std::io::SeekFrom::Start(at + len))?;
    Ok(())
}

fn write_all(file: &fs::File, chunks: &[Bytes], rel: &RelPath) -> TreeResult<()> {
    use std::io::Write;
    for c in chunks {
        (&*file).write_all(c).map_err(|e| error("write", rel, e))?;
    }
    Ok(())
}

/// Appends `len` bytes of `base` from `offset` at `to`'s position: in the kernel where it can
/// (and without copying at all on filesystems that share extents), else through a buffer.
fn copy_range(base: &fs::File, offset: u64, to: &fs::File, len: u64) -> std::io::Result<()> {
    let (mut at, mut left) = (offset, len);
    while left > 0 {
        let want = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(base, Some(&mut at), to, None, want) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    IoKind::UnexpectedEof,
                    "the old version ended early",
                ))
            }
            Ok(n) => left -= n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => return copy_range_buffered(base, at, to, left),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_buffered(
    base: &fs::File,
    mut at: u64,
    to: &fs::File,
    len: u64,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match base.read_at(&mut buf[..want], at) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    IoKind::UnexpectedEof,
                    "the old version ended early",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == IoKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        (&*to).write_all(&buf[..n])?;
        at += n as u64;
        left -= n as u64;
    }
    Ok(())
}

struct LocalWriter {
    root: Arc<Root>,
    path: RelPath,
    mode: u32,
    /// `None` until the file has to exist: small files are created at `finish`.
    file: Option<Arc<fs::File>>,
    buffered: Vec<Bytes>,
    buffered_len: usize,
    /// Rewritten in place: cut to where the writing ended at `finish`.
    in_place: bool,
    /// The old version that `copy_from_base` copies ranges of (`create_file_based_on`).
    base: Option<Arc<fs::File>>,
    /// Bytes to allocate when the file is created (`--preallocate`), 0 for none.
    allocate: u64,
    /// `write_zeros` left a hole: the file is cut (or extended) to the end at `finish`.
    holes: bool,
}

impl LocalWriter {
    /// A plain writer of a new file: buffered, not in place, with no base.
    fn new(tree: &LocalTree, path: &RelPath, mode: u32, file: Option<Arc<fs::File>>) -> Self {
        LocalWriter {
            root: tree.root.clone(),
            path: path.clone(),
            mode,
            file,
            buffered: Vec::new(),
            buffered_len: 0,
            in_place: false,
            base: None,
            allocate: 0,
            holes: false,
        }
    }
}

#[async_trait]
impl FileWriter for LocalWriter {
    async fn write(&mut self, data: Bytes) -> TreeResult<()> {
        self.buffered_len += data.len();
        self.buffered.push(data);
        if self.buffered_len < WRITE_BUFFER {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.buffered);
        self.buffered_len = 0;
        let (root, rel, mode, file, allocate) = (
            self.root.clone(),
            self.path.clone(),
            self.mode,
            self.file.clone(),
            self.allocate,
        );
        let file = blocking(move || {
            let file = match file {
                Some(f) => f,
                None => create_new(&root, mode, &rel, allocate)?,
            };
            write_all(&file, &chunks, &rel)?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn copy_from_base(&mut self, from_offset: u64, len: u64) -> TreeResult<()> {
        let (chunks, rel) = (std::mem::take(&mut self.buffered), self.path.clone());
        self.buffered_len = 0;
        let (Some(file), Some(base)) = (self.file.clone(), self.base.clone()) else {
            return Err(error(
                "copy",
                &rel,
                std::io::Error::other("this file was not created from a base"),
            ));
        };
        blocking(move || {
            write_all(&file, &chunks, &rel)?;
            copy_range(&base, from_offset, &file, len).map_err(|e| error("copy", &rel, e))
        })
        .await
    }

    async fn skip(&mut self, len: u64) -> TreeResult<()> {
        let (chunks, rel) = (std::mem::take(&mut self.buffered), self.path.clone());
        self.buffered_len = 0;
        let Some(file) = self.file.clone() else {
            return Err(error(
                "seek",
                &rel,
                std::io::Error::other("not rewritten in place"),
            ));
        };
        blocking(move || {
            use std::io::Seek;
            write_all(&file, &chunks, &rel)?;
            (&*file)
                .seek(std::io::SeekFrom::Current(len as i64))
                .map(|_| ())
                .map_err(|e| error("seek", &rel, e))
        })
        .await
    }

    async fn write_zeros(&mut self, len: u64) -> TreeResult<()> {
        let (chunks, rel) = (std::mem::take(&mut self.buffered), self.path.clone());
        self.buffered_len = 0;
        let (root, mode, file, allocate) = (
            self.root.clone(),
            self.mode,
            self.file.clone(),
            self.allocate,
        );
        // Blocks are there to be punched out in a file rewritten in place or allocated ahead.
        let punch = self.in_place || allocate > 0;
        let file = blocking(move || {
            let file = match file {
                Some(f) => f,
                None => create_new(&root, mode, &rel, allocate)?,
            };
            write_all(&file, &chunks, &rel)?;
            zeros_at_position(&file, len, punch).map_err(|e| error("seek", &rel, e))?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        self.holes = true;
        Ok(())
    }

    async fn finish(self: Box<Self>, meta: &SetMeta) -> TreeResult<()> {
        let LocalWriter {
            root,
            path,
            mode,
            file,
            buffered,
            in_place,
            allocate,
            holes,
            ..
        } = *self;
        let meta = meta.clone();
        blocking(move || {
            let file = match file {
                Some(f) => f,
                None => create_new(&root, mode, &path, allocate)?,
            };
            write_all(&file, &buffered, &path)?;
            if in_place || holes || allocate > 0 {
                use std::io::Seek;
                let end = (&*file)
                    .stream_position()
                    .map_err(|e| error("seek", &path, e))?;
                file.set_len(end).map_err(|e| error("truncate", &path, e))?;
            }
            // The open file itself: whatever happens to its name meanwhile, nothing else is
            // changed.
            apply_meta_fd(file.as_fd(), &meta).map_err(|(op, e)| error(op, &path, e))?;
            file.sync_all().map_err(|e| error("fsync", &path, e))
        })
        .await
    }

    async fn abandon(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The fallback for a rename between file systems, run here on one: the result must be
    /// what a rename gives.
    #[test]
    fn copy_across_leaves_what_a_rename_would() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = a.path().join("f");
        std::fs::write(&from, b"partial data").unwrap();
        std::fs::set_permissions(&from, fs::Permissions::from_mode(0o640)).unwrap();
        set_mtime_nofollow(&from, 1_234_567).unwrap();
        std::fs::write(b.path().join("g"), b"old").unwrap();
        let (ra, rb) = (
            Root::new(a.path().into(), true),
            Root::new(b.path().into(), true),
        );
        copy_across(
            &ra.fd().unwrap(),
            b"f",
            &rb.fd().unwrap(),
            b"g",
            &b"g".to_vec(),
        )
        .unwrap();
        let moved = b.path().join("g");
        assert_eq!(std::fs::read(&moved).unwrap(), b"partial data");
        let m = std::fs::metadata(&moved).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_234_567));
        assert!(!from.exists());
        assert_eq!(
            std::fs::read_dir(b.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[tokio::test]
    async fn reads_start_at_the_offset_asked_small_or_big() {
        let dir = tempfile::tempdir().unwrap();
        let tree = LocalTree::new(dir.path());
        for (len, at) in [(1000usize, 10u64), (1000, 1000), (3 << 20, 5 << 19)] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
            std::fs::write(dir.path().join("f"), &data).unwrap();
            let mut r = tree
                .open_read(&b"f".to_vec(), at, len as u64)
                .await
                .unwrap();
            let mut got = Vec::new();
            while let Some(c) = r.next_chunk().await.unwrap() {
                got.extend_from_slice(&c);
            }
            assert_eq!(got, &data[at as usize..], "{len} from {at}");
        }
    }

    #[test]
    fn copy_across_refuses_a_symlink_and_leaves_the_target() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::os::unix::fs::symlink("/etc/passwd", a.path().join("f")).unwrap();
        std::fs::write(b.path().join("g"), b"old").unwrap();
        let (ra, rb) = (
            Root::new(a.path().into(), true),
            Root::new(b.path().into(), true),
        );
        let r = copy_across(
            &ra.fd().unwrap(),
            b"f",
            &rb.fd().unwrap(),
            b"g",
            &b"g".to_vec(),
        );
        assert!(r.is_err());
        assert_eq!(std::fs::read(b.path().join("g")).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(b.path()).unwrap().count(), 1);
    }

    async fn read_all(tree: &LocalTree, name: &str, expected: u64) -> (Vec<u8>, Vec<usize>) {
        let mut r = tree.open_read(&name.into(), 0, expected).await.unwrap();
        let (mut data, mut sizes) = (Vec::new(), Vec::new());
        while let Some(c) = r.next_chunk().await.unwrap() {
            sizes.push(c.len());
            data.extend_from_slice(&c);
        }
        r.close().await.unwrap();
        (data, sizes)
    }

    #[tokio::test]
    async fn chunks_cover_the_file_whatever_its_size_and_the_size_expected() {
        let dir = tempfile::tempdir().unwrap();
        let tree = LocalTree::new(dir.path());
        let c = READ_CHUNK;
        for (len, expected) in [
            (0, 0),
            (c - 1, c - 1),
            (c, c),
            (2 * c, 2 * c),
            (2 * c + 1, 2 * c + 1),
            // Grown or shrunk since it was listed: read as it is now.
            (3 * c + 5, 10),
            (7, 3 * c),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(dir.path().join("f"), &data).unwrap();
            let (read, sizes) = read_all(&tree, "f", expected as u64).await;
            assert!(read == data, "{len} bytes, {expected} expected");
            assert!(
                sizes.iter().all(|&n| n > 0 && n <= c + 1),
                "{len}: {sizes:?}"
            );
        }
    }
}

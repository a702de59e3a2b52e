//! `Tree` over the local file system.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::path::RelPath;
use crate::tree::{
    DirEntry, ErrorKind, FileReader, FileWriter, Kind, Meta, SetMeta, Side, Tree, TreeError,
    TreeResult,
};

const READ_CHUNK: usize = 256 * 1024;

/// A directory on this machine.
pub struct LocalTree {
    root: Arc<PathBuf>,
    /// A source read with `-L`/`--copy-unsafe-links` opens files through symlinks.
    follow_links: bool,
}

impl LocalTree {
    pub fn new(root: impl Into<PathBuf>) -> LocalTree {
        LocalTree {
            root: Arc::new(root.into()),
            follow_links: false,
        }
    }

    /// A source whose symlinks the user asked to be copied as what they point to.
    pub fn following_links(mut self, follow: bool) -> LocalTree {
        self.follow_links = follow;
        self
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        full_path(&self.root, rel)
    }
}

fn full_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn error(op: &'static str, path: &[u8], e: std::io::Error) -> TreeError {
    let kind = match e.kind() {
        IoKind::NotFound => ErrorKind::NotFound,
        IoKind::PermissionDenied => ErrorKind::PermissionDenied,
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

pub(crate) fn meta_from_std(m: &fs::Metadata) -> Meta {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_block_device() || ft.is_char_device() {
            Kind::Device
        } else if ft.is_fifo() || ft.is_socket() {
            Kind::Special
        } else {
            Kind::Unknown
        }
    };
    Meta {
        kind,
        size: if kind == Kind::File || kind == Kind::Symlink {
            m.len()
        } else {
            0
        },
        mtime: m.mtime(),
        mode: m.mode() & 0o7777,
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        dev_ino: Some((m.dev(), m.ino())),
        nlink: m.nlink(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking file system task panicked")
}

/// Sets the mtime of `path` itself, never a symlink's target, to whole seconds; atime is left
/// alone.
pub fn set_mtime_nofollow(path: &Path, mtime: i64) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(IoKind::InvalidInput, "path contains NUL"))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated string and `times` has the two entries utimensat reads.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn apply_meta(
    path: &Path,
    kind: Kind,
    meta: &SetMeta,
) -> Result<(), (&'static str, std::io::Error)> {
    if meta.uid.is_some() || meta.gid.is_some() {
        // Ownership first: chown clears setuid/setgid bits, which chmod then restores.
        std::os::unix::fs::lchown(path, meta.uid, meta.gid).map_err(|e| ("chown", e))?;
    }
    if let (Some(mode), false) = (meta.mode, kind == Kind::Symlink) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| ("chmod", e))?;
    }
    if let Some(mtime) = meta.mtime {
        set_mtime_nofollow(path, mtime).map_err(|e| ("set times of", e))?;
    }
    Ok(())
}

#[async_trait]
impl Tree for LocalTree {
    fn side(&self) -> Side {
        Side::Local
    }

    fn describe(&self) -> String {
        let s = self.root.display().to_string();
        match s.trim_end_matches('/') {
            "" => s,
            t => t.to_string(),
        }
    }

    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || match fs::symlink_metadata(&full) {
            Ok(m) => Ok(Some(meta_from_std(&m))),
            Err(e) if e.kind() == IoKind::NotFound => Ok(None),
            Err(e) => Err(error("lstat", &rel, e)),
        })
        .await
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
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || {
            let mut out = Vec::new();
            let rd = fs::read_dir(&full).map_err(|e| error("opendir", &rel, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| error("readdir", &rel, e))?;
                let name = entry.file_name().as_bytes().to_vec();
                let meta = match entry.metadata() {
                    Ok(m) => meta_from_std(&m),
                    // Vanished between readdir and stat: as if it never was there.
                    Err(e) if e.kind() == IoKind::NotFound => continue,
                    Err(e) => return Err(error("lstat", &crate::path::join(&rel, &name), e)),
                };
                out.push(DirEntry { name, meta });
            }
            Ok(out)
        })
        .await
    }

    async fn read_link(&self, path: &RelPath) -> TreeResult<Vec<u8>> {
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || {
            fs::read_link(&full)
                .map(|t| t.as_os_str().as_bytes().to_vec())
                .map_err(|e| error("readlink", &rel, e))
        })
        .await
    }

    async fn open_read(
        &self,
        path: &RelPath,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>> {
        let full = self.full(path);
        let rel = path.clone();
        let nofollow = if self.follow_links {
            0
        } else {
            libc::O_NOFOLLOW
        };
        // One trip to the blocking pool opens the file and, for a small one, reads all of it.
        blocking(move || {
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nofollow)
                .open(full)
                .map_err(|e| error("open", &rel, e))?;
            let mut reader = LocalReader {
                file: Arc::new(file),
                path: rel,
                first: None,
                eof: false,
            };
            if expected_size < READ_CHUNK as u64 {
                // One byte more than expected shows whether the file grew since the listing.
                let chunk = read_chunk(&reader.file, &reader.path, expected_size as usize + 1)?;
                reader.eof = chunk.len() <= expected_size as usize;
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
        let mut writer = LocalWriter {
            full: self.full(path),
            path: path.clone(),
            mode,
            file: None,
            buffered: Vec::new(),
            buffered_len: 0,
        };
        // A small file is created, written, stamped and synced in one trip to the blocking
        // pool at `finish`; a big one is created now and written as it comes.
        if expected_size > WRITE_BUFFER as u64 {
            let (full, rel) = (writer.full.clone(), writer.path.clone());
            writer.file = Some(blocking(move || create_new(&full, mode, &rel)).await?);
        }
        Ok(Box::new(writer))
    }

    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || {
            fs::DirBuilder::new()
                .mode(mode & 0o7777)
                .create(&full)
                .map_err(|e| error("mkdir", &rel, e))
        })
        .await
    }

    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        let full = self.full(path);
        let rel = path.clone();
        let target = target.to_vec();
        blocking(move || {
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full)
                .map_err(|e| error("symlink", &rel, e))
        })
        .await
    }

    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        let from = self.full(existing);
        let to = self.full(new);
        let rel = new.clone();
        blocking(move || fs::hard_link(&from, &to).map_err(|e| error("link", &rel, e))).await
    }

    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || fs::remove_file(&full).map_err(|e| error("unlink", &rel, e))).await
    }

    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        let full = self.full(path);
        let rel = path.clone();
        blocking(move || fs::remove_dir(&full).map_err(|e| error("rmdir", &rel, e))).await
    }

    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        let a = self.full(from);
        let b = self.full(to);
        let rel = to.clone();
        blocking(move || fs::rename(&a, &b).map_err(|e| error("rename", &rel, e))).await
    }

    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        let full = self.full(path);
        let rel = path.clone();
        let meta = meta.clone();
        blocking(move || apply_meta(&full, kind, &meta).map_err(|(op, e)| error(op, &rel, e))).await
    }

    fn can_chown(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    async fn create_file_based_on(
        &self,
        path: &RelPath,
        _mode: u32,
        _base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>> {
        Err(TreeError {
            op: "create",
            side: Side::Local,
            path: path.clone(),
            cause: "building a file from ranges of another is only done on SFTP servers".into(),
            kind: ErrorKind::Unsupported,
        })
    }

    fn copies_ranges(&self) -> bool {
        false
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
    eof: bool,
}

/// Reads up to `len` bytes; fewer only at end of file.
fn read_chunk(file: &fs::File, path: &RelPath, len: usize) -> TreeResult<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match (&*file).read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(error("read", path, e)),
        }
    }
    buf.truncate(filled);
    Ok(buf.freeze())
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
        let (file, path) = (self.file.clone(), self.path.clone());
        let chunk = blocking(move || read_chunk(&file, &path, READ_CHUNK)).await?;
        self.eof = chunk.len() < READ_CHUNK;
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    async fn close(self: Box<Self>) -> TreeResult<()> {
        Ok(())
    }
}

/// What a writer keeps in memory before it has to go to the file.
const WRITE_BUFFER: usize = 1 << 20;

fn create_new(full: &Path, mode: u32, rel: &RelPath) -> TreeResult<Arc<fs::File>> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(full)
        .map(Arc::new)
        .map_err(|e| error("create", rel, e))
}

fn write_all(file: &fs::File, chunks: &[Bytes], rel: &RelPath) -> TreeResult<()> {
    use std::io::Write;
    for c in chunks {
        (&*file).write_all(c).map_err(|e| error("write", rel, e))?;
    }
    Ok(())
}

struct LocalWriter {
    full: PathBuf,
    path: RelPath,
    mode: u32,
    /// `None` until the file has to exist: small files are created at `finish`.
    file: Option<Arc<fs::File>>,
    buffered: Vec<Bytes>,
    buffered_len: usize,
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
        let (full, rel, mode, file) = (
            self.full.clone(),
            self.path.clone(),
            self.mode,
            self.file.clone(),
        );
        let file = blocking(move || {
            let file = match file {
                Some(f) => f,
                None => create_new(&full, mode, &rel)?,
            };
            write_all(&file, &chunks, &rel)?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(self: Box<Self>, meta: &SetMeta) -> TreeResult<()> {
        let LocalWriter {
            full,
            path,
            mode,
            file,
            buffered,
            ..
        } = *self;
        let meta = meta.clone();
        blocking(move || {
            let file = match file {
                Some(f) => f,
                None => create_new(&full, mode, &path)?,
            };
            write_all(&file, &buffered, &path)?;
            apply_meta(&full, Kind::File, &meta).map_err(|(op, e)| error(op, &path, e))?;
            file.sync_all().map_err(|e| error("fsync", &path, e))
        })
        .await
    }

    async fn abandon(self: Box<Self>) {}
}

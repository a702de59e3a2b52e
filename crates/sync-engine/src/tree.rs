//! The `Tree` abstraction the sync runs over: a directory hierarchy on one side (local or remote).

use async_trait::async_trait;
use bytes::Bytes;

use crate::path::{display_path, RelPath};

/// Which side of the transfer a tree lives on, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Local,
    Remote,
}

impl Side {
    pub fn word(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Device,
    Special,
    Unknown,
}

/// What the sync needs to know about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub size: u64,
    /// Seconds since the epoch; SFTP v3 carries whole seconds only.
    pub mtime: i64,
    /// Last access, seconds since the epoch (0 where the side did not say).
    pub atime: i64,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Identity for hard-link detection, where the side can tell (local only).
    pub dev_ino: Option<(u64, u64)>,
    pub nlink: u64,
    /// The file-type bits of the mode (`S_IFMT`) as the side reported them, 0 when it did
    /// not: `kind` folds block and character devices together, and FIFOs with sockets, which
    /// a listing (`ls -l` style) tells apart.
    pub file_type: u32,
}

/// Attributes to apply; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetMeta {
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
    /// The access time to set (`-U`).
    pub atime: Option<i64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The entry's (atime, mtime) as they are now, where the caller knows them: a side that
    /// can only set both times together (SFTP v3) sends the one not being changed as this
    /// says, and the current time where nothing does (a file just written). Not a change.
    pub times_now: Option<(i64, i64)>,
}

impl SetMeta {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.mtime.is_none()
            && self.atime.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
    }
}

/// Where a tree's root is, handed from one tree to another of the same side so that a file can
/// be renamed between them (`Tree::rename_replace_from`, for `--partial-dir=/DIR`). Only the
/// tree kind that made it can use it; to anything else it is opaque.
#[derive(Clone)]
pub struct Anchor(pub(crate) std::sync::Arc<dyn std::any::Any + Send + Sync>);

/// A failed operation on one tree, naming the path, the side and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {side} \"{path}\" failed: {cause}", side = side.word(), path = display_path(path))]
pub struct TreeError {
    pub op: &'static str,
    pub side: Side,
    pub path: RelPath,
    pub cause: String,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    /// The operation is not possible on this side (e.g. no extension for it).
    Unsupported,
    /// The connection is gone; nothing further will work.
    Connection,
    /// The operands do not fit together, e.g. a directory copied onto a file.
    Selection,
    Other,
}

impl TreeError {
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

pub type TreeResult<T> = Result<T, TreeError>;

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub meta: Meta,
}

/// A hash function a side can compute blocks of its files with where they are (SFTP
/// `check-file`), by the names that extension uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 6] = [
        HashAlgorithm::Md5,
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha224,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha224 => "sha224",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<HashAlgorithm> {
        Self::ALL.into_iter().find(|a| a.name().as_bytes() == name)
    }

    /// Bytes in one hash.
    pub fn hash_len(self) -> usize {
        match self {
            HashAlgorithm::Md5 => 16,
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha224 => 28,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// A hasher for this side to compute the same hashes over its own bytes.
    pub fn hasher(self) -> Box<dyn digest::DynDigest + Send> {
        match self {
            HashAlgorithm::Md5 => Box::new(md5::Md5::default()),
            HashAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            HashAlgorithm::Sha224 => Box::new(sha2::Sha224::default()),
            HashAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            HashAlgorithm::Sha384 => Box::new(sha2::Sha384::default()),
            HashAlgorithm::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }
}

/// What to hash of a file where it is: `len` bytes from `offset` (0: to the end), one hash
/// per `block_size` bytes (0: one hash of the whole range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashRange {
    pub offset: u64,
    pub len: u64,
    pub block_size: u32,
}

/// Hashes of consecutive blocks, computed by the side the file is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHashes {
    pub algorithm: HashAlgorithm,
    /// Back to back, `algorithm.hash_len()` bytes each, in block order.
    pub hashes: Bytes,
}

impl BlockHashes {
    pub fn count(&self) -> usize {
        self.hashes.len() / self.algorithm.hash_len()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let n = self.algorithm.hash_len();
        self.hashes.get(i * n..(i + 1) * n)
    }
}

/// A directory hierarchy rooted somewhere; every path is relative to that root.
///
/// No method has a default body, so that a wrapper (the CLI's `TrackingTree`) cannot forget
/// to forward one.
#[async_trait]
pub trait Tree: Send + Sync {
    fn side(&self) -> Side;
    /// How the root is shown to people, e.g. `host:dir/` or `/local/path`.
    fn describe(&self) -> String;
    /// Metadata without following a final symlink; `Ok(None)` when nothing is there.
    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>>;
    /// Metadata of what a symlink leads to (for `-L`); `Ok(None)` when it leads nowhere.
    async fn stat(&self, path: &RelPath) -> TreeResult<Option<Meta>>;
    /// Entries of a directory, without `.` and `..`, in no particular order.
    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>>;
    /// What a symlink holds. `listed_size` is the link's size as its directory listing showed
    /// it, where known: it lets a server that answers with the path the target resolves to
    /// (ProFTPD) be corrected.
    async fn read_link(&self, path: &RelPath, listed_size: Option<u64>) -> TreeResult<Vec<u8>>;
    /// Opens a file for reading from `offset` on. `expected_size` (the whole file's, 0 if
    /// unknown) lets the reader plan its requests; the file is read to its real end whatever
    /// it says.
    async fn open_read(
        &self,
        path: &RelPath,
        offset: u64,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>>;
    /// Creates a new, empty file at `path`, which must not exist (a temp name).
    /// `expected_size` is how much will be written, as far as the caller knows.
    async fn create_file(
        &self,
        path: &RelPath,
        mode: u32,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileWriter>>;
    /// Like `create_file`, for a new version of `base` (an existing file on this side) that
    /// is mostly made of ranges of it: the writer's `copy_from_base` copies them without
    /// moving their bytes. Only where `copies_ranges` says so.
    async fn create_file_based_on(
        &self,
        path: &RelPath,
        mode: u32,
        base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>>;
    /// Whether `create_file_based_on` works (over SFTP: the copy-data extension).
    fn copies_ranges(&self) -> bool;
    /// Opens an existing file (a kept partial transfer) to go on writing it at `offset`;
    /// anything past `offset` is cut off.
    async fn reopen_for_append(
        &self,
        path: &RelPath,
        offset: u64,
    ) -> TreeResult<Box<dyn FileWriter>>;
    /// Opens `path` to be rewritten where it is (`--inplace`), created if missing: nothing is
    /// truncated until `finish`, which cuts the file where the writing ended, so ranges passed
    /// over with `skip` keep their bytes.
    async fn open_in_place(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>>;
    /// Hashes of a file's blocks computed where the file is, so that its bytes need not
    /// cross the wire to be compared. `Ok(None)` when this side cannot (an SFTP server
    /// without `check-file`; a local file is simply read).
    async fn block_hashes(
        &self,
        path: &RelPath,
        range: HashRange,
    ) -> TreeResult<Option<BlockHashes>>;
    /// Up to `len` bytes of a file from `offset`: fewer only at its end.
    async fn read_range(&self, path: &RelPath, offset: u64, len: u32) -> TreeResult<Bytes>;
    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()>;
    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()>;
    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()>;
    /// Removes a file, symlink or other non-directory.
    async fn remove_file(&self, path: &RelPath) -> TreeResult<()>;
    /// Removes an empty directory; the empty path is the root itself, as for `mkdir`.
    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()>;
    /// Renames `from` over `to`, replacing it atomically where the side can.
    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()>;
    /// This tree's root, for `rename_replace_from` on another tree of the same side.
    fn anchor(&self) -> Anchor;
    /// Renames `from`, a path in the tree `from_tree` is the anchor of (same side, same
    /// session), over `to` in this tree. Each path is resolved inside its own tree, so neither
    /// tree's confinement is weakened.
    async fn rename_replace_from(
        &self,
        from_tree: &Anchor,
        from: &RelPath,
        to: &RelPath,
    ) -> TreeResult<()>;
    /// Applies attributes; never follows a final symlink.
    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()>;
    /// Whether ownership changes can be applied on this side.
    fn can_chown(&self) -> bool;
    /// Whether modification times set here stay set; when not, files are compared by size.
    fn keeps_times(&self) -> bool;
    /// The mtime this side ends up with when asked to set `mtime`: source times are compared
    /// in this form, so one the side cannot hold is not sent again on every run.
    fn stored_mtime(&self, mtime: i64) -> i64;
    /// How many independent lanes of requests the side has right now (SFTP channels); the
    /// sync keeps its number of entries in flight proportional to it.
    fn lanes(&self) -> usize;
}

/// Sequential reader of a file's contents.
#[async_trait]
pub trait FileReader: Send {
    /// The next chunk, or `None` at end of file.
    async fn next_chunk(&mut self) -> TreeResult<Option<Bytes>>;
    async fn close(self: Box<Self>) -> TreeResult<()>;
}

/// Sequential writer of a new file.
#[async_trait]
pub trait FileWriter: Send {
    async fn write(&mut self, data: Bytes) -> TreeResult<()>;
    /// Appends `len` bytes from `from_offset` of the base file this writer was made from
    /// (`Tree::create_file_based_on`); they are copied where the files are.
    async fn copy_from_base(&mut self, _from_offset: u64, _len: u64) -> TreeResult<()> {
        Err(TreeError {
            op: "copy",
            side: Side::Local,
            path: Vec::new(),
            cause: "this file was not created from a base".into(),
            kind: ErrorKind::Unsupported,
        })
    }
    /// Moves on `len` bytes without writing them (`Tree::open_in_place` writers only).
    async fn skip(&mut self, _len: u64) -> TreeResult<()> {
        Err(TreeError {
            op: "seek",
            side: Side::Local,
            path: Vec::new(),
            cause: "this file is not being rewritten in place".into(),
            kind: ErrorKind::Unsupported,
        })
    }
    /// Writes `len` zero bytes as a hole where the side can make one (`--sparse`): a seek
    /// past them in a new file, a punched hole in one rewritten in place. `finish` then makes
    /// the file end where the writing ended, even past the last byte written.
    async fn write_zeros(&mut self, len: u64) -> TreeResult<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64);
            self.write(Bytes::from_static(&ZEROS[..n as usize])).await?;
            left -= n;
        }
        Ok(())
    }
    /// Applies attributes, flushes to stable storage and closes. Does not rename.
    async fn finish(self: Box<Self>, meta: &SetMeta) -> TreeResult<()>;
    /// Closes without completing; the caller removes the file.
    async fn abandon(self: Box<Self>);
}

//! Builders for test trees on local disk: hand-written ones ([`TreeBuilder`]), deterministic
//! pseudo-random ones ([`generate_mixed_tree`]) and their perturbation ([`mutate_tree`]).
//!
//! Every mtime these helpers leave behind is a whole second: SFTP v3 carries whole seconds
//! only, so a source with sub-second mtimes could never be reproduced exactly through SFTP.
//! rsync's default quick check would not notice (it compares whole seconds), but
//! `--modify-window=-1`, `stat` and `cp -a` copies do.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::prng::XorShift;

/// 2001-01-01 and 2020-01-01: generated mtimes are old so that "now" never matches by chance.
const OLD_MIN: u64 = 978_307_200;
const OLD_MAX: u64 = 1_577_836_800;
/// Mutations use later (but still past) times so a changed mtime always differs from the old.
const NEW_MIN: u64 = 1_600_000_000;
const NEW_MAX: u64 = 1_700_000_000;
const FILE_MODES: [u32; 9] = [
    0o600, 0o640, 0o644, 0o660, 0o664, 0o700, 0o740, 0o750, 0o755,
];
const DIR_MODES: [u32; 4] = [0o700, 0o711, 0o750, 0o755];
const MAX_DEPTH: usize = 5;
const MIB: u64 = 1 << 20;

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Sets the mtime of `path` itself, never a symlink's target, to `secs` whole seconds;
/// atime is left alone. The engine's own call, with the path in the error.
pub fn set_mtime_nofollow(path: &Path, secs: i64) -> io::Result<()> {
    sync_engine::local::set_mtime_nofollow(path, secs).map_err(|e| annotate(e, "utimensat", path))
}

/// Every entry under `root` (root first, then pre-order, names sorted bytewise) with its
/// lstat metadata. Sorting keeps the mutations deterministic whatever readdir order is.
fn list_tree(root: &Path) -> io::Result<Vec<(PathBuf, fs::Metadata)>> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) -> io::Result<()> {
        let mut names = fs::read_dir(dir)
            .map_err(|e| annotate(e, "read_dir", dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<OsString>>>()?;
        names.sort();
        for name in names {
            let path = dir.join(name);
            let meta = fs::symlink_metadata(&path).map_err(|e| annotate(e, "lstat", &path))?;
            let is_dir = meta.is_dir();
            out.push((path.clone(), meta));
            if is_dir {
                walk(&path, out)?;
            }
        }
        Ok(())
    }
    let meta = fs::symlink_metadata(root).map_err(|e| annotate(e, "lstat", root))?;
    let mut out = vec![(root.to_owned(), meta)];
    if out[0].1.is_dir() {
        walk(root, &mut out)?;
    }
    Ok(out)
}

/// Drops the sub-second part of every mtime under `root` (root included, symlinks not
/// followed). Use it after changing a tree by other means than these helpers.
pub fn truncate_mtimes(root: &Path) -> io::Result<()> {
    for (path, meta) in list_tree(root)? {
        if meta.mtime_nsec() != 0 {
            set_mtime_nofollow(&path, meta.mtime())?;
        }
    }
    Ok(())
}

/// `lchown` of every entry under `root`, root included, e.g. to make a local source tree owned
/// by the SFTP test user so that rsync's `-a` ownership check compares like with like.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for (path, _) in list_tree(root)? {
        lchown(&path, Some(uid), Some(gid)).map_err(|e| annotate(e, "lchown", &path))?;
    }
    Ok(())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Builds a tree by hand, each call creating one entry (parents are created as needed):
///
/// ```no_run
/// # use testkit::TreeBuilder;
/// TreeBuilder::new("/tmp/x")
///     .file("a.txt", b"hello")
///     .file_with("bin/tool", b"#!/bin/sh\n", 0o755, 1_000_000_000)
///     .dir("bin", 0o750, 1_100_000_000)
///     .symlink("link", "a.txt")
///     .hardlink("b.txt", "a.txt");
/// ```
///
/// Directory modes and mtimes given with [`dir`](Self::dir) are applied at the end (in
/// [`finish`](Self::finish), or when the builder is dropped), after their contents exist,
/// since creating an entry changes its parent's mtime. At that point every other mtime under
/// the root is truncated to whole seconds too. Panics on any failure: it is fixture setup.
#[derive(Debug)]
pub struct TreeBuilder {
    root: PathBuf,
    dirs: Vec<(PathBuf, u32, i64)>,
    done: bool,
}

impl TreeBuilder {
    /// Starts a tree at `root`, creating it if needed.
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref().to_owned();
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", root.display()));
        Self {
            root,
            dirs: Vec::new(),
            done: false,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a builder path and creates its parent directories.
    fn place(&self, rel: &Path) -> PathBuf {
        assert!(
            rel.components().all(|c| matches!(c, Component::Normal(_))),
            "TreeBuilder paths must be relative and free of `..`/`.`, got {:?}",
            rel
        );
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
        }
        path
    }

    /// A regular file with mode 0644 and the current time (whole seconds) as mtime.
    pub fn file(self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Self {
        self.file_with(path, contents, 0o644, now_secs())
    }

    /// A regular file with explicit permission bits and mtime (seconds since the epoch).
    pub fn file_with(
        self,
        path: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
        mtime: i64,
    ) -> Self {
        let path = self.place(path.as_ref());
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        // Explicit chmod because the umask applies at creation.
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        set_mtime_nofollow(&path, mtime).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// A directory (created now, possibly already present) whose mode and mtime are applied
    /// when the builder finishes.
    pub fn dir(mut self, path: impl AsRef<Path>, mode: u32, mtime: i64) -> Self {
        let path = self.place(path.as_ref());
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.dirs.push((path, mode, mtime));
        self
    }

    /// A symlink to `target` (stored verbatim, may dangle), mtime now.
    pub fn symlink(self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.symlink_with(path, target, now_secs())
    }

    /// A symlink with an explicit mtime of the link itself.
    pub fn symlink_with(
        self,
        path: impl AsRef<Path>,
        target: impl AsRef<Path>,
        mtime: i64,
    ) -> Self {
        let path = self.place(path.as_ref());
        symlink(target.as_ref(), &path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        set_mtime_nofollow(&path, mtime).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// A second name for `existing` (both relative to the root).
    pub fn hardlink(self, path: impl AsRef<Path>, existing: impl AsRef<Path>) -> Self {
        let path = self.place(path.as_ref());
        let existing = self.root.join(existing.as_ref());
        fs::hard_link(&existing, &path)
            .unwrap_or_else(|e| panic!("link {} -> {}: {e}", path.display(), existing.display()));
        self
    }

    /// Applies the deferred directory attributes and returns the root.
    pub fn finish(mut self) -> PathBuf {
        self.apply();
        self.root.clone()
    }

    fn apply(&mut self) {
        self.done = true;
        // Deepest first only for readability of failures; setting a directory's attributes
        // does not touch its parent's mtime.
        self.dirs
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (path, mode, mtime) in &self.dirs {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            set_mtime_nofollow(path, *mtime).unwrap_or_else(|e| panic!("{e}"));
        }
        truncate_mtimes(&self.root).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for TreeBuilder {
    fn drop(&mut self) {
        if !self.done && !thread::panicking() {
            self.apply();
        }
    }
}

/// What [`generate_mixed_tree`] made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Directories below the root.
    pub dirs: usize,
    /// Regular files (one per inode), including empty and big ones.
    pub files: usize,
    pub empty_files: usize,
    /// Files of a MiB or more.
    pub big_files: usize,
    pub symlinks: usize,
    pub dangling_symlinks: usize,
    /// Extra names of already counted files.
    pub hardlinks: usize,
    /// Sum of regular file sizes, one per inode.
    pub bytes: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Dir,
    File,
    Empty,
    Big,
    LinkToFile,
    LinkToDir,
    Dangling,
    Hard,
}

/// A name for entry `i`. Every name embeds `i`, which keeps them unique tree-wide; the awkward
/// ones come early so that even small trees contain them.
fn entry_name(i: usize, rng: &mut XorShift) -> OsString {
    let bytes = match i % 12 {
        1 => format!("with space {i}").into_bytes(),
        2 => format!("new\nline {i}").into_bytes(),
        // Latin-1 "café": not valid UTF-8, must survive byte-exact.
        4 => [b"caf\xe9 ".as_slice(), i.to_string().as_bytes()].concat(),
        6 => format!("ünïcødé-{i}").into_bytes(),
        8 => format!("-dash-{i}").into_bytes(),
        10 => format!(".hidden-{i}").into_bytes(),
        _ => {
            let len = rng.range(3, 10) as usize;
            let mut word: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
            word.extend(format!("-{i}").bytes());
            if rng.chance(30) {
                let ext = *rng.pick::<&[u8]>(&[b".txt".as_slice(), b".bin", b".tar.gz"]);
                word.extend_from_slice(ext);
            }
            word
        }
    };
    OsString::from_vec(bytes)
}

/// `target` (relative to the tree root) as seen from directory `from` (also relative to the
/// root): climbs to the root and back down, so it stays inside the tree.
fn relative_target(from: &Path, target: &Path) -> PathBuf {
    if target.parent() == Some(from) {
        if let Some(name) = target.file_name() {
            return PathBuf::from(name);
        }
    }
    let mut rel = PathBuf::new();
    for _ in from.components() {
        rel.push("..");
    }
    rel.push(target);
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

fn file_contents(rng: &mut XorShift, len: usize, name: &OsString) -> Vec<u8> {
    if rng.chance(30) {
        // Text-like and compressible, for transfers that compress or delta-encode.
        let mut v = Vec::with_capacity(len + 64);
        let mut k = 0;
        while v.len() < len {
            v.extend(format!("line {k} of {}\n", name.to_string_lossy()).bytes());
            k += 1;
        }
        v.truncate(len);
        v
    } else {
        rng.bytes(len)
    }
}

fn random_old(rng: &mut XorShift) -> i64 {
    rng.range(OLD_MIN, OLD_MAX) as i64
}

fn random_new(rng: &mut XorShift) -> i64 {
    rng.range(NEW_MIN, NEW_MAX) as i64
}

fn write_file(path: &Path, contents: &[u8], mode: u32, mtime: i64) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    set_mtime_nofollow(path, mtime).unwrap_or_else(|e| panic!("{e}"));
}

fn make_symlink(target: &Path, path: &Path, mtime: i64) {
    symlink(target, path).unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
    set_mtime_nofollow(path, mtime).unwrap_or_else(|e| panic!("{e}"));
}

/// Fills `root` (created if needed; best empty) with `n_entries` pseudo-random entries,
/// identical for identical `(seed, n_entries)`.
///
/// Contains nested directories (depth up to 5), small, empty and a few multi-MiB files
/// (one from 8 entries on, three from 40), relative symlinks to files and directories and
/// dangling ones, hard-link groups of 2-3 names, file modes 0600..0755 and directory modes
/// 0700..0755, mtimes between 2001 and 2020 in whole seconds, and names with spaces, a
/// newline, a leading dash or dot, UTF-8 and Latin-1 (non-UTF-8) bytes. Panics on failure.
pub fn generate_mixed_tree(root: &Path, seed: u64, n_entries: usize) -> TreeStats {
    fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", root.display()));
    let mut rng = XorShift::new(seed);
    let mut stats = TreeStats::default();
    // (path relative to root, depth)
    let mut dirs: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    let mut dir_attrs: Vec<(PathBuf, u32, i64)> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut link_candidates: Vec<PathBuf> = Vec::new();
    let big_at =
        |i: usize| i == 7 || (n_entries >= 40 && (i == n_entries / 2 || i == n_entries - 1));

    for i in 0..n_entries {
        let name = entry_name(i, &mut rng);
        let mut kind = if big_at(i) {
            Kind::Big
        } else {
            match i {
                0 | 2 | 11 => Kind::Dir,
                1 | 4 | 10 => Kind::File,
                3 => Kind::LinkToFile,
                5 => Kind::Hard,
                6 => Kind::Empty,
                8 => Kind::Dangling,
                9 => Kind::LinkToDir,
                _ => match rng.below(92) {
                    0..=13 => Kind::Dir,
                    14..=59 => Kind::File,
                    60..=67 => Kind::Empty,
                    68..=75 => Kind::LinkToFile,
                    76..=79 => Kind::LinkToDir,
                    80..=83 => Kind::Dangling,
                    _ => Kind::Hard,
                },
            }
        };
        if matches!(kind, Kind::LinkToFile) && files.is_empty() {
            kind = Kind::Dangling;
        }
        if matches!(kind, Kind::Hard) && link_candidates.is_empty() {
            kind = Kind::File;
        }

        let parent = if matches!(kind, Kind::Dir) {
            let shallow: Vec<&(PathBuf, usize)> =
                dirs.iter().filter(|(_, d)| *d < MAX_DEPTH).collect();
            // Favouring the newest directories is what produces deep nesting at all.
            if rng.chance(50) {
                shallow[shallow.len() - 1 - rng.below(shallow.len().min(3) as u64) as usize].clone()
            } else {
                (*rng.pick(&shallow)).clone()
            }
        } else {
            rng.pick(&dirs).clone()
        };
        let rel = parent.0.join(&name);
        let path = root.join(&rel);

        match kind {
            Kind::Dir => {
                fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                dir_attrs.push((path, *rng.pick(&DIR_MODES), random_old(&mut rng)));
                dirs.push((rel, parent.1 + 1));
                stats.dirs += 1;
            }
            Kind::File | Kind::Empty | Kind::Big => {
                let len = match kind {
                    Kind::Empty => 0,
                    Kind::Big => rng.range(MIB, 5 * MIB) | 1,
                    _ => match rng.below(100) {
                        0..=49 => rng.range(1, 1024),
                        50..=89 => rng.range(1024, 64 * 1024),
                        _ => rng.range(64 * 1024, 512 * 1024),
                    },
                };
                let contents = file_contents(&mut rng, len as usize, &name);
                write_file(
                    &path,
                    &contents,
                    *rng.pick(&FILE_MODES),
                    random_old(&mut rng),
                );
                stats.files += 1;
                stats.bytes += len;
                match kind {
                    Kind::Empty => stats.empty_files += 1,
                    Kind::Big => stats.big_files += 1,
                    _ => link_candidates.push(rel.clone()),
                }
                files.push(rel);
            }
            Kind::LinkToFile => {
                let target = relative_target(&parent.0, rng.pick::<PathBuf>(&files));
                make_symlink(&target, &path, random_old(&mut rng));
                stats.symlinks += 1;
            }
            Kind::LinkToDir => {
                let target = relative_target(&parent.0, &rng.pick(&dirs).0);
                make_symlink(&target, &path, random_old(&mut rng));
                stats.symlinks += 1;
            }
            Kind::Dangling => {
                let target = if rng.chance(50) || parent.1 == 0 {
                    PathBuf::from(format!("missing-{i}"))
                } else {
                    PathBuf::from(format!("../no/such/{i}"))
                };
                make_symlink(&target, &path, random_old(&mut rng));
                stats.symlinks += 1;
                stats.dangling_symlinks += 1;
            }
            Kind::Hard => {
                let existing =
                    link_candidates.swap_remove(rng.below(link_candidates.len() as u64) as usize);
                let extra = rng.range(1, 3);
                for k in 0..extra {
                    let dir = &rng.pick(&dirs).0;
                    let mut link_name = name.clone();
                    link_name.push(format!("-hl{k}"));
                    let link = root.join(dir).join(link_name);
                    fs::hard_link(root.join(&existing), &link)
                        .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
                    stats.hardlinks += 1;
                }
            }
        }
    }

    for (path, mode, mtime) in dir_attrs.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        set_mtime_nofollow(path, *mtime).unwrap_or_else(|e| panic!("{e}"));
    }
    set_mtime_nofollow(root, random_old(&mut rng)).unwrap_or_else(|e| panic!("{e}"));
    stats
}

fn shuffle<T>(rng: &mut XorShift, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

fn exists_nofollow(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// A path next to `dir`'s entries that does not exist yet.
fn unused_name(dir: &Path, stem: &str) -> PathBuf {
    (0..)
        .map(|k| dir.join(format!("{stem}-{k}")))
        .find(|p| !exists_nofollow(p))
        .expect("an unused name exists")
}

/// Changes a tree (typically a copy of a [`generate_mixed_tree`] result) the way a user's
/// files change between two syncs, deterministically for a given `seed`.
///
/// Rewrites some files in place at the same size and some at another size, chmods some files
/// and directories, touches some mtimes, deletes some files and one directory, adds files and
/// a nested directory, replaces a file by a directory and a symlink by a file. Every content
/// change also moves the mtime, so the quick check (size+mtime) sees it. Mtimes stay whole
/// seconds. Panics on failure.
pub fn mutate_tree(root: &Path, seed: u64) {
    let mut rng = XorShift::new(seed ^ 0x6d75_7461_7465_2121);
    let entries = list_tree(root).unwrap_or_else(|e| panic!("{e}"));
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut links: Vec<PathBuf> = Vec::new();
    for (path, meta) in entries.into_iter().skip(1) {
        let ft = meta.file_type();
        if ft.is_file() {
            files.push(path);
        } else if ft.is_dir() {
            dirs.push(path);
        } else if ft.is_symlink() {
            links.push(path);
        }
    }
    shuffle(&mut rng, &mut files);
    shuffle(&mut rng, &mut dirs);
    shuffle(&mut rng, &mut links);
    let share = (files.len() / 12).max(1);
    // Each file gets at most one kind of change: consecutive slices of the shuffled list.
    let mut next_files = {
        let mut it = files.into_iter();
        move |n: usize| it.by_ref().take(n).collect::<Vec<_>>()
    };

    for path in next_files(share) {
        let mut data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if data.is_empty() {
            data.push(b'!');
        } else {
            let at = rng.below(data.len() as u64) as usize;
            let end = (at + 64).min(data.len());
            for b in &mut data[at..end] {
                *b = !*b;
            }
        }
        rewrite_in_place(&path, &data, random_new(&mut rng));
    }
    for path in next_files(share) {
        let mut data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if data.len() > 1 && rng.chance(50) {
            data.truncate(data.len() / 2);
        } else {
            let extra = rng.range(1, 4096) as usize;
            data.extend(rng.bytes(extra));
        }
        rewrite_in_place(&path, &data, random_new(&mut rng));
    }
    for path in next_files(share) {
        let old = fs::symlink_metadata(&path)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0);
        let mode = FILE_MODES
            .iter()
            .copied()
            .cycle()
            .skip(rng.below(FILE_MODES.len() as u64) as usize)
            .find(|m| *m != old)
            .expect("FILE_MODES has several modes");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    for path in next_files(share) {
        set_mtime_nofollow(&path, random_new(&mut rng)).unwrap_or_else(|e| panic!("{e}"));
    }
    for path in next_files(1) {
        fs::remove_file(&path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        write_file(
            &path.join("was-a-file"),
            b"now a directory\n",
            0o644,
            random_new(&mut rng),
        );
    }
    for path in next_files(share) {
        fs::remove_file(&path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
    }
    if let Some(path) = links.first() {
        fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
        write_file(path, b"was a symlink\n", 0o640, random_new(&mut rng));
    }

    let chmodded = (dirs.len() / 8).max(1).min(dirs.len());
    for path in &dirs[..chmodded] {
        let old = fs::symlink_metadata(path)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0);
        let mode = if old == 0o755 { 0o750 } else { 0o755 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    // Spare the chmodded directories and their ancestors so that change stays visible.
    let doomed = dirs[chmodded..]
        .iter()
        .rev()
        .find(|d| !dirs[..chmodded].iter().any(|c| c.starts_with(d)));
    if let Some(path) = doomed {
        fs::remove_dir_all(path).unwrap_or_else(|e| panic!("rm -r {}: {e}", path.display()));
    }

    let live_dirs: Vec<PathBuf> = std::iter::once(root.to_owned())
        .chain(dirs.iter().cloned())
        .filter(|d| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .collect();
    for k in 0..share.max(2) {
        let dir = rng.pick(&live_dirs);
        let path = unused_name(dir, &format!("added {k}"));
        let len = rng.below(8192) as usize;
        write_file(
            &path,
            &rng.bytes(len),
            *rng.pick(&FILE_MODES),
            random_new(&mut rng),
        );
    }
    let new_dir = unused_name(rng.pick::<PathBuf>(&live_dirs), "new dir");
    let nested = new_dir.join("nested");
    fs::create_dir_all(&nested).unwrap_or_else(|e| panic!("mkdir {}: {e}", nested.display()));
    write_file(
        &nested.join("deep file"),
        b"deep\n",
        0o600,
        random_new(&mut rng),
    );
    write_file(&new_dir.join("empty"), b"", 0o644, random_new(&mut rng));
    fs::set_permissions(&new_dir, fs::Permissions::from_mode(0o750))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", new_dir.display()));

    // Creating and deleting entries stamped their directories with sub-second "now".
    truncate_mtimes(root).unwrap_or_else(|e| panic!("{e}"));
    for dir in live_dirs.iter().skip(1).take(2) {
        set_mtime_nofollow(dir, random_new(&mut rng)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Rewrites a file's contents without replacing its inode, so hard-linked names change too.
fn rewrite_in_place(path: &Path, data: &[u8], mtime: i64) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mtime_nofollow(path, mtime).unwrap_or_else(|e| panic!("{e}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn relative_targets_stay_inside() {
        assert_eq!(
            relative_target(Path::new("a/b"), Path::new("a/b/f")),
            PathBuf::from("f")
        );
        assert_eq!(
            relative_target(Path::new("a/b"), Path::new("c/f")),
            PathBuf::from("../../c/f")
        );
        assert_eq!(
            relative_target(Path::new(""), Path::new("")),
            PathBuf::from(".")
        );
        assert_eq!(
            relative_target(Path::new("a"), Path::new("")),
            PathBuf::from("..")
        );
    }

    #[test]
    fn builder_sets_modes_and_whole_second_times() {
        let tmp = tempfile::tempdir().unwrap();
        let root = TreeBuilder::new(tmp.path())
            .file_with("d/f", b"x", 0o600, 1_000_000_000)
            .dir("d", 0o700, 1_100_000_000)
            .symlink_with("l", "d/f", 1_200_000_000)
            .hardlink("h", "d/f")
            .file("g", b"")
            .finish();
        let f = fs::symlink_metadata(root.join("d/f")).unwrap();
        assert_eq!(
            (f.mode() & 0o7777, f.mtime(), f.nlink()),
            (0o600, 1_000_000_000, 2)
        );
        let d = fs::symlink_metadata(root.join("d")).unwrap();
        assert_eq!((d.mode() & 0o7777, d.mtime()), (0o700, 1_100_000_000));
        let l = fs::symlink_metadata(root.join("l")).unwrap();
        assert_eq!(l.mtime(), 1_200_000_000);
        for (path, meta) in list_tree(&root).unwrap() {
            assert_eq!(meta.mtime_nsec(), 0, "{}", path.display());
        }
    }

    #[test]
    fn generated_tree_is_deterministic_and_varied() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = generate_mixed_tree(a.path(), 42, 60);
        let sb = generate_mixed_tree(b.path(), 42, 60);
        assert_eq!(sa, sb);
        assert!(sa.dirs > 0 && sa.symlinks > 0 && sa.dangling_symlinks > 0);
        assert!(sa.hardlinks > 0 && sa.empty_files > 0 && sa.big_files == 3);
        let names = |root: &Path| -> Vec<(PathBuf, u32, i64, u64)> {
            list_tree(root)
                .unwrap()
                .into_iter()
                .skip(1)
                .map(|(p, m)| {
                    let rel = p.strip_prefix(root).unwrap().to_owned();
                    (rel, m.mode(), m.mtime(), m.len())
                })
                .collect()
        };
        assert_eq!(names(a.path()), names(b.path()));
        let all = names(a.path());
        assert!(all
            .iter()
            .any(|(p, ..)| p.as_os_str().as_bytes().contains(&0xe9)));
        assert!(all
            .iter()
            .any(|(p, ..)| p.as_os_str().as_bytes().contains(&b'\n')));
        assert!(all.iter().any(|(p, ..)| p.components().count() >= 4));
    }
}

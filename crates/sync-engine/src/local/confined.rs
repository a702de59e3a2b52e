//! Finds entries below an open root directory without ever following a symlink on the way.
//!
//! A pull from an untrusted server, or a local process racing the sync, may put a symlink where
//! a directory was. Joining path strings would then write, chmod or delete wherever it points.
//! Here every path is resolved relative to a descriptor of the root, each parent is opened with
//! symlinks refused (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one
//! `openat(O_NOFOLLOW)` per component where the kernel lacks it), and the final component is
//! handled by `*at` calls that do not follow it either.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{openat, openat2, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// The cause given when a path below the root leads through a symlink.
pub const PARENT_SYMLINK: &str = "a parent directory is a symlink";

/// What the kernel turned out to support; probed once per process.
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

static HAS_OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);
static HAS_FCHMODAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// How many times an `openat2` that the kernel asks to retry (a rename raced the lookup) is
/// tried before walking component by component instead.
const OPENAT2_RETRIES: usize = 4;

/// The root directory of a local tree, opened on first use and held from then on.
pub(crate) struct Root {
    path: PathBuf,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Whether `openat2` and `fchmodat2` may be used; off only to test the fallbacks.
    new_syscalls: bool,
}

/// An open directory: the root's shared descriptor or one opened for a single operation.
pub(crate) type DirFd = Arc<OwnedFd>;

impl Root {
    pub(crate) fn new(path: PathBuf, new_syscalls: bool) -> Root {
        Root {
            path,
            fd: Mutex::new(None),
            new_syscalls,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The root's descriptor. The user's path may go through symlinks (as with rsync); only
    /// what lies below the root is confined. Not cached while the root does not exist yet, so
    /// a destination created by the sync is found afterwards.
    pub(crate) fn fd(&self) -> io::Result<DirFd> {
        let mut slot = self.fd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = &*slot {
            return Ok(fd.clone());
        }
        let open = |access: OFlags| {
            openat(
                rustix::fs::CWD,
                &self.path,
                access | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        // A root we may search but not list is still usable for everything but its listing.
        let fd = match open(OFlags::RDONLY) {
            Err(rustix::io::Errno::ACCESS) => open(OFlags::PATH)?,
            r => r?,
        };
        let fd = Arc::new(fd);
        *slot = Some(fd.clone());
        Ok(fd)
    }

    /// Opens the directory `rel` below the root (empty: the root itself) with `access`
    /// (`O_PATH` to use it as a parent, `O_RDONLY` to list it), refusing any symlink on the way.
    pub(crate) fn open_dir(&self, rel: &[u8], access: OFlags) -> io::Result<OwnedFd> {
        let root = self.fd()?;
        let flags = access | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if rel.is_empty() {
            return Ok(openat(&root, c".", flags, Mode::empty())?);
        }
        check_components(rel)?;
        if self.new_syscalls && has_openat2(&root) {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..OPENAT2_RETRIES {
                match openat2(&root, rel, flags, Mode::empty(), resolve) {
                    Ok(fd) => return Ok(fd),
                    Err(rustix::io::Errno::AGAIN) => continue,
                    Err(rustix::io::Errno::LOOP) => return Err(parent_symlink()),
                    Err(rustix::io::Errno::XDEV) => {
                        return Err(io::Error::other("path leads outside the tree"))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        walk(&root, rel, flags)
    }

    /// The directory holding `rel`, opened as a parent, and the final component's name.
    pub(crate) fn parent<'a>(&self, rel: &'a [u8]) -> io::Result<(DirFd, &'a [u8])> {
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        if !valid_component(name) {
            return Err(invalid_path());
        }
        // Most entries sit in the root or near it; the root's own descriptor serves directly.
        let dir = if dir.is_empty() {
            self.fd()?
        } else {
            Arc::new(self.open_dir(dir, OFlags::PATH)?)
        };
        Ok((dir, name))
    }

    /// `chmod` of `name` in `dir` that leaves a symlink alone instead of changing its target.
    pub(crate) fn chmod_nofollow(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        mode: u32,
    ) -> io::Result<()> {
        if self.new_syscalls && HAS_FCHMODAT2.load(Ordering::Relaxed) != NO {
            match fchmodat2_nofollow(dir, name, mode) {
                Ok(()) => {
                    HAS_FCHMODAT2.store(YES, Ordering::Relaxed);
                    return Ok(());
                }
                // The kernel refuses to change a symlink's own mode: nothing to do. A file
                // system that cannot chmod at all says the same, and that is an error.
                Err(e @ rustix::io::Errno::OPNOTSUPP) => {
                    return match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            Ok(())
                        }
                        _ => Err(e.into()),
                    };
                }
                Err(rustix::io::Errno::NOSYS) => {
                    HAS_FCHMODAT2.store(NO, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Before Linux 6.6: open the entry itself, refusing a symlink, and change the open
        // file. O_NONBLOCK keeps a FIFO from waiting for a writer.
        let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        match file_type {
            FileType::Symlink => return Ok(()),
            FileType::RegularFile | FileType::Directory | FileType::Fifo => {}
            // Opening a device can have effects of its own (a tape rewinds); a socket cannot be
            // opened at all.
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "changing the mode of a device or socket without following symlinks needs Linux 6.6 or later",
                ))
            }
        }
        let fd = match openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            // Swapped for a symlink since the stat: leave it alone, as for any symlink.
            Err(rustix::io::Errno::LOOP) => return Ok(()),
            r => r?,
        };
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != file_type {
            return Err(io::Error::other(
                "file was replaced while changing its mode",
            ));
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        Ok(())
    }
}

fn has_openat2(root: &OwnedFd) -> bool {
    match HAS_OPENAT2.load(Ordering::Relaxed) {
        YES => return true,
        NO => return false,
        _ => {}
    }
    let probe = openat2(
        root,
        c".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    );
    // Before Linux 5.6 it does not exist; container seccomp filters answer EPERM instead.
    let supported = !matches!(
        probe,
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM)
    );
    HAS_OPENAT2.store(if supported { YES } else { NO }, Ordering::Relaxed);
    supported
}

/// Whether this process resolves paths with `openat2`, once a tree has asked.
pub fn openat2_in_use() -> Option<bool> {
    match HAS_OPENAT2.load(Ordering::Relaxed) {
        YES => Some(true),
        NO => Some(false),
        _ => None,
    }
}

/// Opens `rel` one component at a time, each with `O_NOFOLLOW`.
fn walk(root: &OwnedFd, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let mut components = rel.split(|&b| b == b'/').peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(name) = components.next() {
        let last = components.peek().is_none();
        let dir = current.as_ref().map_or(root.as_fd(), |fd| fd.as_fd());
        let step = OFlags::NOFOLLOW
            | if last {
                flags
            } else {
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
            };
        match openat(dir, name, step, Mode::empty()) {
            Ok(fd) => current = Some(fd),
            // With O_DIRECTORY a symlink gives ENOTDIR, like a file would: tell them apart.
            Err(e @ (rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)) => {
                return match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        Err(parent_symlink())
                    }
                    _ => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    current.ok_or_else(invalid_path)
}

/// `fchmodat2(dir, name, mode, AT_SYMLINK_NOFOLLOW)`: rustix has no wrapper for it yet.
fn fchmodat2_nofollow(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mode: u32,
) -> Result<(), rustix::io::Errno> {
    let name = CString::new(name).map_err(|_| rustix::io::Errno::INVAL)?;
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string that outlive the
    // call; the syscall reads nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(
            rustix::io::Errno::from_io_error(&io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::IO),
        )
    }
}

fn valid_component(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&0)
}

/// Paths come from the engine as `/`-joined names it has checked, but `..` or an empty
/// component would step out of the walk, so they are refused here too.
fn check_components(rel: &[u8]) -> io::Result<()> {
    if rel.split(|&b| b == b'/').all(valid_component) {
        Ok(())
    } else {
        Err(invalid_path())
    }
}

pub(crate) fn parent_symlink() -> io::Error {
    io::Error::other(PARENT_SYMLINK)
}

fn invalid_path() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "path has an empty, . or .. component",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn roots(dir: &Path) -> [Root; 2] {
        [
            Root::new(dir.to_path_buf(), true),
            Root::new(dir.to_path_buf(), false),
        ]
    }

    #[test]
    fn parent_symlink_is_refused_by_both_resolvers() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("b")).unwrap();
        symlink(outside.path(), t.path().join("a")).unwrap();
        for root in roots(t.path()) {
            let e = root.parent(b"a/b/file").map(|_| ()).unwrap_err();
            assert_eq!(
                e.to_string(),
                PARENT_SYMLINK,
                "new syscalls: {}",
                root.new_syscalls
            );
            let e = root.open_dir(b"a", OFlags::RDONLY).map(|_| ()).unwrap_err();
            assert_eq!(e.to_string(), PARENT_SYMLINK);
        }
    }

    #[test]
    fn file_in_the_middle_is_not_a_directory_not_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        for root in roots(t.path()) {
            let e = root.parent(b"f/x").map(|_| ()).unwrap_err();
            assert_eq!(
                rustix::io::Errno::from_io_error(&e),
                Some(rustix::io::Errno::NOTDIR),
                "{e}"
            );
        }
    }

    #[test]
    fn dot_dot_and_empty_components_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        for root in roots(t.path()) {
            for bad in [&b"../x"[..], b"d/../../x", b"d//x", b"./x", b"d/.."] {
                let e = root.parent(bad).map(|_| ()).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            }
        }
    }

    #[test]
    fn root_reached_through_a_symlink_is_allowed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("real/sub")).unwrap();
        symlink("real", t.path().join("link")).unwrap();
        for root in roots(&t.path().join("link")) {
            let (_, name) = root.parent(b"sub/x").unwrap();
            assert_eq!(name, b"x");
        }
    }

    #[test]
    fn missing_root_is_opened_once_it_exists() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path().join("later"), true);
        assert_eq!(root.fd().unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::create_dir(t.path().join("later")).unwrap();
        let first = root.fd().unwrap();
        assert!(
            Arc::ptr_eq(&first, &root.fd().unwrap()),
            "held, not reopened"
        );
    }

    #[test]
    fn chmod_nofollow_leaves_a_symlink_target_alone_in_both_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        symlink(&target, t.path().join("link")).unwrap();
        std::fs::write(t.path().join("plain"), b"x").unwrap();
        for (i, root) in roots(t.path()).into_iter().enumerate() {
            let (dir, _) = root.parent(b"link").unwrap();
            root.chmod_nofollow(dir.as_fd(), b"link", 0o777).unwrap();
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o600);
            let want = 0o640 + i as u32;
            root.chmod_nofollow(dir.as_fd(), b"plain", want).unwrap();
            let mode = std::fs::metadata(t.path().join("plain"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, want);
        }
    }
}

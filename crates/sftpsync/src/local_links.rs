//! Where `--link-dest` directories and a local destination meet: one directory both lie
//! below, so that a single confined tree can hard-link from one into the other.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The destination and the link-dest directories as paths below one common `root`.
#[derive(Debug, PartialEq, Eq)]
pub struct LinkDirs {
    pub root: PathBuf,
    pub dest: Vec<u8>,
    pub dirs: Vec<Vec<u8>>,
}

/// Resolves the destination and each link-dest directory (relative ones are relative to the
/// destination, as rsync takes them) to symlink-free absolute paths, and returns them below
/// their deepest common directory. The destination need not exist yet: its missing part is
/// made of plain names the run creates. A link-dest directory that does not exist holds
/// nothing to link and is left out.
pub fn resolve(cwd: &Path, dest: &Path, link_dests: &[&Path]) -> io::Result<LinkDirs> {
    let dest = canonical_prefix(&lexical(&cwd.join(dest)))?;
    let dirs: Vec<PathBuf> = link_dests
        .iter()
        .filter_map(|d| std::fs::canonicalize(lexical(&dest.join(d))).ok())
        .collect();
    let mut root = dest.clone();
    for dir in &dirs {
        while !dir.starts_with(&root) {
            if !root.pop() {
                break;
            }
        }
    }
    let below = |p: &Path| {
        p.strip_prefix(&root)
            .expect("the root is an ancestor of every path")
            .as_os_str()
            .as_bytes()
            .to_vec()
    };
    Ok(LinkDirs {
        dirs: dirs.iter().map(|d| below(d)).collect(),
        dest: below(&dest),
        root,
    })
}

/// `path` with `.` dropped and each `..` taking away the name before it, as the kernel
/// would resolve it were no name a symlink.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The longest existing ancestor of the absolute `path` made canonical, with the names
/// that do not exist yet appended as they are.
fn canonical_prefix(path: &Path) -> io::Result<PathBuf> {
    let mut missing = Vec::new();
    let mut existing = path.to_path_buf();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut found) => {
                found.extend(missing.iter().rev());
                return Ok(found);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(name) = existing.file_name() else {
                    return Err(e);
                };
                missing.push(name.to_os_string());
                existing.pop();
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_link_dest_is_taken_from_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(base.join("backups/prev")).unwrap();
        let got = resolve(
            &base,
            Path::new("backups/today"),
            &[Path::new("../prev"), Path::new("../missing")],
        )
        .unwrap();
        assert_eq!(
            got,
            LinkDirs {
                root: base.join("backups"),
                dest: b"today".to_vec(),
                dirs: vec![b"prev".to_vec()],
            }
        );
    }

    #[test]
    fn symlinks_on_the_way_are_resolved_so_the_confined_tree_can_walk_them() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(base.join("real/prev")).unwrap();
        std::fs::create_dir_all(base.join("dest")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("alias")).unwrap();
        let got = resolve(&base, Path::new("dest/new/"), &[&base.join("alias/prev")]).unwrap();
        assert_eq!(got.root, base);
        assert_eq!(got.dest, b"dest/new");
        assert_eq!(got.dirs, vec![b"real/prev".to_vec()]);
    }

    #[test]
    fn a_link_dest_inside_the_destination_roots_at_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(base.join("d/old")).unwrap();
        let got = resolve(&base, Path::new("d"), &[Path::new("old")]).unwrap();
        assert_eq!((got.root, got.dest), (base.join("d"), Vec::new()));
        assert_eq!(got.dirs, vec![b"old".to_vec()]);
    }
}

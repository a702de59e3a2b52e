//! Checks a directory listing before the sync uses any of its names: a hostile or broken
//! server must not be able to make us create, write or delete anything outside the directory
//! it listed, nor make one name mean two things.

use std::collections::{HashMap, HashSet};

use crate::path::{escape_name, RelPath};
use crate::tree::{DirEntry, ErrorKind, Side, TreeError};

/// Longest name accepted, in bytes. Linux and the BSDs stop at 255 bytes, but servers on file
/// systems that count 255 UTF-16 units (NTFS, SMB shares, some ZFS setups) can hand out names
/// of up to 765 bytes of UTF-8; 1024 takes every real name and still bounds what one entry
/// costs. A longer name cannot be created here anyway, so refusing it loses nothing.
pub const MAX_NAME_LEN: usize = 1024;

/// Deepest directory whose entries are used, counted in path components. A path the kernel
/// takes is at most PATH_MAX (4096) bytes, so at most 2048 one-byte components: nothing deeper
/// can be named, and a server that nests directories without end is stopped here.
pub const MAX_DEPTH: usize = 2048;

/// Why `name` cannot be used as an entry of a listing, if it cannot.
pub fn name_problem(name: &[u8]) -> Option<String> {
    if name.is_empty() {
        Some("empty".into())
    } else if name == b"." || name == b".." {
        Some("is . or ..".into())
    } else if name.contains(&b'/') {
        Some("contains '/'".into())
    } else if name.contains(&0) {
        Some("contains a NUL byte".into())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("longer than {MAX_NAME_LEN} bytes"))
    } else {
        None
    }
}

/// Splits the listing of `dir` on `side` into the entries that can be used and one error per
/// bad name. A name listed more than once is dropped in every copy: which copy is the real one
/// cannot be known, and taking either could let a symlink stand where a directory was seen.
pub fn validate_listing(
    side: Side,
    dir: &RelPath,
    entries: Vec<DirEntry>,
) -> (Vec<DirEntry>, Vec<TreeError>) {
    let error = |cause: String| TreeError {
        op: "readdir",
        side,
        path: dir.clone(),
        cause,
        kind: ErrorKind::Other,
    };
    let depth = if dir.is_empty() {
        0
    } else {
        dir.iter().filter(|&&b| b == b'/').count() + 1
    };
    if depth >= MAX_DEPTH && !entries.is_empty() {
        return (
            Vec::new(),
            vec![error(format!(
                "directory nesting deeper than {MAX_DEPTH} levels"
            ))],
        );
    }

    let mut copies: HashMap<&[u8], usize> = HashMap::with_capacity(entries.len());
    for e in &entries {
        *copies.entry(e.name.as_slice()).or_default() += 1;
    }
    let mut errors = Vec::new();
    let mut reported: HashSet<&[u8]> = HashSet::new();
    let mut keep = Vec::with_capacity(entries.len());
    for e in &entries {
        let n = copies[e.name.as_slice()];
        let problem = name_problem(&e.name);
        if let Some(problem) = &problem {
            errors.push(error(format!(
                "invalid file name \"{}\" ({problem})",
                escape_name(&e.name)
            )));
        } else if n > 1 && reported.insert(e.name.as_slice()) {
            errors.push(error(format!(
                "invalid file name \"{}\" (listed {n} times)",
                escape_name(&e.name)
            )));
        }
        keep.push(n == 1 && problem.is_none());
    }
    let good = entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect();
    (good, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Kind, Meta};

    fn entry(name: &[u8], kind: Kind) -> DirEntry {
        DirEntry {
            name: name.to_vec(),
            meta: Meta {
                kind,
                size: 0,
                mtime: 0,
                atime: 0,
                mode: 0o644,
                uid: None,
                gid: None,
                dev_ino: None,
                nlink: 1,
                file_type: 0,
            },
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"../x", b"a\0b"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        for ok in [&b"a"[..], b"...", b".hidden", b"caf\xe9", b"a b\nc"] {
            assert!(name_problem(ok).is_none(), "{ok:?}");
        }
    }

    fn names(v: &[DirEntry]) -> Vec<&[u8]> {
        v.iter().map(|e| e.name.as_slice()).collect()
    }

    fn messages(v: &[TreeError]) -> Vec<String> {
        v.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn good_names_pass_untouched() {
        let list = vec![
            entry(b"a", Kind::File),
            entry(b"...", Kind::Dir),
            entry(b".hidden", Kind::File),
            entry(b"caf\xe9", Kind::File),
            entry(b"..x", Kind::File),
        ];
        let (good, errors) = validate_listing(Side::Remote, &b"d".to_vec(), list);
        assert_eq!(
            names(&good),
            [&b"a"[..], b"...", b".hidden", b"caf\xe9", b"..x"]
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn names_that_escape_the_directory_are_refused_with_the_name_escaped() {
        let list = vec![
            entry(b"ok", Kind::File),
            entry(b"a/b", Kind::File),
            entry(b"../escape", Kind::Dir),
            entry(b"..", Kind::File),
            entry(b".", Kind::Dir),
            entry(b"", Kind::File),
            entry(b"nul\0x", Kind::File),
            entry(b"/etc/passwd", Kind::File),
            entry(b"\x1b[2J", Kind::File),
        ];
        let (good, errors) = validate_listing(Side::Remote, &b"dir".to_vec(), list);
        assert_eq!(names(&good), [&b"ok"[..], b"\x1b[2J"]);
        assert_eq!(
            messages(&errors),
            [
                r#"readdir remote "dir" failed: invalid file name "a/b" (contains '/')"#,
                r#"readdir remote "dir" failed: invalid file name "../escape" (contains '/')"#,
                r#"readdir remote "dir" failed: invalid file name ".." (is . or ..)"#,
                r#"readdir remote "dir" failed: invalid file name "." (is . or ..)"#,
                r#"readdir remote "dir" failed: invalid file name "" (empty)"#,
                r#"readdir remote "dir" failed: invalid file name "nul\#000x" (contains a NUL byte)"#,
                r#"readdir remote "dir" failed: invalid file name "/etc/passwd" (contains '/')"#,
            ]
        );
    }

    #[test]
    fn repeated_name_is_dropped_in_every_copy() {
        let list = vec![
            entry(b"dup", Kind::Symlink),
            entry(b"x", Kind::File),
            entry(b"dup", Kind::Dir),
            entry(b"dup", Kind::File),
        ];
        let (good, errors) = validate_listing(Side::Remote, &Vec::new(), list);
        assert_eq!(names(&good), [&b"x"[..]]);
        assert_eq!(
            messages(&errors),
            [r#"readdir remote "." failed: invalid file name "dup" (listed 3 times)"#]
        );
    }

    #[test]
    fn overlong_name_is_refused() {
        let long = vec![b'n'; MAX_NAME_LEN + 1];
        let fits = vec![b'n'; MAX_NAME_LEN];
        let list = vec![entry(&long, Kind::File), entry(&fits, Kind::File)];
        let (good, errors) = validate_listing(Side::Local, &Vec::new(), list);
        assert_eq!(names(&good), [fits.as_slice()]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("longer than 1024 bytes"));
    }

    #[test]
    fn listing_below_the_depth_cap_is_refused() {
        let deep: RelPath = vec![&b"a"[..]; MAX_DEPTH].join(&b'/');
        let (good, errors) = validate_listing(Side::Remote, &deep, vec![entry(b"f", Kind::File)]);
        assert!(good.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].cause.contains("deeper than"));
        let shallower: RelPath = vec![&b"a"[..]; MAX_DEPTH - 1].join(&b'/');
        let (good, errors) =
            validate_listing(Side::Remote, &shallower, vec![entry(b"f", Kind::File)]);
        assert_eq!(good.len(), 1);
        assert!(errors.is_empty());
    }
}

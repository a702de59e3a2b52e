//! `--chmod` and `--chown`: the sender's modes and owners as rsync would send them after
//! these options, presented by a wrapper around each source tree so that the engine compares
//! and applies them like any other source attribute.

use std::ffi::CString;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sync_engine::path::RelPath;
use sync_engine::tree::{Anchor, DirEntry, FileReader, FileWriter, TreeResult};
use sync_engine::{BlockHashes, HashRange, Kind, Meta, SetMeta, Side, Tree};

/// One comma-separated item of a `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmodRule {
    /// `D` or `F` prefix: only directories, or only everything else.
    only: Option<Kind>,
    action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// An octal mode, which replaces all of the bits.
    Set(u32),
    /// `[ugoa]*[-+=][rwxXstugo]*`. `who` is 0 when no class was named: the umask then
    /// decides which bits are touched, as in chmod(1).
    Symbolic { who: u32, op: u8, perms: Vec<u8> },
}

/// Parses every item of one `--chmod` value; an error names the whole value, as rsync's does.
pub fn parse_chmod(text: &str) -> Result<Vec<ChmodRule>, String> {
    let invalid = || format!("Invalid argument passed to --chmod ({text})");
    let mut rules = Vec::new();
    for item in text.split(',') {
        let (only, body) = match item.as_bytes().first() {
            Some(b'D') => (Some(Kind::Dir), &item[1..]),
            Some(b'F') => (Some(Kind::File), &item[1..]),
            _ => (None, item),
        };
        if body.is_empty() {
            return Err(invalid());
        }
        if body.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let mode = u32::from_str_radix(body, 8).map_err(|_| invalid())?;
            if mode > 0o7777 {
                return Err(invalid());
            }
            rules.push(ChmodRule {
                only,
                action: Action::Set(mode),
            });
            continue;
        }
        let b = body.as_bytes();
        let at = b
            .iter()
            .position(|c| matches!(c, b'+' | b'-' | b'='))
            .ok_or_else(invalid)?;
        let mut who = 0;
        for c in &b[..at] {
            who |= match c {
                b'u' => 0o4700,
                b'g' => 0o2070,
                b'o' => 0o1007,
                b'a' => 0o7777,
                _ => return Err(invalid()),
            };
        }
        let perms = b[at + 1..].to_vec();
        if !perms.iter().all(|c| b"rwxXstugo".contains(c)) {
            return Err(invalid());
        }
        rules.push(ChmodRule {
            only,
            action: Action::Symbolic {
                who,
                op: b[at],
                perms,
            },
        });
    }
    Ok(rules)
}

/// `mode` (07777 bits) after every rule that applies to an entry of this kind.
pub fn apply_chmod(rules: &[ChmodRule], mut mode: u32, is_dir: bool, umask: u32) -> u32 {
    for rule in rules {
        match rule.only {
            Some(Kind::Dir) if !is_dir => continue,
            Some(_) if is_dir && rule.only != Some(Kind::Dir) => continue,
            _ => {}
        }
        match &rule.action {
            Action::Set(m) => mode = *m,
            Action::Symbolic { who, op, perms } => {
                let (who, masked) = match *who {
                    0 => (0o7777, !umask & 0o777 | 0o7000),
                    w => (w, 0o7777),
                };
                let mut bits = 0;
                for p in perms {
                    bits |= match p {
                        b'r' => 0o444,
                        b'w' => 0o222,
                        b'x' => 0o111,
                        b'X' if is_dir || mode & 0o111 != 0 => 0o111,
                        b'X' => 0,
                        b's' => 0o6000,
                        b't' => 0o1000,
                        // Copies of one class's current bits, to every class.
                        b'u' => (mode >> 6 & 7) * 0o111,
                        b'g' => (mode >> 3 & 7) * 0o111,
                        _ => (mode & 7) * 0o111,
                    };
                }
                let bits = bits & who & masked;
                mode = match op {
                    b'+' => mode | bits,
                    b'-' => mode & !bits,
                    _ => (mode & !(who & masked & 0o7777)) | bits,
                };
            }
        }
    }
    mode & 0o7777
}

/// The process's umask, read without changing it.
pub fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// `--chown=USER:GROUP` split as rsync splits it: `USER`, `USER:`, `:GROUP`, `USER:GROUP`.
/// Empty parts are `None`.
pub fn split_chown(text: &str) -> (Option<&str>, Option<&str>) {
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, g),
        None => (text, ""),
    };
    fn some(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    (some(user), some(group))
}

/// A user or group for `--chown`: a number as it is, a name looked up in this machine's
/// user and group database (SFTP carries numbers only, and the server's names cannot be
/// asked for).
pub fn resolve_id(name: &str, group: bool) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let what = if group { "group" } else { "user" };
    let unknown =
        || format!("--chown: unknown {what} {name} on this machine (give the server's number)");
    let c = CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: the out-pointers and buffer are ours and live across the call; the result is
    // read only when the call reports success.
    unsafe {
        if group {
            let mut gr: libc::group = std::mem::zeroed();
            let mut out = std::ptr::null_mut();
            let rc = libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out);
            if rc == 0 && !out.is_null() {
                return Ok(gr.gr_gid);
            }
        } else {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut out = std::ptr::null_mut();
            let rc = libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
            if rc == 0 && !out.is_null() {
                return Ok(pw.pw_uid);
            }
        }
    }
    Err(unknown())
}

/// What the wrapper changes in every source entry's metadata.
#[derive(Debug, Clone, Default)]
pub struct Remap {
    pub chmod: Vec<ChmodRule>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: u32,
}

impl Remap {
    pub fn is_empty(&self) -> bool {
        self.chmod.is_empty() && self.uid.is_none() && self.gid.is_none()
    }

    fn meta(&self, mut m: Meta) -> Meta {
        if m.kind != Kind::Symlink && !self.chmod.is_empty() {
            m.mode = apply_chmod(&self.chmod, m.mode, m.kind == Kind::Dir, self.umask);
        }
        m.uid = self.uid.or(m.uid);
        m.gid = self.gid.or(m.gid);
        m
    }
}

/// A source tree whose entries show the modes and owners `--chmod` and `--chown` give them.
pub struct RemapTree {
    inner: Arc<dyn Tree>,
    remap: Arc<Remap>,
}

impl RemapTree {
    pub fn new(inner: Arc<dyn Tree>, remap: Arc<Remap>) -> RemapTree {
        RemapTree { inner, remap }
    }
}

#[async_trait]
impl Tree for RemapTree {
    fn side(&self) -> Side {
        self.inner.side()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        Ok(self.inner.lstat(path).await?.map(|m| self.remap.meta(m)))
    }
    async fn stat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        Ok(self.inner.stat(path).await?.map(|m| self.remap.meta(m)))
    }
    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>> {
        let mut entries = self.inner.read_dir(path).await?;
        for e in &mut entries {
            e.meta = self.remap.meta(e.meta.clone());
        }
        Ok(entries)
    }
    async fn read_link(&self, path: &RelPath, listed_size: Option<u64>) -> TreeResult<Vec<u8>> {
        self.inner.read_link(path, listed_size).await
    }
    async fn open_read(
        &self,
        path: &RelPath,
        offset: u64,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>> {
        self.inner.open_read(path, offset, expected_size).await
    }
    async fn create_file(
        &self,
        path: &RelPath,
        mode: u32,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.inner.create_file(path, mode, expected_size).await
    }
    async fn create_file_based_on(
        &self,
        path: &RelPath,
        mode: u32,
        base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.inner.create_file_based_on(path, mode, base).await
    }
    fn copies_ranges(&self) -> bool {
        self.inner.copies_ranges()
    }
    async fn reopen_for_append(
        &self,
        path: &RelPath,
        offset: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.inner.reopen_for_append(path, offset).await
    }
    async fn open_in_place(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>> {
        self.inner.open_in_place(path, mode).await
    }
    async fn block_hashes(
        &self,
        path: &RelPath,
        range: HashRange,
    ) -> TreeResult<Option<BlockHashes>> {
        self.inner.block_hashes(path, range).await
    }
    async fn read_range(&self, path: &RelPath, offset: u64, len: u32) -> TreeResult<Bytes> {
        self.inner.read_range(path, offset, len).await
    }
    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        self.inner.mkdir(path, mode).await
    }
    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        self.inner.symlink(path, target).await
    }
    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        self.inner.hard_link(existing, new).await
    }
    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        self.inner.remove_file(path).await
    }
    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        self.inner.remove_dir(path).await
    }
    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        self.inner.rename_replace(from, to).await
    }
    fn anchor(&self) -> Anchor {
        self.inner.anchor()
    }
    async fn rename_replace_from(
        &self,
        from_tree: &Anchor,
        from: &RelPath,
        to: &RelPath,
    ) -> TreeResult<()> {
        self.inner.rename_replace_from(from_tree, from, to).await
    }
    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        self.inner.set_meta(path, kind, meta).await
    }
    fn can_chown(&self) -> bool {
        self.inner.can_chown()
    }
    fn keeps_times(&self) -> bool {
        self.inner.keeps_times()
    }
    fn stored_mtime(&self, mtime: i64) -> i64 {
        self.inner.stored_mtime(mtime)
    }
    fn lanes(&self) -> usize {
        self.inner.lanes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(text: &str, mode: u32, is_dir: bool) -> u32 {
        apply_chmod(&parse_chmod(text).unwrap(), mode, is_dir, 0o022)
    }

    /// Each case checked against rsync 3.x with umask 022 on a file of mode 600, one of 700
    /// and a directory of 700.
    #[test]
    fn modes_change_as_rsync_changes_them() {
        for (text, f, x, d) in [
            ("+w", 0o600, 0o700, 0o700),
            ("a+w", 0o622, 0o722, 0o722),
            ("o+r", 0o604, 0o704, 0o704),
            ("D755,F644", 0o644, 0o644, 0o755),
            ("g=u", 0o660, 0o770, 0o770),
            ("Fu+x,Dg+s", 0o700, 0o700, 0o2700),
            ("go-rwx,u+X", 0o600, 0o700, 0o700),
            ("+X", 0o600, 0o711, 0o711),
            ("1755", 0o1755, 0o1755, 0o1755),
            ("ug=rwX", 0o660, 0o770, 0o770),
            ("u+rw,o=", 0o600, 0o700, 0o700),
            ("644", 0o644, 0o644, 0o644),
        ] {
            assert_eq!(chmod(text, 0o600, false), f, "{text} on 600");
            assert_eq!(chmod(text, 0o700, false), x, "{text} on 700");
            assert_eq!(chmod(text, 0o700, true), d, "{text} on a dir");
        }
    }

    #[test]
    fn bad_chmod_values_are_refused_whole() {
        for bad in ["u+r-w", "Z", "u+q", "", "D", "a,", "8", "77777", "x+r"] {
            let e = parse_chmod(bad).unwrap_err();
            assert_eq!(e, format!("Invalid argument passed to --chmod ({bad})"));
        }
    }

    #[test]
    fn chown_parts_and_ids() {
        assert_eq!(split_chown("u:g"), (Some("u"), Some("g")));
        assert_eq!(split_chown("u"), (Some("u"), None));
        assert_eq!(split_chown("u:"), (Some("u"), None));
        assert_eq!(split_chown(":g"), (None, Some("g")));
        assert_eq!(resolve_id("1234", false), Ok(1234));
        assert_eq!(resolve_id("root", false), Ok(0));
        assert_eq!(resolve_id("root", true), Ok(0));
        let e = resolve_id("no-such-user-here", false).unwrap_err();
        assert!(e.contains("unknown user no-such-user-here"), "{e}");
    }
}

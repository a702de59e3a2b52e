//! Relative byte-string paths inside a tree, and how they are shown to people.

use std::sync::atomic::{AtomicBool, Ordering};

/// A `/`-separated path relative to a tree's root; empty means the root itself. Bytes, never
/// decoded: names that are not UTF-8 are kept exactly.
pub type RelPath = Vec<u8>;

pub fn join(parent: &[u8], name: &[u8]) -> RelPath {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
        p.extend_from_slice(parent);
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// The last component of a path.
pub fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The path without its last component (empty for top-level names).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Whether a symlink at `link_path` (relative to the transfer's root) with this `target` may
/// lead outside the tree, by rsync's rule for `--safe-links` and `--copy-unsafe-links`: an
/// empty or absolute target is unsafe, and so is one whose leading `..` components climb above
/// the root. A `..` after any other component is unsafe too, since that component could itself
/// be a symlink (rsync 3.4 closed a `--safe-links` bypass this way).
pub fn unsafe_symlink(target: &[u8], link_path: &[u8]) -> bool {
    if target.is_empty() || target[0] == b'/' {
        return true;
    }
    let mut depth = parent(link_path)
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .count() as i64;
    let mut past_leading_dotdots = false;
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if past_leading_dotdots || depth < 0 {
                    return true;
                }
            }
            _ => past_leading_dotdots = true,
        }
    }
    false
}

static UTF8_OUTPUT: AtomicBool = AtomicBool::new(true);

/// Says whether the terminal takes UTF-8 (as rsync decides from the locale): if not, every byte
/// above 0x7f is escaped too.
pub fn set_utf8_output(utf8: bool) {
    UTF8_OUTPUT.store(utf8, Ordering::Relaxed);
}

/// Escapes a name for output the way rsync does: bytes that are not printable (control bytes
/// but tab, and bytes that do not form valid UTF-8) become `\#ooo` octal, so nothing a server
/// names a file can drive the terminal. A backslash that would read as the start of such an
/// escape (`\#` and three digits) is escaped itself, so the output stays unambiguous.
pub fn escape_name(name: &[u8]) -> String {
    if !UTF8_OUTPUT.load(Ordering::Relaxed) {
        let mut out = String::with_capacity(name.len());
        for (i, &b) in name.iter().enumerate() {
            if b == b'\\' && looks_escaped(&name[i..]) {
                out.push_str("\\#134");
            } else if (0x20..0x7f).contains(&b) || b == b'\t' {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\#{b:03o}"));
            }
        }
        return out;
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_escaped_str(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_escaped_str(&mut out, std::str::from_utf8(good).unwrap_or(""));
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                for b in &bad[..n] {
                    out.push_str(&format!("\\#{b:03o}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn push_escaped_str(out: &mut String, s: &str) {
    for (i, c) in s.char_indices() {
        if c == '\\' && looks_escaped(&s.as_bytes()[i..]) {
            out.push_str("\\#134");
        } else if c.is_control() && c != '\t' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\#{b:03o}"));
            }
        } else {
            out.push(c);
        }
    }
}

/// Whether `s` starts with what an escape looks like: a backslash, `#` and three digits.
fn looks_escaped(s: &[u8]) -> bool {
    s.len() >= 5 && s[0] == b'\\' && s[1] == b'#' && s[2..5].iter().all(u8::is_ascii_digit)
}

/// A path as shown in messages: escaped, `.` for the root.
pub fn display_path(path: &[u8]) -> String {
    if path.is_empty() {
        ".".into()
    } else {
        escape_name(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_symlinks_as_rsync_judges_them() {
        // (target, link path, unsafe), checked against rsync 3.4's --safe-links.
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"/etc/hostname", b"abs", true),
            (b"", b"empty", true),
            (b"nothing", b"dangling", false),
            (b"./x", b"d/dotx", false),
            (b"../d/x", b"d/updx", false),
            (b"../../out/f", b"d/up", true),
            (b"../out", b"outdir", true),
            (b"d/../d", b"safe", true),
            (b"a/b/../../c", b"x/y/link", true),
            (b"../../c", b"x/y/link", false),
            (b"../../../c", b"x/y/link", true),
            (b"sub//./file", b"link", false),
        ];
        for (target, link, expected) in cases {
            assert_eq!(
                unsafe_symlink(target, link),
                *expected,
                "{} -> {}",
                display_path(link),
                display_path(target)
            );
        }
    }

    #[test]
    fn join_parent_and_name() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
        assert_eq!(file_name(b"a/b/c"), b"c");
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"c"), b"");
    }

    #[test]
    fn escaping_matches_rsync_style() {
        assert_eq!(escape_name(b"plain name"), "plain name");
        assert_eq!(escape_name(b"new\nline"), "new\\#012line");
        assert_eq!(escape_name(b"caf\xe9"), "caf\\#351");
        assert_eq!(escape_name("café".as_bytes()), "café");
        assert_eq!(escape_name(b"\x1b[31m"), "\\#033[31m");
        assert_eq!(escape_name("a\u{85}b".as_bytes()), "a\\#302\\#205b");
        // As rsync 3: tab passes, and a backslash is escaped only where it would read as one.
        assert_eq!(escape_name(b"tab\tx"), "tab\tx");
        assert_eq!(escape_name(b"a\\#123b"), "a\\#134#123b");
        assert_eq!(escape_name(b"c\\#1x d\\e \\#12"), "c\\#1x d\\e \\#12");
    }

    #[test]
    fn lone_c1_control_bytes_are_escaped() {
        // 0x9b is CSI on terminals that take 8-bit controls: as a lone byte it is not UTF-8
        // and must never reach the terminal raw.
        assert_eq!(escape_name(b"a\x9b2Jb"), "a\\#2332Jb");
        for b in 0x80u8..=0x9f {
            let shown = display_path(&[b'x', b, b'y']);
            assert_eq!(shown, format!("x\\#{b:03o}y"));
        }
        assert_eq!(escape_name(b"del\x7f"), "del\\#177");
        assert_eq!(display_path(b"d/\x1b]0;t\x07"), "d/\\#033]0;t\\#007");
    }
}

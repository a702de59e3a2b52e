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

/// A hidden name beside `path` to build its new version (or a copy of it) under:
/// `.NAME.WHATN`, the name cut to 200 bytes so the result stays within NAME_MAX.
pub fn temp_beside(path: &[u8], what: &str, n: u64) -> RelPath {
    let name = file_name(path);
    let mut temp = b".".to_vec();
    temp.extend_from_slice(&name[..name.len().min(200)]);
    temp.extend_from_slice(format!(".{what}{n}").as_bytes());
    join(parent(path), &temp)
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
static EIGHT_BIT_OUTPUT: AtomicBool = AtomicBool::new(false);

/// Says whether the terminal takes UTF-8 (as rsync decides from the locale's character
/// set): if not, every byte above 0x7f is escaped (unless `-8`).
pub fn set_utf8_output(utf8: bool) {
    UTF8_OUTPUT.store(utf8, Ordering::Relaxed);
}

/// rsync's `-8`: bytes above 0x7f are printed as they are, whether or not they make
/// characters of the locale's set (but for C1 controls, see [`escape_name_bytes`]).
pub fn set_eight_bit_output(eight_bit: bool) {
    EIGHT_BIT_OUTPUT.store(eight_bit, Ordering::Relaxed);
}

/// A name as rsync prints it on a terminal (itemized and `-v` lines, listings), following
/// [`set_utf8_output`] and [`set_eight_bit_output`]. As rsync: control bytes below 0x20 but
/// tab become `\#ooo` octal; so does each byte above 0x7f that does not start a character
/// of the locale's set, unless `-8` is on; a backslash that would read as the start of such
/// an escape (`\#` and three digits) is escaped itself, so the output stays unambiguous;
/// DEL and all else are printed as they are.
///
/// Unlike rsync, C1 control characters (U+0080 to U+009F, and lone bytes 0x80 to 0x9f) are
/// escaped even where the locale or `-8` would let them through: terminals act on them, and
/// nothing a server names a file may drive the terminal.
pub fn escape_name_bytes(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    escape_into(name, Style::current(Decoding::Output), &mut out);
    out
}

/// [`escape_name_bytes`] as text, for messages: the same, except that with `-8` bytes that
/// do not form UTF-8 stay escaped, since a `String` cannot hold them.
pub fn escape_name(name: &[u8]) -> String {
    let mut out = Vec::with_capacity(name.len());
    escape_into(name, Style::current(Decoding::Text), &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// Characters as the C library's UTF-8 decoder takes them (the one rsync's check runs
    /// through), and, with `-8`, any byte.
    Output,
    /// Only what is UTF-8 to Rust.
    Text,
}

/// How names are escaped: the output settings and what is decoded.
#[derive(Clone, Copy)]
struct Style {
    utf8: bool,
    eight_bit: bool,
    decoding: Decoding,
}

impl Style {
    fn current(decoding: Decoding) -> Style {
        Style {
            utf8: UTF8_OUTPUT.load(Ordering::Relaxed),
            eight_bit: EIGHT_BIT_OUTPUT.load(Ordering::Relaxed),
            decoding,
        }
    }
}

fn escape_into(name: &[u8], style: Style, out: &mut Vec<u8>) {
    let Style {
        utf8,
        eight_bit,
        decoding,
    } = style;
    let escape = |out: &mut Vec<u8>, bytes: &[u8]| {
        for b in bytes {
            out.extend_from_slice(format!("\\#{b:03o}").as_bytes());
        }
    };
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        let looks_like_escape = b == b'\\' && looks_escaped(&name[i..]);
        if looks_like_escape || (b < 0x20 && b != b'\t') {
            escape(out, &[b]);
            i += 1;
        } else if b < 0x80 {
            out.push(b);
            i += 1;
        } else if let Some((len, c)) = utf8_char(&name[i..], decoding == Decoding::Text) {
            let char_bytes = &name[i..i + len];
            if (0x80..=0x9f).contains(&c) || !(utf8 || eight_bit) {
                escape(out, char_bytes);
            } else {
                out.extend_from_slice(char_bytes);
            }
            i += len;
        } else {
            if eight_bit && b >= 0xa0 && decoding == Decoding::Output {
                out.push(b);
            } else {
                escape(out, &[b]);
            }
            i += 1;
        }
    }
}

/// The length and value of the UTF-8 character `s` starts with, if it starts with one. As
/// glibc's decoder: sequences of up to six bytes are taken (values up to 0x7fffffff), but not
/// overlong forms or surrogates. `strict`: only Unicode's own (up to U+10FFFF, four bytes).
fn utf8_char(s: &[u8], strict: bool) -> Option<(usize, u32)> {
    let lead = *s.first()?;
    let (len, bits) = match lead {
        0xc2..=0xdf => (2, lead & 0x1f),
        0xe0..=0xef => (3, lead & 0x0f),
        0xf0..=0xf7 => (4, lead & 0x07),
        0xf8..=0xfb => (5, lead & 0x03),
        0xfc..=0xfd => (6, lead & 0x01),
        _ => return None,
    };
    let tail = s.get(1..len)?;
    let mut c = u32::from(bits);
    for &b in tail {
        if b & 0xc0 != 0x80 {
            return None;
        }
        c = (c << 6) | u32::from(b & 0x3f);
    }
    const SHORTEST: [u32; 7] = [0, 0, 0x80, 0x800, 0x1_0000, 0x20_0000, 0x400_0000];
    if c < SHORTEST[len] || (0xd800..=0xdfff).contains(&c) || (strict && c > 0x10_ffff) {
        return None;
    }
    Some((len, c))
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

    fn shown(name: &[u8], utf8: bool, eight_bit: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let style = Style {
            utf8,
            eight_bit,
            decoding: Decoding::Output,
        };
        escape_into(name, style, &mut out);
        out
    }

    #[test]
    fn escaping_matches_rsync_style() {
        assert_eq!(escape_name(b"plain name"), "plain name");
        assert_eq!(escape_name(b"new\nline"), "new\\#012line");
        assert_eq!(escape_name(b"caf\xe9"), "caf\\#351");
        assert_eq!(escape_name("café".as_bytes()), "café");
        assert_eq!(escape_name(b"\x1b[31m"), "\\#033[31m");
        // As rsync 3: tab and DEL pass, and a backslash is escaped only where it would read
        // as an escape.
        assert_eq!(escape_name(b"tab\tx del\x7f"), "tab\tx del\x7f");
        assert_eq!(escape_name(b"a\\#123b"), "a\\#134#123b");
        assert_eq!(escape_name(b"c\\#1x d\\e \\#12"), "c\\#1x d\\e \\#12");
    }

    /// Each name as rsync 3.4 prints it in a UTF-8 locale and in the C locale, each without
    /// and with `-8` (checked against rsync 3.5's `-i` output).
    #[test]
    fn locale_and_eight_bit_as_rsync() {
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);
        let cases: &[Case] = &[
            // name, UTF-8 locale, C locale, -8 (either locale)
            (
                "café".as_bytes(),
                "café".as_bytes(),
                b"caf\\#303\\#251",
                "café".as_bytes(),
            ),
            (b"caf\xe9", b"caf\\#351", b"caf\\#351", b"caf\xe9"),
            (
                "日本".as_bytes(),
                "日本".as_bytes(),
                b"\\#346\\#227\\#245\\#346\\#234\\#254",
                "日本".as_bytes(),
            ),
            (b"nl\nx", b"nl\\#012x", b"nl\\#012x", b"nl\\#012x"),
            (b"del\x7f", b"del\x7f", b"del\x7f", b"del\x7f"),
            (
                b"back\\#123",
                b"back\\#134#123",
                b"back\\#134#123",
                b"back\\#134#123",
            ),
            // Overlong forms, surrogates and cut sequences are not characters; glibc takes
            // values past U+10FFFF and five- and six-byte forms.
            (
                b"o\xc0\xaf",
                b"o\\#300\\#257",
                b"o\\#300\\#257",
                b"o\xc0\xaf",
            ),
            (
                b"s\xed\xa0\x80",
                b"s\\#355\\#240\\#200",
                b"s\\#355\\#240\\#200",
                b"s\xed\xa0\\#200",
            ),
            (
                b"t\xe6\x97",
                b"t\\#346\\#227",
                b"t\\#346\\#227",
                b"t\xe6\\#227",
            ),
            (
                b"b\xf4\x90\x80\x80",
                b"b\xf4\x90\x80\x80",
                b"b\\#364\\#220\\#200\\#200",
                b"b\xf4\x90\x80\x80",
            ),
            (
                b"f\xfc\x84\x80\x80\x80\x80",
                b"f\xfc\x84\x80\x80\x80\x80",
                b"f\\#374\\#204\\#200\\#200\\#200\\#200",
                b"f\xfc\x84\x80\x80\x80\x80",
            ),
            (b"x\xff", b"x\\#377", b"x\\#377", b"x\xff"),
        ];
        for (name, utf8, c, eight) in cases {
            let n = String::from_utf8_lossy(name);
            assert_eq!(shown(name, true, false), *utf8, "UTF-8: {n}");
            assert_eq!(shown(name, false, false), *c, "C: {n}");
            assert_eq!(shown(name, true, true), *eight, "-8, UTF-8: {n}");
            assert_eq!(shown(name, false, true), *eight, "-8, C: {n}");
        }
    }

    #[test]
    fn c1_controls_are_escaped_whatever_the_settings() {
        // 0x9b is CSI on terminals that take 8-bit controls, U+009B on those that take them
        // in UTF-8: rsync prints them raw with -8 (and the latter in a UTF-8 locale), but a
        // server must not drive the terminal through a name.
        for (utf8, eight_bit) in [(true, false), (false, false), (true, true), (false, true)] {
            assert_eq!(shown(b"a\x9b2Jb", utf8, eight_bit), b"a\\#2332Jb");
            assert_eq!(
                shown("a\u{9b}b".as_bytes(), utf8, eight_bit),
                b"a\\#302\\#233b"
            );
            for b in 0x80u8..=0x9f {
                let expected = format!("x\\#{b:03o}y").into_bytes();
                assert_eq!(shown(&[b'x', b, b'y'], utf8, eight_bit), expected);
            }
        }
        assert_eq!(display_path(b"d/\x1b]0;t\x07"), "d/\\#033]0;t\\#007");
    }

    #[test]
    fn text_keeps_escaping_what_is_not_utf8() {
        let text = |name: &[u8], eight_bit| {
            let mut out = Vec::new();
            let style = Style {
                utf8: true,
                eight_bit,
                decoding: Decoding::Text,
            };
            escape_into(name, style, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(b"caf\xe9", true), "caf\\#351");
        assert_eq!(text("café".as_bytes(), true), "café");
        assert_eq!(
            text(b"b\xf4\x90\x80\x80", false),
            "b\\#364\\#220\\#200\\#200"
        );
    }
}

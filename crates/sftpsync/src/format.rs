//! rsync's `--out-format`/`--log-file-format` escapes, its `-h` number styles and its time
//! stamps: the pieces every text output is made of.

use std::time::{SystemTime, UNIX_EPOCH};

use sync_engine::path::escape_name_bytes;
use sync_engine::{Item, Kind, UpdateType};

/// A parsed `--out-format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFormat {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Escape {
        letter: char,
        width: usize,
        left: bool,
        /// One level per apostrophe, as `-h` counts them (1 groups digits, 2 and 3 use units).
        human: u8,
        /// The escape as written, for letters that are printed as they are.
        raw: String,
    },
}

/// What an escape needs to know beyond the item.
pub struct Context<'a> {
    /// `%o` for anything but a deletion: "send" or "recv".
    pub op: &'static str,
    /// `%f`: what goes before the item's path to name it on the sender, when known.
    pub sender_prefix: Option<&'a [u8]>,
    /// `-g`: without it `%G` says "DEFAULT", as rsync's.
    pub preserve_group: bool,
}

impl OutFormat {
    pub fn parse(text: &[u8]) -> OutFormat {
        let text = String::from_utf8_lossy(text);
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let mut raw = String::from('%');
            let (mut width, mut left, mut human) = (0usize, false, 0u8);
            let letter = loop {
                match chars.next() {
                    Some('-') => {
                        raw.push('-');
                        left = true;
                    }
                    Some('\'') => {
                        raw.push('\'');
                        human = human.saturating_add(1);
                    }
                    Some(d @ '0'..='9') => {
                        raw.push(d);
                        width = width
                            .saturating_mul(10)
                            .saturating_add(d as usize - '0' as usize);
                    }
                    other => break other,
                }
            };
            let Some(letter) = letter else {
                // A '%' at the very end stands for itself.
                literal.push_str(&raw);
                break;
            };
            raw.push(letter);
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Escape {
                letter,
                width,
                left,
                human,
                raw,
            });
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        OutFormat { parts }
    }

    /// rsync shows every changed item, not only transfers, when the format itemizes.
    pub fn itemizes(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Escape { letter: 'i', .. }))
    }

    /// The line for a terminal: names escaped as rsync escapes them (with `-8`, high-bit
    /// bytes as they are, so the line need not be UTF-8).
    pub fn render(&self, item: &Item, ctx: &Context<'_>) -> Vec<u8> {
        self.render_bytes(item, ctx, false)
    }

    /// The line with names as they are but for control characters, as rsync's log file has
    /// them: other bytes are not escaped there, whatever the locale.
    pub fn render_raw(&self, item: &Item, ctx: &Context<'_>) -> Vec<u8> {
        self.render_bytes(item, ctx, true)
    }

    fn render_bytes(&self, item: &Item, ctx: &Context<'_>, raw_names: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Escape {
                    letter,
                    width,
                    left,
                    human,
                    raw,
                } => {
                    let value = escape_value(*letter, *human, raw, item, ctx, raw_names);
                    pad(&mut out, &value, *width, *left);
                }
            }
        }
        out
    }
}

fn pad(out: &mut Vec<u8>, value: &[u8], width: usize, left: bool) {
    let shown = String::from_utf8_lossy(value).chars().count();
    let fill = width.saturating_sub(shown);
    if !left {
        out.extend(std::iter::repeat_n(b' ', fill));
    }
    out.extend_from_slice(value);
    if left {
        out.extend(std::iter::repeat_n(b' ', fill));
    }
}

fn escape_value(
    letter: char,
    human: u8,
    raw: &str,
    item: &Item,
    ctx: &Context<'_>,
    raw_names: bool,
) -> Vec<u8> {
    let name = |bytes: &[u8]| {
        if raw_names {
            escape_controls(bytes)
        } else {
            escape_name_bytes(bytes)
        }
    };
    match letter {
        'n' => {
            let mut n = if item.path.is_empty() {
                b".".to_vec()
            } else {
                name(&item.path)
            };
            if item.kind == Kind::Dir {
                n.push(b'/');
            }
            n
        }
        'L' => match (&item.link_target, &item.hard_link_to) {
            (Some(t), _) => [&b" -> "[..], &name(t)].concat(),
            (None, Some(h)) => [&b" => "[..], &name(h)].concat(),
            (None, None) => Vec::new(),
        },
        'f' => {
            let deleting = item.update == UpdateType::Deleting;
            let prefix = ctx.sender_prefix.filter(|_| !deleting);
            // rsync's sender names files without a leading slash, even from an absolute
            // source.
            let prefix = prefix.unwrap_or_default();
            let start = prefix
                .iter()
                .position(|&b| b != b'/')
                .unwrap_or(prefix.len());
            let mut full = prefix[start..].to_vec();
            if item.path.is_empty() {
                full.push(b'.');
            } else {
                full.extend_from_slice(&item.path);
            }
            name(&full)
        }
        _ => text_value(letter, human, raw, item, ctx).into_bytes(),
    }
}

fn text_value(letter: char, human: u8, raw: &str, item: &Item, ctx: &Context<'_>) -> String {
    let deleting = item.update == UpdateType::Deleting;
    // rsync knows nothing of an entry it deletes but its name.
    let meta = item.meta.as_ref().filter(|_| !deleting);
    match letter {
        'i' => item.code(),
        'o' if deleting => "del.".into(),
        'o' => ctx.op.into(),
        'l' => human_num(
            if deleting {
                0
            } else {
                meta.map_or(0, |m| m.size)
            },
            human,
        ),
        'b' => human_num(item.transferred, human),
        // No block checksums are ever received: the receiver's blocks are hashed here.
        'c' => human_num(0, human),
        'p' => human_num(u64::from(std::process::id()), human),
        'M' => {
            let t = local_time(meta.map_or(0, |m| m.mtime));
            format!(
                "{:04}/{:02}/{:02}-{:02}:{:02}:{:02}",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            )
        }
        't' => now_stamp(),
        'B' => perms_text(meta.map_or(0, |m| m.mode)),
        'U' => meta.and_then(|m| m.uid).unwrap_or(0).to_string(),
        'G' if !ctx.preserve_group => "DEFAULT".into(),
        'G' => meta.and_then(|m| m.gid).unwrap_or(0).to_string(),
        // rsync's MD5 of the whole file is never known here: sftpsync hashes with BLAKE3.
        'C' => " ".repeat(32),
        '%' => "%".into(),
        // The module name: there are no daemon modules.
        'm' => String::new(),
        // Daemon-only escapes and unknown letters print as written, as in rsync.
        _ => raw.into(),
    }
}

/// Control bytes as `\#ooo`, all else as it is; a tab stays a tab, as in rsync's log.
pub(crate) fn escape_controls(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            out.extend_from_slice(format!("\\#{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// A number as rsync's `-h` level prints it: 0 plain, 1 digit groups, 2 units of 1000,
/// 3 and more units of 1024. Numbers below one unit stay whole.
pub fn human_num(n: u64, level: u8) -> String {
    match level {
        0 => n.to_string(),
        1 => group_digits(n),
        _ => {
            let base = if level == 2 { 1000.0 } else { 1024.0 };
            let mut v = n as f64;
            if v < base {
                return n.to_string();
            }
            let mut unit = 0;
            while v >= base && unit < UNITS.len() - 1 {
                v /= base;
                unit += 1;
            }
            format!("{v:.2}{}", UNITS[unit])
        }
    }
}

const UNITS: [char; 7] = [' ', 'K', 'M', 'G', 'T', 'P', 'E'];

/// A fraction such as a rate, with two decimals: grouped at level 1, in units from level 2.
pub fn human_dnum(v: f64, level: u8) -> String {
    if level >= 2 {
        let base = if level == 2 { 1000.0 } else { 1024.0 };
        if v >= base {
            return human_num(v as u64, level);
        }
    }
    if level == 0 {
        return format!("{v:.2}");
    }
    let cents = (v * 100.0).round() as u64;
    format!("{}.{:02}", group_digits(cents / 100), cents % 100)
}

/// 1234567 -> "1,234,567", as rsync prints sizes.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// rsync's progress rate column: always in units of 1024, at least kB/s.
pub fn progress_rate(bytes_per_sec: f64) -> String {
    let kb = bytes_per_sec / 1024.0;
    let (v, unit) = if kb > 1024.0 * 1024.0 {
        (kb / (1024.0 * 1024.0), "GB/s")
    } else if kb > 1024.0 {
        (kb / 1024.0, "MB/s")
    } else {
        (kb, "kB/s")
    };
    format!("{v:7.2}{unit}")
}

/// rsync's progress time column: hours, minutes, seconds, or question marks when unknown.
pub fn progress_time(secs: Option<f64>) -> String {
    match secs {
        // Beyond 9999 hours the column would overflow; rsync's width allows four digits.
        Some(s) if (0.0..36_000_000.0).contains(&s) => {
            let s = s as u64;
            format!("{:4}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
        }
        _ => "  ??:??:??".into(),
    }
}

/// The nine `ls -l` permission letters, with setuid, setgid and sticky bits folded in.
pub fn perms_text(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, on, off) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    let bits = mode & 7;
    s.push(if bits & 4 != 0 { 'r' } else { '-' });
    s.push(if bits & 2 != 0 { 'w' } else { '-' });
    s.push(match (bits & 1 != 0, mode & 0o1000 != 0) {
        (true, true) => 't',
        (false, true) => 'T',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s
}

/// A broken-down local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Seconds since the epoch in the local time zone, as rsync's log stamps use it.
pub fn local_time(secs: i64) -> LocalTime {
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the
    // call and localtime_r keeps neither.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    };
    match tm {
        Some(tm) => LocalTime {
            year: i64::from(tm.tm_year) + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec as u32,
        },
        None => LocalTime {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        },
    }
}

/// Now as `%t` and the log file print it: `YYYY/MM/DD HH:MM:SS`.
pub fn now_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t = local_time(secs);
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::{Kind, Meta};

    fn meta(kind: Kind, size: u64, mode: u32) -> Meta {
        Meta {
            kind,
            size,
            mtime: 1_000_000_000,
            atime: 0,
            mode,
            uid: Some(1000),
            gid: None,
            dev_ino: None,
            nlink: 1,
            file_type: 0,
        }
    }

    fn ctx() -> Context<'static> {
        Context {
            op: "send",
            sender_prefix: Some(b"/src/"),
            preserve_group: false,
        }
    }

    fn render(fmt: &str, item: &Item) -> String {
        String::from_utf8(OutFormat::parse(fmt.as_bytes()).render(item, &ctx())).unwrap()
    }

    #[test]
    fn escapes_show_what_rsync_shows() {
        let mut file = Item::new(UpdateType::Sent, Kind::File, b"d/big".to_vec()).with_meta(&meta(
            Kind::File,
            5_000_000,
            0o644,
        ));
        file.created = true;
        file.transferred = 4_000_000;
        assert_eq!(
            render("%i %n%L|%l|%b|%f|%o|%c|%B|%U|%G", &file),
            ">f+++++++++ d/big|5000000|4000000|src/d/big|send|0|rw-r--r--|1000|DEFAULT"
                .replacen('>', "<", 1)
        );
        let dir = Item::new(UpdateType::LocalChange, Kind::Dir, Vec::new()).with_meta(&meta(
            Kind::Dir,
            4096,
            0o1777,
        ));
        assert_eq!(render("%n|%f|%B", &dir), "./|src/.|rwxrwxrwt");
        let mut link = Item::new(UpdateType::LocalChange, Kind::Symlink, b"l".to_vec())
            .with_meta(&meta(Kind::Symlink, 1, 0o777));
        link.link_target = Some(b"a".to_vec());
        assert_eq!(render("%n%L %l", &link), "l -> a 1");
        let gone = Item::new(UpdateType::Deleting, Kind::Dir, b"zz".to_vec()).with_meta(&meta(
            Kind::Dir,
            4096,
            0o755,
        ));
        assert_eq!(
            render("[%n|%i|%l|%o|%f|%B]", &gone),
            "[zz/|*deleting  |0|del.|zz|---------]"
        );
    }

    #[test]
    fn widths_apostrophes_and_odd_escapes_follow_rsync() {
        let file = Item::new(UpdateType::Sent, Kind::File, b"a".to_vec()).with_meta(&meta(
            Kind::File,
            5_000_000,
            0o644,
        ));
        assert_eq!(
            render("%-4n|%9l|%'l|%''l|%'''l|%07l", &file),
            "a   |  5000000|5,000,000|5.00M|4.77M|5000000"
        );
        // Unknown and daemon-only letters stay as written; a last lone '%' too.
        assert_eq!(render("%x|%h|%m|%5%|100%", &file), "%x|%h||    %|100%");
        assert!(!OutFormat::parse(b"%n%L").itemizes());
        assert!(OutFormat::parse(b"%-12i %n").itemizes());
        // %M is the mtime, %t now: both as rsync's stamps.
        let m = render("%M", &file);
        assert_eq!(m.len(), "2001/09/09-01:46:40".len(), "{m}");
        assert_eq!(&m[4..5], "/");
        assert_eq!(&m[10..11], "-");
        let t = render("%t", &file);
        assert_eq!(t.len(), "2026/01/01 00:00:00".len(), "{t}");
    }

    #[test]
    fn log_lines_keep_names_but_escape_control_bytes() {
        let mut link = Item::new(
            UpdateType::LocalChange,
            Kind::Symlink,
            b"caf\xe9\n\tx".to_vec(),
        );
        link.link_target = Some(b"t\r".to_vec());
        let line = OutFormat::parse(b"%n%L").render_raw(&link, &ctx());
        assert_eq!(line, b"caf\xe9\\#012\tx -> t\\#015");
    }

    #[test]
    fn numbers_follow_the_h_levels() {
        assert_eq!(human_num(1234567, 0), "1234567");
        assert_eq!(human_num(1234567, 1), "1,234,567");
        assert_eq!(human_num(4096, 2), "4.10K");
        assert_eq!(human_num(4096, 3), "4.00K");
        assert_eq!(human_num(999, 2), "999");
        assert_eq!(human_num(1000, 3), "1000");
        assert_eq!(human_num(5_000_000, 2), "5.00M");
        assert_eq!(human_dnum(2100.0, 1), "2,100.00");
        assert_eq!(human_dnum(364.5, 0), "364.50");
        assert_eq!(human_dnum(10_000_000.0, 2), "10.00M");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
    }

    #[test]
    fn progress_columns_have_rsync_widths() {
        assert_eq!(progress_rate(0.0), "   0.00kB/s");
        assert_eq!(progress_rate(32.0 * 1024.0 * 1024.0), "  32.00MB/s");
        assert_eq!(progress_time(Some(0.0)), "   0:00:00");
        assert_eq!(progress_time(Some(3723.9)), "   1:02:03");
        assert_eq!(progress_time(None), "  ??:??:??");
    }

    #[test]
    fn perms_fold_in_the_special_bits() {
        assert_eq!(perms_text(0o755), "rwxr-xr-x");
        assert_eq!(perms_text(0o4755), "rwsr-xr-x");
        assert_eq!(perms_text(0o2644), "rw-r-Sr--");
        assert_eq!(perms_text(0o1777), "rwxrwxrwt");
    }
}

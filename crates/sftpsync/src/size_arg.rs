//! Reads a size the way rsync 3's option parser does (`--max-size`, `--min-size`, `--bwlimit`,
//! `--max-alloc`).
//!
//! The grammar, from rsync's man page and behaviour: a decimal number (a fraction allowed),
//! then an optional unit `B`, `K`, `M`, `G`, `T` or `P` in either case (powers of 1024; `KB`
//! and the like are powers of 1000, `KiB` powers of 1024 again), then an optional `+1` or
//! `-1`. Without a unit the option's default applies. Fractions are cut to whole bytes.
//! Errors are rsync's one-line messages, e.g. `--max-size=1x is invalid`.

/// What a size option accepts besides the grammar.
#[derive(Debug, Clone, Copy)]
pub struct SizeRule {
    /// The option's name without dashes, for messages.
    pub name: &'static str,
    /// The unit a bare number is in: `b'b'` for bytes, `b'K'` for KiB.
    pub default_unit: u8,
    /// The smallest value accepted.
    pub min: u64,
    /// Whether 0 is accepted below `min` (meaning "no limit").
    pub zero_unlimited: bool,
}

/// The value in bytes, or rsync's message for a bad one.
pub fn parse_size(rule: SizeRule, text: &[u8]) -> Result<u64, String> {
    let shown = crate::args::show(text);
    let fail = |why: &str| format!("--{}={shown} is {why}", rule.name);
    let mut at = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if text.get(at) == Some(&b'.') {
        at += 1;
        at += text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    }
    // A sign right after the number is the adjustment, not a unit.
    let unit = match text.get(at) {
        Some(&c) if c != b'+' && c != b'-' => {
            at += 1;
            c
        }
        _ => rule.default_unit,
    };
    let power = match unit.to_ascii_lowercase() {
        b'b' => 0,
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        _ => return Err(fail("invalid")),
    };
    let rest = &text[at..];
    let base: f64 = match rest {
        [b'b' | b'B', ..] => {
            at += 1;
            1000.0
        }
        [] | [b'+' | b'-', ..] => 1024.0,
        [i, b, ..] if i.eq_ignore_ascii_case(&b'i') && b.eq_ignore_ascii_case(&b'b') => {
            at += 2;
            1024.0
        }
        _ => return Err(fail("invalid")),
    };
    // rsync multiplies by the number as C's atof reads the whole text, leading sign included.
    // A product below zero (even -0.5) or past a signed 64-bit integer is "too large".
    let product = base.powi(power) * leading_number(text);
    let mut adjust = 0;
    if let [sign @ (b'+' | b'-'), b'1', ..] = &text[at..] {
        if at != 0 {
            adjust = if *sign == b'+' { 1 } else { -1 };
            at += 2;
        }
    }
    let value = product + adjust as f64;
    if !(0.0..9_223_372_036_854_775_808.0).contains(&value) {
        return Err(fail("too large"));
    }
    // Whole bytes, the +1 or -1 kept exact however big the product.
    let size = (product.trunc() as i64 + adjust).max(0) as u64;
    if at != text.len() {
        return Err(fail("invalid"));
    }
    if size < rule.min && !(rule.zero_unlimited && size == 0) {
        let unlimited = if rule.zero_unlimited {
            " or 0 for unlimited"
        } else {
            ""
        };
        let min = shown_size(rule.min);
        return Err(fail(&format!("too small (min: {min}{unlimited})")));
    }
    Ok(size)
}

/// A limit as rsync shows it in its size messages: plain below 1024, else with two decimals
/// and a 1024-based unit (`1.00M`).
fn shown_size(n: u64) -> String {
    if n < 1024 {
        return n.to_string();
    }
    let mut value = n as f64;
    let mut unit = 'B';
    for u in ['K', 'M', 'G', 'T', 'P'] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.2}{unit}")
}

/// The number C's `atof` finds at the start of `text`: a sign, digits, a fraction; 0 when
/// there is none. (An exponent cannot occur: the grammar above refuses an `e` before this
/// value is used.)
fn leading_number(text: &[u8]) -> f64 {
    let (negative, body) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let whole = body.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = whole;
    if body.get(end) == Some(&b'.') {
        end += 1 + body[end + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
    }
    let digits = std::str::from_utf8(&body[..end]).unwrap_or("");
    // "." and "" hold no digits: atof reads nothing, which is 0.
    let value = match digits {
        "" | "." => 0.0,
        d => d.parse::<f64>().unwrap_or(0.0),
    };
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_SIZE: SizeRule = SizeRule {
        name: "max-size",
        default_unit: b'b',
        min: 0,
        zero_unlimited: false,
    };

    fn size(text: &str) -> Result<u64, String> {
        parse_size(MAX_SIZE, text.as_bytes())
    }

    #[test]
    fn units_follow_rsync() {
        for (text, want) in [
            ("0", 0),
            ("1", 1),
            ("00010", 10),
            ("1b", 1),
            ("1B", 1),
            ("1bb", 1),
            ("1bib", 1),
            ("1k", 1024),
            ("1K", 1024),
            ("1KiB", 1024),
            ("1kIB", 1024),
            ("1kb", 1000),
            ("1KB", 1000),
            ("1m", 1 << 20),
            ("1MB", 1_000_000),
            ("1g", 1 << 30),
            ("1GB", 1_000_000_000),
            ("1t", 1 << 40),
            ("1p", 1 << 50),
            ("1P", 1 << 50),
            ("8191p", 8191 << 50),
            // Fractions are cut to whole bytes.
            ("1.5k", 1536),
            ("1.99999k", 2047),
            (".5k", 512),
            ("1.", 1),
            ("1.k", 1024),
            ("1.9", 1),
            ("1.9b", 1),
            ("0.4", 0),
            // A unit alone, or a lone dot, multiplies nothing: rsync takes it as 0.
            ("k", 0),
            (".", 0),
            ("", 0),
            // One byte more or less.
            ("1k+1", 1025),
            ("1k-1", 1023),
            ("1kb-1", 999),
            ("1KiB-1", 1023),
            ("1-1", 0),
            ("5-1", 4),
            ("8191p+1", (8191 << 50) + 1),
        ] {
            assert_eq!(size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_values_get_rsyncs_messages() {
        for (text, why) in [
            ("1x", "invalid"),
            ("x", "invalid"),
            ("+1", "invalid"),
            ("+5", "invalid"),
            ("-0", "invalid"),
            ("-", "invalid"),
            ("+", "invalid"),
            ("-x", "invalid"),
            ("-k", "invalid"),
            ("-.k", "invalid"),
            ("1e3", "invalid"),
            ("7e", "invalid"),
            (" 1", "invalid"),
            ("1 ", "invalid"),
            ("1K-2", "invalid"),
            ("1k+10", "invalid"),
            ("1k+1+1", "invalid"),
            ("1m1", "invalid"),
            ("1k1", "invalid"),
            ("1ki", "invalid"),
            ("1kibx", "invalid"),
            ("1k-", "invalid"),
            ("1-", "invalid"),
            ("1k-1x", "invalid"),
            ("1.2.3", "invalid"),
            ("1..2", "invalid"),
            ("0x10", "invalid"),
            ("1,5k", "invalid"),
            ("8E", "invalid"),
            // Negative values, and values past a signed 64-bit integer, are too large.
            ("-1", "too large"),
            ("-5", "too large"),
            ("-1k", "too large"),
            ("-1x", "too large"),
            ("-5.5", "too large"),
            ("-.5", "too large"),
            ("-1-1", "too large"),
            ("0-1", "too large"),
            ("0.5-1", "too large"),
            ("8192p", "too large"),
            ("9000p-1x", "too large"),
            ("9223372036854775807", "too large"),
            ("10000000000000000000", "too large"),
        ] {
            assert_eq!(
                size(text),
                Err(format!("--max-size={text} is {why}")),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_size(MAX_SIZE, b"1\xff"),
            Err("--max-size=1\\#377 is invalid".to_string())
        );
    }

    #[test]
    fn minimums_are_shown_as_rsync_shows_them() {
        assert_eq!(shown_size(512), "512");
        assert_eq!(shown_size(1 << 20), "1.00M");
        assert_eq!(shown_size(1536), "1.50K");
    }

    #[test]
    fn a_minimum_can_spare_zero() {
        let rate = SizeRule {
            name: "bwlimit",
            default_unit: b'K',
            min: 512,
            zero_unlimited: true,
        };
        assert_eq!(parse_size(rate, b"1"), Ok(1024));
        assert_eq!(parse_size(rate, b"512b"), Ok(512));
        assert_eq!(parse_size(rate, b"0"), Ok(0));
        assert_eq!(parse_size(rate, b"k"), Ok(0));
        assert_eq!(
            parse_size(rate, b"0.1"),
            Err("--bwlimit=0.1 is too small (min: 512 or 0 for unlimited)".to_string())
        );
        assert_eq!(
            parse_size(rate, b"1bb"),
            Err("--bwlimit=1bb is too small (min: 512 or 0 for unlimited)".to_string())
        );
    }
}

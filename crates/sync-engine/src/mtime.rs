//! Modification times between sides that hold different ranges: SFTP v3 carries unsigned
//! 32-bit seconds, local file systems signed 64-bit ones.
//!
//! The rule for a time the wire cannot carry (before 1970, or after 2106-02-07 06:28:15 UTC):
//! it is clamped to the nearest end of `0..=u32::MAX`, both when it is sent and when a source
//! time is compared with what the server holds ([`crate::Tree::stored_mtime`]). So the first
//! run stores the clamped time and every later run finds it up to date, instead of sending the
//! file again forever. Wrapping (`as u32`) would be worse: -1 would become 2106 and 2^32 + 5
//! would become 5, unrelated times that could even match another file's.
//!
//! What clamping cannot do: two source times beyond the same end of the range look the same on
//! the server, so a file whose only change is between two such times is not sent by the time
//! check; its size (or `-c`) still tells.

/// The mtime as SFTP v3 carries it.
pub fn wire_mtime(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// Whether `t` survives the trip over SFTP v3 unchanged.
pub fn fits_wire(t: i64) -> bool {
    u32::try_from(t).is_ok()
}

/// Whether two mtimes differ by more than `window` seconds. Works on the whole `i64` range:
/// a plain subtraction overflows for times at opposite extremes, which file systems accept.
pub fn mtimes_differ(a: i64, b: i64, window: i64) -> bool {
    // A negative window (rsync's "compare nanoseconds") is exact here: SFTP has whole seconds.
    a.abs_diff(b) > u64::try_from(window).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_mtime_clamps_instead_of_wrapping() {
        assert_eq!(wire_mtime(-1), 0);
        assert_eq!(wire_mtime(i64::MIN), 0);
        assert_eq!(wire_mtime(0), 0);
        assert_eq!(wire_mtime(1_700_000_000), 1_700_000_000);
        assert_eq!(wire_mtime((1 << 31) + 5), (1 << 31) + 5);
        assert_eq!(wire_mtime(u32::MAX as i64), u32::MAX);
        assert_eq!(wire_mtime((1 << 32) + 5), u32::MAX, "would wrap to 5");
        assert_eq!(wire_mtime(1 << 33), u32::MAX, "would wrap to 0");
        assert_eq!(wire_mtime(i64::MAX), u32::MAX);
    }

    #[test]
    fn fits_wire_is_the_u32_range() {
        assert!(fits_wire(0));
        assert!(fits_wire(u32::MAX as i64));
        assert!(!fits_wire(-1));
        assert!(!fits_wire(1 << 32));
    }

    #[test]
    fn mtimes_differ_at_extremes_does_not_overflow() {
        assert!(mtimes_differ(i64::MIN, i64::MAX, 0));
        assert!(mtimes_differ(i64::MAX, i64::MIN, 1 << 40));
        assert!(!mtimes_differ(i64::MIN, i64::MIN, 0));
        assert!(!mtimes_differ(-1, 0, 1));
        assert!(mtimes_differ(-1, 0, 0));
        assert!(mtimes_differ(5, 7, 1));
        assert!(!mtimes_differ(5, 7, 2));
        assert!(mtimes_differ(5, 6, -1), "negative window is exact");
        assert!(!mtimes_differ(5, 5, -1));
    }
}

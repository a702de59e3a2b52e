//! rsync's weak rolling checksum: cheap to slide one byte along, so every offset of the new
//! file can be tried against the old file's blocks.
//!
//! As in the rsync technical report, for a window X_k..X_l: `s1` is the sum of the bytes
//! and `s2` the sum of `(l - i + 1) · X_i` (equivalently the sum of the running sums of
//! `s1`), each taken mod 2^16, and the digest is `s1 | s2 << 16`. rsync adds a
//! CHAR_OFFSET that is 0, so none is added here. Bytes count as unsigned; rsync's C code
//! reads them as signed chars, which only matters for exchanging sums with a real rsync,
//! which we never do: both ends of a signature are this crate.

/// Bytes summed at once by [`Rolling::extend`]. 255 · Σ weights stays far below 2^32, so
/// the per-piece sums cannot wrap.
const LANES: usize = 64;

/// Weight of each byte of a piece in s2: the first byte is counted LANES times, the last
/// once.
const WEIGHTS: [u32; LANES] = {
    let mut w = [0u32; LANES];
    let mut i = 0;
    while i < LANES {
        w[i] = (LANES - i) as u32;
        i += 1;
    }
    w
};

/// Weak checksum of a window, with an O(1) slide.
///
/// The sums are kept in wrapping `u32`s and reduced only in [`Rolling::digest`]: 2^16
/// divides 2^32, so wrapping never changes the result and the hot loop has no masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rolling {
    s1: u32,
    s2: u32,
    len: u32,
}

impl Rolling {
    /// The checksum of an empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// The checksum of `window`.
    pub fn of(window: &[u8]) -> Self {
        let mut r = Self::new();
        r.extend(window);
        r
    }

    /// Appends bytes to the window (it grows).
    pub fn extend(&mut self, bytes: &[u8]) {
        let (mut s1, mut s2) = (self.s1, self.s2);
        // Byte by byte, s2 waits on s1 at every step: a serial chain of about a cycle per
        // byte. Over a piece of LANES bytes the same sums are s2 += LANES·s1 + Σ(LANES-i)·x_i
        // and s1 += Σ x_i, sums with fixed weights that the compiler turns into SIMD
        // multiply-adds (measured: several times faster on whole blocks).
        let mut pieces = bytes.chunks_exact(LANES);
        for piece in &mut pieces {
            let (mut sum, mut weighted) = (0u32, 0u32);
            for (&b, &w) in piece.iter().zip(&WEIGHTS) {
                sum += u32::from(b);
                weighted += u32::from(b) * w;
            }
            s2 = s2
                .wrapping_add(s1.wrapping_mul(LANES as u32))
                .wrapping_add(weighted);
            s1 = s1.wrapping_add(sum);
        }
        for &b in pieces.remainder() {
            s1 = s1.wrapping_add(u32::from(b));
            s2 = s2.wrapping_add(s1);
        }
        self.s1 = s1;
        self.s2 = s2;
        // Windows are at most MAX_BLOCK_SIZE long; wrapping keeps this total anyway.
        self.len = self.len.wrapping_add(bytes.len() as u32);
    }

    /// Slides the window one byte: `out` leaves at the front, `inn` enters at the back.
    #[inline]
    pub fn roll(&mut self, out: u8, inn: u8) {
        self.s1 = self
            .s1
            .wrapping_sub(u32::from(out))
            .wrapping_add(u32::from(inn));
        self.s2 = self
            .s2
            .wrapping_sub(self.len.wrapping_mul(u32::from(out)))
            .wrapping_add(self.s1);
    }

    /// The window length.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `s1 | s2 << 16`, each mod 2^16.
    #[inline]
    pub fn digest(&self) -> u32 {
        (self.s1 & 0xffff) | (self.s2 << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_tech_report_definition() {
        let w = b"rsync rolls";
        let s1: u32 = w.iter().map(|&b| u32::from(b)).sum();
        let n = w.len() as u32;
        let s2: u32 = w
            .iter()
            .enumerate()
            .map(|(i, &b)| (n - i as u32) * u32::from(b))
            .sum();
        assert_eq!(
            Rolling::of(w).digest(),
            (s1 & 0xffff) | ((s2 & 0xffff) << 16)
        );
        assert_eq!(Rolling::of(b"").digest(), 0);
    }

    #[test]
    fn roll_equals_recompute() {
        let d = data(5000);
        for win in [1usize, 2, 7, 700, 4096] {
            let mut r = Rolling::of(&d[..win]);
            for k in 0..d.len() - win {
                assert_eq!(
                    r.digest(),
                    Rolling::of(&d[k..k + win]).digest(),
                    "{win} at {k}"
                );
                r.roll(d[k], d[k + win]);
            }
            assert_eq!(r.digest(), Rolling::of(&d[d.len() - win..]).digest());
        }
    }

    #[test]
    fn roll_equals_recompute_when_sums_wrap() {
        // All 0xff over a long window overflows both 16-bit halves many times over.
        let d = vec![0xffu8; 300_000];
        let win = 131_072;
        let mut r = Rolling::of(&d[..win]);
        r.roll(0xff, 0x00);
        let mut expect = d[1..=win].to_vec();
        expect[win - 1] = 0;
        assert_eq!(r.digest(), Rolling::of(&expect).digest());
    }

    /// The definition, one byte at a time.
    fn scalar(bytes: &[u8]) -> u32 {
        let (mut s1, mut s2) = (0u32, 0u32);
        for &b in bytes {
            s1 = s1.wrapping_add(u32::from(b));
            s2 = s2.wrapping_add(s1);
        }
        (s1 & 0xffff) | (s2 << 16)
    }

    #[test]
    fn pieces_sum_like_single_bytes() {
        let d = data(1000);
        for len in 0..=300 {
            assert_eq!(Rolling::of(&d[..len]).digest(), scalar(&d[..len]), "{len}");
        }
        // Sums that wrap many times, in pieces and in the tail.
        let ones = vec![0xffu8; 131_072 + 37];
        assert_eq!(Rolling::of(&ones).digest(), scalar(&ones));
        let mut r = Rolling::of(&d[..5]);
        r.extend(&d[5..]);
        assert_eq!(r.digest(), scalar(&d));
    }

    #[test]
    fn extend_is_concatenation() {
        let d = data(1000);
        let mut r = Rolling::of(&d[..333]);
        r.extend(&d[333..]);
        assert_eq!(r, Rolling::of(&d));
        assert_eq!(r.len(), 1000);
    }
}

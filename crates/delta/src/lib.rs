//! rsync's delta-transfer block matcher, with no I/O of its own.
//!
//! The old file is summarised as a [`Signature`] (one rolling weak sum and one truncated
//! BLAKE3 hash per block). The new file is then streamed through a [`DeltaEncoder`], which
//! finds every old block wherever it now sits (byte-granular, so insertions and deletions
//! at any offset are found) and emits [`Op`]s: ranges to copy from the old file and
//! literal bytes. [`Applier`] rebuilds the new file from the old one and the ops.
//!
//! Signing the new file as it streams past costs little after an edit in place: the old
//! blocks the matcher finds at block boundaries ([`KnownBlock`]) keep their sums in the
//! new signature ([`SignatureBuilder::expect`]). A signature can also stand for the file
//! it was made from: [`BlockCheck`] compares other contents with it.
//!
//! Everything works on byte slices or on readers and writers handed in by the caller;
//! memory stays bounded by a few blocks plus one literal chunk, whatever the file size.
//! The engine uses this to build a remote file from server-side copies of its previous
//! version plus only the changed bytes (design §5).
//!
//! ```
//! use std::io::Cursor;
//!
//! let old = b"the quick brown fox jumps over the lazy dog".repeat(100);
//! let mut new = b"a ".to_vec();
//! new.extend_from_slice(&old);
//!
//! let block_size = delta::choose_block_size(old.len() as u64, Some(64))?;
//! let sig = delta::Signature::compute(&old[..], block_size)?;
//! // What the engine keeps between runs:
//! let sig = delta::Signature::from_bytes(&sig.to_bytes())?;
//!
//! let mut ops = delta::delta(&sig, &new[..]);
//! let ops: Vec<delta::Op> = ops.by_ref().collect::<Result<_, _>>()?;
//! assert_eq!(ops[0], delta::Op::Literal(b"a ".to_vec()));
//!
//! let mut rebuilt = Vec::new();
//! let applied = delta::apply(Cursor::new(&old), &ops, &mut rebuilt)?;
//! assert_eq!(rebuilt, new);
//! assert_eq!(applied.hash, *blake3::hash(&new).as_bytes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod encoder;
mod rolling;
mod signature;

pub use apply::{apply, Applied, Applier};
pub use encoder::{delta, DeltaEncoder, DeltaIter, Op, Stats, LITERAL_CHUNK};
pub use rolling::Rolling;
pub use signature::{
    BlockCheck, BlockSig, DecodeError, KnownBlock, Signature, SignatureBuilder, STRONG_LEN,
};

use std::io;

/// rsync's BLOCK_SIZE: the smallest block chosen automatically, used for every file up to
/// 700 × 700 bytes.
pub const MIN_AUTO_BLOCK_SIZE: u32 = 700;

/// rsync's MAX_BLOCK_SIZE for protocol 30 and later (128 KiB). It caps the automatic
/// choice and, as with rsync's `--block-size`, an explicit one; it also bounds the
/// matcher's window, hence its memory.
pub const MAX_BLOCK_SIZE: u32 = 1 << 17;

/// The block size rsync would pick for a basis file of `file_len` bytes.
///
/// Facts used (rsync man page for `--block-size`, and the comment on rsync's
/// `sum_sizes_sqroot`): the block size is the square root of the file length rounded down
/// to a multiple of 8; files up to BLOCK_SIZE² = 490 000 bytes get BLOCK_SIZE = 700; and
/// the result is capped at MAX_BLOCK_SIZE = 131 072 for protocol ≥ 30 (reached for files
/// of 16 GiB and more).
pub fn block_size_for(file_len: u64) -> u32 {
    let min = u64::from(MIN_AUTO_BLOCK_SIZE);
    let max = u64::from(MAX_BLOCK_SIZE);
    if file_len <= min * min {
        return MIN_AUTO_BLOCK_SIZE;
    }
    if file_len >= max * max {
        return MAX_BLOCK_SIZE;
    }
    let root = isqrt(file_len) & !7;
    // Fits: root < MAX_BLOCK_SIZE here.
    root.max(min) as u32
}

/// Floor square root; `u64::isqrt` is newer than the workspace's rust-version.
fn isqrt(n: u64) -> u64 {
    // The float root is within one of the truth for the sizes we see; fix it up exactly.
    let mut r = (n as f64).sqrt() as u64;
    while !matches!(r.checked_mul(r), Some(sq) if sq <= n) {
        r -= 1;
    }
    while matches!((r + 1).checked_mul(r + 1), Some(sq) if sq <= n) {
        r += 1;
    }
    r
}

/// The block size to use: an explicit one if given (validated as rsync validates
/// `--block-size`), else [`block_size_for`].
pub fn choose_block_size(file_len: u64, explicit: Option<u32>) -> Result<u32, Error> {
    match explicit {
        Some(size) => check_block_size(size),
        None => Ok(block_size_for(file_len)),
    }
}

pub(crate) fn check_block_size(size: u32) -> Result<u32, Error> {
    if size == 0 || size > MAX_BLOCK_SIZE {
        Err(Error::BlockSize(size))
    } else {
        Ok(size)
    }
}

/// What can go wrong while signing, matching or applying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("block size {0} is outside 1..={MAX_BLOCK_SIZE}")]
    BlockSize(u32),
    #[error("delta copies {len} bytes at offset {offset}, past the end of the old file")]
    CopyOutOfRange { offset: u64, len: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_get_rsyncs_minimum_block() {
        assert_eq!(block_size_for(0), 700);
        assert_eq!(block_size_for(1), 700);
        assert_eq!(block_size_for(490_000), 700);
        // Just past 700²: the root is 700.0007, rounded down to 696, raised to 700.
        assert_eq!(block_size_for(490_001), 700);
    }

    #[test]
    fn block_is_root_rounded_down_to_multiple_of_8() {
        assert_eq!(block_size_for(704 * 704 - 1), 700);
        assert_eq!(block_size_for(704 * 704), 704);
        assert_eq!(block_size_for(1 << 20), 1024);
        assert_eq!(block_size_for(4 << 20), 2048);
        assert_eq!(block_size_for(64 << 20), 8192);
        assert_eq!(block_size_for((1 << 30) - 1), 32760);
        assert_eq!(block_size_for(1 << 30), 32768);
        for len in [500_000u64, 1_000_003, 77_777_777, 10_000_000_000] {
            let b = u64::from(block_size_for(len));
            assert_eq!(b % 8, 0, "{len}");
            assert!(b * b <= len && (b + 8) * (b + 8) > len, "{len} -> {b}");
        }
    }

    #[test]
    fn block_is_capped_at_128k() {
        let max = u64::from(MAX_BLOCK_SIZE);
        assert_eq!(block_size_for(max * max - 1), MAX_BLOCK_SIZE - 8);
        assert_eq!(block_size_for(max * max), MAX_BLOCK_SIZE);
        assert_eq!(block_size_for(u64::MAX), MAX_BLOCK_SIZE);
    }

    #[test]
    fn explicit_block_size_is_checked() {
        assert_eq!(choose_block_size(1 << 30, Some(1)).unwrap(), 1);
        assert_eq!(
            choose_block_size(0, Some(MAX_BLOCK_SIZE)).unwrap(),
            MAX_BLOCK_SIZE
        );
        assert!(matches!(
            choose_block_size(5, Some(0)),
            Err(Error::BlockSize(0))
        ));
        assert!(choose_block_size(5, Some(MAX_BLOCK_SIZE + 1)).is_err());
        assert_eq!(choose_block_size(1 << 20, None).unwrap(), 1024);
    }
}

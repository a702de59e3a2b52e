//! Block signatures of the old file, built in one streaming pass, and their on-disk form.
//!
//! The engine keeps a signature in a local index between runs, so the encoding is
//! versioned and checksummed, and decoding treats its input as untrusted: any truncation,
//! corruption or absurd size is a typed error, never a panic or a huge allocation.

use std::collections::VecDeque;
use std::io::{self, Read};

use crate::rolling::Rolling;
use crate::{check_block_size, Error, MAX_BLOCK_SIZE};

/// Bytes of BLAKE3 kept per block. 128 bits makes an accidental match between different
/// blocks negligible even across the millions of blocks of a large tree.
pub const STRONG_LEN: usize = 16;

/// The sums of one block of the old file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSig {
    /// [`Rolling`] digest of the block.
    pub weak: u32,
    /// BLAKE3 of the block, truncated to [`STRONG_LEN`] bytes.
    pub strong: [u8; STRONG_LEN],
}

impl BlockSig {
    /// The sums of `block`.
    pub fn of(block: &[u8]) -> Self {
        Self {
            weak: Rolling::of(block).digest(),
            strong: strong_hash(block),
        }
    }
}

pub(crate) fn strong_hash(bytes: &[u8]) -> [u8; STRONG_LEN] {
    let full = blake3::hash(bytes);
    let mut out = [0u8; STRONG_LEN];
    out.copy_from_slice(&full.as_bytes()[..STRONG_LEN]);
    out
}

/// Signature of a whole file: every block is `block_size` bytes except possibly the last,
/// which holds the remainder.
///
/// The fields are read-only from outside: a signature is only made by signing or by
/// decoding, so the block size is valid and the block count always fits the file length,
/// and the matcher can rely on both without checks that could fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub(crate) block_size: u32,
    pub(crate) file_len: u64,
    pub(crate) blocks: Vec<BlockSig>,
}

impl Signature {
    /// Block length; the last block may be shorter.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Length of the signed file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The blocks' sums, in file order.
    pub fn blocks(&self) -> &[BlockSig] {
        &self.blocks
    }

    /// Signs everything `reader` yields, one block in memory at a time.
    pub fn compute<R: Read>(mut reader: R, block_size: u32) -> Result<Self, Error> {
        let mut builder = SignatureBuilder::new(block_size)?;
        let mut buf = vec![0u8; block_size as usize];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            builder.update(&buf[..n]);
        }
        Ok(builder.finish())
    }

    /// Signs an in-memory file.
    pub fn of_bytes(data: &[u8], block_size: u32) -> Result<Self, Error> {
        let mut builder = SignatureBuilder::new(block_size)?;
        builder.update(data);
        Ok(builder.finish())
    }

    /// Offset and length in the old file of block `index` (which must exist).
    pub(crate) fn block_range(&self, index: usize) -> (u64, u64) {
        let offset = index as u64 * u64::from(self.block_size);
        let len = (self.file_len - offset).min(u64::from(self.block_size));
        (offset, len)
    }

    /// Length of the final block when it is shorter than `block_size`, else 0.
    pub fn tail_len(&self) -> u32 {
        (self.file_len % u64::from(self.block_size)) as u32
    }

    /// Number of blocks `file_len` splits into, or `None` if that does not fit in memory.
    fn block_count(file_len: u64, block_size: u32) -> Option<usize> {
        usize::try_from(file_len.div_ceil(u64::from(block_size))).ok()
    }

    /// Size of [`Signature::to_bytes`]'s output.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.blocks.len() * ENTRY_LEN + CHECK_LEN
    }

    /// The on-disk form:
    ///
    /// ```text
    /// magic "SFSG" | version u8 = 1 | strong length u8 = 16 | reserved u16 = 0
    /// | block size u32 | file length u64 | per block: weak u32, strong [16]
    /// | first 16 bytes of BLAKE3 of everything before
    /// ```
    ///
    /// Integers are little-endian. The block count is implied by the file length and the
    /// block size, so the two cannot disagree.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(STRONG_LEN as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out.extend_from_slice(&self.file_len.to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.weak.to_le_bytes());
            out.extend_from_slice(&b.strong);
        }
        let check = strong_hash(&out);
        out.extend_from_slice(&check);
        out
    }

    /// Parses [`Signature::to_bytes`]'s output, rejecting anything else.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        if data.len() < HEADER_LEN + CHECK_LEN {
            return Err(DecodeError::Truncated {
                expected: HEADER_LEN + CHECK_LEN,
                got: data.len(),
            });
        }
        if &data[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if data[4] != VERSION {
            return Err(DecodeError::UnsupportedVersion(data[4]));
        }
        if usize::from(data[5]) != STRONG_LEN || data[6..8] != [0, 0] {
            return Err(DecodeError::BadHeader);
        }
        let block_size = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        let file_len = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
        if block_size == 0 || block_size > MAX_BLOCK_SIZE {
            return Err(DecodeError::BlockSize(block_size));
        }
        let expected = Self::block_count(file_len, block_size)
            .and_then(|n| n.checked_mul(ENTRY_LEN))
            .and_then(|n| n.checked_add(HEADER_LEN + CHECK_LEN))
            .ok_or(DecodeError::TooLarge { file_len })?;
        if data.len() < expected {
            return Err(DecodeError::Truncated {
                expected,
                got: data.len(),
            });
        }
        if data.len() > expected {
            return Err(DecodeError::TrailingBytes {
                expected,
                got: data.len(),
            });
        }
        let (body, check) = data.split_at(expected - CHECK_LEN);
        if strong_hash(body) != check {
            return Err(DecodeError::ChecksumMismatch);
        }
        let blocks = body[HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                let mut strong = [0u8; STRONG_LEN];
                strong.copy_from_slice(&e[4..]);
                BlockSig {
                    weak: u32::from_le_bytes(e[..4].try_into().expect("4 bytes")),
                    strong,
                }
            })
            .collect();
        Ok(Self {
            block_size,
            file_len,
            blocks,
        })
    }
}

/// Compares a file, streamed through it, with a signed one, by the blocks' strong hashes:
/// a check of contents that needs the signature instead of the signed file.
///
/// "Same" means the same length and, block by block, the same [`STRONG_LEN`] bytes of
/// BLAKE3. Different contents pass only if some block collides in 128 bits: by accident a
/// chance of about 2^-128 per changed block, and on purpose about 2^64 work per collision.
/// That is the strength that delta transfer already stakes every copied block on.
#[derive(Debug)]
pub struct BlockCheck<'s> {
    sig: &'s Signature,
    partial: Vec<u8>,
    next: usize,
    len: u64,
    differs: bool,
}

impl Signature {
    /// A check of streamed contents against this signature.
    pub fn check(&self) -> BlockCheck<'_> {
        BlockCheck {
            sig: self,
            partial: Vec::new(),
            next: 0,
            len: 0,
            differs: false,
        }
    }
}

impl BlockCheck<'_> {
    /// Feeds the next bytes; false once the contents are known to differ, after which the
    /// rest need not be read.
    pub fn update(&mut self, data: &[u8]) -> bool {
        self.len += data.len() as u64;
        if self.differs || self.len > self.sig.file_len {
            self.differs = true;
            return false;
        }
        let mut partial = std::mem::take(&mut self.partial);
        whole_blocks(&mut partial, self.sig.block_size as usize, data, |b| {
            self.block(b)
        });
        self.partial = partial;
        !self.differs
    }

    fn block(&mut self, block: &[u8]) {
        // Lengths are checked in `update`: this block is one of the signed file's.
        let i = self.next;
        self.next += 1;
        self.differs |= strong_hash(block) != self.sig.blocks[i].strong;
    }

    /// Whether the contents were the signed file's.
    pub fn finish(mut self) -> bool {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.block(&partial);
        }
        !self.differs && self.len == self.sig.file_len
    }
}

const MAGIC: &[u8; 4] = b"SFSG";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 8;
const ENTRY_LEN: usize = 4 + STRONG_LEN;
const CHECK_LEN: usize = STRONG_LEN;

/// Why stored signature bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("signature truncated: {got} bytes, expected {expected}")]
    Truncated { expected: usize, got: usize },
    #[error("signature has {got} bytes, expected {expected}")]
    TrailingBytes { expected: usize, got: usize },
    #[error("not a signature (bad magic)")]
    BadMagic,
    #[error("signature format version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("signature header is malformed")]
    BadHeader,
    #[error("signature block size {0} is outside 1..={MAX_BLOCK_SIZE}")]
    BlockSize(u32),
    #[error("signature claims a file of {file_len} bytes, too large to hold")]
    TooLarge { file_len: u64 },
    #[error("signature checksum mismatch (corrupted)")]
    ChecksumMismatch,
}

/// A block of a file being signed whose sums are already known, because its bytes are a
/// whole block of a file signed before: [`DeltaEncoder::known_blocks`] finds them, and
/// [`SignatureBuilder::expect`] takes them instead of hashing those bytes again.
///
/// [`DeltaEncoder::known_blocks`]: crate::DeltaEncoder::known_blocks
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownBlock {
    /// Block number in the file being signed; the block is a full one.
    pub index: u64,
    pub sums: BlockSig,
}

/// Push-style signer, for callers that already stream the file for another reason (an
/// upload) and want its signature without reading it twice.
#[derive(Debug)]
pub struct SignatureBuilder {
    block_size: u32,
    file_len: u64,
    blocks: Vec<BlockSig>,
    partial: Vec<u8>,
    /// Sums told in advance, by block number.
    expected: VecDeque<KnownBlock>,
    reused: u64,
}

impl SignatureBuilder {
    pub fn new(block_size: u32) -> Result<Self, Error> {
        check_block_size(block_size)?;
        Ok(Self {
            block_size,
            file_len: 0,
            blocks: Vec::new(),
            partial: Vec::with_capacity(block_size as usize),
            expected: VecDeque::new(),
            reused: 0,
        })
    }

    /// Tells the sums of a full block before the bytes that complete it are fed; those bytes
    /// are then not hashed. The caller vouches that the bytes are the ones the sums were
    /// computed from. Blocks are expected in increasing order; one already complete, or
    /// that ends up shorter than a full block, is signed from its bytes as usual.
    pub fn expect(&mut self, block: KnownBlock) {
        self.expected.push_back(block);
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Blocks whose sums came from [`SignatureBuilder::expect`] rather than from hashing.
    pub fn reused(&self) -> u64 {
        self.reused
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, data: &[u8]) {
        self.file_len += data.len() as u64;
        let mut partial = std::mem::take(&mut self.partial);
        whole_blocks(&mut partial, self.block_size as usize, data, |b| {
            self.full_block(b)
        });
        self.partial = partial;
    }

    fn full_block(&mut self, block: &[u8]) {
        let index = self.blocks.len() as u64;
        while self.expected.front().is_some_and(|k| k.index < index) {
            self.expected.pop_front();
        }
        let sums = match self.expected.front() {
            Some(k) if k.index == index => {
                self.reused += 1;
                self.expected.pop_front().expect("just seen").sums
            }
            _ => BlockSig::of(block),
        };
        self.blocks.push(sums);
    }

    pub fn finish(mut self) -> Signature {
        if !self.partial.is_empty() {
            self.blocks.push(BlockSig::of(&self.partial));
        }
        Signature {
            block_size: self.block_size,
            file_len: self.file_len,
            blocks: self.blocks,
        }
    }
}

/// Hands `block` each whole block of `block_size` bytes in `partial` followed by `data`, and
/// leaves what is left over in `partial`. Whole blocks come straight from the caller's
/// buffer, without a copy.
fn whole_blocks(
    partial: &mut Vec<u8>,
    block_size: usize,
    mut data: &[u8],
    mut block: impl FnMut(&[u8]),
) {
    if !partial.is_empty() {
        let take = (block_size - partial.len()).min(data.len());
        partial.extend_from_slice(&data[..take]);
        data = &data[take..];
        if partial.len() == block_size {
            block(partial);
            partial.clear();
        }
    }
    let mut chunks = data.chunks_exact(block_size);
    for b in &mut chunks {
        block(b);
    }
    partial.extend_from_slice(chunks.remainder());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Signature {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        Signature::of_bytes(&data, 700).unwrap()
    }

    #[test]
    fn blocks_cover_the_file_with_a_short_tail() {
        let sig = sample();
        assert_eq!(sig.blocks.len(), 15);
        assert_eq!(sig.tail_len(), 10_000 - 14 * 700);
        assert_eq!(sig.block_range(14), (9800, 200));
        assert_eq!(sig.block_range(0), (0, 700));
    }

    #[test]
    fn compute_equals_builder_fed_in_odd_pieces() {
        let data: Vec<u8> = (0..5_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let whole = Signature::compute(&data[..], 64).unwrap();
        let mut b = SignatureBuilder::new(64).unwrap();
        for piece in data.chunks(37) {
            b.update(piece);
        }
        assert_eq!(b.finish(), whole);
        assert_eq!(whole.blocks[3], BlockSig::of(&data[192..256]));
    }

    #[test]
    fn check_tells_the_signed_contents_from_any_other() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sig = Signature::of_bytes(&data, 700).unwrap();
        let check = |bytes: &[u8], piece: usize| {
            let mut c = sig.check();
            let mut going = true;
            for p in bytes.chunks(piece) {
                going = c.update(p);
            }
            (going, c.finish())
        };
        for piece in [1, 699, 700, 4096, 10_000] {
            assert_eq!(check(&data, piece), (true, true), "{piece}");
            assert!(!check(&data[..9_999], piece).1);
            assert!(!check(&data[..9_800], piece).1, "a block short");
            assert_eq!(check(&[&data[..], b"!"].concat(), piece), (false, false));
            assert!(!check(&[], piece).1);
            for at in [0, 699, 700, 5000, 9_999] {
                let mut changed = data.clone();
                changed[at] ^= 0x80;
                assert!(!check(&changed, piece).1, "{piece} {at}");
            }
        }
        // A difference in the first block is seen before the rest is read.
        let mut changed = data.clone();
        changed[3] = 0;
        let mut c = sig.check();
        assert!(!c.update(&changed[..1000]));
        let empty = Signature::of_bytes(&[], 700).unwrap();
        assert!(empty.check().finish());
    }

    #[test]
    fn empty_file_has_no_blocks() {
        let sig = Signature::compute(io::empty(), 700).unwrap();
        assert_eq!(sig.file_len, 0);
        assert!(sig.blocks.is_empty());
        assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);
    }

    #[test]
    fn zero_block_size_is_refused() {
        assert!(matches!(
            Signature::compute(io::empty(), 0),
            Err(Error::BlockSize(0))
        ));
    }

    #[test]
    fn encoding_round_trips() {
        let sig = sample();
        let bytes = sig.to_bytes();
        assert_eq!(bytes.len(), sig.encoded_len());
        assert_eq!(Signature::from_bytes(&bytes).unwrap(), sig);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    Signature::from_bytes(&bytes[..n]),
                    Err(DecodeError::Truncated { .. })
                ),
                "{n}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(Signature::from_bytes(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut bytes = sample().to_bytes();
        bytes.push(0);
        assert!(matches!(
            Signature::from_bytes(&bytes),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn header_errors_are_named() {
        let bytes = sample().to_bytes();
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Signature::from_bytes(&bad), Err(DecodeError::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(
            Signature::from_bytes(&bad),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut bad = bytes.clone();
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Signature::from_bytes(&bad), Err(DecodeError::BlockSize(0)));
        let mut bad = bytes;
        bad[8..12].copy_from_slice(&(MAX_BLOCK_SIZE + 1).to_le_bytes());
        assert!(matches!(
            Signature::from_bytes(&bad),
            Err(DecodeError::BlockSize(_))
        ));
    }

    #[test]
    fn absurd_file_length_is_refused_without_allocating() {
        let mut bytes = sample().to_bytes();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        // 2^64 one-byte blocks of 20 bytes each cannot be sized, let alone held.
        assert!(matches!(
            Signature::from_bytes(&bytes),
            Err(DecodeError::TooLarge { .. }) | Err(DecodeError::Truncated { .. })
        ));
    }
}

//! The matcher: streams the new file past the old file's signature and says, for every
//! byte, whether it can be copied from the old file or must be sent.
//!
//! It is rsync's algorithm. A window of one block slides over the new file; at each offset
//! its weak rolling sum is looked up among the old blocks' weak sums, and only on a weak
//! hit is the strong hash computed to confirm. A confirmed match jumps the window a whole
//! block; a miss slides it one byte, so content that moved by any amount is still found.
//! The old file's short final block can only match where the new file ends, as in rsync.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, Read};

use crate::rolling::Rolling;
use crate::signature::{strong_hash, KnownBlock, Signature, STRONG_LEN};

/// Pending literal bytes are emitted in ops of at most this size, which bounds the
/// matcher's memory to about this plus a few blocks whatever the file size.
pub const LITERAL_CHUNK: usize = 256 * 1024;

/// Input is taken in pieces of this size so a caller handing over a huge slice does not
/// make the matcher buffer all of it.
const FEED_PIECE: usize = 64 * 1024;

/// One step of rebuilding the new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Copy `len` bytes starting at `from_offset` of the old file. Adjacent copies are
    /// merged, so a long unchanged run is one op.
    Copy { from_offset: u64, len: u64 },
    /// Bytes of the new file not found in the old one.
    Literal(Vec<u8>),
}

/// rsync's `--stats` "Matched data" and "Literal data".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// New-file bytes that are copied from the old file.
    pub matched: u64,
    /// New-file bytes that must be sent.
    pub literal: u64,
}

/// Fibonacci hashing: spreads the weak sum's bits into the high bits we index by.
const HASH_MUL: u32 = 0x9e37_79b1;

/// Old blocks by weak sum: a bucket array over a table sorted by bucket, so a lookup is
/// one multiply and a few loads, with no hashing library and no allocation per byte.
///
/// On changed data nearly every probe misses, and a miss in the table costs two dependent
/// cache misses once the table outgrows the cache (measured: 22 MiB/s on a 256 MiB file).
/// So a bitmap with about 16 bits per block, small enough to stay cached, answers most
/// misses first; this is the role of the 16-bit tag table in the rsync tech report.
#[derive(Debug)]
struct WeakIndex {
    filter: Vec<u64>,
    filter_shift: u32,
    shift: u32,
    /// `starts[b]..starts[b + 1]` is bucket `b`'s range in `entries`.
    starts: Vec<usize>,
    /// (weak sum, block number), by bucket and then block number.
    entries: Vec<(u32, usize)>,
}

impl WeakIndex {
    fn new(sig: &Signature, full_blocks: usize) -> Self {
        // About one block per bucket keeps misses (the common case on changed data) to a
        // single empty-bucket check.
        let bits = usize::BITS - full_blocks.max(1).leading_zeros();
        let bits = bits.clamp(4, 30);
        let shift = 32 - bits;
        let bucket = |w: u32| (w.wrapping_mul(HASH_MUL) >> shift) as usize;
        let mut entries: Vec<(u32, usize)> = sig.blocks[..full_blocks]
            .iter()
            .enumerate()
            .map(|(i, b)| (b.weak, i))
            .collect();
        entries.sort_unstable_by_key(|&(w, i)| (bucket(w), i));
        let mut starts = vec![0usize; (1 << bits) + 1];
        for &(w, _) in &entries {
            starts[bucket(w) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let filter_bits = (bits + 4).clamp(16, 24);
        let filter_shift = 32 - filter_bits;
        let mut filter = vec![0u64; 1 << (filter_bits - 6)];
        for &(w, _) in &entries {
            let f = (w.wrapping_mul(HASH_MUL) >> filter_shift) as usize;
            filter[f >> 6] |= 1 << (f & 63);
        }
        Self {
            filter,
            filter_shift,
            shift,
            starts,
            entries,
        }
    }

    #[inline]
    fn bucket(&self, weak: u32) -> &[(u32, usize)] {
        let b = (weak.wrapping_mul(HASH_MUL) >> self.shift) as usize;
        &self.entries[self.starts[b]..self.starts[b + 1]]
    }

    #[inline]
    fn contains(&self, weak: u32) -> bool {
        let f = (weak.wrapping_mul(HASH_MUL) >> self.filter_shift) as usize;
        self.filter[f >> 6] & (1 << (f & 63)) != 0
            && self.bucket(weak).iter().any(|&(w, _)| w == weak)
    }
}

/// Push-style matcher: feed the new file in pieces of any size, get [`Op`]s through a sink.
///
/// The ops depend only on the bytes, not on how they were split into `feed` calls. If the
/// sink fails, its error is returned and the ops so far are incomplete: drop the encoder.
#[derive(Debug)]
pub struct DeltaEncoder<'s> {
    sig: &'s Signature,
    index: WeakIndex,
    bs: usize,
    full_blocks: usize,
    /// Unconsumed input: pending literal bytes, then the window and what follows it.
    buf: Vec<u8>,
    lit_start: usize,
    win: usize,
    /// Weak sum of `buf[win..win + bs]` when `sum_valid`.
    sum: Rolling,
    sum_valid: bool,
    /// The window at `win` was already looked up and missed.
    checked: bool,
    /// Block after the last match: tried first, so unchanged runs become one copy.
    next_block: usize,
    pending_copy: Option<(u64, u64)>,
    stats: Stats,
    /// New-file offset of `buf[0]`.
    buf_offset: u64,
    /// Whether matches at block boundaries are kept for signing the new file.
    keep_known: bool,
    known: Vec<KnownBlock>,
}

impl<'s> DeltaEncoder<'s> {
    /// A matcher against the old file described by `sig`.
    pub fn new(sig: &'s Signature) -> Self {
        let bs = sig.block_size as usize;
        let full_blocks = (sig.file_len / u64::from(sig.block_size)) as usize;
        Self {
            sig,
            index: WeakIndex::new(sig, full_blocks),
            bs,
            full_blocks,
            buf: Vec::with_capacity(LITERAL_CHUNK + bs + FEED_PIECE),
            lit_start: 0,
            win: 0,
            sum: Rolling::new(),
            sum_valid: false,
            checked: false,
            next_block: 0,
            pending_copy: None,
            stats: Stats::default(),
            buf_offset: 0,
            keep_known: false,
            known: Vec::new(),
        }
    }

    /// Matched and literal bytes decided so far (all of the file after `finish`).
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes at the start of the new file whose fate is decided (copied or literal), though
    /// their ops may still be held back to merge with later ones.
    pub fn decided(&self) -> u64 {
        self.stats.matched + self.stats.literal
    }

    /// From now on, keeps the old blocks found whole at a multiple of `block_size` in the new
    /// file, so that signing the new file in blocks of that size can take their sums instead
    /// of hashing them again ([`DeltaEncoder::known_blocks`]). Only possible when the new
    /// file is signed with the old one's block size: otherwise nothing is kept.
    ///
    /// For an edit in place that is nearly every block, and the sums are exact, not merely
    /// likely: each such block was confirmed by its strong hash, and a copy makes the new
    /// file's bytes there the old block's bytes.
    pub fn keep_known_blocks(&mut self, block_size: u32) {
        self.keep_known = block_size == self.sig.block_size;
    }

    /// The blocks kept since the last call (see [`DeltaEncoder::keep_known_blocks`]), in
    /// order, all within the first [`DeltaEncoder::decided`] bytes.
    pub fn known_blocks(&mut self) -> Vec<KnownBlock> {
        std::mem::take(&mut self.known)
    }

    /// Feeds the next bytes of the new file.
    pub fn feed<E>(
        &mut self,
        data: &[u8],
        sink: &mut impl FnMut(Op) -> Result<(), E>,
    ) -> Result<(), E> {
        for piece in data.chunks(FEED_PIECE) {
            self.buf.extend_from_slice(piece);
            self.scan(sink)?;
            self.compact();
        }
        Ok(())
    }

    /// Ends the new file: matches the old file's short last block if the new file ends
    /// with it, sends the rest as literal, and flushes everything.
    pub fn finish<E>(mut self, sink: &mut impl FnMut(Op) -> Result<(), E>) -> Result<Stats, E> {
        let end = self.buf.len();
        let tail = self.sig.tail_len() as usize;
        if tail > 0 && end - self.win >= tail {
            let at = end - tail;
            let last = &self.sig.blocks[self.full_blocks];
            let window = &self.buf[at..];
            if Rolling::of(window).digest() == last.weak && strong_hash(window) == last.strong {
                self.emit_literal(at, sink)?;
                let (from, len) = self.sig.block_range(self.full_blocks);
                self.add_copy(from, len, sink)?;
                self.win = end;
                self.lit_start = end;
            }
        }
        self.emit_literal(end, sink)?;
        self.flush_copy(sink)?;
        Ok(self.stats)
    }

    fn scan<E>(&mut self, sink: &mut impl FnMut(Op) -> Result<(), E>) -> Result<(), E> {
        let bs = self.bs;
        while self.buf.len() - self.win >= bs {
            let mut strong = None;
            if !self.sum_valid {
                // A fresh window, at the start or just after a match: the next old block is
                // the likely match (an unchanged run goes on), and the strong hash alone
                // settles that. The weak sum is only a cheap filter before it, and here it
                // would cost about as much again, on every block of every unchanged run.
                let window = &self.buf[self.win..self.win + bs];
                let next = self.next_block;
                if next < self.full_blocks {
                    let hash = strong_hash(window);
                    if hash == self.sig.blocks[next].strong {
                        self.matched(next, sink)?;
                        continue;
                    }
                    strong = Some(hash);
                }
                self.sum = Rolling::of(window);
                self.sum_valid = true;
                self.checked = false;
            }
            if !self.checked {
                if let Some(block) = self.find(self.sum.digest(), strong) {
                    self.matched(block, sink)?;
                    continue;
                }
                self.checked = true;
            }
            // Slide byte by byte until a weak hit, the end of the input, or a full literal
            // chunk.
            let last_win = self.buf.len() - bs;
            if self.win == last_win {
                break;
            }
            let win = self.win;
            let chunk_end = self.lit_start + LITERAL_CHUNK;
            let stop = last_win.min(chunk_end);
            let slid = slide(
                &self.index,
                &mut self.sum,
                &self.buf[win..stop],
                &self.buf[win + bs..stop + bs],
            );
            self.checked = slid.is_none();
            let win = slid.map_or(stop, |i| win + i + 1);
            self.win = win;
            if win == chunk_end {
                self.emit_literal(win, sink)?;
            }
        }
        Ok(())
    }

    /// The window at `win` is old block `block`: copy it and move past it.
    fn matched<E>(
        &mut self,
        block: usize,
        sink: &mut impl FnMut(Op) -> Result<(), E>,
    ) -> Result<(), E> {
        self.emit_literal(self.win, sink)?;
        let (from, len) = self.sig.block_range(block);
        self.add_copy(from, len, sink)?;
        let at = self.buf_offset + self.win as u64;
        let (index, misalignment) = (at / self.bs as u64, at % self.bs as u64);
        if self.keep_known && misalignment == 0 {
            self.known.push(KnownBlock {
                index,
                sums: self.sig.blocks[block],
            });
        }
        self.win += self.bs;
        self.lit_start = self.win;
        self.next_block = block + 1;
        self.sum_valid = false;
        Ok(())
    }

    /// The old block equal to the window at `win` whose weak sum is `weak`, if any;
    /// `strong` is the window's strong hash if already known.
    fn find(&self, weak: u32, mut strong: Option<[u8; STRONG_LEN]>) -> Option<usize> {
        let window = &self.buf[self.win..self.win + self.bs];
        let mut strong_of_window = || *strong.get_or_insert_with(|| strong_hash(window));
        let next = self.next_block;
        if next < self.full_blocks
            && self.sig.blocks[next].weak == weak
            && self.sig.blocks[next].strong == strong_of_window()
        {
            return Some(next);
        }
        self.index
            .bucket(weak)
            .iter()
            .filter(|&&(w, i)| w == weak && i != next)
            .find(|&&(_, i)| self.sig.blocks[i].strong == strong_of_window())
            .map(|&(_, i)| i)
    }

    /// Sends `buf[lit_start..to]` as literal ops (after any pending copy).
    fn emit_literal<E>(
        &mut self,
        to: usize,
        sink: &mut impl FnMut(Op) -> Result<(), E>,
    ) -> Result<(), E> {
        if to == self.lit_start {
            return Ok(());
        }
        self.flush_copy(sink)?;
        while self.lit_start < to {
            let n = (to - self.lit_start).min(LITERAL_CHUNK);
            let bytes = self.buf[self.lit_start..self.lit_start + n].to_vec();
            self.lit_start += n;
            self.stats.literal += n as u64;
            sink(Op::Literal(bytes))?;
        }
        Ok(())
    }

    fn add_copy<E>(
        &mut self,
        from: u64,
        len: u64,
        sink: &mut impl FnMut(Op) -> Result<(), E>,
    ) -> Result<(), E> {
        self.stats.matched += len;
        match &mut self.pending_copy {
            Some((f, l)) if *f + *l == from => {
                *l += len;
                Ok(())
            }
            _ => {
                self.flush_copy(sink)?;
                self.pending_copy = Some((from, len));
                Ok(())
            }
        }
    }

    fn flush_copy<E>(&mut self, sink: &mut impl FnMut(Op) -> Result<(), E>) -> Result<(), E> {
        match self.pending_copy.take() {
            Some((from_offset, len)) => sink(Op::Copy { from_offset, len }),
            None => Ok(()),
        }
    }

    /// Drops consumed bytes once they outweigh the rest, so the memmove is paid for by the
    /// bytes consumed and the buffer stays near its initial capacity.
    fn compact(&mut self) {
        let consumed = self.lit_start;
        if consumed > 0 && consumed >= self.buf.len() - consumed {
            self.buf.drain(..consumed);
            self.win -= consumed;
            self.lit_start = 0;
            self.buf_offset += consumed as u64;
        }
    }
}

/// Rolls `sum` past the bytes `outgoing` (leaving) and `incoming` (entering) until its
/// weak sum is in `index`; at a hit, returns the index in `outgoing` of the last byte
/// that left the window.
///
/// This is the hot path on changed data. It is kept out of line so that its handful of
/// values stay in registers instead of competing with the caller's.
#[inline(never)]
fn slide(index: &WeakIndex, sum: &mut Rolling, outgoing: &[u8], incoming: &[u8]) -> Option<usize> {
    let (filter, filter_shift) = (&index.filter[..], index.filter_shift);
    let mut s = *sum;
    let found = outgoing.iter().zip(incoming).position(|(&out, &inn)| {
        s.roll(out, inn);
        let weak = s.digest();
        let f = (weak.wrapping_mul(HASH_MUL) >> filter_shift) as usize;
        filter[f >> 6] & (1 << (f & 63)) != 0 && index.contains(weak)
    });
    *sum = s;
    found
}

/// Pull-style matcher over a reader: yields the ops of the delta from `sig`'s old file to
/// the bytes `reader` yields, reading a bounded piece at a time.
pub fn delta<R: Read>(sig: &Signature, reader: R) -> DeltaIter<'_, R> {
    DeltaIter {
        encoder: Some(DeltaEncoder::new(sig)),
        reader,
        buf: vec![0u8; FEED_PIECE],
        queue: VecDeque::new(),
        stats: Stats::default(),
    }
}

/// Iterator returned by [`delta`]. After an error it yields nothing more.
#[derive(Debug)]
pub struct DeltaIter<'s, R> {
    encoder: Option<DeltaEncoder<'s>>,
    reader: R,
    buf: Vec<u8>,
    queue: VecDeque<Op>,
    stats: Stats,
}

impl<R> DeltaIter<'_, R> {
    /// Matched and literal bytes so far; the whole file's once the iterator is exhausted.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

impl<R: Read> Iterator for DeltaIter<'_, R> {
    type Item = io::Result<Op>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(op) = self.queue.pop_front() {
                return Some(Ok(op));
            }
            let encoder = self.encoder.as_mut()?;
            let queue = &mut self.queue;
            let mut push = |op| {
                queue.push_back(op);
                Ok::<(), Infallible>(())
            };
            match self.reader.read(&mut self.buf) {
                Ok(0) => {
                    let encoder = self.encoder.take()?;
                    self.stats = encoder.finish(&mut push).unwrap_or_else(|e| match e {});
                }
                Ok(n) => {
                    encoder
                        .feed(&self.buf[..n], &mut push)
                        .unwrap_or_else(|e| match e {});
                    self.stats = encoder.stats();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.encoder = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_of(old: &[u8], new: &[u8], bs: u32) -> (Vec<Op>, Stats) {
        let sig = Signature::of_bytes(old, bs).unwrap();
        let mut it = delta(&sig, new);
        let ops: Vec<Op> = it.by_ref().map(|o| o.unwrap()).collect();
        (ops, it.stats())
    }

    #[test]
    fn identical_file_is_one_copy() {
        let old: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let (ops, stats) = ops_of(&old, &old, 64);
        assert_eq!(
            ops,
            vec![Op::Copy {
                from_offset: 0,
                len: 1000
            }]
        );
        assert_eq!(
            stats,
            Stats {
                matched: 1000,
                literal: 0
            }
        );
    }

    #[test]
    fn insertion_at_start_is_found_by_rolling() {
        let old: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = b"xyz".to_vec();
        new.extend_from_slice(&old);
        let (ops, _) = ops_of(&old, &new, 64);
        assert_eq!(
            ops,
            vec![
                Op::Literal(b"xyz".to_vec()),
                Op::Copy {
                    from_offset: 0,
                    len: 1000
                }
            ]
        );
    }

    #[test]
    fn short_last_block_matches_only_at_the_end() {
        let old = b"0123456789abcdefXYZ".to_vec(); // blocks of 8: two full, tail "XYZ"
        let (ops, _) = ops_of(&old, b"XYZ", 8);
        assert_eq!(
            ops,
            vec![Op::Copy {
                from_offset: 16,
                len: 3
            }]
        );
        let (ops, _) = ops_of(&old, b"XYZ!", 8);
        assert_eq!(ops, vec![Op::Literal(b"XYZ!".to_vec())]);
    }

    #[test]
    fn old_file_smaller_than_a_block_matches_at_the_end() {
        let (ops, stats) = ops_of(b"tiny", b"so tiny", 700);
        assert_eq!(
            ops,
            vec![
                Op::Literal(b"so ".to_vec()),
                Op::Copy {
                    from_offset: 0,
                    len: 4
                }
            ]
        );
        assert_eq!(
            stats,
            Stats {
                matched: 4,
                literal: 3
            }
        );
    }

    #[test]
    fn repeated_blocks_prefer_the_next_one() {
        // All blocks are equal; preferring the sequential one keeps a single copy.
        let old = vec![0u8; 64 * 10];
        let (ops, _) = ops_of(&old, &old, 64);
        assert_eq!(
            ops,
            vec![Op::Copy {
                from_offset: 0,
                len: 640
            }]
        );
    }

    #[test]
    fn long_literal_is_chunked() {
        let new: Vec<u8> = (0..LITERAL_CHUNK * 2 + 5)
            .map(|i| (i % 253) as u8)
            .collect();
        let (ops, stats) = ops_of(b"", &new, 700);
        let lens: Vec<usize> = ops
            .iter()
            .map(|o| match o {
                Op::Literal(b) => b.len(),
                Op::Copy { .. } => panic!("nothing to copy from"),
            })
            .collect();
        assert_eq!(lens, vec![LITERAL_CHUNK, LITERAL_CHUNK, 5]);
        assert_eq!(stats.literal, new.len() as u64);
    }

    #[test]
    fn memory_stays_bounded_on_a_large_unmatched_file() {
        let old: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let sig = Signature::of_bytes(&old, 4096).unwrap();
        let mut enc = DeltaEncoder::new(&sig);
        let mut x: u32 = 1;
        let piece: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 23) as u8
            })
            .collect();
        let mut literal = 0usize;
        let mut sink = |op| {
            if let Op::Literal(b) = op {
                literal += b.len();
            }
            Ok::<(), ()>(())
        };
        for _ in 0..8 {
            enc.feed(&piece, &mut sink).unwrap();
            // Pending literal, the window and one input piece, with Vec's slack.
            assert!(enc.buf.capacity() <= 2 * (LITERAL_CHUNK + 4096) + FEED_PIECE);
        }
        let stats = enc.finish(&mut sink).unwrap();
        assert_eq!(stats.literal, 8 << 20);
        assert_eq!(literal, 8 << 20);
    }

    #[test]
    fn read_error_ends_the_iterator() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let sig = Signature::of_bytes(b"abc", 700).unwrap();
        let mut it = delta(&sig, Failing);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}

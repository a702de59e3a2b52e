//! The matcher end to end: random files under random edits always rebuild exactly, and
//! typical edits of large files send only about the changed bytes.

use std::io::Cursor;

use delta::{
    apply, block_size_for, delta, DeltaEncoder, Op, Signature, SignatureBuilder, Stats,
    LITERAL_CHUNK,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Deterministic bytes for the big files (splitmix64): no RNG dependency, same data on
/// every run.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs the whole pipeline and checks every invariant the engine relies on.
fn round_trip(old: &[u8], new: &[u8], block_size: u32) -> (Vec<Op>, Stats) {
    let sig = Signature::compute(old, block_size).unwrap();
    let decoded = Signature::from_bytes(&sig.to_bytes()).unwrap();
    assert_eq!(decoded, sig);
    let mut it = delta(&decoded, new);
    let ops: Vec<Op> = it.by_ref().map(|op| op.unwrap()).collect();
    let stats = it.stats();

    let mut out = Vec::new();
    let applied = apply(Cursor::new(old), &ops, &mut out).unwrap();
    assert!(out == new, "rebuilt file differs from the new file");
    assert_eq!(applied.len, new.len() as u64);
    assert_eq!(applied.hash, *blake3::hash(new).as_bytes());

    assert_eq!(stats.matched + stats.literal, new.len() as u64);
    let mut literal = 0u64;
    let mut prev_copy_end = None;
    for op in &ops {
        match op {
            Op::Copy { from_offset, len } => {
                assert!(*len > 0);
                assert!(from_offset + len <= old.len() as u64);
                assert_ne!(
                    prev_copy_end,
                    Some(*from_offset),
                    "adjacent copies not merged"
                );
                prev_copy_end = Some(from_offset + len);
            }
            Op::Literal(bytes) => {
                assert!(!bytes.is_empty() && bytes.len() <= LITERAL_CHUNK);
                literal += bytes.len() as u64;
                prev_copy_end = None;
            }
        }
    }
    assert_eq!(literal, stats.literal);
    (ops, stats)
}

/// Where an edit lands; the ends get their own cases because a uniform pick would
/// almost never choose them.
#[derive(Debug, Clone)]
enum Pos {
    Start,
    End,
    Anywhere(Index),
}

impl Pos {
    fn index(&self, len: usize) -> usize {
        match self {
            Pos::Start => 0,
            Pos::End => len - 1,
            Pos::Anywhere(i) => i.index(len),
        }
    }
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        1 => Just(Pos::Start),
        1 => Just(Pos::End),
        4 => any::<Index>().prop_map(Pos::Anywhere),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(Pos, Vec<u8>),
    Delete(Pos, usize),
    Replace(Pos, Vec<u8>),
    /// Moves a range elsewhere: content that shifts by an arbitrary amount.
    Move(Pos, usize, Pos),
}

fn apply_edits(old: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = old.to_vec();
    for e in edits {
        match e {
            Edit::Insert(at, bytes) => {
                let at = at.index(v.len() + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(at, len) => {
                let at = at.index(v.len() + 1);
                let end = (at + len).min(v.len());
                v.drain(at..end);
            }
            Edit::Replace(at, bytes) => {
                let at = at.index(v.len() + 1);
                let end = (at + bytes.len()).min(v.len());
                v.splice(at..end, bytes.iter().copied());
            }
            Edit::Move(from, len, to) => {
                let from = from.index(v.len() + 1);
                let end = (from + len).min(v.len());
                let moved: Vec<u8> = v.drain(from..end).collect();
                let to = to.index(v.len() + 1);
                v.splice(to..to, moved);
            }
        }
    }
    v
}

fn file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..6000),
        // Two symbols: weak sums collide constantly and blocks repeat.
        prop::collection::vec(0u8..2, 0..6000),
        // A short pattern repeated: many identical blocks.
        (prop::collection::vec(any::<u8>(), 1..40), 0usize..200).prop_map(|(p, n)| p.repeat(n)),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (pos(), bytes.clone()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (pos(), 0usize..2000).prop_map(|(a, n)| Edit::Delete(a, n)),
        (pos(), bytes).prop_map(|(a, b)| Edit::Replace(a, b)),
        (pos(), 0usize..2000, pos()).prop_map(|(a, n, b)| Edit::Move(a, n, b)),
    ]
}

fn block_size() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        (1u32..=16).prop_map(Some),
        (1u32..=4096).prop_map(Some)
    ]
}

proptest! {
    #[test]
    fn signature_from_known_blocks_equals_a_fresh_one(
        old in file(),
        edits in prop::collection::vec(edit(), 0..4),
        bs in prop_oneof![1u32..=16, 1u32..=2048],
        other_bs in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let new = apply_edits(&old, &edits);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(new.len() + 1)).collect();
        cuts.sort_unstable();
        let signer_bs = if other_bs { bs + 1 } else { bs };
        let (sig, reused) = sign_while_matching(&old, &new, bs, signer_bs, &cuts);
        prop_assert_eq!(sig, Signature::of_bytes(&new, signer_bs).unwrap());
        if other_bs {
            prop_assert_eq!(reused, 0);
        }
    }

    #[test]
    fn check_against_a_signature_is_a_comparison_of_contents(
        old in file(),
        edits in prop::collection::vec(edit(), 0..3),
        bs in 1u32..=2048,
        piece in 1usize..5000,
    ) {
        let new = apply_edits(&old, &edits);
        let sig = Signature::of_bytes(&old, bs).unwrap();
        let mut check = sig.check();
        for p in new.chunks(piece) {
            check.update(p);
        }
        prop_assert_eq!(check.finish(), new == old);
    }

    #[test]
    fn edited_file_is_rebuilt_exactly(
        old in file(),
        edits in prop::collection::vec(edit(), 0..6),
        bs in block_size(),
    ) {
        let new = apply_edits(&old, &edits);
        let bs = bs.unwrap_or_else(|| block_size_for(old.len() as u64));
        round_trip(&old, &new, bs);
    }

    #[test]
    fn unrelated_or_empty_files_are_rebuilt_exactly(
        old in file(),
        new in file(),
        bs in 1u32..=4096,
    ) {
        round_trip(&old, &new, bs);
        round_trip(&old, &[], bs);
        round_trip(&[], &new, bs);
    }

    #[test]
    fn unchanged_file_is_all_copied(old in file(), bs in 1u32..=4096) {
        let (ops, stats) = round_trip(&old, &old, bs);
        prop_assert_eq!(stats.literal, 0);
        prop_assert!(ops.len() <= 1);
    }

    #[test]
    fn ops_do_not_depend_on_how_input_is_fed(
        old in file(),
        edits in prop::collection::vec(edit(), 0..4),
        bs in 1u32..=2048,
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let new = apply_edits(&old, &edits);
        let sig = Signature::compute(&old[..], bs).unwrap();
        let whole: Vec<Op> = delta(&sig, &new[..]).map(|op| op.unwrap()).collect();

        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(new.len() + 1)).collect();
        cuts.push(new.len());
        cuts.sort_unstable();
        let mut enc = DeltaEncoder::new(&sig);
        let mut pieces = Vec::new();
        let mut push = |op| { pieces.push(op); Ok::<(), ()>(()) };
        let mut start = 0;
        for cut in cuts {
            enc.feed(&new[start..cut], &mut push).unwrap();
            start = cut;
        }
        enc.finish(&mut push).unwrap();
        prop_assert_eq!(pieces, whole);
    }
}

/// Signs `new` as the engine does while matching it against `old`: the encoder's known
/// blocks go to the signer before the decided bytes that hold them. Returns the signature
/// and how many blocks were taken from the old signature, not hashed.
fn sign_while_matching(
    old: &[u8],
    new: &[u8],
    bs: u32,
    signer_bs: u32,
    pieces: &[usize],
) -> (Signature, u64) {
    let sig = Signature::compute(old, bs).unwrap();
    let mut enc = DeltaEncoder::new(&sig);
    enc.keep_known_blocks(signer_bs);
    let mut signer = SignatureBuilder::new(signer_bs).unwrap();
    let mut sink = |_| Ok::<(), ()>(());
    let (mut fed, mut signed) = (0, 0);
    for &end in pieces.iter().chain([&new.len()]) {
        enc.feed(&new[fed..end], &mut sink).unwrap();
        fed = end;
        for known in enc.known_blocks() {
            signer.expect(known);
        }
        let decided = enc.decided() as usize;
        signer.update(&new[signed..decided]);
        signed = decided;
    }
    enc.finish(&mut sink).unwrap();
    signer.update(&new[signed..]);
    let reused = signer.reused();
    (signer.finish(), reused)
}

#[test]
fn one_byte_inserted_at_the_start_of_4mib_sends_one_byte() {
    let old = pseudo_random(4 << 20, 1);
    let mut new = vec![0x42];
    new.extend_from_slice(&old);
    let bs = block_size_for(old.len() as u64);
    assert_eq!(bs, 2048);
    let (ops, stats) = round_trip(&old, &new, bs);
    assert!(stats.literal < 2 * u64::from(bs), "{stats:?}");
    assert_eq!(stats.matched, old.len() as u64);
    assert_eq!(ops.len(), 2, "one literal, then one coalesced copy");
}

#[test]
fn hundred_scattered_4k_rewrites_of_64mib_send_about_the_rewrites() {
    let len = 64 << 20;
    let old = pseudo_random(len, 2);
    let mut new = old.clone();
    let fresh = pseudo_random(100 * 4096, 3);
    // One rewrite per 1/100th of the file, at an unaligned, varying offset inside it.
    let stride = len / 100;
    for (i, region) in fresh.chunks(4096).enumerate() {
        let at = i * stride + (i * 7919 + 13) % (stride - 4096);
        new[at..at + 4096].copy_from_slice(region);
    }
    let bs = block_size_for(len as u64);
    assert_eq!(bs, 8192);
    let (_, stats) = round_trip(&old, &new, bs);
    let bound = 100 * (4096 + 2 * u64::from(bs));
    assert!(stats.literal >= 100 * 4096, "{stats:?}");
    assert!(stats.literal <= bound, "{stats:?} exceeds {bound}");
}

#[test]
fn shifted_content_is_found_when_block_size_does_not_divide_the_shift() {
    // Delete 1000 bytes near the front and insert 333 near the back of a 1 MiB file:
    // everything else has moved by amounts that are not multiples of the block.
    let old = pseudo_random(1 << 20, 4);
    let mut new = old.clone();
    new.drain(5000..6000);
    let at = new.len() - 70_000;
    new.splice(at..at, pseudo_random(333, 5));
    let bs = block_size_for(old.len() as u64);
    let (_, stats) = round_trip(&old, &new, bs);
    // Each edit spoils at most the two old blocks it straddles; the rest is copied.
    assert!(stats.literal <= 333 + 2 * 2 * u64::from(bs), "{stats:?}");
    assert!(stats.matched >= old.len() as u64 - 1000 - 2 * 2 * u64::from(bs));
}

#[test]
fn literal_chunk_boundaries_do_not_disturb_matching() {
    // Literal runs longer than a chunk, between matches, fed in pieces that cut chunks,
    // blocks and matches at odd places.
    let old = pseudo_random(1 << 20, 8);
    let mut new = pseudo_random(LITERAL_CHUNK + 300, 9);
    new.extend_from_slice(&old[..100_000]);
    new.extend_from_slice(&pseudo_random(2 * LITERAL_CHUNK + 1, 10));
    new.extend_from_slice(&old[500_001..]);
    let bs = block_size_for(old.len() as u64);
    let sig = Signature::compute(&old[..], bs).unwrap();
    let (whole, stats) = round_trip(&old, &new, bs);
    assert!(stats.literal <= (3 * LITERAL_CHUNK + 301) as u64 + 3 * u64::from(bs));
    for piece in [1usize, 999, 4096, LITERAL_CHUNK - 1, LITERAL_CHUNK + 7] {
        let mut enc = DeltaEncoder::new(&sig);
        let mut ops = Vec::new();
        let mut push = |op| {
            ops.push(op);
            Ok::<(), ()>(())
        };
        for p in new.chunks(piece) {
            enc.feed(p, &mut push).unwrap();
        }
        enc.finish(&mut push).unwrap();
        assert!(
            ops == whole,
            "feeding {piece} bytes at a time changed the ops"
        );
    }
}

#[test]
fn an_edit_in_place_reuses_nearly_every_block_of_the_old_signature() {
    let len = 8 << 20;
    let old = pseudo_random(len, 11);
    let mut new = old.clone();
    // Ten rewrites of 4 KiB at unaligned places, the last one in the short final block.
    for i in 0..10 {
        let at = i * (len / 10) + 1234 + i * 999;
        new[at..at + 4096].copy_from_slice(&pseudo_random(4096, 12 + i as u64));
    }
    new.truncate(len - 100);
    let bs = block_size_for(len as u64);
    let blocks = (len - 100).div_ceil(bs as usize) as u64;
    let pieces: Vec<usize> = (1..40).map(|i| i * 200_001).collect();
    let (sig, reused) = sign_while_matching(&old, &new, bs, bs, &pieces);
    assert_eq!(sig, Signature::of_bytes(&new, bs).unwrap());
    // Each rewrite spoils at most two blocks, and the shortened tail one more.
    assert!(reused >= blocks - 21, "{reused} of {blocks}");

    // Shifted by a byte, no block sits at a boundary any more: all are hashed.
    let mut shifted = vec![0];
    shifted.extend_from_slice(&old);
    let (sig, reused) = sign_while_matching(&old, &shifted, bs, bs, &pieces);
    assert_eq!(sig, Signature::of_bytes(&shifted, bs).unwrap());
    assert_eq!(reused, 0);
}

#[test]
fn blocks_expected_too_late_or_wrongly_placed_are_hashed() {
    let data = pseudo_random(9_500, 13);
    let fresh = Signature::of_bytes(&data, 1000).unwrap();
    let mut signer = SignatureBuilder::new(1000).unwrap();
    signer.update(&data[..2500]);
    // Block 1 is already complete; block 2 is told in time; block 9 is the short tail.
    for index in [1u64, 2, 9] {
        signer.expect(delta::KnownBlock {
            index,
            sums: fresh.blocks()[index as usize],
        });
    }
    signer.update(&data[2500..]);
    assert_eq!(signer.reused(), 1);
    assert_eq!(signer.finish(), fresh);
}

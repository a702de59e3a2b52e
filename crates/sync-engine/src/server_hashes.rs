//! Delta pulls and `--checksum` from hashes a server computes itself (SFTP `check-file`):
//! blocks whose hashes agree with the local old version never cross the wire, and nothing of
//! ours runs on the server.
//!
//! The server cannot roll a checksum for us, so blocks are compared at the same offsets only:
//! content that moved is fetched again.
//!
//! All hashes of a file are asked for in one request from offset 0. ProFTPD 1.3.8, the
//! common server with `check-file`, hashes `offset + length` bytes from `offset` (and then
//! pads its reply past the end of the file), so a request at any other offset would cost a
//! reply as long as the file is deep. From offset 0 that count is right.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;

use crate::path::RelPath;
use crate::task::read_whole;
use crate::tree::{FileWriter, HashAlgorithm, HashRange, Tree, TreeError, TreeResult};

/// The smallest block compared: the least that is fetched for a change.
const MIN_BLOCK: u64 = 8 * 1024;
/// The most blocks a file is cut into: with hashes of up to 32 bytes (the algorithms asked
/// for), the one reply stays within the client's packet limit.
const MAX_BLOCKS: u64 = 65536;
/// Reads kept in flight.
const IN_FLIGHT: usize = 8;
/// The most fetched in one read, so that a long run of changed blocks is read in parallel.
const PIECE: u64 = 256 * 1024;

/// What the run has learnt of the server's hashes.
#[derive(Default)]
pub(crate) struct ServerHashTrust {
    /// Fetched bytes have matched the server's hashes of them at least once.
    verified: AtomicBool,
    /// They did not: the server's hashes are not used again in this run.
    failed: AtomicBool,
}

impl ServerHashTrust {
    pub fn usable(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    pub fn verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    pub fn passed(&self) {
        self.verified.store(true, Ordering::Relaxed);
    }

    /// True the first time, so the caller warns once.
    pub fn fail(&self) -> bool {
        !self.failed.swap(true, Ordering::Relaxed)
    }
}

/// A range of the new version to fetch, with the server's hashes of its blocks so that what
/// arrives can be checked before it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub offset: u64,
    pub len: u64,
    block: u64,
    hashes: Vec<Bytes>,
}

impl Piece {
    /// Whether `data` is what the server hashed.
    pub fn matches(&self, algorithm: HashAlgorithm, data: &[u8]) -> bool {
        data.len() as u64 == self.len
            && self.hashes.len() as u64 == blocks(self.len, self.block)
            && data
                .chunks(self.block as usize)
                .zip(&self.hashes)
                .all(|(block, want)| hash_of(algorithm, block) == want[..])
    }
}

/// How to build the new version: the pieces to fetch, in order; everything between them is
/// the old version's bytes at the same offsets.
#[derive(Debug)]
pub(crate) struct Plan {
    pub algorithm: HashAlgorithm,
    pub pieces: Vec<Piece>,
}

impl Plan {
    pub fn fetched(&self) -> u64 {
        self.pieces.iter().map(|p| p.len).sum()
    }
}

/// Where the new version is (`source`, whose side hashes it) and the old one is (`base`,
/// read here to hash it).
pub(crate) struct Versions<'a> {
    pub source: &'a dyn Tree,
    pub source_path: &'a RelPath,
    pub size: u64,
    pub base: &'a dyn Tree,
    pub base_path: &'a RelPath,
    pub base_size: u64,
}

/// Compares the two versions block by block. `Ok(None)` when the source's side cannot
/// hash, or when so much differs that sending the whole file costs less. With `sample`,
/// at least one block is fetched even when nothing differs, so that the server's hashes are
/// checked against real bytes before they are trusted.
pub(crate) async fn plan(v: &Versions<'_>, sample: bool) -> TreeResult<Option<Plan>> {
    let block = block_size(v.size);
    let range = HashRange {
        offset: 0,
        len: v.size,
        block_size: block as u32,
    };
    let Some(theirs) = v.source.block_hashes(v.source_path, range).await? else {
        return Ok(None);
    };
    let count = blocks(v.size, block);
    if theirs.count() as u64 != count {
        return Ok(None);
    }
    let algorithm = theirs.algorithm;
    let ours = local_hashes(v, algorithm, block).await?;
    let piece = |i: u64| block_piece(v.size, block, i, theirs.get(i as usize));
    let mut pieces: Vec<Piece> = (0..count)
        .filter(|&i| ours.get(i as usize).cloned().flatten().as_deref() != theirs.get(i as usize))
        .map(piece)
        .collect();
    if pieces.is_empty() && sample {
        pieces.push(piece(count - 1));
    }
    let plan = Plan {
        algorithm,
        pieces: merge(pieces),
    };
    Ok((plan.fetched() <= v.size / 2).then_some(plan))
}

/// Block `i` of `block` bytes as a piece to fetch, with the server's hash of it.
fn block_piece(size: u64, block: u64, i: u64, hash: Option<&[u8]>) -> Piece {
    let offset = i * block;
    Piece {
        offset,
        len: block.min(size - offset),
        block,
        hashes: hash.map(Bytes::copy_from_slice).into_iter().collect(),
    }
}

/// Joins neighbouring pieces of the same block size, up to `PIECE` bytes each.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match out.last_mut() {
            Some(last)
                if last.offset + last.len == p.offset
                    && last.block == p.block
                    && last.len % last.block == 0
                    && last.len + p.len <= PIECE.max(p.block) =>
            {
                last.len += p.len;
                last.hashes.extend(p.hashes);
            }
            _ => out.push(p),
        }
    }
    out
}

fn blocks(len: u64, block: u64) -> u64 {
    len.div_ceil(block)
}

/// Why a build from the server's hashes stopped.
pub(crate) enum BuildError {
    Source(TreeError),
    Dest(TreeError),
    /// Fetched bytes are not what the server's hashes said they would be.
    Mismatch,
}

/// Writes the new version by `plan`: the pieces read from the source and checked against the
/// server's hashes, the bytes between them copied from the old version at the same offsets.
pub(crate) async fn build(
    v: &Versions<'_>,
    plan: &Plan,
    writer: &mut dyn FileWriter,
    sparse: bool,
) -> Result<(), BuildError> {
    // Over owned ranges, not borrowed pieces: a closure taking a reference here makes the
    // caller's future fail to be Send (rust-lang/rust#102211).
    let ranges: Vec<(u64, u64)> = plan.pieces.iter().map(|p| (p.offset, p.len)).collect();
    let reads: Vec<_> = ranges
        .into_iter()
        .map(|(offset, len)| v.source.read_range(v.source_path, offset, len as u32))
        .collect();
    let reads = futures::stream::iter(reads).buffered(IN_FLIGHT);
    futures::pin_mut!(reads);
    let mut at = 0;
    for piece in &plan.pieces {
        let Some(data) = reads.next().await else {
            break;
        };
        let data = data.map_err(BuildError::Source)?;
        if !piece.matches(plan.algorithm, &data) {
            return Err(BuildError::Mismatch);
        }
        if piece.offset > at {
            let gap = piece.offset - at;
            writer
                .copy_from_base(at, gap)
                .await
                .map_err(BuildError::Dest)?;
        }
        let written = match sparse {
            true => crate::task::write_sparse(writer, data).await,
            false => writer.write(data).await,
        };
        written.map_err(BuildError::Dest)?;
        at = piece.offset + piece.len;
    }
    if at < v.size {
        writer
            .copy_from_base(at, v.size - at)
            .await
            .map_err(BuildError::Dest)?;
    }
    Ok(())
}

/// At least `MIN_BLOCK`, a power of two, and no more than `MAX_BLOCKS` blocks.
fn block_size(size: u64) -> u64 {
    size.div_ceil(MAX_BLOCKS).next_power_of_two().max(MIN_BLOCK)
}

/// The old version's hashes of the new version's blocks of `block` bytes, read in one pass
/// and hashed on a blocking thread. `None` for a block the old version does not hold whole.
async fn local_hashes(
    v: &Versions<'_>,
    algorithm: HashAlgorithm,
    block: u64,
) -> TreeResult<Vec<Option<Vec<u8>>>> {
    let want = v.size.min(v.base_size);
    let mut reader = v.base.open_read(v.base_path, 0, want).await?;
    let (chunks, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut hashes = Vec::new();
        let mut current = algorithm.hasher();
        let mut filled = 0u64;
        while let Some(mut chunk) = rx.blocking_recv() {
            while !chunk.is_empty() {
                let take = (block - filled).min(chunk.len() as u64) as usize;
                current.update(&chunk.split_to(take));
                filled += take as u64;
                if filled == block {
                    hashes.push(current.finalize_reset().to_vec());
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            hashes.push(current.finalize().to_vec());
        }
        hashes
    });
    let mut got = 0u64;
    let read = async {
        while got < want {
            let Some(mut chunk) = reader.next_chunk().await? else {
                break;
            };
            chunk.truncate((want - got) as usize);
            got += chunk.len() as u64;
            if chunks.send(chunk).await.is_err() {
                break;
            }
        }
        Ok::<_, TreeError>(())
    }
    .await;
    drop(chunks);
    let _ = reader.close().await;
    let hashes = crate::local::joined(hasher).await;
    read?;
    Ok(comparable(hashes, 0, block, v.size, got))
}

/// Hashes of consecutive `block`s from `offset`, of which the bytes up to `got` were read,
/// kept only for blocks whose extent in the new version (of `size` bytes) was read whole.
fn comparable(
    hashes: Vec<Vec<u8>>,
    offset: u64,
    block: u64,
    size: u64,
    got: u64,
) -> Vec<Option<Vec<u8>>> {
    hashes
        .into_iter()
        .enumerate()
        .map(|(k, h)| {
            let end = (offset + (k as u64 + 1) * block).min(size);
            (end <= got).then_some(h)
        })
        .collect()
}

/// One hash of `data`.
pub(crate) fn hash_of(algorithm: HashAlgorithm, data: &[u8]) -> Vec<u8> {
    let mut h = algorithm.hasher();
    h.update(data);
    h.finalize().to_vec()
}

/// A whole file's hash in `algorithm`, read through its tree.
pub(crate) async fn file_hash(
    tree: &dyn Tree,
    path: &RelPath,
    algorithm: HashAlgorithm,
) -> TreeResult<Vec<u8>> {
    let mut hasher = algorithm.hasher();
    read_whole(tree, path, 0, |chunk| {
        hasher.update(chunk);
        true
    })
    .await?;
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(offset: u64, len: u64, block: u64) -> Piece {
        Piece {
            offset,
            len,
            block,
            hashes: vec![Bytes::from_static(b"h")],
        }
    }

    #[test]
    fn blocks_grow_with_the_file_to_keep_their_number_bounded() {
        assert_eq!(block_size(64 * 1024), MIN_BLOCK);
        assert_eq!(block_size(512 << 20), MIN_BLOCK);
        assert_eq!(block_size((512 << 20) + 1), 2 * MIN_BLOCK);
        assert_eq!(block_size(1 << 30), 16 * 1024);
        assert_eq!(blocks(1 << 40, block_size(1 << 40)), MAX_BLOCKS);
        assert!(blocks((1 << 40) + 1, block_size((1 << 40) + 1)) <= MAX_BLOCKS);
    }

    #[test]
    fn neighbouring_pieces_merge_up_to_the_read_size() {
        let f = MIN_BLOCK;
        let merged = merge(vec![piece(0, f, f), piece(f, f, f), piece(3 * f, f, f)]);
        assert_eq!(
            merged.iter().map(|p| (p.offset, p.len)).collect::<Vec<_>>(),
            vec![(0, 2 * f), (3 * f, f)]
        );
        assert_eq!(merged[0].hashes.len(), 2);

        let run: Vec<Piece> = (0..40).map(|i| piece(i * f, f, f)).collect();
        let merged = merge(run);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].len, PIECE);
        // Blocks of another size, or after a short block, stay apart.
        assert_eq!(merge(vec![piece(0, f, f), piece(f, 2 * f, 2 * f)]).len(), 2);
        assert_eq!(merge(vec![piece(0, 100, f), piece(100, f, f)]).len(), 2);
    }

    #[test]
    fn only_blocks_read_whole_are_comparable() {
        let hashes = vec![vec![1], vec![2], vec![3]];
        // Blocks of 10 from 0 in a new version of 25 bytes, of which 25 were read.
        assert_eq!(
            comparable(hashes.clone(), 0, 10, 25, 25),
            vec![Some(vec![1]), Some(vec![2]), Some(vec![3])]
        );
        // The old version held only 22: its last block is not the new one's.
        assert_eq!(
            comparable(hashes.clone(), 0, 10, 25, 22),
            vec![Some(vec![1]), Some(vec![2]), None]
        );
        // From offset 100, 12 bytes read.
        assert_eq!(
            comparable(hashes, 100, 10, 1000, 112),
            vec![Some(vec![1]), None, None]
        );
    }

    #[test]
    fn a_piece_matches_only_the_bytes_its_hashes_describe() {
        let data = vec![5u8; 20];
        let a = HashAlgorithm::Sha256;
        let p = Piece {
            offset: 0,
            len: 20,
            block: 8,
            hashes: data.chunks(8).map(|c| Bytes::from(hash_of(a, c))).collect(),
        };
        assert!(p.matches(a, &data));
        let mut other = data.clone();
        other[19] = 6;
        assert!(!p.matches(a, &other));
        assert!(!p.matches(a, &data[..19]));
        let missing = Piece {
            hashes: p.hashes[..2].to_vec(),
            ..p.clone()
        };
        assert!(
            !missing.matches(a, &data),
            "a block without a hash never matches"
        );
    }
}

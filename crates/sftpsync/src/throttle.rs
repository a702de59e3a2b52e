//! `--bwlimit`: one token bucket over the file data of a run, shared by every channel.
//!
//! rsync limits its socket; sftpsync has no socket of its own (ssh carries the bytes), so the
//! limit is kept on file contents moving through the tree on the far side of the link: data
//! written to a remote destination, data read from a remote source (and read back for `-c`),
//! or written to the destination of a local copy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sync_engine::path::RelPath;
use sync_engine::tree::{Anchor, DirEntry, FileReader, FileWriter, TreeResult};
use sync_engine::{BlockHashes, HashRange, Kind, Meta, SetMeta, Side, Tree};
use tokio::time::Instant;

use crate::size_arg::{parse_size, SizeRule};

/// Hands out the right to move bytes at `rate` bytes per second on average.
pub struct Throttle {
    rate: u64,
    /// When the bytes already let through will have been paid for.
    paid_until: Mutex<Option<Instant>>,
}

/// Idle time that counts as credit: a run that paused may send this much at once, no more.
const BURST: Duration = Duration::from_millis(100);

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Arc<Throttle> {
        Arc::new(Throttle {
            rate: bytes_per_second.max(1),
            paid_until: Mutex::new(None),
        })
    }

    /// Waits until `n` more bytes may go. Each caller books its bytes at once, so concurrent
    /// copies queue behind each other instead of all going when the bucket refills.
    pub async fn take(&self, n: usize) {
        let cost = Duration::from_secs_f64(n as f64 / self.rate as f64);
        let start = {
            let mut paid = self.paid_until.lock().unwrap();
            let now = Instant::now();
            let earliest = now.checked_sub(BURST).unwrap_or(now);
            let start = paid.map_or(earliest, |p| p.max(earliest));
            *paid = Some(start + cost);
            start
        };
        // This chunk may go once the ones before it are paid for (less the burst credit).
        tokio::time::sleep_until(start).await;
    }
}

/// A tree whose file data passes through a [`Throttle`]; everything else goes straight through.
pub struct ThrottledTree {
    inner: Arc<dyn Tree>,
    throttle: Arc<Throttle>,
}

impl ThrottledTree {
    pub fn new(inner: Arc<dyn Tree>, throttle: Arc<Throttle>) -> ThrottledTree {
        ThrottledTree { inner, throttle }
    }

    fn writer(&self, w: TreeResult<Box<dyn FileWriter>>) -> TreeResult<Box<dyn FileWriter>> {
        w.map(|inner| {
            Box::new(ThrottledWriter {
                inner,
                throttle: self.throttle.clone(),
            }) as Box<dyn FileWriter>
        })
    }
}

struct ThrottledWriter {
    inner: Box<dyn FileWriter>,
    throttle: Arc<Throttle>,
}

#[async_trait]
impl FileWriter for ThrottledWriter {
    async fn write(&mut self, data: Bytes) -> TreeResult<()> {
        self.throttle.take(data.len()).await;
        self.inner.write(data).await
    }
    async fn copy_from_base(&mut self, from_offset: u64, len: u64) -> TreeResult<()> {
        // Copied where the file is: nothing crosses the link.
        self.inner.copy_from_base(from_offset, len).await
    }
    async fn skip(&mut self, len: u64) -> TreeResult<()> {
        self.inner.skip(len).await
    }
    async fn write_zeros(&mut self, len: u64) -> TreeResult<()> {
        // Where the side makes a hole nothing crosses the link; where it writes the zeros,
        // the throttle is not asked, which errs on the side of sending faster.
        self.inner.write_zeros(len).await
    }
    async fn finish(self: Box<Self>, meta: &SetMeta) -> TreeResult<()> {
        self.inner.finish(meta).await
    }
    async fn abandon(self: Box<Self>) {
        self.inner.abandon().await
    }
}

struct ThrottledReader {
    inner: Box<dyn FileReader>,
    throttle: Arc<Throttle>,
}

#[async_trait]
impl FileReader for ThrottledReader {
    async fn next_chunk(&mut self) -> TreeResult<Option<Bytes>> {
        let chunk = self.inner.next_chunk().await?;
        if let Some(c) = &chunk {
            self.throttle.take(c.len()).await;
        }
        Ok(chunk)
    }
    async fn close(self: Box<Self>) -> TreeResult<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl Tree for ThrottledTree {
    fn side(&self) -> Side {
        self.inner.side()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn lstat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        self.inner.lstat(path).await
    }
    async fn stat(&self, path: &RelPath) -> TreeResult<Option<Meta>> {
        self.inner.stat(path).await
    }
    async fn read_dir(&self, path: &RelPath) -> TreeResult<Vec<DirEntry>> {
        self.inner.read_dir(path).await
    }
    async fn read_link(&self, path: &RelPath, listed_size: Option<u64>) -> TreeResult<Vec<u8>> {
        self.inner.read_link(path, listed_size).await
    }
    async fn open_read(
        &self,
        path: &RelPath,
        offset: u64,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileReader>> {
        let inner = self.inner.open_read(path, offset, expected_size).await?;
        Ok(Box::new(ThrottledReader {
            inner,
            throttle: self.throttle.clone(),
        }))
    }
    async fn create_file(
        &self,
        path: &RelPath,
        mode: u32,
        expected_size: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.writer(self.inner.create_file(path, mode, expected_size).await)
    }
    async fn create_file_based_on(
        &self,
        path: &RelPath,
        mode: u32,
        base: &RelPath,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.writer(self.inner.create_file_based_on(path, mode, base).await)
    }
    fn copies_ranges(&self) -> bool {
        self.inner.copies_ranges()
    }
    async fn reopen_for_append(
        &self,
        path: &RelPath,
        offset: u64,
    ) -> TreeResult<Box<dyn FileWriter>> {
        self.writer(self.inner.reopen_for_append(path, offset).await)
    }
    async fn open_in_place(&self, path: &RelPath, mode: u32) -> TreeResult<Box<dyn FileWriter>> {
        self.writer(self.inner.open_in_place(path, mode).await)
    }
    async fn block_hashes(
        &self,
        path: &RelPath,
        range: HashRange,
    ) -> TreeResult<Option<BlockHashes>> {
        self.inner.block_hashes(path, range).await
    }
    async fn read_range(&self, path: &RelPath, offset: u64, len: u32) -> TreeResult<Bytes> {
        let data = self.inner.read_range(path, offset, len).await?;
        self.throttle.take(data.len()).await;
        Ok(data)
    }
    async fn mkdir(&self, path: &RelPath, mode: u32) -> TreeResult<()> {
        self.inner.mkdir(path, mode).await
    }
    async fn symlink(&self, path: &RelPath, target: &[u8]) -> TreeResult<()> {
        self.inner.symlink(path, target).await
    }
    async fn hard_link(&self, existing: &RelPath, new: &RelPath) -> TreeResult<()> {
        self.inner.hard_link(existing, new).await
    }
    async fn remove_file(&self, path: &RelPath) -> TreeResult<()> {
        self.inner.remove_file(path).await
    }
    async fn remove_dir(&self, path: &RelPath) -> TreeResult<()> {
        self.inner.remove_dir(path).await
    }
    async fn rename_replace(&self, from: &RelPath, to: &RelPath) -> TreeResult<()> {
        self.inner.rename_replace(from, to).await
    }
    fn anchor(&self) -> Anchor {
        self.inner.anchor()
    }
    async fn rename_replace_from(
        &self,
        from_tree: &Anchor,
        from: &RelPath,
        to: &RelPath,
    ) -> TreeResult<()> {
        self.inner.rename_replace_from(from_tree, from, to).await
    }
    async fn set_meta(&self, path: &RelPath, kind: Kind, meta: &SetMeta) -> TreeResult<()> {
        self.inner.set_meta(path, kind, meta).await
    }
    fn can_chown(&self) -> bool {
        self.inner.can_chown()
    }
    fn keeps_times(&self) -> bool {
        self.inner.keeps_times()
    }
    fn stored_mtime(&self, mtime: i64) -> i64 {
        self.inner.stored_mtime(mtime)
    }
    fn lanes(&self) -> usize {
        self.inner.lanes()
    }
}

/// rsync's `--bwlimit` value: a size (see [`crate::size_arg`]) in KiB/s unless a unit
/// says otherwise, at least 512 bytes/s. `Ok(None)` is 0: no limit.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let rule = SizeRule {
        name: "bwlimit",
        default_unit: b'K',
        min: 512,
        zero_unlimited: true,
    };
    let bytes = parse_size(rule, text.as_bytes())?;
    Ok((bytes != 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_rsync_reads_them() {
        let ok = |t: &str| parse_rate(t).unwrap();
        assert_eq!(ok("0"), None);
        // A unit alone is 0 to rsync too.
        assert_eq!(ok("k"), None);
        assert_eq!(ok(""), None);
        assert_eq!(ok("1"), Some(1024));
        assert_eq!(ok("100"), Some(102_400));
        assert_eq!(ok("1.5"), Some(1536));
        assert_eq!(ok("1k"), Some(1024));
        assert_eq!(ok("1K"), Some(1024));
        assert_eq!(ok("1KiB"), Some(1024));
        assert_eq!(ok("1KB"), Some(1000));
        assert_eq!(ok("1m"), Some(1 << 20));
        assert_eq!(ok("1MB"), Some(1_000_000));
        assert_eq!(ok("1g"), Some(1 << 30));
        assert_eq!(ok("512b"), Some(512));
        assert_eq!(ok("1m-1"), Some((1 << 20) - 1));
        assert_eq!(ok("1k+1"), Some(1025));
        // As in rsync, a missing number is 0.
        assert_eq!(ok(""), None);
        assert_eq!(ok("k"), None);
        assert_eq!(ok("."), None);
        for (bad, why) in [
            ("1x", "is invalid"),
            ("-", "is invalid"),
            ("+1", "is invalid"),
            ("9000p", "is too large"),
            ("0.1", "is too small"),
            ("100b", "is too small"),
            ("511b", "is too small"),
            ("-1", "is too large"),
        ] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.ends_with(why) || e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_average_rate_across_callers() {
        let t = Throttle::new(100_000);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    t.take(10_000).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // 200 kB at 100 kB/s: the last 10 kB may start after 1.9 s less the burst credit.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1790), "{took:?}");
        assert!(took <= Duration::from_millis(1900), "{took:?}");
    }
}

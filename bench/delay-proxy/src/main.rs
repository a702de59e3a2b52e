//! `delay-proxy`: a TCP forwarder for the sftpsync benchmark.
//!
//! Every accepted connection is forwarded to `--target`. Each direction adds a fixed one-way
//! delay: a reader stamps every chunk with the time it arrived and queues it, and a writer
//! sends the chunk once `stamp + delay` has passed. The delay therefore does not cap
//! throughput the way a stop-and-wait relay would; only the queue is bounded (32 MiB per
//! direction), which plays the role of the network's bandwidth-delay product. The TCP
//! handshake is modelled as one extra round trip before the onward connection is made.
//!
//! The proxy counts the bytes it delivered in each direction and the connections still open,
//! and rewrites `--stats-file` atomically as `{"up":N,"down":N,"open":K,"conns":C}` whenever a
//! connection opens or closes, and at most once a second while anything changes. Once "open"
//! is 0, "up" and "down" include everything the closed connections carried.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep, sleep_until, Instant};

/// Bytes read at most per chunk.
const CHUNK: usize = 256 * 1024;
/// Bytes queued at most per direction before the reader stops reading.
const QUEUE_CAP: usize = 32 * 1024 * 1024;

const USAGE: &str = "usage: delay-proxy --listen ADDR:PORT --target ADDR:PORT \
                     [--one-way-delay-ms N] [--stats-file PATH]";

#[derive(Debug, PartialEq)]
struct Args {
    listen: SocketAddr,
    target: SocketAddr,
    delay: Duration,
    stats_file: Option<PathBuf>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args> {
    let (mut listen, mut target, mut delay, mut stats_file) = (None, None, Duration::ZERO, None);
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            bail!("{USAGE}");
        }
        let value = argv
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().context("--listen")?),
            "--target" => target = Some(value.parse().context("--target")?),
            "--one-way-delay-ms" => {
                delay = Duration::from_millis(value.parse().context("--one-way-delay-ms")?)
            }
            "--stats-file" => stats_file = Some(PathBuf::from(value)),
            _ => bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    Ok(Args {
        listen: listen.with_context(|| format!("--listen is required\n{USAGE}"))?,
        target: target.with_context(|| format!("--target is required\n{USAGE}"))?,
        delay,
        stats_file,
    })
}

/// Counters shared by all connections, and the file they are published to.
#[derive(Default)]
struct Stats {
    up: AtomicU64,
    down: AtomicU64,
    open: AtomicU64,
    conns: AtomicU64,
    file: Option<PathBuf>,
    /// Serialises rewrites of the file (they share one temporary name).
    write_lock: Mutex<()>,
}

impl Stats {
    fn json(&self) -> String {
        format!(
            "{{\"up\":{},\"down\":{},\"open\":{},\"conns\":{}}}",
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
            self.open.load(Ordering::SeqCst),
            self.conns.load(Ordering::SeqCst),
        )
    }

    /// Writes the counters to a temporary file and renames it over the stats file, so a reader
    /// never sees a partial file. Returns what was written.
    fn publish(&self) -> String {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let json = self.json();
        if let Some(path) = &self.file {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let result = std::fs::write(&tmp, format!("{json}\n"))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = result {
                eprintln!("delay-proxy: cannot write {}: {e}", path.display());
            }
        }
        json
    }
}

/// Marks a connection open for as long as it lives, and publishes the stats when it closes.
struct OpenGuard(Arc<Stats>);

impl OpenGuard {
    fn new(stats: Arc<Stats>) -> Self {
        stats.conns.fetch_add(1, Ordering::SeqCst);
        stats.open.fetch_add(1, Ordering::SeqCst);
        // Publish at once, so that a reader waiting for "open" to drop to 0 cannot mistake
        // the file from before this connection for the final count.
        stats.publish();
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.publish();
    }
}

/// One queued item of a delayed direction: data, or the sender's EOF (`None`).
struct Chunk {
    due: Instant,
    data: Option<Bytes>,
}

/// Aborts a spawned task when dropped, so no half of a connection outlives the other.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Moves bytes from `from` to `to`, each chunk delivered `delay` after it was read, and
/// forwards EOF (as a write shutdown) the same way. At most `cap` bytes wait in the queue;
/// `chunk` is the most read at once (must not exceed `cap`). `delivered` counts bytes written.
async fn pipe<R, W>(
    mut from: R,
    mut to: W,
    delay: Duration,
    chunk: usize,
    cap: usize,
    delivered: Arc<AtomicU64>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    assert!(chunk > 0 && chunk <= cap, "chunk must be in 1..=cap");
    if delay.is_zero() {
        let mut buf = vec![0u8; chunk];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return to.shutdown().await;
            }
            to.write_all(&buf[..n]).await?;
            delivered.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    // The semaphore holds one permit per byte of free queue space. The channel itself is
    // unbounded; the permits bound it.
    let space = Arc::new(Semaphore::new(cap));
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    let reader_space = Arc::clone(&space);
    let mut reader = AbortOnDrop(tokio::spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            // Reserve room for a full chunk before reading, then give back what was not used.
            reader_space
                .acquire_many(chunk as u32)
                .await
                .expect("the semaphore is never closed")
                .forget();
            buf.reserve(chunk);
            let n = (&mut from).take(chunk as u64).read_buf(&mut buf).await?;
            reader_space.add_permits(chunk - n);
            let due = Instant::now() + delay;
            let data = (n > 0).then(|| buf.split().freeze());
            let eof = data.is_none();
            if tx.send(Chunk { due, data }).is_err() || eof {
                return Ok::<(), std::io::Error>(());
            }
        }
    }));

    while let Some(Chunk { due, data }) = rx.recv().await {
        sleep_until(due).await;
        match data {
            Some(bytes) => {
                to.write_all(&bytes).await?;
                delivered.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                space.add_permits(bytes.len());
            }
            None => {
                to.shutdown().await?;
                break;
            }
        }
    }
    // The queue ended: either EOF was forwarded or the reader failed; report the latter.
    match (&mut reader.0).await {
        Ok(result) => result,
        Err(join_error) => Err(std::io::Error::other(join_error)),
    }
}

async fn serve_connection(client: TcpStream, args: Arc<Args>, stats: Arc<Stats>) -> Result<()> {
    let _open = OpenGuard::new(Arc::clone(&stats));
    if !args.delay.is_zero() {
        // SYN, SYN-ACK: the client could not send anything before one round trip.
        sleep(args.delay * 2).await;
    }
    let server = TcpStream::connect(args.target)
        .await
        .with_context(|| format!("connect to {}", args.target))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();

    let mut directions = tokio::task::JoinSet::new();
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    for (from, to, counter) in [
        (
            Box::new(client_read) as Box<dyn AsyncRead + Unpin + Send>,
            Box::new(server_write) as Box<dyn AsyncWrite + Unpin + Send>,
            Arc::clone(&up),
        ),
        (
            Box::new(server_read),
            Box::new(client_write),
            Arc::clone(&down),
        ),
    ] {
        let delay = args.delay;
        directions.spawn(pipe(from, to, delay, CHUNK, QUEUE_CAP, counter));
    }
    // Publish the counts while the connection runs, for long transfers.
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let (mut seen_up, mut seen_down) = (0, 0);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            done = directions.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    // One side failed (reset, broken pipe): tear the whole connection down.
                    outcome = Err(anyhow::Error::new(e));
                    break;
                }
                Some(Err(e)) => {
                    outcome = Err(anyhow::Error::new(e));
                    break;
                }
            },
            _ = ticker.tick() => {}
        }
        let (u, d) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        stats.up.fetch_add(u - seen_up, Ordering::SeqCst);
        stats.down.fetch_add(d - seen_down, Ordering::SeqCst);
        (seen_up, seen_down) = (u, d);
    }
    directions.abort_all();
    while directions.join_next().await.is_some() {}
    let (u, d) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    stats.up.fetch_add(u - seen_up, Ordering::SeqCst);
    stats.down.fetch_add(d - seen_down, Ordering::SeqCst);
    outcome
}

fn main() -> Result<()> {
    let args = Arc::new(parse_args(std::env::args().skip(1))?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("bind {}", args.listen))?;
        let stats = Arc::new(Stats {
            file: args.stats_file.clone(),
            ..Stats::default()
        });
        stats.publish();
        let publisher = Arc::clone(&stats);
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                sleep(Duration::from_secs(1)).await;
                if publisher.json() != last {
                    last = publisher.publish();
                }
            }
        });
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait and keep serving the connections we have.
                    eprintln!("delay-proxy: accept: {e}");
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (args, stats) = (Arc::clone(&args), Arc::clone(&stats));
            tokio::spawn(async move {
                if let Err(e) = serve_connection(client, args, stats).await {
                    eprintln!("delay-proxy: connection from {peer}: {e:#}");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn counter() -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }

    #[test]
    fn parses_arguments() {
        let argv = [
            "--listen",
            "127.0.0.1:1",
            "--target",
            "127.0.0.1:2",
            "--one-way-delay-ms",
            "10",
            "--stats-file",
            "/tmp/x.json",
        ];
        let args = parse_args(argv.iter().map(|s| s.to_string())).unwrap();
        assert_eq!(args.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(args.target, "127.0.0.1:2".parse().unwrap());
        assert_eq!(args.delay, Duration::from_millis(10));
        assert_eq!(args.stats_file, Some(PathBuf::from("/tmp/x.json")));
        assert!(parse_args(["--listen", "127.0.0.1:1"].iter().map(|s| s.to_string())).is_err());
        assert!(parse_args(["--bogus", "1"].iter().map(|s| s.to_string())).is_err());
    }

    #[tokio::test]
    async fn each_chunk_is_delayed_from_its_own_arrival() {
        let delay = Duration::from_millis(120);
        let (mut src, src_far) = duplex(1 << 16);
        let (dst_far, mut dst) = duplex(1 << 16);
        let n = counter();
        let task = tokio::spawn(pipe(src_far, dst_far, delay, 1024, 1 << 20, Arc::clone(&n)));

        let start = Instant::now();
        let mut arrivals = Vec::new();
        let mut buf = [0u8; 16];
        // One byte every 40 ms, each sent before the previous one has arrived: the delays
        // must overlap, so the last byte arrives after ~200 ms, not 3 x 120 ms.
        for i in 0..3u8 {
            src.write_all(&[i]).await.unwrap();
            if i < 2 {
                sleep(Duration::from_millis(40)).await;
            }
        }
        src.shutdown().await.unwrap();
        loop {
            let got = dst.read(&mut buf).await.unwrap();
            if got == 0 {
                break;
            }
            arrivals.extend(buf[..got].iter().map(|b| (*b, start.elapsed())));
        }
        task.await.unwrap().unwrap();
        assert_eq!(arrivals.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 1, 2]);
        for (i, (_, at)) in arrivals.iter().enumerate() {
            let sent_at = Duration::from_millis(40 * i as u64);
            assert!(*at >= sent_at + delay, "byte {i} arrived too early: {at:?}");
        }
        assert!(arrivals[2].1 < Duration::from_millis(80) + delay + Duration::from_millis(100));
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn eof_is_forwarded_and_the_other_direction_keeps_working() {
        for delay in [Duration::ZERO, Duration::from_millis(20)] {
            let (mut a, a_far) = duplex(4096);
            let (b_far, mut b) = duplex(4096);
            let (a_read, a_write) = tokio::io::split(a_far);
            let (b_read, b_write) = tokio::io::split(b_far);
            let up = tokio::spawn(pipe(a_read, b_write, delay, 512, 4096, counter()));
            let down = tokio::spawn(pipe(b_read, a_write, delay, 512, 4096, counter()));

            a.write_all(b"request").await.unwrap();
            a.shutdown().await.unwrap();
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request");
            up.await.unwrap().unwrap();

            // The half-closed client still receives the reply.
            b.write_all(b"reply").await.unwrap();
            b.shutdown().await.unwrap();
            let mut got = Vec::new();
            a.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"reply");
            down.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn queue_stops_reading_when_full() {
        let (chunk, cap) = (1024, 4096);
        let (mut src, src_far) = duplex(1024);
        let (dst_far, mut dst) = duplex(1024);
        let n = counter();
        let _task = tokio::spawn(pipe(
            src_far,
            dst_far,
            Duration::from_millis(10),
            chunk,
            cap,
            Arc::clone(&n),
        ));
        // Nobody reads dst, so the writer blocks and the queue fills up.
        let mut accepted = 0usize;
        let block = [7u8; 256];
        while tokio::time::timeout(Duration::from_millis(200), src.write_all(&block))
            .await
            .is_ok()
        {
            accepted += block.len();
            assert!(accepted < 64 * 1024, "the proxy kept reading past its cap");
        }
        // Queue cap + the pipe's read-ahead chunk + both duplex buffers.
        assert!(
            accepted <= cap + chunk + 2 * 1024 + block.len(),
            "{accepted}"
        );
        // Draining the far end lets everything through.
        let mut buf = vec![0u8; 64 * 1024];
        let mut drained = 0;
        while drained < accepted {
            drained += dst.read(&mut buf).await.unwrap();
        }
        assert_eq!(drained, accepted);
    }
}

//! The client's idle and connect timeouts, against in-process peers that go silent.

use std::time::{Duration, Instant};

use sftp_client::{ClientConfig, SftpClient, SftpError, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A VERSION 3 packet with no extensions.
const VERSION_3: [u8; 9] = [0, 0, 0, 5, 2, 0, 0, 0, 3];

/// A peer that reads everything, answers INIT with VERSION when `answer` is set, then never
/// says another word.
fn silent_peer(answer: bool) -> Transport {
    slow_silent_peer(answer, 1 << 20, Duration::ZERO)
}

/// Like [`silent_peer`], but takes what we send through a `buffer`-byte pipe, one buffer's
/// worth per `pause`: a slow uplink.
fn slow_silent_peer(answer: bool, buffer: usize, pause: Duration) -> Transport {
    let (ours, theirs) = tokio::io::duplex(buffer);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut init = [0u8; 9];
        if rd.read_exact(&mut init).await.is_err() {
            return;
        }
        if answer {
            let _ = wr.write_all(&VERSION_3).await;
        }
        let mut sink = vec![0u8; buffer];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        drop(wr);
    });
    let (r, w) = tokio::io::split(ours);
    Transport::from_streams(r, w, "silent peer")
}

fn config(idle: Option<u64>, connect: Option<u64>) -> ClientConfig {
    ClientConfig {
        idle_timeout: idle.map(Duration::from_secs),
        connect_timeout: connect.map(Duration::from_secs),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn silent_server_fails_outstanding_requests_after_the_idle_timeout() {
    let c = SftpClient::connect(silent_peer(true), config(Some(1), None))
        .await
        .expect("handshake");
    // Quiet time with nothing outstanding does not count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = Instant::now();
    let err = c.lstat(b"/").await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, SftpError::Timeout { secs: 1, .. }), "{err}");
    assert!(err.is_lost_session() && err.is_connection_error());
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(matches!(c.closed_reason(), Some(SftpError::Timeout { .. })));
    // Later calls fail at once with the same reason.
    assert!(matches!(
        c.lstat(b"/").await.unwrap_err(),
        SftpError::Timeout { .. }
    ));
}

#[tokio::test]
async fn server_that_never_sends_version_hits_the_connect_timeout() {
    let err = SftpClient::connect(silent_peer(false), config(Some(30), Some(1)))
        .await
        .err()
        .expect("must time out");
    assert!(
        matches!(err, SftpError::ConnectTimeout { secs: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn handshake_is_bounded_by_the_idle_timeout_too() {
    let err = SftpClient::connect(silent_peer(false), config(Some(1), None))
        .await
        .err()
        .expect("must time out");
    assert!(matches!(err, SftpError::Timeout { secs: 1, .. }), "{err}");
}

#[tokio::test]
async fn requests_still_leaving_over_a_slow_link_are_not_a_stall() {
    // 1 MiB of WRITEs drains at 64 KiB per 100 ms: about 1.6 s of steady progress, longer
    // than the 1 s timeout, before the peer's silence starts to count.
    let peer = slow_silent_peer(true, 64 * 1024, Duration::from_millis(100));
    let c = SftpClient::connect(peer, config(Some(1), None))
        .await
        .expect("handshake");
    let handle = sftp_client::Handle(b"h".to_vec());
    let data = vec![0u8; 32 * 1024];
    let start = Instant::now();
    let mut pending = Vec::new();
    for i in 0..32 {
        pending.push(c.send_write(&handle, i * 32 * 1024, &data).await.unwrap());
    }
    let err = pending.pop().unwrap().ok().await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, SftpError::Timeout { .. }), "{err}");
    assert!(took >= Duration::from_millis(2000), "{took:?}");
}

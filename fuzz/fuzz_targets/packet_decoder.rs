//! Fuzzes the SFTP frame splitter and the reply decoders: bytes from a server must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sftp_proto::{FrameDecoder, Limits, Response, StatVfs, Version};

/// Input layout: one byte of push size (0 = everything at once), two bytes of maximum packet
/// size in 16-byte units, then the byte stream as it would come from the server.
fuzz_target!(|data: &[u8]| {
    let [chunk, hi, lo, stream @ ..] = data else {
        return;
    };
    let max_packet = u32::from(u16::from_be_bytes([*hi, *lo])) * 16;
    let chunk = if *chunk == 0 {
        stream.len().max(1)
    } else {
        usize::from(*chunk)
    };

    let mut frames = FrameDecoder::new(max_packet);
    'feed: for piece in stream.chunks(chunk) {
        frames.push(piece);
        loop {
            match frames.next_packet() {
                Ok(Some(packet)) => decode_packet(&packet),
                Ok(None) => break,
                // The client drops the connection after a framing error.
                Err(_) => break 'feed,
            }
        }
    }
    assert!(frames.pending() <= stream.len());

    // The stream taken as one packet body (type byte first, no length prefix).
    decode_packet(stream);
});

fn decode_packet(packet: &[u8]) {
    let _ = Version::decode(packet);
    if let Ok((_, Response::ExtendedReply(body))) = Response::decode(BytesMut::from(packet)) {
        let _ = Limits::decode(&body);
        let _ = StatVfs::decode(&body);
    }
}

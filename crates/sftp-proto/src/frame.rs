//! Splits a byte stream into length-prefixed SFTP packets.

use bytes::{Buf, BytesMut};

use crate::ProtoError;

/// Accumulates bytes from the peer and yields whole packets (type byte + body, without the
/// length prefix). Refuses packets above `max_packet` so a hostile or broken peer cannot make
/// us buffer unbounded memory.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_packet: u32,
}

impl FrameDecoder {
    pub fn new(max_packet: u32) -> Self {
        FrameDecoder {
            buf: BytesMut::with_capacity(64 * 1024),
            max_packet,
        }
    }

    pub fn set_max_packet(&mut self, max_packet: u32) {
        self.max_packet = max_packet;
    }

    /// Feeds bytes read from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Room to read into directly, avoiding a copy.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as a packet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete packet, if one has fully arrived.
    pub fn next_packet(&mut self) -> Result<Option<BytesMut>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len == 0 {
            return Err(ProtoError::Empty);
        }
        if len > self.max_packet {
            return Err(ProtoError::TooLarge {
                len,
                max: self.max_packet,
            });
        }
        // `len` is at most `max_packet`, a u32; the sum is checked for 32-bit targets.
        let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(4)) else {
            return Err(ProtoError::TooLarge {
                len,
                max: self.max_packet,
            });
        };
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(total - 4)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_pushes() {
        let mut d = FrameDecoder::new(1024);
        let stream = [0u8, 0, 0, 3, 101, 1, 2, 0, 0, 0, 1, 7];
        for b in &stream[..5] {
            d.push(&[*b]);
            assert_eq!(d.next_packet().unwrap(), None);
        }
        d.push(&stream[5..]);
        assert_eq!(&d.next_packet().unwrap().unwrap()[..], &[101, 1, 2]);
        assert_eq!(&d.next_packet().unwrap().unwrap()[..], &[7]);
        assert_eq!(d.next_packet().unwrap(), None);
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0x10, 0]);
        assert_eq!(
            d.next_packet(),
            Err(ProtoError::TooLarge {
                len: 4096,
                max: 1024
            })
        );
    }

    #[test]
    fn frame_at_the_limit_is_accepted_and_one_byte_more_refused() {
        let mut d = FrameDecoder::new(8);
        d.push(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(d.next_packet().unwrap().unwrap().len(), 8);
        d.push(&[0, 0, 0, 9]);
        assert_eq!(
            d.next_packet(),
            Err(ProtoError::TooLarge { len: 9, max: 8 })
        );
    }

    #[test]
    fn truncated_frame_waits_and_reports_what_is_pending() {
        // A length prefix promising more than arrives: no packet, and the caller can tell at
        // end of stream that a packet was cut off.
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 100, 101, 0]);
        assert_eq!(d.next_packet(), Ok(None));
        assert_eq!(d.pending(), 6);
    }

    #[test]
    fn zero_length_frame_is_an_error() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_packet(), Err(ProtoError::Empty));
    }
}

//! Rebuilds the new file from the old one and a delta, hashing the result as it goes so
//! the caller can check it against what the sender meant.

use std::borrow::Borrow;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::encoder::{Op, LITERAL_CHUNK};
use crate::Error;

/// What an [`Applier`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Bytes written.
    pub len: u64,
    /// BLAKE3 of the bytes written.
    pub hash: [u8; 32],
}

/// Push-style applier: takes ops one at a time as they arrive, copying from `old` (any
/// seekable reader) and writing to `out`.
#[derive(Debug)]
pub struct Applier<R, W> {
    old: R,
    out: W,
    hasher: blake3::Hasher,
    len: u64,
    /// Where `old` is positioned, to skip the seek for consecutive copies.
    old_pos: Option<u64>,
    buf: Vec<u8>,
}

impl<R: Read + Seek, W: Write> Applier<R, W> {
    pub fn new(old: R, out: W) -> Self {
        Self {
            old,
            out,
            hasher: blake3::Hasher::new(),
            len: 0,
            old_pos: None,
            buf: Vec::new(),
        }
    }

    /// Applies one op.
    pub fn apply(&mut self, op: &Op) -> Result<(), Error> {
        match op {
            Op::Literal(bytes) => self.write(bytes),
            Op::Copy { from_offset, len } => self.copy(*from_offset, *len),
        }
    }

    fn copy(&mut self, from_offset: u64, len: u64) -> Result<(), Error> {
        let out_of_range = || Error::CopyOutOfRange {
            offset: from_offset,
            len,
        };
        from_offset.checked_add(len).ok_or_else(out_of_range)?;
        if self.old_pos != Some(from_offset) {
            self.old_pos = None;
            self.old.seek(SeekFrom::Start(from_offset))?;
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; LITERAL_CHUNK];
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let mut buf = std::mem::take(&mut self.buf);
            let got = read_full(&mut self.old, &mut buf[..want]);
            let written = got.as_ref().map_or(Ok(()), |&n| self.write(&buf[..n]));
            self.buf = buf;
            let got = got?;
            written?;
            if got < want {
                return Err(out_of_range());
            }
            left -= got as u64;
        }
        self.old_pos = Some(from_offset + len);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the output and returns what was written, and the writer.
    pub fn finish(mut self) -> Result<(Applied, W), Error> {
        self.out.flush()?;
        let applied = Applied {
            len: self.len,
            hash: *self.hasher.finalize().as_bytes(),
        };
        Ok((applied, self.out))
    }
}

/// Reads until `buf` is full or the reader ends; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes to `out` the file that `ops` describe relative to `old`.
pub fn apply<R, W, I>(old: R, ops: I, out: W) -> Result<Applied, Error>
where
    R: Read + Seek,
    W: Write,
    I: IntoIterator,
    I::Item: Borrow<Op>,
{
    let mut applier = Applier::new(old, out);
    for op in ops {
        applier.apply(op.borrow())?;
    }
    Ok(applier.finish()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn copies_and_literals_in_order() {
        let old = b"hello, world";
        let ops = [
            Op::Copy {
                from_offset: 7,
                len: 5,
            },
            Op::Literal(b", ".to_vec()),
            Op::Copy {
                from_offset: 0,
                len: 5,
            },
        ];
        let mut out = Vec::new();
        let applied = apply(Cursor::new(old), &ops, &mut out).unwrap();
        assert_eq!(out, b"world, hello");
        assert_eq!(applied.len, 12);
        assert_eq!(applied.hash, *blake3::hash(b"world, hello").as_bytes());
    }

    #[test]
    fn copy_past_the_old_file_is_an_error() {
        let ops = [Op::Copy {
            from_offset: 3,
            len: 5,
        }];
        let err = apply(Cursor::new(b"short"), &ops, Vec::new()).unwrap_err();
        assert!(matches!(err, Error::CopyOutOfRange { offset: 3, len: 5 }));
        let ops = [Op::Copy {
            from_offset: u64::MAX,
            len: 2,
        }];
        assert!(apply(Cursor::new(b"short"), &ops, Vec::new()).is_err());
    }
}

//! SFTP v3 file attributes (ATTRS) and the file type carried in their permission bits.

use crate::codec::{Reader, Writer};
use crate::ProtoError;

const FLAG_SIZE: u32 = 0x0000_0001;
const FLAG_UIDGID: u32 = 0x0000_0002;
const FLAG_PERMISSIONS: u32 = 0x0000_0004;
const FLAG_ACMODTIME: u32 = 0x0000_0008;
const FLAG_EXTENDED: u32 = 0x8000_0000;

/// Attributes of a file as SFTP v3 carries them. Absent fields were not sent (or are not to be
/// changed, in SETSTAT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    /// uid and gid travel together in v3.
    pub uid_gid: Option<(u32, u32)>,
    /// Full st_mode: type bits and permission bits.
    pub permissions: Option<u32>,
    /// atime and mtime travel together, in whole seconds.
    pub atime_mtime: Option<(u32, u32)>,
    pub extended: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The file type encoded in the S_IFMT bits of `permissions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Unknown,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }

    /// The S_IFMT bits for this kind (0 for Unknown).
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => 0o100000,
            FileKind::Directory => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::CharDevice => 0o020000,
            FileKind::BlockDevice => 0o060000,
            FileKind::Fifo => 0o010000,
            FileKind::Socket => 0o140000,
            FileKind::Unknown => 0,
        }
    }
}

impl Attrs {
    pub fn kind(&self) -> FileKind {
        self.permissions
            .map(FileKind::from_mode)
            .unwrap_or(FileKind::Unknown)
    }

    pub fn mtime(&self) -> Option<u32> {
        self.atime_mtime.map(|(_, m)| m)
    }

    /// The attributes as they go on the wire, for peers that build their own packets (the
    /// test kit's server). `None` when an extension is too long for its length field.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.overflow().is_none().then(|| w.into_inner())
    }

    /// Attributes at the start of `bytes` and how many bytes they took, for peers that parse
    /// their own packets (the test kit's proxy).
    pub fn from_bytes(bytes: &[u8]) -> Result<(Attrs, usize), ProtoError> {
        let mut r = Reader::new(bytes);
        let a = Attrs::decode(&mut r)?;
        Ok((a, r.position()))
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        let mut flags = 0;
        if self.size.is_some() {
            flags |= FLAG_SIZE;
        }
        if self.uid_gid.is_some() {
            flags |= FLAG_UIDGID;
        }
        if self.permissions.is_some() {
            flags |= FLAG_PERMISSIONS;
        }
        if self.atime_mtime.is_some() {
            flags |= FLAG_ACMODTIME;
        }
        if !self.extended.is_empty() {
            flags |= FLAG_EXTENDED;
        }
        w.u32(flags);
        if let Some(size) = self.size {
            w.u64(size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            w.u32(uid);
            w.u32(gid);
        }
        if let Some(p) = self.permissions {
            w.u32(p);
        }
        if let Some((a, m)) = self.atime_mtime {
            w.u32(a);
            w.u32(m);
        }
        if !self.extended.is_empty() {
            w.len(self.extended.len());
            for (k, v) in &self.extended {
                w.string(k);
                w.string(v);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Attrs, ProtoError> {
        let flags = r.u32("attribute flags")?;
        let mut a = Attrs::default();
        if flags & FLAG_SIZE != 0 {
            a.size = Some(r.u64("size")?);
        }
        if flags & FLAG_UIDGID != 0 {
            a.uid_gid = Some((r.u32("uid")?, r.u32("gid")?));
        }
        if flags & FLAG_PERMISSIONS != 0 {
            a.permissions = Some(r.u32("permissions")?);
        }
        if flags & FLAG_ACMODTIME != 0 {
            a.atime_mtime = Some((r.u32("atime")?, r.u32("mtime")?));
        }
        if flags & FLAG_EXTENDED != 0 {
            let count = r.u32("extended count")?;
            // Each pair takes at least 8 bytes, so a count beyond that is a lie.
            if count as usize > r.remaining() / 8 {
                return Err(ProtoError::BadCount(count));
            }
            for _ in 0..count {
                let k = r.string("extended type")?.to_vec();
                let v = r.string("extended data")?.to_vec();
                a.extended.push((k, v));
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip_all_fields() {
        let a = Attrs {
            size: Some(1 << 40),
            uid_gid: Some((1000, 100)),
            permissions: Some(0o100644),
            atime_mtime: Some((5, 1_600_000_000)),
            extended: vec![(b"k".to_vec(), b"\xff\x00".to_vec())],
        };
        let mut w = Writer::new();
        a.encode(&mut w);
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes);
        assert_eq!(Attrs::decode(&mut r).unwrap(), a);
        assert_eq!(r.remaining(), 0);
        assert_eq!(a.kind(), FileKind::Regular);
    }

    #[test]
    fn from_bytes_says_how_much_it_took() {
        let a = Attrs {
            permissions: Some(0o100755),
            atime_mtime: Some((0, u32::MAX)),
            ..Default::default()
        };
        let mut bytes = a.to_bytes().unwrap();
        let n = bytes.len();
        bytes.extend_from_slice(b"rest");
        assert_eq!(Attrs::from_bytes(&bytes).unwrap(), (a, n));
        assert!(
            Attrs::from_bytes(&[0, 0, 0, 4]).is_err(),
            "permissions promised, not sent"
        );
    }

    #[test]
    fn attrs_empty_is_four_zero_bytes() {
        let mut w = Writer::new();
        Attrs::default().encode(&mut w);
        assert_eq!(w.into_inner(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn attrs_lying_extended_count_is_rejected() {
        let bytes = [0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let mut r = Reader::new(&bytes);
        assert!(matches!(
            Attrs::decode(&mut r),
            Err(ProtoError::BadCount(_))
        ));
    }

    #[test]
    fn kinds_from_mode() {
        assert_eq!(FileKind::from_mode(0o040755), FileKind::Directory);
        assert_eq!(FileKind::from_mode(0o120777), FileKind::Symlink);
        assert_eq!(FileKind::from_mode(0o000644), FileKind::Unknown);
        for k in [
            FileKind::Regular,
            FileKind::Directory,
            FileKind::Symlink,
            FileKind::CharDevice,
            FileKind::BlockDevice,
            FileKind::Fifo,
            FileKind::Socket,
        ] {
            assert_eq!(FileKind::from_mode(k.mode_bits() | 0o600), k);
        }
    }
}

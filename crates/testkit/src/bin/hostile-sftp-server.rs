//! An SFTP v3 server over stdin/stdout that lies on purpose, to prove the client and the sync
//! survive a hostile peer.
//!
//! It serves a small read-only tree from memory under `/src` and misbehaves as the environment
//! variable `HOSTILE_SCENARIO` says (see `Scenario`). `HOSTILE_OUTSIDE` is a path outside the
//! destination that scenarios point symlinks at. Anything that would write is refused, so a push
//! to it only ever lists.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use sftp_proto::packet_type as pt;
use sftp_proto::{Attrs, FrameDecoder};

const MTIME: u32 = 1_700_000_000;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;
const FX_OP_UNSUPPORTED: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// An honest server: the tree below, nothing more.
    Plain,
    /// `../escape`, and a file called `..`, beside a harmless `..dots`.
    DotDot,
    /// Names `a/b` and `/etc/passwd`.
    Slash,
    /// A name with a NUL byte in it, and a symlink whose target has one.
    Nul,
    /// `dup` twice in one listing: a symlink to /etc, and a directory holding a file.
    Duplicate,
    /// `evil` as a symlink to HOSTILE_OUTSIDE in one READDIR reply, and as a directory holding
    /// `pwned` in the next.
    SymlinkThenFile,
    /// `d` is listed as a directory, but its own listing claims entries with `/` in them and a
    /// `..` that is a symlink, and LSTAT of it says symlink.
    Swap,
    /// A reply whose length prefix is far over any packet limit.
    Oversized,
    /// A length prefix promising more than is sent, then end of stream.
    Truncated,
    /// A reply to a request id that was never sent.
    WrongId,
    /// `small` is listed as 10 bytes and READ sends more than asked; `big` is listed as 1 MiB
    /// and has 10 bytes.
    LyingSize,
    /// A NAME reply that claims 2^31 entries.
    HugeCount,
    /// A HANDLE reply where DATA belongs.
    WrongType,
    /// `/src` never ends: every READDIR brings 100 new names.
    Endless,
    /// Files with setuid (04755), setgid (02755) and sticky (01777) bits and a directory with
    /// 06777, all owned by uid/gid 0; and `owned`, owned by 4321:4321.
    Setuid,
    /// `epoch` with mtime 0 and `end` with mtime u32::MAX, the ends of what SFTP v3 carries.
    EdgeTimes,
    /// `gone` is listed but no longer there when it is opened: it vanished mid-run.
    Vanish,
}

impl Scenario {
    fn from_env() -> Scenario {
        let name = std::env::var("HOSTILE_SCENARIO").unwrap_or_default();
        match name.as_str() {
            "" | "plain" => Scenario::Plain,
            "dotdot" => Scenario::DotDot,
            "slash" => Scenario::Slash,
            "nul" => Scenario::Nul,
            "duplicate" => Scenario::Duplicate,
            "symlink-then-file" => Scenario::SymlinkThenFile,
            "swap" => Scenario::Swap,
            "oversized" => Scenario::Oversized,
            "truncated" => Scenario::Truncated,
            "wrong-id" => Scenario::WrongId,
            "lying-size" => Scenario::LyingSize,
            "huge-count" => Scenario::HugeCount,
            "wrong-type" => Scenario::WrongType,
            "endless" => Scenario::Endless,
            "setuid" => Scenario::Setuid,
            "edge-times" => Scenario::EdgeTimes,
            "vanish" => Scenario::Vanish,
            other => {
                eprintln!("hostile-sftp-server: unknown HOSTILE_SCENARIO {other:?}");
                std::process::exit(2);
            }
        }
    }
}

fn file_attrs(size: u64) -> Attrs {
    attrs(0o100644, size)
}

fn dir_attrs() -> Attrs {
    attrs(0o040755, 4096)
}

fn link_attrs(target: &[u8]) -> Attrs {
    attrs(0o120777, target.len() as u64)
}

fn attrs(mode: u32, size: u64) -> Attrs {
    // SAFETY: getuid/getgid cannot fail and touch no memory of ours.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Attrs {
        size: Some(size),
        uid_gid: Some((uid, gid)),
        permissions: Some(mode),
        atime_mtime: Some((MTIME, MTIME)),
        extended: Vec::new(),
    }
}

/// One name as a listing shows it.
#[derive(Clone)]
struct Listed {
    name: Vec<u8>,
    attrs: Attrs,
}

fn listed(name: &[u8], attrs: Attrs) -> Listed {
    Listed {
        name: name.to_vec(),
        attrs,
    }
}

/// The tree: what LSTAT, READ and READLINK see, and what each directory's READDIR replies
/// carry (one inner list per reply), which need not agree with each other.
#[derive(Default)]
struct Fs {
    attrs: BTreeMap<Vec<u8>, Attrs>,
    data: HashMap<Vec<u8>, Vec<u8>>,
    links: HashMap<Vec<u8>, Vec<u8>>,
    listings: HashMap<Vec<u8>, Vec<Vec<Listed>>>,
}

impl Fs {
    fn file(&mut self, path: &[u8], data: &[u8]) {
        self.attrs
            .insert(path.to_vec(), file_attrs(data.len() as u64));
        self.data.insert(path.to_vec(), data.to_vec());
    }

    fn link(&mut self, path: &[u8], target: &[u8]) {
        self.attrs.insert(path.to_vec(), link_attrs(target));
        self.links.insert(path.to_vec(), target.to_vec());
    }

    /// A file with attributes of its choosing; returns them for the listing.
    fn file_with(&mut self, path: &[u8], data: &[u8], mut attrs: Attrs) -> Attrs {
        attrs.size = Some(data.len() as u64);
        self.attrs.insert(path.to_vec(), attrs.clone());
        self.data.insert(path.to_vec(), data.to_vec());
        attrs
    }

    fn dir(&mut self, path: &[u8]) {
        self.attrs.insert(path.to_vec(), dir_attrs());
    }

    /// Sets a directory's READDIR replies; `.` and `..` open the first, as real servers do.
    fn listing(&mut self, dir: &[u8], mut replies: Vec<Vec<Listed>>) {
        if replies.is_empty() {
            replies.push(Vec::new());
        }
        replies[0].insert(0, listed(b"..", dir_attrs()));
        replies[0].insert(0, listed(b".", dir_attrs()));
        self.listings.insert(dir.to_vec(), replies);
    }

    /// A listing that tells the truth about what was added below `dir`.
    fn honest_listing(&mut self, dir: &[u8]) {
        let prefix = [dir, b"/"].concat();
        let entries = self
            .attrs
            .iter()
            .filter_map(|(p, a)| {
                let name = p.strip_prefix(prefix.as_slice())?;
                (!name.contains(&b'/')).then(|| listed(name, a.clone()))
            })
            .collect();
        self.listing(dir, vec![entries]);
    }

    fn build(scenario: Scenario, outside: &[u8]) -> Fs {
        let mut fs = Fs::default();
        fs.dir(b"/");
        fs.dir(b"/src");
        fs.file(b"/src/ok", b"fine\n");
        fs.dir(b"/src/sub");
        fs.file(b"/src/sub/inner", b"inner\n");
        fs.honest_listing(b"/src/sub");
        // A valid name that would drive a terminal if printed raw: OSC title, BEL, lone CSI.
        fs.file(b"/src/ctl\x1b]0;pwn\x07\x9b", b"ctl\n");
        let mut root = vec![
            listed(b"ok", file_attrs(5)),
            listed(b"sub", dir_attrs()),
            listed(b"ctl\x1b]0;pwn\x07\x9b", file_attrs(4)),
        ];
        match scenario {
            Scenario::DotDot => {
                fs.file(b"/src/..dots", b"dots\n");
                root.push(listed(b"..dots", file_attrs(5)));
                root.push(listed(b"../escape", file_attrs(5)));
                root.push(listed(b"..", file_attrs(5)));
            }
            Scenario::Slash => {
                root.push(listed(b"a/b", file_attrs(5)));
                root.push(listed(b"/etc/passwd", file_attrs(5)));
            }
            Scenario::Nul => {
                root.push(listed(b"bad\0name", file_attrs(5)));
                fs.link(b"/src/badlink", b"/etc\0passwd");
                root.push(listed(b"badlink", link_attrs(b"/etc\0passwd")));
            }
            Scenario::Duplicate => {
                fs.link(b"/src/dup", b"/etc");
                fs.file(b"/src/dup/f", b"through the link\n");
                fs.listing(b"/src/dup", vec![vec![listed(b"f", file_attrs(17))]]);
                root.push(listed(b"dup", link_attrs(b"/etc")));
                root.push(listed(b"dup", dir_attrs()));
            }
            Scenario::SymlinkThenFile => {
                fs.link(b"/src/evil", outside);
                fs.file(b"/src/evil/pwned", b"pwned\n");
                fs.listing(b"/src/evil", vec![vec![listed(b"pwned", file_attrs(6))]]);
                root.push(listed(b"evil", link_attrs(outside)));
                fs.listing(b"/src", vec![root, vec![listed(b"evil", dir_attrs())]]);
                return fs;
            }
            Scenario::Swap => {
                fs.link(b"/src/d", outside);
                fs.file(b"/src/d/fine", b"fine\n");
                fs.listing(
                    b"/src/d",
                    vec![vec![
                        listed(b"fine", file_attrs(5)),
                        listed(b"../../pwned", file_attrs(6)),
                        listed(b"x/../../../pwned", file_attrs(6)),
                        listed(b"..", link_attrs(outside)),
                    ]],
                );
                root.push(listed(b"d", dir_attrs()));
            }
            Scenario::LyingSize => {
                fs.file(b"/src/small", &[b's'; 10]);
                fs.file(b"/src/big", &[b'b'; 10]);
                root.push(listed(b"small", file_attrs(10)));
                root.push(listed(b"big", file_attrs(1 << 20)));
            }
            Scenario::Setuid => {
                let owned_by = |mode, uid_gid| Attrs {
                    uid_gid: Some(uid_gid),
                    ..attrs(mode, 0)
                };
                for (name, mode) in [
                    (&b"suid"[..], 0o104755),
                    (b"sgid", 0o102755),
                    (b"sticky", 0o101777),
                ] {
                    let path = [b"/src/", name].concat();
                    let a = fs.file_with(&path, b"special\n", owned_by(mode, (0, 0)));
                    root.push(listed(name, a));
                }
                let a = fs.file_with(b"/src/owned", b"owned\n", owned_by(0o100640, (4321, 4321)));
                root.push(listed(b"owned", a));
                let sdir = owned_by(0o046777, (0, 0));
                fs.attrs.insert(b"/src/sdir".to_vec(), sdir.clone());
                let a = fs.file_with(b"/src/sdir/f", b"in sdir\n", owned_by(0o106755, (0, 0)));
                fs.listing(b"/src/sdir", vec![vec![listed(b"f", a)]]);
                root.push(listed(b"sdir", sdir));
            }
            Scenario::EdgeTimes => {
                for (name, mtime) in [(&b"epoch"[..], 0), (b"end", u32::MAX)] {
                    let path = [b"/src/", name].concat();
                    let a = Attrs {
                        atime_mtime: Some((mtime, mtime)),
                        ..file_attrs(0)
                    };
                    let a = fs.file_with(&path, b"edge\n", a);
                    root.push(listed(name, a));
                }
            }
            Scenario::WrongType => {
                fs.file(b"/src/data", b"data\n");
                root.push(listed(b"data", file_attrs(5)));
            }
            Scenario::Vanish => root.push(listed(b"gone", file_attrs(5))),
            _ => {}
        }
        fs.listing(b"/src", vec![root]);
        fs
    }
}

/// Resolves a client path against `/`, the login directory, without following anything.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

struct In<'a> {
    data: &'a [u8],
}

impl<'a> In<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (h, t) = self.data.split_at_checked(4)?;
        self.data = t;
        Some(u32::from_be_bytes(h.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let (h, t) = self.data.split_at_checked(8)?;
        self.data = t;
        Some(u64::from_be_bytes(h.try_into().ok()?))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        let (h, t) = self.data.split_at_checked(n)?;
        self.data = t;
        Some(h)
    }
}

/// A reply being built: type, id and body, framed by `finish`.
struct Out(Vec<u8>);

impl Out {
    fn new(ty: u8, id: u32) -> Out {
        let mut o = Out(vec![0, 0, 0, 0, ty]);
        o.u32(id);
        o
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn string(&mut self, s: &[u8]) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s);
    }
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

fn status(id: u32, code: u32) -> Vec<u8> {
    let mut o = Out::new(pt::STATUS, id);
    o.u32(code);
    o.string(b"hostile says no");
    o.string(b"");
    o.finish()
}

fn names(id: u32, entries: &[Listed]) -> Vec<u8> {
    let mut o = Out::new(pt::NAME, id);
    o.u32(entries.len() as u32);
    for e in entries {
        o.string(&e.name);
        o.string(&e.name);
        o.raw(&e.attrs.to_bytes().expect("small attributes"));
    }
    o.finish()
}

enum Open {
    Dir { path: Vec<u8>, next_reply: usize },
    File { path: Vec<u8> },
}

struct Server {
    scenario: Scenario,
    fs: Fs,
    handles: HashMap<Vec<u8>, Open>,
    next_handle: u32,
}

/// What to do after handling one request.
enum Reply {
    Send(Vec<u8>),
    /// Send these bytes and then end the stream.
    SendAndQuit(Vec<u8>),
}

impl Server {
    fn handle(&mut self, ty: u8, id: u32, body: &[u8]) -> Reply {
        let mut r = In { data: body };
        let reply = match ty {
            pt::REALPATH => {
                let p = normalize(r.string().unwrap_or(b"."));
                names(id, &[listed(&p, Attrs::default())])
            }
            pt::STAT | pt::LSTAT => {
                let p = normalize(r.string().unwrap_or_default());
                if self.scenario == Scenario::Swap && p == b"/src/d" && ty == pt::LSTAT {
                    let mut o = Out::new(pt::ATTRS, id);
                    o.raw(&link_attrs(b"/").to_bytes().expect("small attributes"));
                    return Reply::Send(o.finish());
                }
                match self.fs.attrs.get(&p) {
                    Some(a) => {
                        let mut o = Out::new(pt::ATTRS, id);
                        o.raw(&a.to_bytes().expect("small attributes"));
                        o.finish()
                    }
                    None => status(id, FX_NO_SUCH_FILE),
                }
            }
            pt::OPENDIR => {
                let p = normalize(r.string().unwrap_or_default());
                if self.fs.listings.contains_key(&p) {
                    self.new_handle(
                        id,
                        Open::Dir {
                            path: p,
                            next_reply: 0,
                        },
                    )
                } else {
                    status(id, FX_NO_SUCH_FILE)
                }
            }
            pt::READDIR => return self.readdir(id, r.string().unwrap_or_default()),
            pt::OPEN => {
                let p = normalize(r.string().unwrap_or_default());
                let flags = r.u32().unwrap_or(0);
                if flags & !0x01 != 0 {
                    status(id, FX_PERMISSION_DENIED)
                } else if self.fs.data.contains_key(&p) {
                    self.new_handle(id, Open::File { path: p })
                } else {
                    status(id, FX_NO_SUCH_FILE)
                }
            }
            pt::READ => {
                let h = r.string().unwrap_or_default().to_vec();
                let off = r.u64().unwrap_or(0);
                let len = r.u32().unwrap_or(0);
                return self.read(id, &h, off, len);
            }
            pt::CLOSE => {
                let h = r.string().unwrap_or_default();
                match self.handles.remove(h) {
                    Some(_) => status(id, FX_OK),
                    None => status(id, FX_NO_SUCH_FILE),
                }
            }
            pt::READLINK => {
                let p = normalize(r.string().unwrap_or_default());
                if p == b"/two-targets" {
                    // Reachable in every scenario, though no listing shows it.
                    let t = [
                        listed(b"a", Attrs::default()),
                        listed(b"b", Attrs::default()),
                    ];
                    return Reply::Send(names(id, &t));
                }
                match self.fs.links.get(&p) {
                    Some(t) => names(id, &[listed(t, Attrs::default())]),
                    None => status(id, FX_NO_SUCH_FILE),
                }
            }
            pt::WRITE
            | pt::SETSTAT
            | pt::FSETSTAT
            | pt::REMOVE
            | pt::MKDIR
            | pt::RMDIR
            | pt::RENAME
            | pt::SYMLINK => status(id, FX_PERMISSION_DENIED),
            _ => status(id, FX_OP_UNSUPPORTED),
        };
        Reply::Send(reply)
    }

    fn new_handle(&mut self, id: u32, open: Open) -> Vec<u8> {
        self.next_handle += 1;
        let h = self.next_handle.to_string().into_bytes();
        self.handles.insert(h.clone(), open);
        let mut o = Out::new(pt::HANDLE, id);
        o.string(&h);
        o.finish()
    }

    fn readdir(&mut self, id: u32, handle: &[u8]) -> Reply {
        let Some(Open::Dir { path, next_reply }) = self.handles.get_mut(handle) else {
            return Reply::Send(status(id, FX_NO_SUCH_FILE));
        };
        let root = path == b"/src";
        if self.scenario == Scenario::Endless && root {
            let first = *next_reply * 100;
            *next_reply += 1;
            let entries: Vec<Listed> = (first..first + 100)
                .map(|n| listed(format!("e{n}").as_bytes(), file_attrs(0)))
                .collect();
            return Reply::Send(names(id, &entries));
        }
        let replies = &self.fs.listings[path.as_slice()];
        let Some(entries) = replies.get(*next_reply) else {
            return Reply::Send(status(id, FX_EOF));
        };
        *next_reply += 1;
        let reply = names(id, entries);
        match self.scenario {
            Scenario::Oversized if root => {
                // 16 MiB announced, far past any limit; some of it sent, and the stream left
                // open so a client that waits for the rest would hang.
                let mut o = (16u32 << 20).to_be_bytes().to_vec();
                o.extend_from_slice(&[pt::NAME; 4096]);
                Reply::Send(o)
            }
            Scenario::Truncated if root => Reply::SendAndQuit(reply[..reply.len() / 2].to_vec()),
            Scenario::WrongId if root => Reply::Send(names(id.wrapping_add(1000), entries)),
            Scenario::HugeCount if root => {
                let mut reply = reply;
                reply[9..13].copy_from_slice(&(1u32 << 31).to_be_bytes());
                Reply::Send(reply)
            }
            _ => Reply::Send(reply),
        }
    }

    fn read(&mut self, id: u32, handle: &[u8], off: u64, len: u32) -> Reply {
        let Some(Open::File { path }) = self.handles.get(handle) else {
            return Reply::Send(status(id, FX_NO_SUCH_FILE));
        };
        let data = &self.fs.data[path.as_slice()];
        if self.scenario == Scenario::WrongType {
            let mut o = Out::new(pt::HANDLE, id);
            o.string(b"not data");
            return Reply::Send(o.finish());
        }
        if self.scenario == Scenario::LyingSize && path == b"/src/small" {
            // Far more than asked for, up to 1 MiB, in one DATA reply.
            let n = (len as usize + 4096).min(1 << 20);
            let mut o = Out::new(pt::DATA, id);
            o.string(&vec![b'x'; n]);
            return Reply::Send(o.finish());
        }
        let Some(rest) = usize::try_from(off).ok().and_then(|o| data.get(o..)) else {
            return Reply::Send(status(id, FX_EOF));
        };
        if rest.is_empty() {
            return Reply::Send(status(id, FX_EOF));
        }
        let chunk = &rest[..rest.len().min(len as usize)];
        let mut o = Out::new(pt::DATA, id);
        o.string(chunk);
        Reply::Send(o.finish())
    }
}

fn main() {
    let scenario = Scenario::from_env();
    let outside = std::env::var_os("HOSTILE_OUTSIDE")
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .unwrap_or_else(|| b"/tmp/hostile-outside".to_vec());
    let mut server = Server {
        scenario,
        fs: Fs::build(scenario, &outside),
        handles: HashMap::new(),
        next_handle: 0,
    };
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let packet = match decoder.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    decoder.push(&buf[..n]);
                    continue;
                }
            },
            Err(e) => {
                eprintln!("hostile-sftp-server: bad request: {e}");
                return;
            }
        };
        let ty = packet[0];
        let mut r = In { data: &packet[1..] };
        let reply = if ty == pt::INIT {
            let mut o = Out(vec![0, 0, 0, 0, pt::VERSION]);
            o.u32(3);
            Reply::Send(o.finish())
        } else {
            let Some(id) = r.u32() else { return };
            server.handle(ty, id, r.data)
        };
        let (bytes, quit) = match reply {
            Reply::Send(b) => (b, false),
            Reply::SendAndQuit(b) => (b, true),
        };
        if stdout
            .write_all(&bytes)
            .and_then(|_| stdout.flush())
            .is_err()
            || quit
        {
            return;
        }
    }
}

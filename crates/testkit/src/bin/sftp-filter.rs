//! An SFTP proxy over stdin/stdout that runs a real server as its child and changes what it is
//! told to on the way, to imitate servers that accept requests and then do not honour them.
//!
//! ```text
//! sftp-filter [--ignore LIST] [--refuse LIST] [--strip-times LIST] [--corrupt-writes]
//!             [--short-reads] [--no-reply-times] [--check-file] [--check-file-bad-tail]
//!             [--log FILE]
//!             -- SERVER [ARGS...]
//! ```
//!
//! LIST is comma-separated request names (`setstat,fsetstat,lsetstat,open,mkdir,...`).
//! `--ignore`: the proxy answers those requests with SSH_FX_OK itself and never forwards them.
//! `--refuse`: the proxy answers those requests with SSH_FX_OP_UNSUPPORTED itself, as a
//! server that announces an extension and then refuses it would.
//! `--short-reads`: every READ of more than one byte is forwarded asking for half as much,
//! so the server's replies come back short before the end of the file.
//! `--no-reply-times`: the attributes in the server's NAME and ATTRS replies lose their
//! times, as from a server that does not report them.
//! `--strip-times`: forwarded without their atime/mtime, so the server keeps its own.
//! `--corrupt-writes`: the last byte of every WRITE's data is flipped on the way, as a
//! broken disk or server would garble it.
//! `--check-file`: the proxy answers `check-file-name` itself with SHA-256 hashes of the
//! file's blocks (the path is opened as the server would, relative to the same directory),
//! as ProFTPD does; OpenSSH's sftp-server has no such extension.
//! `--check-file-bad-tail`: the same, but the hash of a file's last block is wrong, as a
//! server with a bug in its hashing would send.
//! `--log`: one line per request (name, the attributes it carries, what was done with it), so
//! a test can check what the client sent.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use sftp_proto::packet_type as pt;
use sftp_proto::{Attrs, FrameDecoder};
use sha2::Digest;

const FX_OK: u32 = 0;
/// Far above any packet a client sends: the proxy is not where limits are tested.
const MAX_PACKET: u32 = 16 << 20;

/// Request names as LIST spells them; extended requests by their name without `@domain`.
const NAMES: &[(&str, u8)] = &[
    ("open", pt::OPEN),
    ("close", pt::CLOSE),
    ("read", pt::READ),
    ("write", pt::WRITE),
    ("lstat", pt::LSTAT),
    ("fstat", pt::FSTAT),
    ("setstat", pt::SETSTAT),
    ("fsetstat", pt::FSETSTAT),
    ("opendir", pt::OPENDIR),
    ("readdir", pt::READDIR),
    ("remove", pt::REMOVE),
    ("mkdir", pt::MKDIR),
    ("rmdir", pt::RMDIR),
    ("realpath", pt::REALPATH),
    ("stat", pt::STAT),
    ("rename", pt::RENAME),
    ("readlink", pt::READLINK),
    ("symlink", pt::SYMLINK),
];

/// Extended requests LIST may name, besides the plain ones.
const EXTENDED_NAMES: &[&str] = &["lsetstat", "copy-data", "hardlink", "posix-rename", "fsync"];

fn usage(why: &str) -> ! {
    eprintln!(
        "sftp-filter: {why}\nusage: sftp-filter [--ignore LIST] [--refuse LIST] \
         [--strip-times LIST] [--corrupt-writes] [--short-reads] [--no-reply-times] \
         [--check-file] [--check-file-bad-tail] [--log FILE] -- SERVER [ARGS...]"
    );
    std::process::exit(2);
}

fn name_list(arg: Option<String>) -> HashSet<String> {
    let arg = arg.unwrap_or_else(|| usage("a LIST is missing"));
    arg.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            let known = NAMES.iter().any(|(k, _)| *k == n) || EXTENDED_NAMES.contains(&n);
            if !known {
                usage(&format!("unknown request name {n:?}"));
            }
            n.to_string()
        })
        .collect()
}

struct Options {
    ignore: HashSet<String>,
    refuse: HashSet<String>,
    short_reads: bool,
    no_reply_times: bool,
    strip_times: HashSet<String>,
    log: Option<std::fs::File>,
    corrupt_writes: bool,
    check_file: Option<CheckFile>,
    server: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckFile {
    Honest,
    BadTail,
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let mut opts = Options {
        ignore: HashSet::new(),
        refuse: HashSet::new(),
        short_reads: false,
        no_reply_times: false,
        strip_times: HashSet::new(),
        log: None,
        corrupt_writes: false,
        check_file: None,
        server: Vec::new(),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ignore" => opts.ignore.extend(name_list(args.next())),
            "--refuse" => opts.refuse.extend(name_list(args.next())),
            "--short-reads" => opts.short_reads = true,
            "--no-reply-times" => opts.no_reply_times = true,
            "--strip-times" => opts.strip_times.extend(name_list(args.next())),
            "--corrupt-writes" => opts.corrupt_writes = true,
            "--check-file" => opts.check_file = Some(CheckFile::Honest),
            "--check-file-bad-tail" => opts.check_file = Some(CheckFile::BadTail),
            "--log" => {
                let path = args.next().unwrap_or_else(|| usage("--log needs a FILE"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap_or_else(|e| usage(&format!("cannot open {path}: {e}")));
                opts.log = Some(file);
            }
            "--" => {
                opts.server = args.collect();
                break;
            }
            other => usage(&format!("unknown option {other:?}")),
        }
    }
    if opts.server.is_empty() {
        usage("no server to run");
    }
    opts
}

/// Reads a big-endian u32 at `at`.
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Skips one SFTP string at `at`, returning its contents and where the next field starts.
fn string_at(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::try_from(u32_at(b, at)?).ok()?;
    let start = at + 4;
    let end = start.checked_add(len)?;
    Some((b.get(start..end)?, end))
}

/// One request as the proxy sees it: its name and where its attributes are, if it has any.
struct Parsed {
    id: u32,
    name: String,
    /// Byte range of the ATTRS field inside the packet.
    attrs: Option<(usize, usize, Attrs)>,
}

/// `packet` is type byte + body, without the length prefix.
fn parse(packet: &[u8]) -> Option<Parsed> {
    let ty = *packet.first()?;
    let id = u32_at(packet, 1)?;
    let body = 5;
    let (name, attrs_at) = match ty {
        pt::EXTENDED => {
            let (ext, next) = string_at(packet, body)?;
            let ext = String::from_utf8_lossy(ext);
            let short = ext.split('@').next().unwrap_or_default().to_string();
            let at = if short == "lsetstat" {
                Some(string_at(packet, next)?.1)
            } else {
                None
            };
            (short, at)
        }
        ty => {
            let name = NAMES
                .iter()
                .find(|(_, t)| *t == ty)
                .map(|(n, _)| n.to_string())
                .unwrap_or_else(|| format!("type-{ty}"));
            let at = match ty {
                // path, pflags, attrs
                pt::OPEN => Some(string_at(packet, body)?.1 + 4),
                // path or handle, attrs
                pt::MKDIR | pt::SETSTAT | pt::FSETSTAT => Some(string_at(packet, body)?.1),
                _ => None,
            };
            (name, at)
        }
    };
    let attrs = match attrs_at {
        Some(at) => {
            let (a, len) = Attrs::from_bytes(packet.get(at..)?).ok()?;
            Some((at, at + len, a))
        }
        None => None,
    };
    Some(Parsed { id, name, attrs })
}

fn describe(a: &Attrs) -> String {
    let perms = a
        .permissions
        .map_or("-".to_string(), |p| format!("{:o}", p & 0o7777));
    let owner = a
        .uid_gid
        .map_or("-".to_string(), |(u, g)| format!("{u}:{g}"));
    let mtime = a.mtime().map_or("-".to_string(), |m| m.to_string());
    format!("perms={perms} owner={owner} mtime={mtime}")
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let len = u32::try_from(packet.len()).expect("packets are far below 4 GiB");
    let mut out = Vec::with_capacity(4 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    out
}

fn status_reply(id: u32, code: u32) -> Vec<u8> {
    let mut p = vec![pt::STATUS];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    // Empty message and language tag.
    p.extend_from_slice(&[0; 8]);
    framed(&p)
}

/// A NAME or ATTRS reply (without its length prefix) with the times taken out of every
/// attributes field; `None` for other replies, or one that does not parse.
fn without_times(packet: &[u8]) -> Option<Vec<u8>> {
    let strip = |out: &mut Vec<u8>, attrs: &[u8]| -> Option<usize> {
        let (a, len) = Attrs::from_bytes(attrs).ok()?;
        let a = Attrs {
            atime_mtime: None,
            ..a
        };
        out.extend_from_slice(&a.to_bytes()?);
        Some(len)
    };
    let mut out = packet.get(..5)?.to_vec();
    match packet[0] {
        pt::ATTRS => {
            strip(&mut out, packet.get(5..)?)?;
        }
        pt::NAME => {
            let count = u32_at(packet, 5)?;
            out.extend_from_slice(&count.to_be_bytes());
            let mut at = 9;
            for _ in 0..count {
                let (_, after_name) = string_at(packet, at)?;
                let (_, after_long) = string_at(packet, after_name)?;
                out.extend_from_slice(packet.get(at..after_long)?);
                at = after_long + strip(&mut out, packet.get(after_long..)?)?;
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The answer to a `check-file-name` request (`packet` without its length prefix): SHA-256 of
/// each block of the asked range, or a status when the file cannot be read.
fn check_file_reply(packet: &[u8], id: u32, mode: CheckFile) -> Vec<u8> {
    const EXTENDED_REPLY: u8 = 201;
    const FX_NO_SUCH_FILE: u32 = 2;
    const FX_OP_UNSUPPORTED: u32 = 8;
    let status = |code: u32| {
        let mut p = vec![pt::STATUS];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        framed(&p)
    };
    let fields = (|| {
        let (_, at) = string_at(packet, 5)?;
        let (path, at) = string_at(packet, at)?;
        let (algorithms, at) = string_at(packet, at)?;
        let offset = u64::from(u32_at(packet, at)?) << 32 | u64::from(u32_at(packet, at + 4)?);
        let len = u64::from(u32_at(packet, at + 8)?) << 32 | u64::from(u32_at(packet, at + 12)?);
        let block = u32_at(packet, at + 16)?;
        Some((path.to_vec(), algorithms.to_vec(), offset, len, block))
    })();
    let Some((path, algorithms, offset, len, block)) = fields else {
        return status(FX_OP_UNSUPPORTED);
    };
    if !algorithms.split(|&b| b == b',').any(|a| a == b"sha256") {
        return status(FX_OP_UNSUPPORTED);
    }
    use std::os::unix::ffi::OsStrExt;
    let Ok(data) = std::fs::read(std::ffi::OsStr::from_bytes(&path)) else {
        return status(FX_NO_SUCH_FILE);
    };
    let start = (offset as usize).min(data.len());
    let end = if len == 0 {
        data.len()
    } else {
        (start + len as usize).min(data.len())
    };
    let range = &data[start..end];
    let block = if block == 0 {
        range.len().max(1)
    } else {
        block as usize
    };
    let mut p = vec![EXTENDED_REPLY];
    p.extend_from_slice(&id.to_be_bytes());
    for s in [&b"check-file"[..], b"sha256"] {
        p.extend_from_slice(&(s.len() as u32).to_be_bytes());
        p.extend_from_slice(s);
    }
    let blocks: Vec<&[u8]> = range.chunks(block).collect();
    for (i, b) in blocks.iter().enumerate() {
        let mut hash: [u8; 32] = sha2::Sha256::digest(b).into();
        if mode == CheckFile::BadTail && i + 1 == blocks.len() && end == data.len() {
            hash[0] ^= 1;
        }
        p.extend_from_slice(&hash);
    }
    framed(&p)
}

fn main() {
    let mut opts = parse_args();
    let mut child = Command::new(&opts.server[0])
        .args(&opts.server[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| usage(&format!("cannot run {}: {e}", opts.server[0])));
    let mut to_server = child.stdin.take().expect("piped stdin");
    let mut from_server = child.stdout.take().expect("piped stdout");
    let client_out = Arc::new(Mutex::new(std::io::stdout()));

    // Replies are passed on whole packets at a time, so the proxy's own replies never land in
    // the middle of one.
    let replies = {
        let client_out = client_out.clone();
        let no_times = opts.no_reply_times;
        std::thread::spawn(move || {
            let mut decoder = FrameDecoder::new(MAX_PACKET);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match decoder.next_packet() {
                    Ok(Some(p)) => {
                        let p = if no_times {
                            without_times(&p).unwrap_or_else(|| p.to_vec())
                        } else {
                            p.to_vec()
                        };
                        let mut out = client_out.lock().unwrap();
                        if out
                            .write_all(&framed(&p))
                            .and_then(|_| out.flush())
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => match from_server.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => decoder.push(&buf[..n]),
                    },
                    Err(e) => {
                        eprintln!("sftp-filter: bad reply from the server: {e}");
                        return;
                    }
                }
            }
        })
    };

    let mut decoder = FrameDecoder::new(MAX_PACKET);
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdin = std::io::stdin().lock();
    'requests: loop {
        let packet = match decoder.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    decoder.push(&buf[..n]);
                    continue;
                }
            },
            Err(e) => {
                eprintln!("sftp-filter: bad request from the client: {e}");
                break;
            }
        };
        let parsed = if packet[0] == pt::INIT {
            None
        } else {
            parse(&packet)
        };
        let mut forward = packet.to_vec();
        let mut action = "forwarded";
        // A WRITE ends with its data (after id, handle and offset): flip its last byte.
        let data_len = string_at(&forward, 5).and_then(|(_, at)| u32_at(&forward, at + 8));
        if opts.corrupt_writes && forward[0] == pt::WRITE && data_len.is_some_and(|n| n > 0) {
            *forward.last_mut().expect("non-empty") ^= 0xff;
            action = "forwarded corrupted";
        }
        // A READ is id, handle, offset and then the length asked for.
        let len_at = string_at(&forward, 5).map(|(_, at)| at + 8);
        if let (true, pt::READ, Some(at)) = (opts.short_reads, forward[0], len_at) {
            if let Some(len) = u32_at(&forward, at).filter(|&n| n > 1) {
                forward[at..at + 4].copy_from_slice(&(len / 2).to_be_bytes());
                action = "forwarded halved";
            }
        }
        if let Some(p) = &parsed {
            if let (Some(mode), "check-file-name") = (opts.check_file, p.name.as_str()) {
                let reply = check_file_reply(&packet, p.id, mode);
                let mut out = client_out.lock().unwrap();
                if out.write_all(&reply).and_then(|_| out.flush()).is_err() {
                    break 'requests;
                }
                continue;
            }
            if opts.ignore.contains(&p.name) {
                action = "ignored";
            } else if opts.refuse.contains(&p.name) {
                action = "refused";
            } else if let (true, Some((start, end, a))) =
                (opts.strip_times.contains(&p.name), &p.attrs)
            {
                if a.atime_mtime.is_some() {
                    let stripped = Attrs {
                        atime_mtime: None,
                        ..a.clone()
                    };
                    forward.splice(
                        *start..*end,
                        stripped.to_bytes().expect("decoded attributes fit again"),
                    );
                    action = "forwarded without times";
                }
            }
            if let Some(log) = &mut opts.log {
                let attrs = p.attrs.as_ref().map(|(_, _, a)| describe(a));
                let _ = writeln!(
                    log,
                    "{} {} {action}",
                    p.name,
                    attrs.as_deref().unwrap_or("-")
                );
            }
            if action == "ignored" || action == "refused" {
                const FX_OP_UNSUPPORTED: u32 = 8;
                let code = if action == "ignored" {
                    FX_OK
                } else {
                    FX_OP_UNSUPPORTED
                };
                let mut out = client_out.lock().unwrap();
                if out
                    .write_all(&status_reply(p.id, code))
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    break 'requests;
                }
                continue;
            }
        }
        if to_server.write_all(&framed(&forward)).is_err() {
            break;
        }
    }
    drop(to_server);
    let _ = replies.join();
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(1);
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ty: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![ty, 0, 0, 0, 9];
        for f in fields {
            p.extend_from_slice(f);
        }
        p
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    #[test]
    fn finds_attrs_of_open_setstat_and_lsetstat() {
        let a = Attrs {
            permissions: Some(0o104755),
            atime_mtime: Some((1, 2)),
            ..Default::default()
        };
        let open = packet(
            pt::OPEN,
            &[
                &string(b"f"),
                &0x1au32.to_be_bytes(),
                &a.to_bytes().unwrap(),
            ],
        );
        let p = parse(&open).unwrap();
        assert_eq!((p.id, p.name.as_str()), (9, "open"));
        assert_eq!(p.attrs.unwrap().2, a);
        let set = packet(pt::FSETSTAT, &[&string(b"h"), &a.to_bytes().unwrap()]);
        assert_eq!(parse(&set).unwrap().attrs.unwrap().2, a);
        let l = packet(
            pt::EXTENDED,
            &[
                &string(b"lsetstat@openssh.com"),
                &string(b"l"),
                &a.to_bytes().unwrap(),
            ],
        );
        let p = parse(&l).unwrap();
        assert_eq!(p.name, "lsetstat");
        assert_eq!(p.attrs.unwrap().2, a);
        assert!(parse(&packet(pt::OPEN, &[&string(b"f")])).is_none());
    }

    #[test]
    fn describes_special_bits_in_octal() {
        let a = Attrs {
            permissions: Some(0o104755),
            ..Default::default()
        };
        assert_eq!(describe(&a), "perms=4755 owner=- mtime=-");
    }
}

//! `--json`: one JSON object per line for scripts and monitoring, instead of rsync's text.
//!
//! Names are bytes on Unix and JSON strings are Unicode, so a name that is not valid UTF-8
//! is given twice: `path` with each invalid byte replaced by U+FFFD (for display), and
//! `path_base64` with the exact bytes (standard alphabet, padded). A name that is valid
//! UTF-8 has no `_base64` field and `path` is exact. The same goes for `symlink_target` and
//! `hardlink_to`.

use serde_json::{json, Map, Value};
use sync_engine::{Item, Kind, Listed, Stats, TreeError, UpdateType};

/// Adds `key` (and `key_base64` when needed) for a name.
fn put_name(obj: &mut Map<String, Value>, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            obj.insert(key.into(), Value::String(s.into()));
        }
        Err(_) => {
            obj.insert(
                key.into(),
                Value::String(String::from_utf8_lossy(bytes).into_owned()),
            );
            obj.insert(format!("{key}_base64"), Value::String(base64(bytes)));
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Device => "device",
        Kind::Special => "special",
        Kind::Unknown => "unknown",
    }
}

/// One itemized change.
pub fn item(item: &Item) -> String {
    let mut o = Map::new();
    o.insert("type".into(), "item".into());
    // The root of the transfer is "." as in rsync's output, not an empty name.
    put_name(
        &mut o,
        "path",
        if item.path.is_empty() {
            b"."
        } else {
            &item.path
        },
    );
    o.insert("kind".into(), kind_name(item.kind).into());
    o.insert("itemize".into(), item.code().into());
    let moved = matches!(item.update, UpdateType::Sent | UpdateType::Received);
    o.insert("created".into(), item.created.into());
    o.insert(
        "deleted".into(),
        (item.update == UpdateType::Deleting).into(),
    );
    o.insert("transferred".into(), moved.into());
    if let Some(m) = &item.meta {
        if item.update != UpdateType::Deleting {
            o.insert("size".into(), m.size.into());
            o.insert("mtime".into(), m.mtime.into());
            o.insert("mode".into(), format!("{:04o}", m.mode).into());
        }
    }
    // A dry run moves nothing: no byte counts then.
    if let (true, Some(d)) = (moved, item.elapsed) {
        o.insert("literal".into(), item.transferred.into());
        o.insert("matched".into(), item.matched.into());
        o.insert("seconds".into(), json!(d.as_secs_f64()));
    }
    if let Some(t) = &item.link_target {
        put_name(&mut o, "symlink_target", t);
    }
    if let Some(h) = &item.hard_link_to {
        put_name(&mut o, "hardlink_to", h);
    }
    Value::Object(o).to_string()
}

/// One entry of a listing (`--list-only`): its path (`.` for the root of a `dir/`
/// source), kind, size, mtime, permission bits and, for a symlink kept as one, its target.
pub fn entry(e: &Listed) -> String {
    let mut o = Map::new();
    o.insert("type".into(), "entry".into());
    put_name(
        &mut o,
        "path",
        if e.path.is_empty() { b"." } else { &e.path },
    );
    o.insert("kind".into(), kind_name(e.meta.kind).into());
    o.insert("size".into(), e.meta.size.into());
    o.insert("mtime".into(), e.meta.mtime.into());
    o.insert("mode".into(), format!("{:04o}", e.meta.mode).into());
    if let Some(t) = &e.symlink_target {
        put_name(&mut o, "symlink_target", t);
    }
    Value::Object(o).to_string()
}

/// An entry that could not be handled; the run goes on.
pub fn error(e: &TreeError) -> String {
    let mut o = Map::new();
    o.insert("type".into(), "error".into());
    o.insert("message".into(), e.to_string().into());
    o.insert("op".into(), e.op.into());
    put_name(
        &mut o,
        "path",
        if e.path.is_empty() { b"." } else { &e.path },
    );
    Value::Object(o).to_string()
}

/// A message of the given type (`warning`, or `error` for ones that end the run).
pub fn message(kind: &str, text: &str) -> String {
    json!({"type": kind, "message": text}).to_string()
}

/// The closing line: exit code, rsync's `--stats` counters and bytes on the wire.
pub fn summary(
    code: u8,
    stats: &Stats,
    sent: u64,
    received: u64,
    seconds: f64,
    dry_run: bool,
) -> String {
    let s = stats;
    json!({
        "type": "summary",
        "exit_code": code,
        "dry_run": dry_run,
        "seconds": seconds,
        "bytes_sent": sent,
        "bytes_received": received,
        "stats": {
            "files": s.files,
            "regular_files": s.regular_files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "devices": s.devices,
            "specials": s.specials,
            "created_files": s.created_files,
            "created_regular": s.created_regular,
            "created_dirs": s.created_dirs,
            "created_symlinks": s.created_symlinks,
            "deleted_files": s.deleted_files,
            "deleted_regular": s.deleted_regular,
            "deleted_dirs": s.deleted_dirs,
            "deleted_symlinks": s.deleted_symlinks,
            "transferred_files": s.transferred_files,
            "total_size": s.total_size,
            "transferred_size": s.transferred_size,
            "literal_data": s.literal_data,
            "matched_data": s.matched_data,
        },
    })
    .to_string()
}

/// Standard base64 with padding (RFC 4648), for names that are not UTF-8.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine::{ErrorKind, Meta, Side};

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn items_carry_names_sizes_and_bytes() {
        let meta = Meta {
            kind: Kind::File,
            size: 10,
            mtime: 1_700_000_000,
            atime: 0,
            mode: 0o644,
            uid: None,
            gid: None,
            dev_ino: None,
            nlink: 1,
            file_type: 0,
        };
        let mut i = Item::new(UpdateType::Sent, Kind::File, b"d/a \"q\"".to_vec()).with_meta(&meta);
        i.size = true;
        i.transferred = 4;
        i.matched = 6;
        i.elapsed = Some(std::time::Duration::from_millis(5));
        let v = parse(&item(&i));
        assert_eq!(v["type"], "item");
        assert_eq!(v["path"], "d/a \"q\"");
        assert!(v.get("path_base64").is_none());
        assert_eq!(v["itemize"], "<f.s.......");
        assert_eq!(v["kind"], "file");
        assert_eq!(v["size"], 10);
        assert_eq!(v["literal"], 4);
        assert_eq!(v["matched"], 6);
        assert_eq!(v["mode"], "0644");
        assert_eq!(v["transferred"], true);
        assert_eq!(v["deleted"], false);

        let gone = Item::new(UpdateType::Deleting, Kind::Dir, b"old".to_vec());
        let v = parse(&item(&gone));
        assert_eq!(v["deleted"], true);
        assert_eq!(v["kind"], "dir");
        assert!(v.get("literal").is_none());

        let root = Item::new(UpdateType::LocalChange, Kind::Dir, Vec::new());
        assert_eq!(parse(&item(&root))["path"], ".");
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_exactly_in_base64() {
        let name = b"caf\xe9/\xff".to_vec();
        let mut i = Item::new(UpdateType::LocalChange, Kind::Symlink, name.clone());
        i.link_target = Some(b"t\x80".to_vec());
        let v = parse(&item(&i));
        assert_eq!(v["path"], "caf\u{fffd}/\u{fffd}");
        assert_eq!(v["path_base64"], base64(&name));
        assert_eq!(v["symlink_target"], "t\u{fffd}");
        assert_eq!(v["symlink_target_base64"], "dIA=");
    }

    #[test]
    fn errors_and_summary_are_objects() {
        let e = TreeError {
            op: "open",
            side: Side::Local,
            path: b"x".to_vec(),
            cause: "Permission denied".into(),
            kind: ErrorKind::Other,
        };
        let v = parse(&error(&e));
        assert_eq!(v["type"], "error");
        assert_eq!(v["path"], "x");
        assert!(v["message"].as_str().unwrap().contains("Permission denied"));
        let stats = Stats {
            files: 3,
            total_size: 99,
            ..Default::default()
        };
        let v = parse(&summary(23, &stats, 5, 6, 1.5, false));
        assert_eq!(v["type"], "summary");
        assert_eq!(v["exit_code"], 23);
        assert_eq!(v["stats"]["files"], 3);
        assert_eq!(v["stats"]["total_size"], 99);
        assert_eq!(v["bytes_received"], 6);
    }
}

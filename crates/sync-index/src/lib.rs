//! What sftpsync last wrote to each remote file, kept between runs: the size and mtime it
//! set, a hash of the whole contents and the block signatures that delta transfer matches
//! against. A hint, never the truth: callers use an entry only when the server's current
//! size and mtime still equal what the entry says was written.
//!
//! Stored in one SQLite file (write-ahead log, so a crash loses at most the last batch and
//! never corrupts older entries). A file that SQLite cannot open or check is moved aside and
//! a new, empty index takes its place: an index is rebuilt, never trusted when damaged.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Bumped when the table layout changes; an index of another version starts over.
const SCHEMA_VERSION: i64 = 1;
/// Writes are grouped in transactions of this many, which makes 10,000 small puts cheap.
const BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("index {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What was written to one remote file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub size: u64,
    /// The mtime sftpsync set, in seconds.
    pub mtime: i64,
    /// BLAKE3 of the whole contents, if it was taken. Big files go without: their
    /// signature stands for their contents. Stored as an empty blob, which older versions
    /// read as no entry at all.
    pub file_hash: Option<[u8; 32]>,
    /// The delta crate's encoded block signature; empty when none was kept (small files).
    pub signature: Vec<u8>,
}

/// How the index came to be open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The existing file, checked.
    Existing,
    /// No file was there.
    Created,
    /// The file was damaged or of another version; it was moved to this path and a new one
    /// made.
    Rebuilt { damaged: PathBuf },
}

pub struct Index {
    path: PathBuf,
    db: Mutex<Db>,
}

struct Db {
    conn: Connection,
    /// Writes in the open transaction, if one is open.
    pending: usize,
}

impl Index {
    /// The usual place: `$XDG_STATE_HOME/sftpsync/index.sqlite`, else
    /// `~/.local/state/sftpsync/index.sqlite`. `None` when neither can be found.
    pub fn default_path() -> Option<PathBuf> {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/state"))
            })?;
        Some(state.join("sftpsync").join("index.sqlite"))
    }

    /// Opens the index at `path`, creating it (and its directory) if needed. A damaged file
    /// is moved aside and replaced; see [`Opened`].
    pub fn open(path: &Path) -> Result<(Index, Opened), IndexError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let existed = path.exists();
        match Self::open_checked(path) {
            Ok(index) => Ok((
                index,
                if existed {
                    Opened::Existing
                } else {
                    Opened::Created
                },
            )),
            Err(_) if existed => {
                let damaged = aside_name(path);
                std::fs::rename(path, &damaged).map_err(|source| IndexError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(side));
                }
                let index = Self::open_checked(path)?;
                Ok((index, Opened::Rebuilt { damaged }))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Index, IndexError> {
        let err = |source| IndexError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            )));
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                 server TEXT NOT NULL,
                 path BLOB NOT NULL,
                 size INTEGER NOT NULL,
                 mtime INTEGER NOT NULL,
                 file_hash BLOB NOT NULL,
                 signature BLOB NOT NULL,
                 PRIMARY KEY (server, path)
             ) WITHOUT ROWID;",
        )
        .map_err(err)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        match version {
            Some(SCHEMA_VERSION) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    params![SCHEMA_VERSION],
                )
                .map_err(err)?;
            }
            Some(other) => {
                return Err(err(rusqlite::Error::InvalidParameterName(format!(
                    "schema version {other}, expected {SCHEMA_VERSION}"
                ))))
            }
        }
        Ok(Index {
            path: path.to_path_buf(),
            db: Mutex::new(Db { conn, pending: 0 }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The entry for `path` on `server`, if one is kept and readable.
    pub fn get(&self, server: &str, path: &[u8]) -> Result<Option<Entry>, IndexError> {
        let db = self.db.lock().expect("index lock");
        db.conn
            .query_row(
                "SELECT size, mtime, file_hash, signature FROM files WHERE server = ?1 AND path = ?2",
                params![server, path],
                |r| {
                    let size: i64 = r.get(0)?;
                    let hash: Vec<u8> = r.get(2)?;
                    Ok((size, r.get::<_, i64>(1)?, hash, r.get::<_, Vec<u8>>(3)?))
                },
            )
            .optional()
            .map_err(|e| self.err(e))
            .map(|row| {
                // A row that does not make sense is treated as absent, not as an error.
                row.and_then(|(size, mtime, hash, signature)| {
                    Some(Entry {
                        size: u64::try_from(size).ok()?,
                        mtime,
                        file_hash: match hash.len() {
                            0 => None,
                            _ => Some(hash.try_into().ok()?),
                        },
                        signature,
                    })
                })
            })
    }

    /// Records what was just written to `path`, replacing any older entry.
    pub fn put(&self, server: &str, path: &[u8], entry: &Entry) -> Result<(), IndexError> {
        let size = i64::try_from(entry.size).unwrap_or(i64::MAX);
        self.write(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO files (server, path, size, mtime, file_hash, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    server,
                    path,
                    size,
                    entry.mtime,
                    entry.file_hash.as_ref().map_or(&[][..], |h| &h[..]),
                    &entry.signature
                ],
            )
            .map(|_| ())
        })
    }

    /// Forgets `path` and, if it was a directory, everything under it.
    pub fn remove_tree(&self, server: &str, path: &[u8]) -> Result<(), IndexError> {
        // Everything that starts with "path/": from "path/" up to, not including, "path0"
        // ('0' is the byte after '/').
        let mut from = path.to_vec();
        from.push(b'/');
        let mut to = path.to_vec();
        to.push(b'0');
        self.write(|conn| {
            conn.execute(
                "DELETE FROM files WHERE server = ?1 AND (path = ?2 OR (path >= ?3 AND path < ?4))",
                params![server, path, from, to],
            )
            .map(|_| ())
        })
    }

    fn write(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<()>) -> Result<(), IndexError> {
        let mut db = self.db.lock().expect("index lock");
        if db.pending == 0 {
            db.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.err(e))?;
        }
        db.pending += 1;
        f(&db.conn).map_err(|e| self.err(e))?;
        if db.pending >= BATCH {
            db.pending = 0;
            db.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Commits the writes so far. Also done when the index is dropped.
    pub fn flush(&self) -> Result<(), IndexError> {
        let mut db = self.db.lock().expect("index lock");
        if db.pending > 0 {
            db.pending = 0;
            db.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// `index.sqlite` -> `index.sqlite.damaged-<seconds since the epoch>`.
fn aside_name(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{secs}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, mtime: i64, fill: u8) -> Entry {
        Entry {
            size,
            mtime,
            file_hash: Some([fill; 32]),
            signature: vec![fill; 40],
        }
    }

    #[test]
    fn an_entry_may_go_without_a_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("i")).unwrap();
        let mut e = entry(1 << 30, 5, 4);
        e.file_hash = None;
        index.put("s", b"big", &e).unwrap();
        assert_eq!(index.get("s", b"big").unwrap(), Some(e));
    }

    #[test]
    fn put_get_replace_and_keys_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let (index, opened) = Index::open(&dir.path().join("state/index.sqlite")).unwrap();
        assert_eq!(opened, Opened::Created);
        index.put("a@h:22", b"dir/f", &entry(10, 5, 1)).unwrap();
        index.put("b@h:22", b"dir/f", &entry(20, 6, 2)).unwrap();
        assert_eq!(
            index.get("a@h:22", b"dir/f").unwrap(),
            Some(entry(10, 5, 1))
        );
        assert_eq!(
            index.get("b@h:22", b"dir/f").unwrap(),
            Some(entry(20, 6, 2))
        );
        index.put("a@h:22", b"dir/f", &entry(11, 7, 3)).unwrap();
        assert_eq!(
            index.get("a@h:22", b"dir/f").unwrap(),
            Some(entry(11, 7, 3))
        );
        assert_eq!(index.get("a@h:22", b"dir/g").unwrap(), None);
    }

    #[test]
    fn entries_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let (index, _) = Index::open(&path).unwrap();
            for i in 0..2500u64 {
                index
                    .put("s", format!("f{i}").as_bytes(), &entry(i, 1, 9))
                    .unwrap();
            }
        }
        let (index, opened) = Index::open(&path).unwrap();
        assert_eq!(opened, Opened::Existing);
        assert_eq!(index.get("s", b"f2499").unwrap(), Some(entry(2499, 1, 9)));
    }

    #[test]
    fn remove_tree_forgets_the_directory_and_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("i")).unwrap();
        for p in [&b"d"[..], b"d/a", b"d/sub/b", b"d0", b"d.x", b"dd/a", b"e"] {
            index.put("s", p, &entry(1, 1, 1)).unwrap();
        }
        index.remove_tree("s", b"d").unwrap();
        for gone in [&b"d"[..], b"d/a", b"d/sub/b"] {
            assert_eq!(index.get("s", gone).unwrap(), None);
        }
        for kept in [&b"d0"[..], b"d.x", b"dd/a", b"e"] {
            assert!(index.get("s", kept).unwrap().is_some());
        }
    }

    #[test]
    fn damaged_index_is_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        std::fs::write(&path, b"this is not an SQLite database, just bytes").unwrap();
        let (index, opened) = Index::open(&path).unwrap();
        let Opened::Rebuilt { damaged } = opened else {
            panic!("expected a rebuild, got {opened:?}");
        };
        assert!(damaged.exists());
        assert_eq!(index.get("s", b"f").unwrap(), None);
        index.put("s", b"f", &entry(1, 2, 3)).unwrap();
        index.flush().unwrap();
        assert_eq!(index.get("s", b"f").unwrap(), Some(entry(1, 2, 3)));
    }

    #[test]
    fn truncated_index_file_is_rebuilt_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let (index, _) = Index::open(&path).unwrap();
            for i in 0..3000u64 {
                index
                    .put("s", format!("f{i}").as_bytes(), &entry(i, 1, 7))
                    .unwrap();
            }
        }
        // Fold the log into the main file, then cut the file in the middle of a page.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        drop(conn);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2 + 100).unwrap();
        drop(f);
        let (index, opened) = Index::open(&path).unwrap();
        assert!(matches!(opened, Opened::Rebuilt { .. }), "{opened:?}");
        assert_eq!(index.get("s", b"f1").unwrap(), None);
    }

    #[test]
    fn default_path_follows_xdg_state_home() {
        // Read-only look at the rule; the environment is not changed by this test.
        if let Some(p) = Index::default_path() {
            assert!(p.ends_with("sftpsync/index.sqlite"), "{}", p.display());
        }
    }
}

//! The compatibility suite's results: what each server configuration did with each feature,
//! kept as JSON between a run of the suite (`e2e compat::`) and the table in
//! `docs/compatibility.md` that the `compat-table` binary generates from it.
//!
//! Each server's row is written as soon as that server's scenarios are done, into the one
//! results file, replacing the row of an earlier run; rows of servers not run this time stay,
//! with their own date. So the table always shows the latest run of every server.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// One column of the table: a scenario the suite runs against every server.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    pub key: &'static str,
    pub title: &'static str,
    /// What the scenario checks, for the table's legend.
    pub checks: &'static str,
}

/// The columns, in table order.
pub const FEATURES: &[Feature] = &[
    Feature {
        key: "push",
        title: "push",
        checks:
            "`-a` of a tree of files and directories to the server; contents as rsync -c sees them",
    },
    Feature {
        key: "pull",
        title: "pull",
        checks: "`-a` of the same tree from the server",
    },
    Feature {
        key: "resync",
        title: "re-sync",
        checks:
            "changed, grown and new files go across; then a run with nothing to do sends no file",
    },
    Feature {
        key: "delete",
        title: "delete",
        checks: "`--delete` removes files and directories gone from the source",
    },
    Feature {
        key: "delta_push",
        title: "delta push (copy-data)",
        checks: "a changed 2 MiB file is rebuilt from the old one on the server, only changes sent",
    },
    Feature {
        key: "delta_pull",
        title: "delta pull (check-file)",
        checks:
            "a changed 2 MiB file is pulled by fetching only the blocks whose server hashes differ",
    },
    Feature {
        key: "check_file",
        title: "check-file",
        checks: "`-c` on a pull compares by the server's own hash of the whole file",
    },
    Feature {
        key: "hard_links",
        title: "hard links",
        checks: "`-H`: names of one inode in the source share an inode on the server",
    },
    Feature {
        key: "symlinks",
        title: "symlinks",
        checks: "relative, absolute and dangling links keep their targets, pushed and pulled back",
    },
    Feature {
        key: "atomic_replace",
        title: "atomic replace",
        checks: "a changed file replaces the old one by one rename (posix-rename), no warning",
    },
    Feature {
        key: "mtime",
        title: "mtime kept",
        checks: "files and directories keep the source's modification times",
    },
    Feature {
        key: "mode",
        title: "mode kept",
        checks: "files and directories keep the source's permission bits",
    },
    Feature {
        key: "non_utf8",
        title: "non-UTF-8 names",
        checks: "Latin-1 and other non-UTF-8 byte names round-trip",
    },
    Feature {
        key: "big_file",
        title: "100 MiB file",
        checks: "one 100 MiB file pushed and pulled back, byte for byte",
    },
    Feature {
        key: "many_files",
        title: "1,000 small files",
        checks: "1,000 files in 10 directories pushed and pulled back",
    },
];

/// How a cell came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// The server offers the feature but it did not work.
    Fail,
    /// The server does not offer what the feature needs; sftpsync does without.
    NotApplicable,
}

/// Why a cell is not a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The server cannot do it, or does it its own way; sftpsync copes as said.
    Server,
    /// A bug of sftpsync's, not fixed yet.
    Ours,
    /// Being changed in sftpsync: the cell is expected to turn into a pass.
    Changing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotApplicable => "n/a",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        [Status::Pass, Status::Fail, Status::NotApplicable]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Server => "server limitation",
            Cause::Ours => "our bug",
            Cause::Changing => "expected to change",
        }
    }
}

/// One server × feature result.
#[derive(Debug, Clone)]
pub struct Cell {
    pub feature: &'static str,
    pub status: Status,
    /// What was seen: the scenario's own account.
    pub detail: String,
    /// For a cell that is not a pass: why, and what sftpsync does about it.
    pub note: Option<(Cause, String)>,
}

/// One server configuration's run.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    /// Position in the table.
    pub order: u32,
    pub title: String,
    pub version: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    pub seconds: f64,
    pub cells: Vec<Cell>,
}

impl Row {
    fn to_json(&self) -> Value {
        let cells: Map<String, Value> = self
            .cells
            .iter()
            .map(|c| {
                let mut cell = json!({ "status": c.status.as_str(), "detail": c.detail });
                if let Some((cause, note)) = &c.note {
                    cell["cause"] = json!(cause.as_str());
                    cell["note"] = json!(note);
                }
                (c.feature.to_owned(), cell)
            })
            .collect();
        json!({
            "key": self.key,
            "order": self.order,
            "title": self.title,
            "version": self.version,
            "date": self.date,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "cells": cells,
        })
    }
}

/// Puts `row` into the results file at `path` in place of an earlier row of the same server.
pub fn record_row(path: &Path, row: &Row) -> io::Result<()> {
    // The servers of one run finish in parallel threads of one test process.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut rows: Vec<Value> = match fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("rows").and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    rows.retain(|r| r.get("key").and_then(Value::as_str) != Some(row.key.as_str()));
    rows.push(row.to_json());
    rows.sort_by_key(|r| r.get("order").and_then(Value::as_u64).unwrap_or(u64::MAX));
    let features: Vec<Value> = FEATURES
        .iter()
        .map(|f| json!({ "key": f.key, "title": f.title, "checks": f.checks }))
        .collect();
    let doc = json!({ "features": features, "rows": rows });
    let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text + "\n")?;
    fs::rename(&tmp, path)
}

/// `docs/compatibility.md` from the results file's contents.
pub fn render(results: &str) -> Result<String, String> {
    let doc: Value = serde_json::from_str(results).map_err(|e| format!("not JSON: {e}"))?;
    let features = doc["features"]
        .as_array()
        .ok_or("no features in the results")?;
    let rows = doc["rows"].as_array().ok_or("no rows in the results")?;
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();

    let mut out = String::new();
    out.push_str(
        "# Compatibility with SFTP servers\n\n\
         <!-- Generated by `cargo run -p testkit --bin compat-table` from the suite's results \
         (target/compat-results.json). Do not edit by hand: rerun the suite instead. -->\n\n\
         Every cell below comes from the compatibility suite (`crates/sftpsync/tests/e2e/compat.rs`): \
         the real `sftpsync` binary against each server, started by the test kit on 127.0.0.1, \
         with local rsync judging the results where trees are compared. Rerun it, and regenerate \
         this page, with:\n\n\
         ```sh\nsudo ./scripts/compat.sh\n```\n\n\
         `yes`: the scenario passed. `no`: the server offers the feature but it does not work \
         there. `n/a`: the server does not offer what the feature needs. Every `no` and `n/a` has \
         a numbered note below saying whether it is the server's limitation or a bug of ours, and \
         what sftpsync does about it.\n\n",
    );
    out.push_str("| server |");
    for f in features {
        out.push_str(&format!(" {} |", text(&f["title"])));
    }
    out.push_str("\n|---|");
    for _ in features {
        out.push_str("---|");
    }
    out.push('\n');

    // One note per distinct explanation, however many cells it explains.
    let mut notes: Vec<Note> = Vec::new();
    for row in rows {
        let server = text(&row["title"]);
        out.push_str(&format!("| {server} |"));
        for f in features {
            let cell = &row["cells"][text(&f["key"]).as_str()];
            let status = cell["status"].as_str().and_then(Status::parse);
            let shown = match status {
                Some(Status::Pass) => "yes".to_owned(),
                None => "not run".to_owned(),
                Some(s) => {
                    let cause = cell["cause"].as_str().unwrap_or("unexplained").to_owned();
                    let why = cell["note"].as_str().unwrap_or("(no note)").to_owned();
                    let feature = text(&f["title"]);
                    let n = match notes.iter().position(|n| n.cause == cause && n.why == why) {
                        Some(i) => i,
                        None => {
                            notes.push(Note {
                                cause,
                                why,
                                seen: format!(
                                    "{server}, {feature}: {}",
                                    one_line(&text(&cell["detail"]))
                                ),
                                cells: Vec::new(),
                            });
                            notes.len() - 1
                        }
                    };
                    let cells = &mut notes[n].cells;
                    match cells.last_mut() {
                        Some((s, list)) if *s == server => list.push(feature),
                        _ => cells.push((server.clone(), vec![feature])),
                    }
                    let word = if s == Status::Fail { "no" } else { "n/a" };
                    format!("{word} ({})", n + 1)
                }
            };
            out.push_str(&format!(" {shown} |"));
        }
        out.push('\n');
    }

    out.push_str("\n## Notes\n\n");
    for (i, n) in notes.iter().enumerate() {
        out.push_str(&format!(
            "{}. **{}.** {}\n   - Cells: {}.\n   - Seen ({}).\n",
            i + 1,
            capitalized(&n.cause),
            n.why,
            n.cells
                .iter()
                .map(|(server, features)| format!("{server} ({})", features.join(", ")))
                .collect::<Vec<_>>()
                .join("; "),
            n.seen
        ));
    }

    out.push_str("\n## What each column checks\n\n");
    for f in features {
        out.push_str(&format!(
            "- **{}**: {}\n",
            text(&f["title"]),
            text(&f["checks"])
        ));
    }

    out.push_str("\n## The runs behind the table\n\n| server | version | run on | suite time |\n|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} s |\n",
            text(&row["title"]),
            text(&row["version"]),
            text(&row["date"]),
            row["seconds"].as_f64().unwrap_or(0.0)
        ));
    }
    Ok(out)
}

/// One explanation in the notes, and the cells it explains.
struct Note {
    cause: String,
    why: String,
    /// What the first of its cells saw.
    seen: String,
    /// Server and features, in table order.
    cells: Vec<(String, Vec<String>)>,
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `s` on one line, table- and list-safe, and short enough to read.
fn one_line(s: &str) -> String {
    let mut flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        flat = flat.chars().take(297).collect::<String>() + "...";
    }
    flat.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_replaced_and_rendered_with_notes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        let row = |key: &str, order, status| Row {
            key: key.into(),
            order,
            title: format!("server {key}"),
            version: "1.0".into(),
            date: "2026-01-02".into(),
            seconds: 1.25,
            cells: vec![Cell {
                feature: "push",
                status,
                detail: "what | happened".into(),
                note: (status != Status::Pass).then(|| (Cause::Server, "It cannot.".into())),
            }],
        };
        record_row(&path, &row("b", 2, Status::Pass)).unwrap();
        record_row(&path, &row("a", 1, Status::Pass)).unwrap();
        record_row(&path, &row("b", 2, Status::Fail)).unwrap();
        record_row(&path, &row("c", 3, Status::Fail)).unwrap();
        let md = render(&fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            md.contains("| server c | no (1) |"),
            "one note per explanation:\n{md}"
        );
        let a = md.find("| server a | yes |").expect("row a");
        let b = md.find("| server b | no (1) |").expect("row b, replaced");
        assert!(a < b, "rows in their order:\n{md}");
        assert!(
            md.contains(
                "1. **Server limitation.** It cannot.\n   - Cells: server b (push); server c (push).\n   - Seen \
                 (server b, push: what \\| happened).\n"
            ),
            "{md}"
        );
        assert!(md.contains("| pull |"), "every feature is a column");
        assert!(
            md.contains("| server a | 1.0 | 2026-01-02 | 1.3 s |"),
            "{md}"
        );
    }
}

//! What the user sees: itemized changes, -v names, errors, progress and the closing summary,
//! in rsync's formats.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sync_engine::{Item, Kind, Reporter, Stats, TreeError, UpdateType};

/// How much to say, from -v, -q, -i, --progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verbosity {
    pub verbose: u8,
    pub quiet: bool,
    pub itemize: u8,
    pub progress: bool,
}

pub struct TerminalReporter {
    v: Verbosity,
    out: Mutex<std::io::Stdout>,
    transfers: AtomicU64,
}

impl TerminalReporter {
    pub fn new(v: Verbosity) -> Self {
        TerminalReporter {
            v,
            out: Mutex::new(std::io::stdout()),
            transfers: AtomicU64::new(0),
        }
    }

    fn line(&self, s: &str) {
        let mut out = self.out.lock().unwrap();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }

    /// Whether rsync's `-v` (without `-i`) shows this item: transferred files and hard links,
    /// and directories, links and devices that were created or changed.
    fn shown_by_verbose(item: &Item) -> bool {
        match item.update {
            UpdateType::Sent | UpdateType::Received | UpdateType::HardLink => true,
            UpdateType::Deleting => true,
            UpdateType::LocalChange => true,
            UpdateType::NoUpdate => item.kind != Kind::File && item.is_change(),
        }
    }
}

impl Reporter for TerminalReporter {
    fn item(&self, item: &Item) {
        if self.v.quiet {
            return;
        }
        let name = format!("{}{}", item.display_name(), item.display_suffix());
        if self.v.itemize > 0 {
            if item.is_change() || self.v.itemize > 1 {
                self.line(&format!("{} {}", item.code(), name));
            }
        } else if self.v.verbose > 0 && Self::shown_by_verbose(item) {
            if item.update == UpdateType::Deleting {
                self.line(&format!("deleting {name}"));
            } else {
                self.line(&name);
            }
        }
        if self.v.progress && matches!(item.update, UpdateType::Sent | UpdateType::Received) {
            let n = self.transfers.fetch_add(1, Ordering::Relaxed) + 1;
            let elapsed = item.elapsed.map(|d| d.as_secs_f64()).unwrap_or(0.0);
            let rate = if elapsed > 0.0 {
                item.transferred as f64 / elapsed
            } else {
                item.transferred as f64
            };
            if self.v.verbose == 0 && self.v.itemize == 0 {
                self.line(&name);
            }
            self.line(&format!(
                "{:>15} 100% {:>10} {:>10} (xfr#{n})",
                group_digits(item.transferred),
                format_rate(rate),
                format_duration(elapsed)
            ));
        }
    }

    fn error(&self, error: &TreeError) {
        eprintln!("sftpsync: {error}");
    }

    fn warning(&self, message: &str) {
        if !self.v.quiet || message.starts_with("file has vanished") {
            eprintln!("sftpsync: {message}");
        }
    }

    fn info(&self, message: &str) {
        if !self.v.quiet && (self.v.verbose > 0 || self.v.itemize > 0) {
            self.line(message);
        }
    }

    fn verbose_info(&self, message: &str) {
        if !self.v.quiet && self.v.verbose > 0 {
            self.line(message);
        }
    }
}

/// 1234567 -> "1,234,567", as rsync prints sizes.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_rate(bytes_per_sec: f64) -> String {
    let units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let mut v = bytes_per_sec;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", units[u])
}

fn format_duration(secs: f64) -> String {
    let s = secs as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Sizes as rsync's -h levels print them: 0 plain, 1 with digit groups, 2+ with units.
pub fn size(n: u64, human: u8) -> String {
    match human {
        0 => n.to_string(),
        1 => group_digits(n),
        _ => {
            let units = ["", "K", "M", "G", "T"];
            let mut v = n as f64;
            let mut u = 0;
            while v >= 1024.0 && u + 1 < units.len() {
                v /= 1024.0;
                u += 1;
            }
            if u == 0 {
                n.to_string()
            } else {
                format!("{v:.2}{}", units[u])
            }
        }
    }
}

/// The `--stats` block.
pub fn stats_text(s: &Stats, sent: u64, received: u64, human: u8) -> String {
    let kinds = |reg: u64, dir: u64, link: u64, dev: u64, spec: u64| {
        let mut parts = Vec::new();
        for (n, label) in [
            (reg, "reg"),
            (dir, "dir"),
            (link, "link"),
            (dev, "dev"),
            (spec, "special"),
        ] {
            if n > 0 {
                parts.push(format!("{label}: {}", group_digits(n)));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let mut t = String::new();
    t.push_str(&format!(
        "Number of files: {}{}\n",
        group_digits(s.files),
        kinds(s.regular_files, s.dirs, s.symlinks, s.devices, s.specials)
    ));
    t.push_str(&format!(
        "Number of created files: {}{}\n",
        group_digits(s.created_files),
        kinds(s.created_regular, s.created_dirs, s.created_symlinks, 0, 0)
    ));
    t.push_str(&format!(
        "Number of deleted files: {}{}\n",
        group_digits(s.deleted_files),
        kinds(s.deleted_regular, s.deleted_dirs, s.deleted_symlinks, 0, 0)
    ));
    t.push_str(&format!(
        "Number of regular files transferred: {}\n",
        group_digits(s.transferred_files)
    ));
    t.push_str(&format!(
        "Total file size: {} bytes\n",
        size(s.total_size, human)
    ));
    t.push_str(&format!(
        "Total transferred file size: {} bytes\n",
        size(s.transferred_size, human)
    ));
    t.push_str(&format!(
        "Literal data: {} bytes\n",
        size(s.literal_data, human)
    ));
    t.push_str(&format!(
        "Matched data: {} bytes\n",
        size(s.matched_data, human)
    ));
    if s.checksums_from_index + s.checksums_read_remotely + s.checksums_by_server > 0 {
        // Ours: where --checksum found the remote side's hashes.
        t.push_str(&format!(
            "Checksums from the delta index: {}\nChecksums read from the server: {}\n\
             Checksums computed by the server: {}\n",
            group_digits(s.checksums_from_index),
            group_digits(s.checksums_read_remotely),
            group_digits(s.checksums_by_server)
        ));
    }
    if s.append_checks_from_index + s.append_check_data_read > 0 {
        // Ours: what --append-verify cost beyond rsync's tail.
        t.push_str(&format!(
            "Appends checked from the delta index: {}\nData read to check appends: {} bytes\n",
            group_digits(s.append_checks_from_index),
            size(s.append_check_data_read, human)
        ));
    }
    t.push_str(&format!("Total bytes sent: {}\n", size(sent, human)));
    t.push_str(&format!(
        "Total bytes received: {}\n",
        size(received, human)
    ));
    t
}

/// rsync's two closing lines for -v and --stats.
pub fn summary_text(s: &Stats, sent: u64, received: u64, secs: f64, human: u8) -> String {
    let rate = (sent + received) as f64 / secs.max(0.001);
    let moved = sent + received;
    let speedup = if moved > 0 {
        s.total_size as f64 / moved as f64
    } else {
        0.0
    };
    format!(
        "sent {} bytes  received {} bytes  {} bytes/sec\ntotal size is {}  speedup is {:.2}",
        size(sent, human),
        size(received, human),
        if human >= 1 {
            format!(
                "{}.{:02}",
                group_digits(rate as u64),
                (rate.fract() * 100.0) as u64
            )
        } else {
            format!("{rate:.2}")
        },
        size(s.total_size, human),
        speedup
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_like_rsync() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(size(2048, 2), "2.00K");
    }

    #[test]
    fn summary_has_rsync_shape() {
        let s = Stats {
            total_size: 9,
            ..Default::default()
        };
        let t = summary_text(&s, 2000, 100, 1.0, 1);
        assert!(
            t.starts_with("sent 2,000 bytes  received 100 bytes  2,100.00 bytes/sec\n"),
            "{t}"
        );
        assert!(t.ends_with("total size is 9  speedup is 0.00"), "{t}");
    }
}

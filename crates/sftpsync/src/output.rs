//! What the user sees: itemized changes, names, errors, progress and the closing summary, in
//! rsync's formats or as JSON lines; and the `--log-file`.
//!
//! Everything for stdout goes through one lock, so that a progress line left open with `\r`
//! is ended before anything else is printed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use sync_engine::path::{escape_name, escape_name_bytes, RelPath};
use sync_engine::{Item, Kind, Progress, Reporter, Skipped, Stats, TreeError, UpdateType};

use crate::format::{
    escape_controls, group_digits, human_dnum, human_num, now_stamp, progress_rate, progress_time,
    Context, OutFormat,
};
use crate::{hints, json};

/// What to show, after -v, -q, -i, --out-format, --info and the rest have been weighed.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    pub quiet: bool,
    pub json: bool,
    /// The format of a name line: `--out-format`, or what -i or -v stand for.
    pub format: OutFormat,
    /// rsync's NAME level: 1 names what changed, 2 (with `%i`) unchanged items too.
    pub name: u8,
    /// Show "deleting NAME" lines when the format does not itemize.
    pub deletions: bool,
    /// rsync's PROGRESS level: 1 per file, 2 one line for the whole transfer.
    pub progress: u8,
    pub human: u8,
    /// -v: notes such as skipped unsafe symlinks.
    pub verbose: bool,
    /// rsync's SKIP level (-vv): why files were passed over.
    pub skip: u8,
    /// rsync's REMOVE level above 0 (`-vv`, `--info=remove`): "sender removed NAME" lines.
    pub removals: bool,
    /// rsync's NONREG level above 0 (its default): "skipping non-regular file" lines.
    pub nonreg: bool,
    /// `%o`: "send" on a push or local copy, "recv" on a pull.
    pub op: &'static str,
    /// `%f`: what names an item's path on the sender, when one source makes it clear.
    pub sender_prefix: Option<Vec<u8>>,
    /// `-g`, for `%G`.
    pub preserve_group: bool,
    /// `--stderr=all`: what would go to stdout goes to stderr, except JSON lines, which are
    /// the data a `--json` caller reads.
    pub messages_to_stderr: bool,
}

/// `--log-file`: rsync's lines, each stamped with the time and our process id.
pub struct LogFile {
    file: Mutex<File>,
    format: OutFormat,
}

impl LogFile {
    pub fn open(path: &std::path::Path, format: OutFormat) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogFile {
            file: Mutex::new(file),
            format,
        })
    }

    pub fn line(&self, text: &str) {
        self.line_bytes(text.as_bytes());
    }

    /// A line whose names are bytes as they are: rsync escapes nothing in its log file.
    pub fn line_bytes(&self, text: &[u8]) {
        let mut line = format!("{} [{}] ", now_stamp(), std::process::id()).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: other processes logging to the same file do not split it.
        let _ = f.write_all(&line);
    }
}

/// Counters the progress displays share with the engine's hook.
#[derive(Default)]
struct Counts {
    /// Files whose final progress line was printed: rsync's `xfr#`.
    transfers: AtomicU64,
    /// Entries the walk reached, and those still being worked on: rsync's `to-chk`.
    entries: AtomicU64,
    working: AtomicU64,
    walk_done: AtomicBool,
}

impl Counts {
    /// `(xfr#N, to-chk=M/T)`; `ir-chk` while the walk still finds entries, as rsync says while
    /// its incremental file list grows.
    fn tail(&self) -> String {
        let chk = if self.walk_done.load(Ordering::Relaxed) {
            "to"
        } else {
            "ir"
        };
        format!(
            "(xfr#{}, {chk}-chk={}/{})",
            self.transfers.load(Ordering::Relaxed),
            self.working.load(Ordering::Relaxed),
            self.entries.load(Ordering::Relaxed)
        )
    }
}

/// A file whose bytes are moving.
struct Running {
    started: Instant,
    size: u64,
    done: u64,
    /// Its name line, as `item` will print it.
    header: Option<Vec<u8>>,
}

/// The shared state of stdout.
struct Screen {
    /// The file whose unfinished progress line is on screen (its name line above it).
    open: Option<RelPath>,
    /// The one file `--progress` follows while others move too. Files that fit in one
    /// chunk are never followed: their only line is the last one.
    focus: Option<RelPath>,
    /// When the followed file's line was last drawn.
    last_draw: Option<Instant>,
    running: HashMap<RelPath, Running>,
}

/// How often a file's progress line is redrawn.
const REDRAW: Duration = Duration::from_millis(500);

pub struct TerminalReporter {
    cfg: OutputConfig,
    screen: Mutex<Screen>,
    counts: Arc<Counts>,
    /// `--info=progress2`: drawn by indicatif, and only on a terminal.
    bar: Option<ProgressBar>,
    /// The bar was ended: it is left as it is, and output no longer steps around it.
    bar_done: AtomicBool,
    log: Option<LogFile>,
    /// Hints already given: each is added to the first error it fits, not to every one.
    hinted: Mutex<HashSet<&'static str>>,
}

impl TerminalReporter {
    pub fn new(cfg: OutputConfig, log: Option<LogFile>) -> Self {
        let counts = Arc::new(Counts::default());
        let bar = (cfg.progress >= 2 && !cfg.quiet).then(|| {
            // JSON owns stdout: the bar goes to stderr then, as with --stderr=all.
            let target = if cfg.json || cfg.messages_to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            };
            let bar = ProgressBar::with_draw_target(Some(0), target);
            let (human, counts) = (cfg.human, counts.clone());
            let line = move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let (pos, len) = (state.pos(), state.len().unwrap_or(0));
                let rate = state.per_sec();
                let eta = (rate > 0.0).then(|| len.saturating_sub(pos) as f64 / rate);
                let _ = write!(
                    w,
                    "{:>15} {:>3}% {} {} {}",
                    human_num(pos, human),
                    if len == 0 { 0 } else { percent(pos, len) },
                    progress_rate(rate),
                    progress_time(eta),
                    counts.tail()
                );
            };
            let style = ProgressStyle::with_template("{rsync}")
                .expect("a valid template")
                .with_key("rsync", line);
            bar.set_style(style);
            if !bar.is_hidden() {
                bar.enable_steady_tick(Duration::from_secs(1));
            }
            bar
        });
        TerminalReporter {
            cfg,
            screen: Mutex::new(Screen {
                open: None,
                focus: None,
                last_draw: None,
                running: HashMap::new(),
            }),
            counts,
            bar,
            bar_done: AtomicBool::new(false),
            log,
            hinted: Mutex::new(HashSet::new()),
        }
    }

    pub fn json(&self) -> bool {
        self.cfg.json
    }

    pub fn progress_level(&self) -> u8 {
        if self.cfg.quiet {
            0
        } else {
            self.cfg.progress
        }
    }

    pub fn log(&self, text: &str) {
        if let Some(log) = &self.log {
            log.line(text);
        }
    }

    /// The progress bar while it is being drawn.
    fn live_bar(&self) -> Option<&ProgressBar> {
        self.bar
            .as_ref()
            .filter(|_| !self.bar_done.load(Ordering::Relaxed))
    }

    fn screen(&self) -> MutexGuard<'_, Screen> {
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where lines for stdout go: stdout, or stderr with `--stderr=all`.
    fn out(&self) -> Box<dyn Write> {
        if self.cfg.messages_to_stderr && !self.cfg.json {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        }
    }

    /// Writes to stdout (see [`Self::out`]) under the screen lock, ending an open progress
    /// line first and keeping clear of the progress bar.
    fn write_out(&self, screen: &mut Screen, text: &[u8]) {
        let write = || {
            let mut out = self.out();
            if screen.open.is_some() {
                let _ = out.write_all(b"\n");
            }
            let _ = out.write_all(text);
            let _ = out.flush();
        };
        match self.live_bar() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
        screen.open = None;
    }

    fn write_err(&self, text: &str) {
        let mut screen = self.screen();
        if screen.open.take().is_some() {
            let mut out = self.out();
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        let write = || eprintln!("{text}");
        match self.live_bar() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// A line of human text for stdout (file list notes, the summary); none with `--json`.
    pub fn say(&self, text: &str) {
        self.say_bytes(text.as_bytes());
    }

    /// [`TerminalReporter::say`] for a line whose names may not be UTF-8 (`-8`).
    pub fn say_bytes(&self, text: &[u8]) {
        if self.cfg.json {
            return;
        }
        let mut screen = self.screen();
        self.write_out(&mut screen, &[text, b"\n"].concat());
    }

    /// An error message for stderr, not about one entry; a JSON error object too with
    /// `--json`.
    pub fn error_line(&self, text: &str) {
        self.write_err(&format!("sftpsync: {text}"));
        self.log(&format!("sftpsync: {text}"));
        if self.cfg.json {
            self.json_line(&json::message("error", text));
        }
    }

    /// One JSON object, on a line of its own.
    pub fn json_line(&self, line: &str) {
        let mut screen = self.screen();
        self.write_out(&mut screen, format!("{line}\n").as_bytes());
    }

    /// Ends the progress bar before the closing lines, leaving its last state on screen as
    /// rsync leaves its last progress line.
    pub fn finish_progress(&self) {
        if let Some(bar) = &self.bar {
            if !self.bar_done.swap(true, Ordering::Relaxed) && !bar.is_hidden() {
                bar.abandon();
                let mut out: Box<dyn Write> = if self.cfg.json || self.cfg.messages_to_stderr {
                    Box::new(std::io::stderr())
                } else {
                    Box::new(std::io::stdout())
                };
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
        }
        let mut screen = self.screen();
        if screen.open.is_some() {
            self.write_out(&mut screen, b"");
        }
    }

    /// Whether rsync's `-v` (without `%i`) shows this item: transferred files and hard links,
    /// deletions, and directories, links and devices that were created or changed.
    fn shown_by_verbose(item: &Item) -> bool {
        match item.update {
            UpdateType::Sent | UpdateType::Received | UpdateType::HardLink => true,
            UpdateType::Deleting => true,
            UpdateType::LocalChange => true,
            // A file copied from its --copy-dest/--link-dest twin shows, where it differs.
            UpdateType::NoUpdate => {
                (item.kind != Kind::File || item.alt_dest_update.is_some()) && item.is_change()
            }
        }
    }

    /// rsync's -vv names each non-directory it found unchanged ("NAME is uptodate"), where
    /// it sets attributes without itemizing.
    fn up_to_date(item: &Item) -> bool {
        // A directory made like its --link-dest twin is one too, to rsync.
        item.update == UpdateType::NoUpdate
            && (item.kind != Kind::Dir || item.alt_dest_update.is_some())
            && !item.is_change()
    }

    fn context(&self) -> Context<'_> {
        Context {
            op: self.cfg.op,
            sender_prefix: self.cfg.sender_prefix.as_deref(),
            preserve_group: self.cfg.preserve_group,
        }
    }

    /// The name line rsync prints for an item, if any.
    fn name_line(&self, item: &Item) -> Option<Vec<u8>> {
        let c = &self.cfg;
        if c.quiet || c.json {
            return None;
        }
        if c.format.itemizes() {
            let shown = item.is_change() || c.name >= 2;
            return (c.name >= 1 && shown).then(|| c.format.render(item, &self.context()));
        }
        if item.update == UpdateType::Deleting {
            return c
                .deletions
                .then(|| [&b"deleting "[..], &shown_name(item)].concat());
        }
        if c.name >= 2 && Self::up_to_date(item) {
            return Some([&shown_name(item)[..], b" is uptodate"].concat());
        }
        (c.name >= 1 && Self::shown_by_verbose(item))
            .then(|| c.format.render(item, &self.context()))
    }

    /// rsync's last progress line for a file: its size at 100%, its average rate, how long
    /// it took, and the counts.
    fn final_progress_line(&self, item: &Item, elapsed: Duration) -> String {
        self.counts.transfers.fetch_add(1, Ordering::Relaxed);
        let size = item.meta.as_ref().map_or(item.transferred, |m| m.size);
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { size as f64 / secs } else { 0.0 };
        format!(
            "\r{:>15} 100% {} {} {}\n",
            human_num(size, self.cfg.human),
            progress_rate(rate),
            progress_time(Some(secs)),
            self.counts.tail()
        )
    }

    fn log_item(&self, item: &Item) {
        let Some(log) = &self.log else {
            return;
        };
        let wanted = if log.format.itemizes() {
            item.is_change()
        } else {
            Self::shown_by_verbose(item)
        };
        if wanted {
            log.line_bytes(&log.format.render_raw(item, &self.context()));
        }
    }
}

/// An item's name as rsync's `-v` lines show it: escaped for the terminal, `.` for the top,
/// a `/` after a directory.
fn shown_name(item: &Item) -> Vec<u8> {
    let mut name = if item.path.is_empty() {
        b".".to_vec()
    } else {
        escape_name_bytes(&item.path)
    };
    if item.kind == Kind::Dir {
        name.push(b'/');
    }
    name
}

fn percent(done: u64, size: u64) -> u64 {
    if size == 0 {
        100
    } else {
        (u128::from(done) * 100 / u128::from(size)).min(100) as u64
    }
}

impl Reporter for TerminalReporter {
    fn item(&self, item: &Item) {
        self.log_item(item);
        if self.cfg.json {
            if item.is_change() || self.cfg.name >= 2 {
                self.json_line(&json::item(item));
            }
            return;
        }
        let moved = matches!(item.update, UpdateType::Sent | UpdateType::Received);
        let mut screen = self.screen();
        screen.running.remove(&item.path);
        if screen.focus.as_ref() == Some(&item.path) {
            screen.focus = None;
        }
        let name = self.name_line(item);
        let progress = match item.elapsed {
            Some(elapsed) if moved && self.cfg.progress == 1 && !self.cfg.quiet => {
                Some(self.final_progress_line(item, elapsed))
            }
            _ => None,
        };
        if let Some(bar) = self.live_bar() {
            if moved && item.elapsed.is_some() {
                self.counts.transfers.fetch_add(1, Ordering::Relaxed);
                bar.tick();
            }
        }
        match (name, progress) {
            (_, Some(p)) if screen.open.as_ref() == Some(&item.path) => {
                // Its name line is already above its progress line.
                screen.open = None;
                self.write_out(&mut screen, p.as_bytes());
            }
            (Some(n), p) => {
                let text = [&n[..], b"\n", p.unwrap_or_default().as_bytes()].concat();
                self.write_out(&mut screen, &text);
            }
            (None, Some(p)) => self.write_out(&mut screen, p.as_bytes()),
            (None, None) => {}
        }
    }

    fn error(&self, error: &TreeError) {
        let hint = hints::for_entry(error).filter(|h| {
            let mut given = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
            given.insert(*h)
        });
        let line = match hint {
            Some(hint) => format!("sftpsync: {error}; hint: {hint}"),
            None => format!("sftpsync: {error}"),
        };
        self.write_err(&line);
        self.log(&line);
        if self.cfg.json {
            self.json_line(&json::error(error));
        }
    }

    fn warning(&self, message: &str) {
        self.log(&format!("sftpsync: {message}"));
        if self.cfg.json {
            self.json_line(&json::message("warning", message));
        }
        if !self.cfg.quiet || message.starts_with("file has vanished") {
            self.write_err(&format!("sftpsync: {message}"));
        }
    }

    fn info(&self, message: &str) {
        if !self.cfg.quiet && !self.cfg.json && self.cfg.name > 0 {
            self.say(message);
        }
    }

    fn verbose_info(&self, message: &str) {
        if !self.cfg.quiet && !self.cfg.json && self.cfg.verbose {
            self.say(message);
        }
    }

    fn skip_note(&self, message: &str) {
        if !self.cfg.quiet && !self.cfg.json && self.cfg.skip > 0 {
            self.say(message);
        }
    }

    fn notice(&self, message: &str) {
        self.log(message);
        if self.cfg.quiet {
            return;
        }
        if self.cfg.json {
            self.json_line(&json::message("notice", message));
        } else {
            self.say(message);
        }
    }

    fn source_removed(&self, path: &RelPath) {
        if self.cfg.removals && !self.cfg.quiet && !self.cfg.json {
            self.say(&format!("sender removed {}", escape_name(path)));
        }
    }

    fn skipped(&self, why: Skipped, path: &RelPath) {
        // As rsync: stdout, no prefix. A skipped directory is told unless -q, and logged
        // even then; a non-regular file only at NONREG level 1 (not with -q).
        let (head, tail, shown): (&[u8], &[u8], bool) = match why {
            Skipped::Directory => (b"skipping directory ", b"", !self.cfg.quiet),
            Skipped::NonRegular if !self.cfg.nonreg => return,
            Skipped::NonRegular => (b"skipping non-regular file \"", b"\"", true),
        };
        let name: &[u8] = if path.is_empty() { b"." } else { path };
        if let Some(log) = &self.log {
            log.line_bytes(&[head, &escape_controls(name), tail].concat());
        }
        if self.cfg.json {
            if why == Skipped::NonRegular {
                let text = format!("skipping non-regular file \"{}\"", escape_name(name));
                self.json_line(&json::message("warning", &text));
            }
        } else if shown {
            self.say_bytes(&[head, &escape_name_bytes(name), tail].concat());
        }
    }

    fn wants_unchanged(&self) -> bool {
        self.cfg.name >= 2
    }
}

impl Progress for TerminalReporter {
    fn walked(&self, entries: u64, bytes: u64, working: u64) {
        self.counts.entries.store(entries, Ordering::Relaxed);
        self.counts.working.store(working, Ordering::Relaxed);
        if let Some(bar) = self.live_bar() {
            bar.set_length(bytes);
        }
    }

    fn walk_done(&self) {
        self.counts.walk_done.store(true, Ordering::Relaxed);
    }

    fn file_started(&self, item: &Item) {
        let header = if self.cfg.progress == 1 {
            self.name_line(item)
        } else {
            None
        };
        let size = item.meta.as_ref().map_or(0, |m| m.size);
        self.screen().running.insert(
            item.path.clone(),
            Running {
                started: Instant::now(),
                size,
                done: 0,
                header,
            },
        );
    }

    fn file_bytes(&self, path: &RelPath, done: u64, _size: u64) {
        let mut screen = self.screen();
        let Some(r) = screen.running.get_mut(path) else {
            return;
        };
        let moved = done.saturating_sub(r.done);
        r.done = done;
        if let Some(bar) = &self.bar {
            if !self.bar_done.load(Ordering::Relaxed) {
                bar.inc(moved);
            }
            return;
        }
        if self.cfg.progress != 1 || self.cfg.quiet || done >= r.size {
            return;
        }
        let (started, size) = (r.started, r.size);
        match &screen.focus {
            None => {
                screen.focus = Some(path.clone());
                screen.last_draw = None;
            }
            Some(f) if f != path => return,
            Some(_) => {}
        }
        // Unlike rsync, no line at a file's start: with many files moving at once, one that
        // is quickly done would otherwise leave its line among the others' names.
        let now = Instant::now();
        let since = screen.last_draw.unwrap_or(started);
        if now.duration_since(since) < REDRAW {
            return;
        }
        screen.last_draw = Some(now);
        let secs = now.duration_since(started).as_secs_f64();
        let rate = done as f64 / secs.max(0.001);
        let eta = (rate > 0.0).then(|| (size - done) as f64 / rate);
        let line = format!(
            "\r{:>15} {:>3}% {} {}  ",
            human_num(done, self.cfg.human),
            percent(done, size),
            progress_rate(rate),
            progress_time(eta)
        );
        if screen.open.as_ref() != Some(path) {
            let header = screen.running.get(path).and_then(|r| r.header.clone());
            let text = header.map(|h| [&h[..], b"\n"].concat()).unwrap_or_default();
            self.write_out(&mut screen, &text);
        }
        let mut out = self.out();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        screen.open = Some(path.clone());
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
    let size = |n| human_num(n, human);
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
    t.push_str(&format!("Total file size: {} bytes\n", size(s.total_size)));
    t.push_str(&format!(
        "Total transferred file size: {} bytes\n",
        size(s.transferred_size)
    ));
    t.push_str(&format!("Literal data: {} bytes\n", size(s.literal_data)));
    t.push_str(&format!("Matched data: {} bytes\n", size(s.matched_data)));
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
            size(s.append_check_data_read)
        ));
    }
    t.push_str(&format!("Total bytes sent: {}\n", size(sent)));
    t.push_str(&format!("Total bytes received: {}\n", size(received)));
    t
}

/// rsync's two closing lines for -v and --stats.
pub fn summary_text(s: &Stats, sent: u64, received: u64, secs: f64, human: u8) -> String {
    let moved = sent + received;
    let rate = moved as f64 / secs.max(0.001);
    let speedup = if moved > 0 {
        s.total_size as f64 / moved as f64
    } else {
        0.0
    };
    format!(
        "sent {} bytes  received {} bytes  {} bytes/sec\ntotal size is {}  speedup is {}",
        human_num(sent, human),
        human_num(received, human),
        human_dnum(rate, human),
        human_num(s.total_size, human),
        // Digit groups at most: a ratio has no unit.
        human_dnum(speedup, human.min(1))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = Stats {
            total_size: 5_000_013,
            ..Default::default()
        };
        let t = summary_text(&s, 152, 30, 0.5, 1);
        assert!(t.ends_with("speedup is 27,472.60"), "{t}");
        let t = summary_text(&s, 5_000_000, 87, 0.5, 2);
        assert!(
            t.starts_with("sent 5.00M bytes  received 87 bytes  10.00M"),
            "{t}"
        );
        assert!(t.contains("total size is 5.00M  speedup is 1.00"), "{t}");
    }

    #[test]
    fn progress_tail_counts_transfers_and_entries_left() {
        let c = Counts::default();
        c.transfers.store(2, Ordering::Relaxed);
        c.entries.store(6, Ordering::Relaxed);
        c.working.store(3, Ordering::Relaxed);
        assert_eq!(c.tail(), "(xfr#2, ir-chk=3/6)");
        c.walk_done.store(true, Ordering::Relaxed);
        assert_eq!(c.tail(), "(xfr#2, to-chk=3/6)");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(0, 0), 100);
    }
}

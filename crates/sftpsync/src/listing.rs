//! rsync's listing mode: `sftpsync SRC` (one operand) or `--list-only` prints the sources'
//! entries the way `rsync --list-only` does, one `ls -l`-like line each, and copies nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sftp_client::ClientConfig;
use sync_engine::listing::{ListSink, Listed};
use sync_engine::path::escape_name_bytes;
use sync_engine::{
    ErrorKind, Kind, LocalTree, Meta, ServerQuirks, SftpTree, SourceRoot, SyncOptions, Tree,
};

use crate::args::{CliArgs, Location};
use crate::format::{human_num, local_time, perms_text};
use crate::output::{self, TerminalReporter};
use crate::{exit, json, remap};

/// Lists the sources of `cli` (its destination, if any, is left alone as rsync leaves it).
/// Returns the exit code; `stats` and `wire` get what the listing counted and moved.
pub async fn run(
    cli: &CliArgs,
    opts: &SyncOptions,
    reporter: &Arc<TerminalReporter>,
    started: Instant,
    stats: &mut sync_engine::Stats,
    wire: &mut (u64, u64),
) -> u8 {
    if cli.relative || cli.files_from.is_some() {
        reporter.error_line(
            "listing with --relative (-R) or --files-from is not supported by sftpsync yet",
        );
        return exit::SYNTAX;
    }
    let remap = match super::source_remap(cli) {
        Ok(r) => r,
        Err(e) => {
            reporter.error_line(&e);
            return exit::SYNTAX;
        }
    };
    let remote = cli.sources.iter().find_map(|l| match l {
        Location::Remote { user, host, .. } => Some((user.clone(), host.clone())),
        Location::Local(_) => None,
    });
    let connection = match &remote {
        Some((user, host)) => {
            let config = ClientConfig {
                idle_timeout: cli.timeout.map(|s| Duration::from_secs(s.into())),
                connect_timeout: cli.contimeout.map(|s| Duration::from_secs(s.into())),
                ..ClientConfig::default()
            };
            let (verbose, quiet) = (cli.verbose, cli.quiet);
            let teller = reporter.clone();
            let say = move |line: String, noteworthy: bool| {
                if !quiet && (verbose > 1 || (verbose > 0 && noteworthy)) {
                    teller.say(&line);
                }
            };
            match super::connect(cli, user.as_deref(), host, config, say).await {
                Ok(c) => Some(c),
                Err(e) => {
                    return match super::connect_failure(e, false, cli.contimeout.is_some()) {
                        super::Attempt::Failed {
                            message,
                            hint,
                            code,
                            ..
                        } => {
                            reporter.error_line(&super::with_hint(&message, hint));
                            code
                        }
                        super::Attempt::Finished(code) => code,
                    };
                }
            }
        }
        None => None,
    };

    let quirks = Arc::new(ServerQuirks::default());
    let warn_reporter = reporter.clone();
    let warnings: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |m: String| {
        sync_engine::Reporter::warning(&*warn_reporter, &m);
    });
    let follow = cli.copy_links || cli.copy_unsafe_links;
    let mut sources = Vec::new();
    for loc in &cli.sources {
        let (dir, content) = super::split_source(&super::location_path(loc));
        let tree: Arc<dyn Tree> = match (loc, &connection) {
            (Location::Remote { .. }, Some(c)) => Arc::new(SftpTree::new(
                c.pool.clone(),
                dir.clone(),
                super::remote_label(&remote, &dir),
                quirks.clone(),
                warnings.clone(),
            )),
            _ => Arc::new(LocalTree::new(super::local_root(&dir)).following_links(follow)),
        };
        let tree: Arc<dyn Tree> = match &remap {
            Some(r) => Arc::new(remap::RemapTree::new(tree, r.clone())),
            None => tree,
        };
        sources.push(SourceRoot { tree, content });
    }

    if let (Some(header), false) = (
        super::flist_header(cli, opts, remote.is_some()),
        reporter.json(),
    ) {
        reporter.say(header);
    }
    let mut sink = Lines {
        reporter: reporter.clone(),
        human: cli.human_readable,
        quiet: cli.quiet,
    };
    let outcome = sync_engine::listing::list(&sources, opts, &**reporter, &mut sink).await;
    drop(sources);
    *stats = outcome.stats.clone();
    let lost = connection
        .as_ref()
        .and_then(|c| super::session_loss(&c.pool));
    if let Some(c) = connection {
        let (s, r) = c.close(lost.is_some()).await;
        wire.0 += s;
        wire.1 += r;
    }
    if let Some(e) = &outcome.fatal {
        reporter.error_line(&e.to_string());
        return match (e.kind, &lost) {
            (ErrorKind::Connection, Some(sftp_client::SftpError::Timeout { .. })) => exit::TIMEOUT,
            (ErrorKind::Connection, _) => exit::STREAM,
            (ErrorKind::Unsupported, _) => exit::SYNTAX,
            _ => exit::FILE_IO,
        };
    }
    let stats_level = super::stats_level(cli);
    if stats_level > 1 {
        reporter.say(&format!(
            "\n{}",
            output::stats_text(&outcome.stats, wire.0, wire.1, cli.human_readable).trim_end()
        ));
    }
    if stats_level > 0 {
        reporter.say(&format!(
            "\n{}",
            output::summary_text(
                &outcome.stats,
                wire.0,
                wire.1,
                started.elapsed().as_secs_f64(),
                cli.human_readable
            )
        ));
    }
    if outcome.errors > 0 {
        exit::PARTIAL
    } else {
        0
    }
}

/// Prints each entry as it comes: rsync's line, or a JSON object with `--json`.
struct Lines {
    reporter: Arc<TerminalReporter>,
    human: u8,
    quiet: bool,
}

impl ListSink for Lines {
    fn entry(&mut self, entry: &Listed) {
        if self.reporter.json() {
            self.reporter.json_line(&json::entry(entry));
        } else if !self.quiet {
            self.reporter.say_bytes(&line(entry, self.human));
        }
    }
}

/// One line of rsync's listing: type and permissions, size (in a column as wide as rsync
/// makes it: 14 with digit groups or units, 11 with `--no-h`), local mtime, name, and
/// `-> TARGET` for a symlink kept as one. Names are escaped as rsync escapes them; with
/// `-8` the line may hold bytes that are not UTF-8.
pub fn line(entry: &Listed, human: u8) -> Vec<u8> {
    let m = &entry.meta;
    let t = local_time(m.mtime);
    let width = if human > 0 { 14 } else { 11 };
    let mut s = format!(
        "{}{} {:>width$} {:04}/{:02}/{:02} {:02}:{:02}:{:02} ",
        type_letter(m),
        perms_text(m.mode),
        human_num(m.size, human),
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
    )
    .into_bytes();
    if entry.path.is_empty() {
        s.push(b'.');
    } else {
        s.extend_from_slice(&escape_name_bytes(&entry.path));
    }
    if let Some(target) = &entry.symlink_target {
        s.extend_from_slice(b" -> ");
        s.extend_from_slice(&escape_name_bytes(target));
    }
    s
}

/// `ls -l`'s first letter. Devices and special files are told apart by the type bits the
/// side reported; without them a device shows as a character device and a special file as
/// a FIFO, the more common of each pair.
fn type_letter(m: &Meta) -> char {
    const S_IFMT: u32 = 0o170000;
    match (m.kind, m.file_type & S_IFMT) {
        (Kind::Dir, _) => 'd',
        (Kind::Symlink, _) => 'l',
        (Kind::Device, 0o060000) => 'b',
        (Kind::Device, _) => 'c',
        (Kind::Special, 0o140000) => 's',
        (Kind::Special, _) => 'p',
        (Kind::File | Kind::Unknown, _) => '-',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[u8], kind: Kind, size: u64, mode: u32, file_type: u32) -> Listed {
        Listed {
            path: path.to_vec(),
            meta: Meta {
                kind,
                size,
                mtime: 0,
                atime: 0,
                mode,
                uid: None,
                gid: None,
                dev_ino: None,
                nlink: 1,
                file_type,
            },
            symlink_target: None,
        }
    }

    /// The line without its time, which depends on the time zone.
    fn columns(l: &[u8]) -> (String, String) {
        let l = std::str::from_utf8(l).unwrap();
        let (head, rest) = l.split_at(l.find(" 19").or_else(|| l.find(" 20")).unwrap());
        (head.to_string(), rest[21..].to_string())
    }

    #[test]
    fn lines_have_rsync_columns() {
        let e = entry(b"", Kind::Dir, 4096, 0o755, 0o040000);
        assert_eq!(columns(&line(&e, 1)).0, "drwxr-xr-x          4,096");
        assert_eq!(columns(&line(&e, 0)).0, "drwxr-xr-x        4096");
        assert_eq!(columns(&line(&e, 2)).0, "drwxr-xr-x          4.10K");
        assert_eq!(columns(&line(&e, 3)).0, "drwxr-xr-x          4.00K");
        assert_eq!(columns(&line(&e, 1)).1, ".");
        let e = entry(b"sub/f", Kind::File, 1_234_567, 0o4755, 0o100000);
        assert_eq!(
            columns(&line(&e, 1)),
            ("-rwsr-xr-x      1,234,567".into(), "sub/f".into())
        );
        let mut e = entry(b"l\xe9", Kind::Symlink, 5, 0o777, 0);
        e.symlink_target = Some(b"a\tb".to_vec());
        assert_eq!(
            columns(&line(&e, 1)),
            ("lrwxrwxrwx              5".into(), "l\\#351 -> a\tb".into())
        );
    }

    #[test]
    fn device_and_special_letters_follow_the_type_bits() {
        let letter = |kind, bits| type_letter(&entry(b"x", kind, 0, 0o644, bits).meta);
        assert_eq!(letter(Kind::Device, 0o060000), 'b');
        assert_eq!(letter(Kind::Device, 0o020000), 'c');
        assert_eq!(letter(Kind::Special, 0o140000), 's');
        assert_eq!(letter(Kind::Special, 0o010000), 'p');
        assert_eq!(letter(Kind::File, 0o100000), '-');
    }
}

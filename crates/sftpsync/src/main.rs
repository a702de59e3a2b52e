//! The `sftpsync` binary: rsync's command line turned into a sync over SFTP, with rsync's
//! output and exit codes. The only place that prints or exits.

mod args;
mod channels;
mod config;
mod debug_log;
mod doctor;
mod format;
mod hints;
mod json;
mod listing;
mod local_links;
mod manual;
mod output;
mod remap;
mod size_arg;
mod temps;
mod throttle;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use args::{CliArgs, DeleteTiming, FilterArg, Location, Parsed};
use sftp_client::{ClientConfig, SftpError};
use sync_engine::filter::ListKind;
use sync_engine::{
    AppendMode, ChannelPool, DeleteWhen, ErrorKind, FilterRules, Kind, LocalTree, MissingArgs,
    RemoteIndex, RemoveSource, ServerQuirks, SftpTree, SourceContent, SourceRoot, SyncJob,
    SyncOptions, TopEntry, Tree, TreeError,
};

use output::{LogFile, OutputConfig, TerminalReporter};
use temps::{TempLog, TrackingTree};

/// rsync's exit codes, by the names its man page gives them.
mod exit {
    pub const SYNTAX: u8 = 1;
    pub const FILE_SELECT: u8 = 3;
    pub const FILE_IO: u8 = 11;
    pub const STREAM: u8 = 12;
    pub const PARTIAL: u8 = 23;
    pub const VANISHED: u8 = 24;
    pub const MAX_DELETE: u8 = 25;
    pub const TIMEOUT: u8 = 30;
    pub const CONNECT_TIMEOUT: u8 = 35;
    pub const SSH_FAILED: u8 = 255;
    /// Every code a sync exits with, for the man page.
    pub const ALL: [u8; 11] = [
        0,
        SYNTAX,
        FILE_SELECT,
        FILE_IO,
        STREAM,
        PARTIAL,
        VANISHED,
        MAX_DELETE,
        TIMEOUT,
        CONNECT_TIMEOUT,
        SSH_FAILED,
    ];
}

fn describe_code(code: u8) -> &'static str {
    match code {
        exit::SYNTAX => "syntax or usage error",
        exit::FILE_SELECT => "errors selecting input/output files, dirs",
        exit::FILE_IO => "error in file IO",
        exit::STREAM => "error in SFTP protocol data stream",
        exit::PARTIAL => "some files/attrs were not transferred (see previous errors)",
        exit::VANISHED => "some files vanished before they could be transferred",
        exit::MAX_DELETE => "the --max-delete limit stopped deletions",
        exit::TIMEOUT => "timeout in data send/receive",
        exit::CONNECT_TIMEOUT => "timeout waiting for daemon connection",
        _ => "unexplained error",
    }
}

/// rsync's closing error line.
fn closing_error(code: u8) -> String {
    format!("sftpsync error: {} (code {code})", describe_code(code))
}

/// Prints rsync's closing error line and gives the exit code.
fn fail(code: u8) -> ExitCode {
    eprintln!("{}", closing_error(code));
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "doctor") {
        return doctor_main(&argv[2..]);
    }
    // Not in the option table: it is for packagers (see the Makefile), not for syncs.
    if let Some(what) = argv
        .get(1)
        .and_then(|a| a.to_str()?.strip_prefix("--generate="))
    {
        return generate_main(what);
    }
    let parsed = match args::parse(argv.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sftpsync: {}", e.message());
            return fail(e.exit_code() as u8);
        }
    };
    let cli = match parsed {
        Parsed::Help(text) | Parsed::Version(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Run(cli) => cli,
    };
    let cli = match with_config(&argv, *cli) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("sftpsync: {e}");
            return fail(exit::SYNTAX);
        }
    };
    sync_engine::path::set_utf8_output(locale_is_utf8());
    sync_engine::path::set_eight_bit_output(cli.eight_bit_output);
    // rsync's -vvv turns on its debug flags; the SFTP requests are ours.
    debug_log::install(
        cli.debug_sftp
            .unwrap_or(u8::from(cli.verbose >= 3 && !cli.quiet)),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sftpsync: cannot start the async runtime: {e}");
            return fail(exit::FILE_IO);
        }
    };
    ExitCode::from(runtime.block_on(run(cli)))
}

/// The command line with the config file's settings for its server put before it: the
/// options are parsed again with the file's first, so the command line's win.
fn with_config(argv: &[OsString], cli: CliArgs) -> Result<CliArgs, String> {
    let Some((path, explicit)) = (!cli.no_config).then(config::location).flatten() else {
        return Ok(cli);
    };
    let host = cli
        .sources
        .iter()
        .chain(cli.dest.as_ref())
        .find_map(|l| match l {
            Location::Remote { host, .. } => Some(String::from_utf8_lossy(host).into_owned()),
            Location::Local(_) => None,
        });
    let settings = config::load(&path, explicit, host.as_deref())?;
    let mut cli = if settings.args.is_empty() {
        cli
    } else {
        let words = argv[..1]
            .iter()
            .chain(&settings.args)
            .chain(&argv[1..])
            .cloned();
        match args::parse(words) {
            Ok(Parsed::Run(cli)) => *cli,
            Ok(_) => {
                return Err(format!(
                    "config file {}: args may not ask for --help or --version",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("config file {}: {}", path.display(), e.message())),
        }
    };
    if cli.rsh.is_none() && std::env::var_os("RSYNC_RSH").is_none() {
        cli.rsh = settings.rsh.map(OsString::from);
    }
    cli.ssh_args = settings.ssh_args;
    Ok(cli)
}

/// `sftpsync --generate=WHAT`: the man page or a shell's completions on stdout.
fn generate_main(what: &str) -> ExitCode {
    let Some(target) = manual::Target::from_name(what) else {
        eprintln!(
            "sftpsync: --generate takes {}, not {what:?}",
            manual::Target::NAMES
        );
        return fail(exit::SYNTAX);
    };
    let mut out = std::io::stdout().lock();
    match manual::generate(target, &mut out).and_then(|()| std::io::Write::flush(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sftpsync: cannot write the {what} output: {e}");
            fail(exit::FILE_IO)
        }
    }
}

/// `sftpsync doctor ...`: explains a server instead of syncing.
fn doctor_main(words: &[OsString]) -> ExitCode {
    let a = match doctor::parse(words) {
        Ok(doctor::Request::Run(a)) => a,
        Ok(doctor::Request::Help) => {
            print!("{}", doctor::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sftpsync: {e}");
            return ExitCode::from(doctor::EXIT_USAGE);
        }
    };
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => ExitCode::from(runtime.block_on(doctor::run(a))),
        Err(e) => {
            eprintln!("sftpsync: cannot start the async runtime: {e}");
            fail(exit::FILE_IO)
        }
    }
}

/// Whether the locale's character set is UTF-8, which decides (as in rsync, which asks
/// the C library after `setlocale(LC_CTYPE, "")`) whether bytes above 0x7f that form
/// characters may be printed as they are. A locale that is not installed is the C locale,
/// whose set is ASCII. Other sets are taken as ASCII too: their high-bit bytes are escaped
/// (`-8` prints them).
fn locale_is_utf8() -> bool {
    // SAFETY: newlocale copies what it needs from the empty string and the environment; the
    // locale it returns is only read by nl_langinfo_l, whose answer is copied before the
    // locale is freed. No global locale state is touched.
    unsafe {
        let locale = libc::newlocale(libc::LC_CTYPE_MASK, c"".as_ptr(), std::ptr::null_mut());
        if locale.is_null() {
            return false;
        }
        let codeset = libc::nl_langinfo_l(libc::CODESET, locale);
        let utf8 = !codeset.is_null() && {
            let name = std::ffi::CStr::from_ptr(codeset).to_bytes();
            name.eq_ignore_ascii_case(b"UTF-8") || name.eq_ignore_ascii_case(b"UTF8")
        };
        libc::freelocale(locale);
        utf8
    }
}

fn build_options(cli: &CliArgs) -> anyhow::Result<SyncOptions> {
    let mut filters = FilterRules::new();
    for f in &cli.filters {
        match f {
            FilterArg::Exclude(p) => filters.add_exclude(p),
            FilterArg::Include(p) => filters.add_include(p),
            FilterArg::Rule(r) => filters
                .add_filter_rule(r)
                .with_context(|| format!("bad filter rule {:?}", String::from_utf8_lossy(r)))?,
            FilterArg::ExcludeFrom(path) => filters
                .add_from_file(ListKind::Exclude, path, cli.from0)
                .with_context(|| format!("failed to read exclude file {}", path.display()))?,
            FilterArg::IncludeFrom(path) => filters
                .add_from_file(ListKind::Include, path, cli.from0)
                .with_context(|| format!("failed to read include file {}", path.display()))?,
        }
    }
    if cli.cvs_exclude {
        // As rsync: after the user's rules wherever -C stood, .cvsignore files first.
        for rule in [&b":C"[..], b"-C"] {
            filters
                .add_filter_rule(rule)
                .context("cannot read the CVS ignore lists")?;
        }
    }
    if cli.delete_excluded {
        filters = filters.without_receiver_excludes();
    }
    if cli.backup && cli.delete && !cli.delete_excluded {
        // As rsync: earlier backups are not deleted as extraneous; rsync protects those
        // beside their files, and we also a backup directory inside the destination, which
        // rsync would back up into itself on every run.
        let rule = match backup_in_tree(cli) {
            Some(dir) => [&b"P /"[..], &dir, b"/"].concat(),
            None if cli.backup_dir.is_none() => [&b"P *"[..], &backup_suffix(cli)].concat(),
            None => Vec::new(),
        };
        if !rule.is_empty() {
            filters
                .add_filter_rule(&rule)
                .context("bad --backup-dir or --suffix for a filter rule")?;
        }
    }
    if let Some(dir) = cli.partial_dir.as_ref().filter(|d| !d.starts_with(b"/")) {
        // As rsync: a perishable exclude after the user's rules, so partial files are never
        // sent and not deleted before the copy that resumes from them. An absolute DIR is
        // outside the tree and needs none.
        let rule = [&b"-p "[..], dir, b"/"].concat();
        filters
            .add_filter_rule(&rule)
            .context("bad --partial-dir for a filter rule")?;
    }
    Ok(SyncOptions {
        recursive: cli.recursive,
        links: cli.links,
        copy_links: cli.copy_links,
        copy_unsafe_links: cli.copy_unsafe_links,
        safe_links: cli.safe_links,
        perms: cli.perms,
        executability: cli.executability,
        times: cli.times,
        atimes: cli.atimes,
        sparse: cli.sparse,
        omit_dir_times: cli.omit_dir_times,
        omit_link_times: cli.omit_link_times,
        owner: cli.owner,
        group: cli.group,
        devices: cli.devices,
        specials: cli.specials,
        hard_links: cli.hard_links,
        dry_run: cli.dry_run,
        delete: cli.delete,
        delete_when: match cli.delete_when {
            Some(DeleteTiming::Before) => DeleteWhen::Before,
            None | Some(DeleteTiming::During) => DeleteWhen::During,
            Some(DeleteTiming::Delay) => DeleteWhen::Delay,
            Some(DeleteTiming::After) => DeleteWhen::After,
        },
        force: cli.force,
        remove_source: match cli.remove_source {
            0 => RemoveSource::Off,
            1 => RemoveSource::Synced,
            _ => RemoveSource::Sent,
        },
        delay_updates: cli.delay_updates,
        ignore_errors: cli.ignore_errors,
        max_delete: cli.max_delete.map(u64::from),
        checksum: cli.checksum,
        partial: cli.partial,
        partial_dir: cli.partial_dir.clone(),
        append: match cli.append {
            0 => AppendMode::Off,
            1 => AppendMode::Append,
            _ => AppendMode::Verify,
        },
        inplace: cli.inplace,
        trust_index: cli.trust_index,
        verify: cli.verify,
        // As rsync: whole files between local paths, deltas to and from a server.
        whole_file: cli
            .whole_file
            .unwrap_or(cli.direction() == args::Direction::Local),
        size_only: cli.size_only,
        ignore_times: cli.ignore_times,
        max_size: cli.max_size,
        min_size: cli.min_size,
        update: cli.update,
        ignore_existing: cli.ignore_existing,
        existing: cli.existing,
        modify_window: cli.modify_window.unwrap_or(0).max(0) as i64,
        dirs: cli.dirs,
        no_implied_dirs: cli.no_implied_dirs,
        prune_empty_dirs: cli.prune_empty_dirs,
        missing_args: if cli.delete_missing_args {
            MissingArgs::Delete
        } else if cli.ignore_missing_args {
            MissingArgs::Ignore
        } else {
            MissingArgs::Error
        },
        filters,
    })
}

/// What `--chmod` and `--chown` do to the sources' attributes; `None` when neither is given.
/// Names are looked up here, once: a name that does not resolve is a usage error.
fn source_remap(cli: &CliArgs) -> Result<Option<Arc<remap::Remap>>, String> {
    let mut r = remap::Remap {
        umask: remap::current_umask(),
        ..Default::default()
    };
    for text in &cli.chmod {
        r.chmod.extend(remap::parse_chmod(text)?);
    }
    if let Some((user, group)) = &cli.chown {
        r.uid = user
            .as_deref()
            .map(|u| remap::resolve_id(u, false))
            .transpose()?;
        r.gid = group
            .as_deref()
            .map(|g| remap::resolve_id(g, true))
            .transpose()?;
    }
    Ok((!r.is_empty()).then(|| Arc::new(r)))
}

/// The backup suffix in force: `--suffix`, else rsync's default.
fn backup_suffix(cli: &CliArgs) -> Vec<u8> {
    match (&cli.suffix, &cli.backup_dir) {
        (Some(s), _) => s.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => b"~".to_vec(),
    }
}

/// A `--backup-dir` that lies inside the destination tree, as a path in it: relative, and
/// not climbing out with `..`. Any other is a tree of its own.
fn backup_in_tree(cli: &CliArgs) -> Option<Vec<u8>> {
    let dir = cli.backup_dir.as_ref()?;
    let parts: Vec<&[u8]> = dir
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if dir.starts_with(b"/") || parts.is_empty() || parts.contains(&&b".."[..]) {
        return None;
    }
    Some(parts.join(&b'/'))
}

/// A `--files-from` list: each entry's path below the source directory, and whether it
/// ended in `/` (the directory's entries come too). Lines end in LF, CR LF or CR, or NUL
/// with `--from0`; blank lines and lines starting with `#` or `;` are skipped. Leading
/// slashes go, and `..` is resolved so that no entry rises above the source directory.
fn files_from_entries(data: &[u8], from0: bool) -> Vec<(Vec<u8>, bool)> {
    let records: Vec<&[u8]> = if from0 {
        data.split(|&b| b == 0).collect()
    } else {
        data.split(|&b| b == b'\n' || b == b'\r').collect()
    };
    let mut out = Vec::new();
    for r in records {
        if r.is_empty() || r.starts_with(b"#") || r.starts_with(b";") {
            continue;
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for p in r.split(|&b| b == b'/') {
            match p {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            continue;
        }
        out.push((parts.join(&b'/'), r.ends_with(b"/")));
    }
    out
}

/// A `-R` operand split into the directory its tree is rooted at and the path recreated
/// below the destination: after a `/./` marker, else the whole path (from `/` when it is
/// absolute). A `..` in the recreated part is refused, as rsync refuses it.
fn split_relative(path: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (root, rel) = match path.windows(3).position(|w| w == b"/./") {
        Some(0) => (b"/".to_vec(), &path[3..]),
        Some(i) => (path[..i].to_vec(), &path[i + 3..]),
        None if path.starts_with(b"/") => (b"/".to_vec(), &path[1..]),
        None => (Vec::new(), path),
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for p in rel.split(|&b| b == b'/') {
        match p {
            b"" | b"." => {}
            b".." => {
                return Err(format!(
                    "found \"..\" in the relative path {} (put a /./ after it)",
                    sync_engine::path::escape_name(path)
                ))
            }
            p => parts.push(p),
        }
    }
    Ok((root, parts.join(&b'/')))
}

/// Channels opened when --channels is not given.
const DEFAULT_CHANNELS: usize = 8;

/// The channels of a run: the first one connected, the rest arriving in the background.
struct Connection {
    pool: Arc<ChannelPool>,
    more: tokio::task::JoinHandle<channels::Connector>,
}

impl Connection {
    /// Closes every channel, the multiplexed ones before the master they ride on, after the
    /// extra channels have finished opening (if a transfer ever asked for them). Returns
    /// bytes sent and received on all of them.
    ///
    /// `lost`: the session died. Channels still opening are then dropped (their processes
    /// are killed), not waited for: on a dead network one may hang in connect for minutes.
    async fn close(self, lost: bool) -> (u64, u64) {
        let connector = if self.pool.is_demanded() && !lost {
            self.more.await.ok()
        } else {
            self.more.abort();
            // Finished before the abort: keep it (and its socket directory) until the end.
            self.more.await.ok()
        };
        let all = self.pool.all();
        let totals = all
            .iter()
            .map(|c| c.wire_bytes())
            .fold((0, 0), |(s, r), (a, b)| (s + a, r + b));
        futures::future::join_all(all.iter().skip(1).map(|c| c.shutdown())).await;
        all[0].shutdown().await;
        drop(connector);
        totals
    }
}

/// The delta index in the user's state directory. Trouble with it costs speed, not
/// correctness: it is reported and the run goes on without it.
fn open_index(reporter: &TerminalReporter) -> Option<Arc<sync_index::Index>> {
    let warn = |m: String| sync_engine::Reporter::warning(reporter, &m);
    let Some(path) = sync_index::Index::default_path() else {
        warn("no state directory (neither XDG_STATE_HOME nor HOME is set): changed files are sent whole".into());
        return None;
    };
    match sync_index::Index::open(&path) {
        Ok((index, opened)) => {
            if let sync_index::Opened::Rebuilt { damaged } = opened {
                warn(format!(
                    "the delta index {} was damaged; it was moved to {} and a new one started",
                    path.display(),
                    damaged.display()
                ));
            }
            Some(Arc::new(index))
        }
        Err(e) => {
            warn(format!("{e}; changed files are sent whole"));
            None
        }
    }
}

/// Names the server in the delta index: the remote shell command and login as given, or the
/// local sftp-server program. Entries are used only when the file's size and mtime still
/// match, so a name shared by two servers costs a whole-file send, never wrong data.
fn server_identity(cli: &CliArgs, user: Option<&[u8]>, host: &[u8]) -> String {
    if let Some(server) = &cli.sftp_server {
        return format!("sftp-server {}", server.display());
    }
    let rsh = cli
        .rsh
        .clone()
        .or_else(|| std::env::var_os("RSYNC_RSH"))
        .unwrap_or_else(|| OsString::from("ssh"));
    let mut id = String::from_utf8_lossy(rsh.as_bytes()).into_owned();
    id.push(' ');
    if let Some(u) = user {
        id.push_str(&String::from_utf8_lossy(u));
        id.push('@');
    }
    id.push_str(&String::from_utf8_lossy(host));
    id
}

/// Connects to the server named in the remote operands: one channel now, the others opened
/// while the sync already runs on the first.
async fn connect(
    cli: &CliArgs,
    user: Option<&[u8]>,
    host: &[u8],
    config: ClientConfig,
    say: impl Fn(String, bool) + Send + Sync + 'static,
) -> Result<Connection, SftpError> {
    let wanted = cli.channels.map(|n| n as usize).unwrap_or(DEFAULT_CHANNELS);
    let route = route(cli, user, host)?;
    let (first, connector) =
        channels::open(route, wanted, config, &|line| say(line, false)).await?;
    let pool = Arc::new(ChannelPool::new(first));
    let more = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.demanded().await;
            let (clients, failed) = connector.open_more(wanted - 1).await;
            let opened = 1 + clients.len();
            for c in clients {
                pool.add(c);
            }
            pool.settle();
            let noteworthy = failed.is_some()
                || (opened > 1
                    && matches!(
                        connector.sharing,
                        channels::Sharing::SeparateConnections
                            | channels::Sharing::SeparateForServer
                    ));
            say(
                describe_channels(opened, &connector.sharing, failed.as_ref()),
                noteworthy,
            );
            connector
        }
    });
    Ok(Connection { pool, more })
}

/// How to reach the server, with `-z` applied where the remote shell can compress.
fn route(cli: &CliArgs, user: Option<&[u8]>, host: &[u8]) -> Result<channels::Route, SftpError> {
    let route = channels::Route::new(cli.rsh.as_deref(), cli.sftp_server.as_deref(), user, host)?
        .with_ssh_args(&cli.ssh_args);
    Ok(if cli.compress {
        route.compressed().unwrap_or_else(|r| r)
    } else {
        route
    })
}

/// What -v says when `--compress-level` or `--compress-choice` was given: ssh compresses
/// with zlib at its own level, so they only decided whether there is compression at all.
fn compression_note(cli: &CliArgs) -> Option<String> {
    let mut given = Vec::new();
    if let Some(level) = cli.compress_level {
        given.push(format!("--compress-level={level}"));
    }
    if let Some(choice) = &cli.compress_choice {
        given.push(format!("--compress-choice={choice}"));
    }
    (!given.is_empty()).then(|| {
        format!(
            "{} not applied: ssh compresses the connection with zlib at its own level",
            given.join(" and ")
        )
    })
}

/// What -v says about the channels.
fn describe_channels(
    n: usize,
    sharing: &channels::Sharing,
    failed: Option<&(usize, String)>,
) -> String {
    let how = match sharing {
        _ if n == 1 => "",
        channels::Sharing::Multiplexed => " sharing one SSH connection",
        channels::Sharing::SeparateConnections => {
            " over separate connections (the remote shell does not multiplex)"
        }
        channels::Sharing::SeparateForServer => {
            " over separate connections (this server mixes up channels that share one)"
        }
        channels::Sharing::LocalServers => " to local sftp-server processes",
    };
    let mut s = format!(
        "using {n} SFTP channel{}{how}",
        if n == 1 { "" } else { "s" }
    );
    if let Some((failed, why)) = failed {
        s.push_str(&format!("; {failed} more could not be opened: {why}"));
    }
    s
}

/// Splits an operand path into (directory the tree is rooted at, what is sent from it).
fn split_source(path: &[u8]) -> (Vec<u8>, SourceContent) {
    let trimmed_dot = path == b"." || path.ends_with(b"/.");
    if path.is_empty() || path.ends_with(b"/") || trimmed_dot {
        return (path.to_vec(), SourceContent::Contents);
    }
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/".to_vec(), SourceContent::Named(path[1..].to_vec())),
        Some(i) => (
            path[..i].to_vec(),
            SourceContent::Named(path[i + 1..].to_vec()),
        ),
        None => (Vec::new(), SourceContent::Named(path.to_vec())),
    }
}

/// `path` without its trailing slashes (but `/` stays `/`).
fn trim_slashes(path: &[u8]) -> &[u8] {
    let mut p = path;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    p
}

/// The directory prefixes of `path`, shortest first: `a/b/c` gives `a`, `a/b`, `a/b/c`.
fn path_prefixes(path: &[u8]) -> Vec<&[u8]> {
    let path = trim_slashes(path);
    if path.is_empty() || path == b"/" || path == b"." {
        return Vec::new();
    }
    let mut prefixes: Vec<&[u8]> = (1..path.len())
        .filter(|&i| path[i] == b'/' && path[i - 1] != b'/')
        .map(|i| &path[..i])
        .collect();
    prefixes.push(path);
    prefixes
}

/// `--mkpath`: makes the missing directories of `path` on one side, each a tree root of
/// `tree_at`, and says how many it made (would make, in a dry run). Symlinks to directories
/// on the way are followed, as mkdir(2) follows them for rsync.
async fn make_path(
    tree_at: impl Fn(&[u8]) -> Arc<dyn Tree>,
    path: &[u8],
    dry_run: bool,
) -> Result<u32, TreeError> {
    let prefixes = path_prefixes(path);
    let at = |e: TreeError, p: &[u8]| TreeError {
        path: p.to_vec(),
        ..e
    };
    // From the end: usually all of it is there already, and one look says so.
    let mut first_missing = prefixes.len();
    for (i, p) in prefixes.iter().enumerate().rev() {
        match tree_at(p).stat(&Vec::new()).await.map_err(|e| at(e, p))? {
            Some(m) if m.kind == Kind::Dir => break,
            Some(_) => {
                return Err(TreeError {
                    op: "mkpath",
                    side: tree_at(p).side(),
                    path: p.to_vec(),
                    cause: "Not a directory (20)".into(),
                    kind: ErrorKind::Other,
                })
            }
            None => first_missing = i,
        }
    }
    let missing = &prefixes[first_missing..];
    if !dry_run {
        for p in missing {
            // 0777 as rsync asks: the umask (ours, or the server's) takes its part.
            tree_at(p)
                .mkdir(&Vec::new(), 0o777)
                .await
                .map_err(|e| at(e, p))?;
        }
    }
    Ok(missing.len() as u32)
}

fn local_root(dir: &[u8]) -> PathBuf {
    if dir.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(OsString::from_vec(dir.to_vec()))
    }
}

/// `--link-dest` for a local destination: a tree rooted where the destination and the
/// directories meet, so the links are made within it.
fn local_link_dirs(cli: &CliArgs, dest_dir: &[u8]) -> anyhow::Result<Arc<sync_engine::LinkDest>> {
    let cwd = std::env::current_dir().context("the current directory")?;
    let dirs: Vec<&std::path::Path> = cli
        .link_dest
        .iter()
        .map(|d| std::path::Path::new(std::ffi::OsStr::from_bytes(d)))
        .collect();
    let dest = local_root(dest_dir);
    let found =
        local_links::resolve(&cwd, &dest, &dirs).with_context(|| format!("{}", dest.display()))?;
    let tree = Arc::new(LocalTree::new(found.root));
    Ok(Arc::new(sync_engine::LinkDest::new(
        cli.alt_dest,
        tree,
        found.dest,
        found.dirs,
    )))
}

fn location_path(loc: &Location) -> Vec<u8> {
    match loc {
        Location::Local(p) => p.as_os_str().as_bytes().to_vec(),
        Location::Remote { path, .. } => path.clone(),
    }
}

/// Files worked on at once per channel. Each small file costs about three round trips
/// (open; write+fsetstat+fsync+close; rename), so this many in flight keeps a channel busy at
/// tens of milliseconds of latency while staying far below OpenSSH's open-handle limit.
const TASKS_PER_CHANNEL: usize = 128;

/// Reconnects after a lost connection when `--retries` is not given.
const DEFAULT_RETRIES: u32 = 3;

/// The longest wait before a reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before reconnect number `n` (1-based): 1 s, 2 s, 4 s ... capped.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// How one attempt at the sync ended.
enum Attempt {
    /// The run is over, well or badly; this is its exit code.
    Finished(u8),
    /// The connection could not be made or was lost. `retry`: a new connection may help.
    Failed {
        message: String,
        /// What to do about it, shown when no retry is left.
        hint: Option<&'static str>,
        code: u8,
        retry: bool,
    },
}

/// Everything an attempt needs that stays the same across reconnects.
struct Plan<'a> {
    cli: &'a CliArgs,
    /// The delta index, when the destination is remote and one could be opened.
    index: Option<Arc<sync_index::Index>>,
    opts: SyncOptions,
    dest_loc: Location,
    remote: Option<(Option<Vec<u8>>, Vec<u8>)>,
    reporter: Arc<TerminalReporter>,
    config: ClientConfig,
    /// Temp files of earlier attempts that may still be on the destination.
    temps: Arc<TempLog>,
    /// `--chmod` and `--chown`, applied to what the sources show.
    remap: Option<Arc<remap::Remap>>,
    /// `--files-from`: the list, or where on the server to read it.
    files_from: Option<FilesFrom>,
    started: Instant,
}

/// A `--files-from` list, read before connecting when it is local.
enum FilesFrom {
    Listed(Vec<(Vec<u8>, bool)>),
    /// `[HOST]:PATH`: read over SFTP once connected.
    Remote(Vec<u8>),
}

/// Reads `--files-from` when it is local (a file, or `-` for standard input); a list on the
/// server is only located here. Errors are one line.
fn files_from(cli: &CliArgs) -> Result<Option<FilesFrom>, (u8, String)> {
    let Some(spec) = &cli.files_from else {
        return Ok(None);
    };
    let remote_host = cli
        .sources
        .iter()
        .chain(cli.dest.as_ref())
        .find_map(|l| match l {
            Location::Remote { host, .. } => Some(host.clone()),
            Location::Local(_) => None,
        });
    let colon = spec.iter().position(|&b| b == b':');
    let slash = spec.iter().position(|&b| b == b'/');
    if let Some(c) = colon.filter(|&c| slash.is_none_or(|s| c < s)) {
        let (host, path) = (&spec[..c], &spec[c + 1..]);
        return match &remote_host {
            Some(h)
                if host.is_empty()
                    || host == &h[..]
                    || host.ends_with(&[b"@", &h[..]].concat()) =>
            {
                Ok(Some(FilesFrom::Remote(path.to_vec())))
            }
            _ => Err((
                exit::SYNTAX,
                format!(
                    "--files-from={}: the host must be the remote end of the transfer",
                    String::from_utf8_lossy(spec)
                ),
            )),
        };
    }
    let data = if spec == b"-" {
        let mut d = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut d).map(|_| d)
    } else {
        std::fs::read(OsString::from_vec(spec.clone()))
    };
    match data {
        Ok(d) => Ok(Some(FilesFrom::Listed(files_from_entries(&d, cli.from0)))),
        Err(e) => Err((
            exit::FILE_IO,
            format!(
                "failed to open files-from file {}: {e}",
                String::from_utf8_lossy(spec)
            ),
        )),
    }
}

/// A whole file from a tree, for a `--files-from` list on the server.
async fn read_whole(tree: &dyn Tree, path: &[u8]) -> Result<Vec<u8>, sync_engine::TreeError> {
    let mut reader = tree.open_read(&path.to_vec(), 0, 0).await?;
    let mut data = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        data.extend_from_slice(&chunk);
    }
    reader.close().await?;
    Ok(data)
}

/// The output options after rsync's rules: explicit `--info` levels win, the others follow
/// -v, -i, --out-format and --progress; -q silences all of it.
fn output_config(cli: &CliArgs) -> OutputConfig {
    let info = |flag: &str, default: u8| {
        if cli.quiet {
            0
        } else {
            cli.info.get(flag).unwrap_or(default)
        }
    };
    let out_format = cli.out_format.as_ref().filter(|f| !f.is_empty());
    let format: &[u8] = match out_format {
        Some(f) => f,
        None if cli.itemize_changes > 0 => b"%i %n%L",
        None => b"%n%L",
    };
    let names_by_default = if cli.verbose > 1 || cli.itemize_changes > 1 {
        2
    } else {
        u8::from(cli.verbose > 0 || cli.itemize_changes > 0 || out_format.is_some() || cli.progress)
    };
    let progress = match info("progress", u8::from(cli.progress)) {
        // JSON owns stdout: per-file lines would break it.
        1 if cli.json => 0,
        p => p,
    };
    let sender_prefix = match (cli.direction(), &cli.sources[..]) {
        (args::Direction::Pull, _) => None,
        (_, [one]) => {
            let (mut dir, _) = split_source(&location_path(one));
            if !dir.is_empty() && !dir.ends_with(b"/") {
                dir.push(b'/');
            }
            Some(dir)
        }
        _ => None,
    };
    OutputConfig {
        quiet: cli.quiet,
        json: cli.json,
        format: format::OutFormat::parse(format),
        name: info("name", names_by_default),
        deletions: info("del", u8::from(cli.verbose > 0)) > 0 || out_format.is_some(),
        progress,
        human: cli.human_readable,
        verbose: cli.verbose > 0 && !cli.quiet,
        skip: info("skip", u8::from(cli.verbose > 1)),
        removals: info("remove", u8::from(cli.verbose > 1)) > 0,
        nonreg: info("nonreg", 1) > 0,
        op: if cli.direction() == args::Direction::Pull {
            "recv"
        } else {
            "send"
        },
        sender_prefix,
        preserve_group: cli.group,
        messages_to_stderr: cli.messages_to_stderr,
    }
}

/// rsync's FLIST level: 1 for -v, 2 for --progress.
fn flist_level(cli: &CliArgs) -> u8 {
    if cli.quiet {
        return 0;
    }
    let default = if cli.progress {
        2
    } else {
        u8::from(cli.verbose > 0)
    };
    cli.info.get("flist").unwrap_or(default)
}

/// rsync's line before its file list, at FLIST level 1 and up: with incremental recursion
/// (`-r`, unless `-m`, `--delete-before` or `--delete-after` needs the whole list first)
/// "sending incremental file list" (on a pull "receiving ..."); when the whole list is built
/// first but has directories in it (`-d`, `--files-from`, listing, or `-r` with those)
/// "building file list ... done" (on a pull "receiving file list ... done"); none when only
/// the files given are sent.
fn flist_header(cli: &CliArgs, opts: &SyncOptions, pull: bool) -> Option<&'static str> {
    if flist_level(cli) == 0 {
        return None;
    }
    match (opts.incremental_list(), cli.recursive || cli.dirs, pull) {
        (true, _, false) => Some("sending incremental file list"),
        (true, _, true) => Some("receiving incremental file list"),
        (false, true, false) => Some("building file list ... done"),
        (false, true, true) => Some("receiving file list ... done"),
        (false, false, _) => None,
    }
}

/// rsync's STATS level: 1 for the two closing lines (-v), 2 for --stats.
fn stats_level(cli: &CliArgs) -> u8 {
    if cli.quiet {
        return 0;
    }
    let default = if cli.stats {
        2
    } else {
        u8::from(cli.verbose > 0)
    };
    cli.info.get("stats").unwrap_or(default)
}

/// Opens `--log-file`; trouble with it is reported and the run goes on without it, as in
/// rsync.
fn open_log(cli: &CliArgs) -> Option<LogFile> {
    let path = cli.log_file.as_ref()?;
    let format = cli.log_file_format.as_deref().unwrap_or(b"%i %n%L");
    match LogFile::open(path, format::OutFormat::parse(format)) {
        Ok(log) => Some(log),
        Err(e) => {
            eprintln!("sftpsync: failed to open log-file {}: {e}", path.display());
            eprintln!("sftpsync: ignoring the --log-file setting");
            None
        }
    }
}

async fn run(cli: CliArgs) -> u8 {
    let started = Instant::now();
    let reporter = Arc::new(TerminalReporter::new(output_config(&cli), open_log(&cli)));
    reporter.log(match cli.direction() {
        args::Direction::Pull => "receiving file list",
        _ => "building file list",
    });
    let mut stats = sync_engine::Stats::default();
    let mut wire = (0, 0);
    let code = run_attempts(&cli, &reporter, started, &mut stats, &mut wire).await;
    reporter.finish_progress();
    reporter.log(&format!(
        "sent {} bytes  received {} bytes  total size {}",
        wire.0, wire.1, stats.total_size
    ));
    if code != 0 {
        let line = closing_error(code);
        eprintln!("{line}");
        reporter.log(&line);
    }
    if reporter.json() {
        reporter.json_line(&json::summary(
            code,
            &stats,
            wire.0,
            wire.1,
            started.elapsed().as_secs_f64(),
            cli.dry_run,
        ));
    }
    code
}

async fn run_attempts(
    cli: &CliArgs,
    reporter: &Arc<TerminalReporter>,
    started: Instant,
    stats: &mut sync_engine::Stats,
    wire: &mut (u64, u64),
) -> u8 {
    let opts = match build_options(cli) {
        Ok(o) => o,
        Err(e) => {
            reporter.error_line(&format!("{e:#}"));
            return exit::FILE_IO;
        }
    };
    if cli.list_only {
        return listing::run(cli, &opts, reporter, started, stats, wire).await;
    }
    let Some(dest_loc) = cli.dest.clone() else {
        // Only a listing has no destination, and that was handled above.
        return exit::SYNTAX;
    };
    let remap = match source_remap(cli) {
        Ok(r) => r,
        Err(e) => {
            reporter.error_line(&e);
            return exit::SYNTAX;
        }
    };
    if cli.relative && cli.files_from.is_none() {
        for loc in &cli.sources {
            if let Err(e) = split_relative(&location_path(loc)) {
                reporter.error_line(&e);
                return exit::SYNTAX;
            }
        }
    }
    let files_from = match files_from(cli) {
        Ok(f) => f,
        Err((code, e)) => {
            reporter.error_line(&e);
            return code;
        }
    };
    let reporter = reporter.clone();

    // One remote side at most.
    let remote = cli
        .sources
        .iter()
        .chain(std::iter::once(&dest_loc))
        .find_map(|l| match l {
            Location::Remote { user, host, .. } => Some((user.clone(), host.clone())),
            Location::Local(_) => None,
        });
    if let (true, Some((user, host))) = (cli.compress, &remote) {
        let compressible = channels::Route::new(
            cli.rsh.as_deref(),
            cli.sftp_server.as_deref(),
            user.as_deref(),
            host,
        )
        .is_ok_and(|r| r.compressed().is_ok());
        if !compressible {
            sync_engine::Reporter::warning(
                &*reporter,
                "-z has no effect: only OpenSSH's ssh is asked to compress, and the remote \
                 shell is not ssh (sftpsync has no compressed stream of its own)",
            );
        }
    }
    if cli.compress && remote.is_some() {
        if let Some(note) = compression_note(cli) {
            sync_engine::Reporter::verbose_info(&*reporter, &note);
        }
    }
    let config = ClientConfig {
        idle_timeout: cli.timeout.map(|s| Duration::from_secs(s.into())),
        connect_timeout: cli.contimeout.map(|s| Duration::from_secs(s.into())),
        ..ClientConfig::default()
    };
    let index = match (&dest_loc, &remote) {
        (Location::Remote { .. }, Some(_)) if !cli.no_index && !cli.dry_run => {
            open_index(&reporter)
        }
        _ => None,
    };
    let plan = Plan {
        index,
        cli,
        opts,
        dest_loc,
        remote,
        reporter,
        config,
        temps: Arc::new(TempLog::default()),
        remap,
        files_from,
        started,
    };

    // Resuming is running the whole sync again over a new connection: the walk finds the
    // files finished before the cut up to date and sends only the rest, and deletions happen
    // only in an attempt whose source listing was complete, as in any run.
    let retries = cli.retries.unwrap_or(DEFAULT_RETRIES);
    // A second attempt would list sources the first one already removed, and --delete would
    // then delete their only copies on the receiver.
    let may_retry = !(plan.opts.remove_source != RemoveSource::Off && plan.opts.delete);
    if cli.preallocate && plan.dest_loc.is_remote() && cli.verbose > 0 && !cli.quiet {
        // SFTP v3 has no request that allocates space: files are written as without it.
        plan.reporter.say(
            "--preallocate has no effect on an SFTP receiver: files there are written as usual",
        );
    }
    let mut announced = false;
    let mut number = 1;
    loop {
        match attempt(&plan, number, wire, stats, &mut announced).await {
            Attempt::Finished(code) => return code,
            Attempt::Failed {
                message,
                hint,
                code,
                retry,
            } => {
                if !retry || number > retries {
                    plan.reporter.error_line(&with_hint(&message, hint));
                    return code;
                }
                if !may_retry {
                    plan.reporter.error_line(&with_hint(&message, hint));
                    plan.reporter.error_line(
                        "not reconnecting: with --remove-source-files and --delete, a new \
                         attempt would delete the copies of the sources already removed",
                    );
                    return code;
                }
                let wait = backoff(number);
                if cli.verbose > 0 && !cli.quiet {
                    plan.reporter.say(&format!(
                        "connection lost ({message}); reconnecting in {} s (attempt {} of {})",
                        wait.as_secs(),
                        number + 1,
                        retries + 1
                    ));
                }
                tokio::time::sleep(wait).await;
                number += 1;
            }
        }
    }
}

/// Exit code and retry decision for a connection that could not be set up. The first
/// connection is never retried (a wrong host, port or key should fail at once, as in
/// rsync); a reconnect is, unless ssh says the login itself was refused.
fn connect_failure(e: SftpError, reconnecting: bool, contimeout: bool) -> Attempt {
    let (code, transient) = match &e {
        SftpError::ConnectTimeout { .. } => (exit::CONNECT_TIMEOUT, true),
        SftpError::Timeout { .. } => (exit::TIMEOUT, true),
        SftpError::Handshake {
            stderr, exit_code, ..
        } => {
            // ssh's own ConnectTimeout (which we set from --contimeout) may fire first.
            let code = if contimeout && stderr.contains("timed out") {
                exit::CONNECT_TIMEOUT
            } else if *exit_code == Some(255) {
                exit::SSH_FAILED
            } else {
                exit::STREAM
            };
            (code, !login_refused(stderr))
        }
        _ => (exit::STREAM, false),
    };
    Attempt::Failed {
        message: e.to_string(),
        hint: hints::for_connection(&e),
        code,
        retry: reconnecting && transient,
    }
}

/// An error message with what to do about it, on the same line as rsync keeps one line per
/// error.
fn with_hint(message: &str, hint: Option<&str>) -> String {
    match hint {
        Some(hint) => format!("{message}; hint: {hint}"),
        None => message.to_string(),
    }
}

/// Whether ssh's words say the server turned the login down: trying again cannot help.
fn login_refused(ssh_stderr: &str) -> bool {
    [
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "Too many authentication failures",
    ]
    .iter()
    .any(|w| ssh_stderr.contains(w))
}

/// Why the session of a run died, if it died in a way a new connection may cure: the
/// stream ended or broke, or went silent (a timeout, which wins, for the exit code).
fn session_loss(pool: &ChannelPool) -> Option<SftpError> {
    let reasons: Vec<SftpError> = pool
        .all()
        .iter()
        .filter_map(|c| c.closed_reason())
        .collect();
    reasons
        .iter()
        .find(|e| matches!(e, SftpError::Timeout { .. }))
        .or_else(|| reasons.iter().find(|e| e.is_lost_session()))
        .cloned()
}

/// How a remote tree rooted at `path` is named in messages: `user@host:path`, without a
/// trailing slash.
fn remote_label(remote: &Option<(Option<Vec<u8>>, Vec<u8>)>, path: &[u8]) -> String {
    let (user, host) = remote.clone().unwrap_or_default();
    let mut s = String::new();
    if let Some(u) = user {
        s.push_str(&String::from_utf8_lossy(&u));
        s.push('@');
    }
    s.push_str(&String::from_utf8_lossy(&host));
    s.push(':');
    let trimmed = match path.strip_suffix(b"/") {
        Some(t) if !t.is_empty() => t,
        _ => path,
    };
    s.push_str(&sync_engine::path::escape_name(trimmed));
    s
}

/// One connection and one whole sync over it.
async fn attempt(
    plan: &Plan<'_>,
    number: u32,
    wire: &mut (u64, u64),
    stats: &mut sync_engine::Stats,
    announced: &mut bool,
) -> Attempt {
    let cli = plan.cli;
    let opts = &plan.opts;
    let dest_loc = &plan.dest_loc;
    let remote = &plan.remote;
    let reporter = &plan.reporter;
    let connection = match remote {
        Some((user, host)) => {
            // rsync shows how it connects at -vv; fewer channels than asked for, or channels
            // that could not share a login, are worth knowing at -v.
            let (verbose, quiet) = (cli.verbose, cli.quiet);
            let teller = reporter.clone();
            let say = move |line: String, noteworthy: bool| {
                if !quiet && (verbose > 1 || (verbose > 0 && noteworthy)) {
                    teller.say(&line);
                }
            };
            match connect(cli, user.as_deref(), host, plan.config, say).await {
                Ok(c) => Some(c),
                Err(e) => return connect_failure(e, number > 1, cli.contimeout.is_some()),
            }
        }
        None => None,
    };
    let quirks = Arc::new(ServerQuirks::default());
    let warn_reporter = reporter.clone();
    let warnings: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |m: String| {
        sync_engine::Reporter::warning(&*warn_reporter, &m);
    });
    let remote_label = |path: &[u8]| remote_label(remote, path);
    let throttle = cli.bwlimit.map(throttle::Throttle::new);
    let local_copy = cli.direction() == args::Direction::Local;
    // The limit is kept where the bytes cross the link: on the remote tree, or on the
    // destination of a local copy.
    let throttled = |loc: &Location, tree: Arc<dyn Tree>| -> Arc<dyn Tree> {
        match &throttle {
            Some(t) if loc.is_remote() || (local_copy && std::ptr::eq(loc, dest_loc)) => {
                Arc::new(throttle::ThrottledTree::new(tree, t.clone()))
            }
            _ => tree,
        }
    };
    let make_tree_following = |loc: &Location, dir: &[u8], follow: bool| -> Arc<dyn Tree> {
        let tree: Arc<dyn Tree> = match loc {
            Location::Local(_) => Arc::new(
                LocalTree::new(local_root(dir))
                    .following_links(follow)
                    .opening_noatime(cli.open_noatime)
                    .preallocating(cli.preallocate),
            ),
            Location::Remote { .. } => Arc::new(
                SftpTree::new(
                    connection
                        .as_ref()
                        .expect("connected when a remote operand exists")
                        .pool
                        .clone(),
                    dir.to_vec(),
                    remote_label(dir),
                    quirks.clone(),
                    warnings.clone(),
                )
                .atomic_replace_only(cli.require_atomic_replace)
                .sparse(cli.sparse),
            ),
        };
        throttled(loc, tree)
    };
    let make_tree = |loc: &Location, dir: &[u8]| {
        make_tree_following(loc, dir, cli.copy_links || cli.copy_unsafe_links)
    };

    let source_tree = |loc: &Location, dir: &[u8]| -> Arc<dyn Tree> {
        let tree = make_tree(loc, dir);
        match &plan.remap {
            Some(r) => Arc::new(remap::RemapTree::new(tree, r.clone())),
            None => tree,
        }
    };
    let mut sources = Vec::new();
    if let Some(list) = &plan.files_from {
        let entries = match list {
            FilesFrom::Listed(entries) => entries.clone(),
            FilesFrom::Remote(path) => {
                let remote_loc = cli
                    .sources
                    .iter()
                    .chain(std::iter::once(dest_loc))
                    .find(|l| l.is_remote())
                    .expect("checked: the transfer has a remote side");
                match read_whole(&*make_tree(remote_loc, b""), path).await {
                    Ok(data) => files_from_entries(&data, cli.from0),
                    Err(e) => {
                        reporter.error_line(&format!("failed to read files-from list: {e}"));
                        return Attempt::Finished(exit::FILE_IO);
                    }
                }
            }
        };
        let loc = &cli.sources[0];
        let tree = source_tree(loc, &location_path(loc));
        for (path, contents) in entries {
            let content = SourceContent::Relative { path, contents };
            sources.push(SourceRoot {
                tree: tree.clone(),
                content,
            });
        }
    } else {
        for loc in &cli.sources {
            let (dir, content) = if cli.relative {
                // Checked before connecting.
                let (root, rel) = split_relative(&location_path(loc)).unwrap_or_default();
                let content = if rel.is_empty() {
                    SourceContent::Contents
                } else {
                    SourceContent::Relative {
                        path: rel,
                        contents: false,
                    }
                };
                (root, content)
            } else {
                split_source(&location_path(loc))
            };
            sources.push(SourceRoot {
                tree: source_tree(loc, &dir),
                content,
            });
        }
    }

    // rsync's rule, on its file list: one non-directory entry sent and a destination that
    // is not an existing directory (and has no trailing slash) means "copy to this name".
    // Sources named but left out (filtered, skipped directories, missing) do not count.
    let dest_path = location_path(dest_loc);
    let mut dest_file_name = None;
    let mut dest_dir = dest_path.clone();
    let mut dest_tree = make_tree(dest_loc, &dest_path);
    let all_named = sources
        .iter()
        .all(|s| matches!(s.content, SourceContent::Named(_)));
    if all_named && !dest_path.ends_with(b"/") && !dest_path.is_empty() {
        let dest_kind = dest_tree
            .lstat(&Vec::new())
            .await
            .ok()
            .flatten()
            .map(|m| m.kind);
        let mut sent = Vec::new();
        if dest_kind != Some(Kind::Dir) {
            for src in &sources {
                let SourceContent::Named(name) = &src.content else {
                    continue;
                };
                match src.tree.lstat(name).await {
                    Ok(Some(m)) => {
                        let is_dir = m.kind == Kind::Dir;
                        if sync_engine::top_entry(opts, name, is_dir) == TopEntry::Sent {
                            sent.push(m.kind);
                        }
                    }
                    // --delete-missing-args lists a missing source as an entry without a
                    // type, which rsync then takes DEST to be the name of (and deletes).
                    Ok(None)
                        if opts.missing_args == MissingArgs::Delete
                            && sync_engine::top_entry(opts, name, false) != TopEntry::Excluded =>
                    {
                        sent.push(Kind::File);
                    }
                    _ => {}
                }
            }
        }
        // As rsync's receiver: a list of one file, or of nothing at all (sources missing,
        // skipped or excluded), takes DEST as that file's name.
        if dest_kind != Some(Kind::Dir) && sent.len() <= 1 && !sent.contains(&Kind::Dir) {
            let (dir, content) = split_source(&dest_path);
            if let SourceContent::Named(dest_name) = content {
                dest_tree = make_tree(dest_loc, &dir);
                dest_dir = dir;
                dest_file_name = Some(dest_name);
            }
        }
    }
    if cli.mkpath {
        // rsync 3.2.3's --mkpath: all of DEST when it is to be a directory, only the
        // directories above it when one file is copied to that name.
        let wanted = if dest_file_name.is_some() {
            &dest_dir
        } else {
            &dest_path
        };
        match make_path(|p| make_tree(dest_loc, p), wanted, opts.dry_run).await {
            Ok(0) => {}
            Ok(n) => sync_engine::Reporter::info(
                &**reporter,
                &format!(
                    "created {n} director{} for {}",
                    if n == 1 { "y" } else { "ies" },
                    sync_engine::path::escape_name(trim_slashes(wanted))
                ),
            ),
            Err(e) => {
                reporter.error_line(&with_hint(&e.to_string(), hints::for_entry(&e)));
                return Attempt::Finished(exit::FILE_IO);
            }
        }
    }
    let dest_tree: Arc<dyn Tree> = Arc::new(TrackingTree::new(dest_tree, plan.temps.clone()));
    // What a cut attempt left behind goes first, now that the destination is reachable;
    // with --partial it is kept, to go on from.
    if !cli.partial {
        plan.temps.clear(&*dest_tree).await;
    }
    if flist_level(cli) > 0 && !*announced {
        *announced = true;
        let pull = cli.direction() == args::Direction::Pull;
        if let Some(header) = flist_header(cli, opts, pull) {
            reporter.say(header);
        }
        if cli.verbose > 1 && !cli.quiet {
            reporter.say(if opts.whole_file {
                "delta-transmission disabled for local transfer or --whole-file"
            } else {
                "delta-transmission enabled"
            });
        }
    }

    let index = match (&plan.index, remote) {
        (Some(index), Some((user, host))) => Some(Arc::new(RemoteIndex::new(
            index.clone(),
            server_identity(cli, user.as_deref(), host),
            &dest_dir,
        ))),
        _ => None,
    };
    let local_link_dest = match (&cli.link_dest[..], dest_loc) {
        ([_, ..], Location::Local(_)) => match local_link_dirs(cli, &dest_dir) {
            Ok(dirs) => Some(dirs),
            Err(e) => {
                reporter.error_line(&format!("--link-dest: {e:#}"));
                return Attempt::Finished(exit::FILE_IO);
            }
        },
        _ => None,
    };
    // -T: on the destination's side too, a relative DIR from DEST (where rsync's receiver
    // works). As rsync, it must exist: nothing is sent otherwise.
    let temp_dir_tree = match &cli.temp_dir {
        Some(dir) => {
            let mut dest = dest_dir.clone();
            while dest.len() > 1 && dest.ends_with(b"/") {
                dest.pop();
            }
            let full = if dir.starts_with(b"/") {
                dir.clone()
            } else {
                sync_engine::path::join(&dest, dir)
            };
            let tree = make_tree_following(dest_loc, &full, false);
            let problem = match tree.lstat(&Vec::new()).await {
                Ok(Some(m)) if m.kind == Kind::Dir => None,
                Ok(Some(_)) => Some("is not a directory".to_string()),
                Ok(None) => Some("does not exist".to_string()),
                Err(e) if e.is_not_found() => Some("does not exist".to_string()),
                Err(e) => Some(format!("cannot be looked at ({e})")),
            };
            if let Some(problem) = problem {
                reporter.error_line(&format!(
                    "The temp-dir {problem}: {}",
                    String::from_utf8_lossy(dir)
                ));
                return Attempt::Finished(exit::SYNTAX);
            }
            Some(tree)
        }
        None => None,
    };
    let job = SyncJob {
        sources,
        dest: dest_tree.clone(),
        dest_file_name,
        // rsync's receiver makes a destination named as a directory even for an empty file
        // list, but a client that receives (a pull) stops before it when the list is empty.
        dest_is_dir: dest_path.ends_with(b"/") && cli.direction() != args::Direction::Pull,
        tasks_per_lane: TASKS_PER_CHANNEL,
        index,
        // On the destination's side, confined to itself like any tree there: the engine
        // moves each finished file from it into the destination, never joins their paths.
        partial_dir_tree: cli
            .partial_dir
            .as_ref()
            .filter(|d| d.starts_with(b"/"))
            .map(|dir| make_tree_following(dest_loc, dir, false)),
        temp_dir_tree,
        progress: (reporter.progress_level() > 0)
            .then(|| reporter.clone() as Arc<dyn sync_engine::Progress>),
        link_dest: if cli.link_dest.is_empty() {
            None
        } else if let Some(local) = local_link_dest {
            Some(local)
        } else {
            let mut dest = dest_dir.clone();
            while dest.len() > 1 && dest.ends_with(b"/") {
                dest.pop();
            }
            let dirs = cli
                .link_dest
                .iter()
                .map(|d| {
                    if d.starts_with(b"/") {
                        d.clone()
                    } else {
                        sync_engine::path::join(&dest, d)
                    }
                })
                .collect();
            // Rooted where the paths start, so one tree reaches both ends of each link.
            let tree = make_tree_following(dest_loc, b"", false);
            Some(Arc::new(sync_engine::LinkDest::new(
                cli.alt_dest,
                tree,
                dest,
                dirs,
            )))
        },
        backup: cli.backup.then(|| {
            let suffix = backup_suffix(cli);
            let own_tree = match (&cli.backup_dir, backup_in_tree(cli)) {
                (Some(dir), None) if dir.starts_with(b"/") => Some(dir.clone()),
                (Some(dir), None) => {
                    let mut d = dest_dir.clone();
                    if !d.is_empty() && !d.ends_with(b"/") {
                        d.push(b'/');
                    }
                    d.extend_from_slice(dir);
                    Some(d)
                }
                _ => None,
            };
            Arc::new(sync_engine::Backup::new(
                backup_in_tree(cli),
                own_tree.map(|d| make_tree_following(dest_loc, &d, false)),
                suffix,
            ))
        }),
    };
    let outcome = sync_engine::run(&job, opts, &**reporter).await;
    drop(job);
    *stats = outcome.stats.clone();
    let lost = connection.as_ref().and_then(|c| session_loss(&c.pool));
    if outcome.fatal.is_some() && !cli.partial {
        // A local destination can be cleaned up now; a remote one waits for the next
        // connection (or, with no retries left, keeps them: see TempLog).
        plan.temps.clear(&*dest_tree).await;
    }
    drop(dest_tree);
    if let Some(c) = connection {
        let (s, r) = c.close(lost.is_some()).await;
        wire.0 += s;
        wire.1 += r;
    }
    let (sent, received) = *wire;

    if let Some(e) = &outcome.fatal {
        if e.kind == ErrorKind::Connection {
            let (code, retry) = match &lost {
                Some(SftpError::Timeout { .. }) => (exit::TIMEOUT, true),
                Some(_) => (exit::STREAM, true),
                None => (exit::STREAM, false),
            };
            return Attempt::Failed {
                message: e.to_string(),
                hint: lost.as_ref().and_then(hints::for_connection),
                code,
                retry,
            };
        }
        reporter.error_line(&with_hint(&e.to_string(), hints::for_entry(e)));
        let code = match e.kind {
            ErrorKind::Selection => exit::FILE_SELECT,
            _ => exit::FILE_IO,
        };
        return Attempt::Finished(code);
    }
    if opts.delete && outcome.source_io_error && !opts.ignore_errors {
        reporter.error_line("IO error encountered -- skipping file deletion");
    }
    if outcome.deletions_skipped > 0 {
        reporter.error_line(&format!(
            "Deletions stopped due to --max-delete limit ({} skipped)",
            outcome.deletions_skipped
        ));
    }
    let stats_level = stats_level(cli);
    if stats_level > 0 {
        reporter.finish_progress();
    }
    if stats_level > 1 {
        reporter.say(&format!(
            "\n{}",
            output::stats_text(&outcome.stats, sent, received, cli.human_readable).trim_end()
        ));
    }
    if stats_level > 0 {
        reporter.say(&format!(
            "\n{}",
            output::summary_text(
                &outcome.stats,
                sent,
                received,
                plan.started.elapsed().as_secs_f64(),
                cli.human_readable
            )
        ));
    }
    Attempt::Finished(if outcome.errors > 0 {
        exit::PARTIAL
    } else if outcome.vanished > 0 {
        exit::VANISHED
    } else if outcome.deletions_skipped > 0 {
        exit::MAX_DELETE
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_caps() {
        let secs: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(1000), MAX_BACKOFF);
    }

    fn handshake(stderr: &str, exit_code: Option<i32>) -> SftpError {
        SftpError::Handshake {
            peer: "h".into(),
            detail: "connection closed before the SFTP handshake".into(),
            stderr: stderr.into(),
            exit_code,
        }
    }

    fn failed(a: Attempt) -> (u8, bool) {
        match a {
            Attempt::Failed { code, retry, .. } => (code, retry),
            Attempt::Finished(_) => panic!("not a failure"),
        }
    }

    #[test]
    fn only_reconnects_retry_and_never_a_refused_login() {
        let lost = || handshake("Connection reset by peer", Some(255));
        assert_eq!(failed(connect_failure(lost(), false, false)), (255, false));
        assert_eq!(failed(connect_failure(lost(), true, false)), (255, true));
        for refused in [
            "Permission denied (publickey).",
            "Host key verification failed.",
        ] {
            let e = handshake(refused, Some(255));
            assert_eq!(failed(connect_failure(e, true, false)), (255, false));
        }
    }

    #[test]
    fn connect_timeouts_exit_35_whoever_notices_first() {
        let ours = SftpError::ConnectTimeout {
            peer: "h".into(),
            secs: 2,
            stderr: String::new(),
        };
        assert_eq!(failed(connect_failure(ours, false, true)).0, 35);
        // ssh's own ConnectTimeout, which --contimeout sets.
        let ssh = handshake("Connection timed out during banner exchange", Some(255));
        assert_eq!(failed(connect_failure(ssh, false, true)).0, 35);
        let ssh = handshake("connect to host h port 22: Connection timed out", Some(255));
        assert_eq!(failed(connect_failure(ssh, false, false)).0, 255);
        let idle = SftpError::Timeout {
            peer: "h".into(),
            secs: 5,
        };
        assert_eq!(failed(connect_failure(idle, false, false)).0, 30);
    }

    #[test]
    fn files_from_lists_are_read_as_rsync_reads_them() {
        let list = b"a\n/b/c/\r\n# note\n; note\n\n../up/./f\rd/../e\n..\nlast";
        let want: Vec<(Vec<u8>, bool)> = [
            ("a", false),
            ("b/c", true),
            ("up/f", false),
            ("e", false),
            ("last", false),
        ]
        .iter()
        .map(|(p, c)| (p.as_bytes().to_vec(), *c))
        .collect();
        assert_eq!(files_from_entries(list, false), want);
        assert_eq!(
            files_from_entries(b"a b\0c\nd\0\0", true),
            vec![(b"a b".to_vec(), false), (b"c\nd".to_vec(), false)]
        );
    }

    #[test]
    fn relative_operands_split_at_the_marker() {
        let split = |p: &str| {
            let (r, l) = split_relative(p.as_bytes()).unwrap();
            (String::from_utf8(r).unwrap(), String::from_utf8(l).unwrap())
        };
        let pair = |r: &str, l: &str| (r.to_string(), l.to_string());
        assert_eq!(split("a/b/c"), pair("", "a/b/c"));
        assert_eq!(split("/usr/./lib/x/"), pair("/usr", "lib/x"));
        assert_eq!(split("/abs/path"), pair("/", "abs/path"));
        assert_eq!(split("./a/./b"), pair("./a", "b"));
        assert_eq!(split("/./x"), pair("/", "x"));
        assert_eq!(split("src/./"), pair("src", ""));
        assert!(split_relative(b"../x/f").unwrap_err().contains("\"..\""));
        assert!(split_relative(b"a/./b/../c").is_err());
    }

    #[test]
    fn mkpath_walks_the_prefixes_of_a_path() {
        let p = |s: &str| -> Vec<String> {
            path_prefixes(s.as_bytes())
                .into_iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(p("a/b/c/"), ["a", "a/b", "a/b/c"]);
        assert_eq!(p("/x//y"), ["/x", "/x//y"]);
        assert_eq!(p("../up"), ["..", "../up"]);
        assert!(p("").is_empty() && p("/").is_empty() && p(".").is_empty());
        assert_eq!(trim_slashes(b"/"), b"/");
        assert_eq!(trim_slashes(b"a//"), b"a");
    }

    #[test]
    fn source_operands_split_like_rsync() {
        assert_eq!(
            split_source(b"dir/"),
            (b"dir/".to_vec(), SourceContent::Contents)
        );
        assert_eq!(split_source(b"."), (b".".to_vec(), SourceContent::Contents));
        assert_eq!(split_source(b""), (b"".to_vec(), SourceContent::Contents));
        assert_eq!(
            split_source(b"a/b/c"),
            (b"a/b".to_vec(), SourceContent::Named(b"c".to_vec()))
        );
        assert_eq!(
            split_source(b"/top"),
            (b"/".to_vec(), SourceContent::Named(b"top".to_vec()))
        );
        assert_eq!(
            split_source(b"file"),
            (b"".to_vec(), SourceContent::Named(b"file".to_vec()))
        );
    }
}

//! Turns an rsync-style command line into a typed [`CliArgs`], following rsync 3.x's option rules.
//!
//! A small table-driven parser is used instead of clap's derive: rsync's semantics depend on
//! the exact order of options across different names (first-match-wins filters, `-a` versus
//! `--no-o`, whichever comes last), on popt quirks (`-e=ssh`, `strtol` numbers, `-h` alone
//! meaning help) and on byte-string arguments, none of which a derive model expresses well.
//!
//! Nothing here prints or exits: the caller gets [`Parsed`] or an [`ArgsError`] (a usage
//! error, rsync's exit code 1).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use sync_engine::AltDest;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Boxed because the arguments dwarf the other variants.
    Run(Box<CliArgs>),
    /// `--help` (or `-h` as the only argument): the text to print on stdout, exit 0.
    Help(String),
    /// `--version` / `-V`: the text to print on stdout, exit 0.
    Version(String),
}

/// The parsed command line. Every field holds rsync's final value after all options were
/// applied in order, so the glue never has to know which spelling set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliArgs {
    /// `-v` count; `--no-v` resets it.
    pub verbose: u8,
    pub quiet: bool,
    pub recursive: bool,
    pub links: bool,
    pub copy_links: bool,
    pub copy_unsafe_links: bool,
    pub safe_links: bool,
    pub perms: bool,
    /// `-E`: execute bits follow the source's without `-p`.
    pub executability: bool,
    pub times: bool,
    /// `-U`: keep access times.
    pub atimes: bool,
    /// `--open-noatime`: local sources are read without moving their access times.
    pub open_noatime: bool,
    /// `-S`: runs of zeros become holes on the receiver.
    pub sparse: bool,
    /// `--preallocate`: a local receiver allocates each file's size before writing it.
    pub preallocate: bool,
    pub group: bool,
    pub owner: bool,
    pub devices: bool,
    pub specials: bool,
    pub hard_links: bool,
    pub dry_run: bool,
    /// `-i` count: 2 (`-ii`) also reports unchanged items.
    pub itemize_changes: u8,
    /// Also true when only `--delete-excluded` was given, as rsync implies it.
    pub delete: bool,
    pub delete_excluded: bool,
    /// `--delete-WHEN`; `None` is rsync's default (during).
    pub delete_when: Option<DeleteTiming>,
    pub ignore_errors: bool,
    pub checksum: bool,
    pub size_only: bool,
    /// `-I`: files that match in size and mtime are sent anyway.
    pub ignore_times: bool,
    /// `--max-size`/`--min-size` in bytes: regular files outside are passed over.
    pub max_size: Option<u64>,
    pub min_size: Option<u64>,
    pub update: bool,
    pub ignore_existing: bool,
    /// `--existing` (alias `--ignore-non-existing`): never create files on the receiver.
    pub existing: bool,
    /// `-m`: directories that would end up empty are left out.
    pub prune_empty_dirs: bool,
    /// `--ignore-missing-args`: a source operand (or `--files-from` name) that does not exist
    /// is passed over without an error.
    pub ignore_missing_args: bool,
    /// `--delete-missing-args`: such a name deletes the destination's entry of that name
    /// instead. Wins over `--ignore-missing-args`, as in rsync.
    pub delete_missing_args: bool,
    /// Every filter-type option in command-line order; rsync's first match wins.
    pub filters: Vec<FilterArg>,
    /// `--from0`: the `*-from` files are NUL-separated.
    pub from0: bool,
    pub stats: bool,
    pub progress: bool,
    pub partial: bool,
    /// `--inplace`: rewrite destination files where they are.
    pub inplace: bool,
    /// `--partial-dir=DIR` (implies `--partial`): one relative name, or an absolute path.
    /// `--delay-updates` without it sets `.~tmp~`, as rsync does.
    pub partial_dir: Option<Vec<u8>>,
    /// `--delay-updates`: updated files go into place together at the end of the run.
    pub delay_updates: bool,
    /// `-T DIR`: temp files are written in DIR on the receiving side (relative to DEST, or
    /// absolute) and renamed into place.
    pub temp_dir: Option<Vec<u8>>,
    /// rsync's remove mode: 0 off, 1 `--remove-source-files`, 2 `--remove-sent-files` (the
    /// last one given wins).
    pub remove_source: u8,
    /// `--force`: delete a non-empty directory in the way of a non-directory (`--delete`
    /// implies it).
    pub force: bool,
    /// `--mkpath`: make the destination's missing path components.
    pub mkpath: bool,
    /// `-O`: directories are left out of `--times`.
    pub omit_dir_times: bool,
    /// `-J`: symlinks are left out of `--times`.
    pub omit_link_times: bool,
    /// rsync's append mode: 0 off, 1 `--append`, 2 `--append-verify` (the last one given
    /// wins). Either implies `--inplace`.
    pub append: u8,
    /// rsync's level, not a plain count: 1 by default, +1 per `-h`, 0 after `--no-h`.
    pub human_readable: u8,
    /// `-e COMMAND` exactly as given (not yet split into words). `None`: the glue falls back
    /// to `$RSYNC_RSH`, then `ssh`, like rsync.
    pub rsh: Option<OsString>,
    /// Ours, not rsync's: run this local sftp-server binary over pipes instead of ssh.
    pub sftp_server: Option<PathBuf>,
    /// Ours: keep no delta index (`--no-index`): changed files are sent whole.
    pub no_index: bool,
    /// Ours: `-c` believes the index's hash of what was written (`--trust-index`).
    pub trust_index: bool,
    /// Ours: read each written file back and compare hashes (`--verify`).
    pub verify: bool,
    /// Ours: fail rather than replace a remote file non-atomically (no posix-rename).
    pub require_atomic_replace: bool,
    /// Ours: read no config file (`--no-config`).
    pub no_config: bool,
    /// Ours, from the config file only: words added to the remote shell command.
    pub ssh_args: Vec<OsString>,
    /// Ours: how many SFTP channels to open (`--channels`). `None`: the default.
    pub channels: Option<u32>,
    /// `None` when not given (rsync's default 0). Negative asks for nanosecond comparison.
    pub modify_window: Option<i32>,
    /// I/O timeout in seconds; `None` for none (rsync's 0).
    pub timeout: Option<u32>,
    /// Connect timeout in seconds; `None` for none (rsync's 0).
    pub contimeout: Option<u32>,
    /// Ours: reconnects after a lost connection (`--retries`). `None`: the default.
    pub retries: Option<u32>,
    /// `-W` gives `Some(true)`, `--no-W` `Some(false)`, `None` leaves it to the engine.
    pub whole_file: Option<bool>,
    pub numeric_ids: bool,
    /// `-z`: have OpenSSH compress the SSH stream (rsync compresses its own). Final value
    /// after rsync's rules for `--zc`, `--zl`, `--old-compress` and `--new-compress`.
    pub compress: bool,
    /// `--compress-level` as given: ssh has no level to set, so it only decides, as in rsync,
    /// whether there is compression at all.
    pub compress_level: Option<i32>,
    /// `--compress-choice` (lowercase), or what `--old-compress`/`--new-compress` stand for.
    pub compress_choice: Option<String>,
    /// `--stderr=all` (or `--msgs2stderr`): informational lines go to stderr, not stdout.
    pub messages_to_stderr: bool,
    /// `-R`: source paths are recreated below the destination (implied by `--files-from`).
    pub relative: bool,
    /// `--no-implied-dirs`: the directories above `-R` paths are not sent.
    pub no_implied_dirs: bool,
    /// `-d`, also implied by `--files-from` and listing: directories are sent without their
    /// contents (with `-r` it changes nothing).
    pub dirs: bool,
    /// `--files-from=FILE` as given (`-` for stdin, `[HOST]:PATH` on the server).
    pub files_from: Option<Vec<u8>>,
    /// `-C`: rsync's CVS-style excludes, after every other filter rule.
    pub cvs_exclude: bool,
    /// Every `--link-dest=DIR` (or `--copy-dest`, `--compare-dest`: `alt_dest` says which),
    /// in order (at most 20, as rsync).
    pub link_dest: Vec<Vec<u8>>,
    pub alt_dest: sync_engine::AltDest,
    /// `--backup` (also implied by `--backup-dir`).
    pub backup: bool,
    /// `--backup-dir=DIR`, as given.
    pub backup_dir: Option<Vec<u8>>,
    /// `--suffix`; `None`: rsync's default (`~`, or nothing with a backup dir).
    pub suffix: Option<Vec<u8>>,
    /// Every `--chmod` value in order, each already checked.
    pub chmod: Vec<String>,
    /// `--chown` split into user and group (each `None` when left empty); implies `-o` and
    /// `-g` for the part that is given.
    pub chown: Option<(Option<String>, Option<String>)>,
    /// `--bwlimit`, in bytes per second; `None`: no limit.
    pub bwlimit: Option<u64>,
    /// `None`: unlimited. A negative NUM becomes `Some(0)`, as in rsync.
    pub max_delete: Option<u32>,
    /// `-x` count: 2 (`-xx`) also skips the mount-point directories themselves.
    pub one_file_system: u8,
    pub out_format: Option<Vec<u8>>,
    pub log_file: Option<PathBuf>,
    /// `--log-file-format`; `None`: rsync's default, `%i %n%L`.
    pub log_file_format: Option<Vec<u8>>,
    /// Ours: `--json` (or `--log-format=json`): JSON lines on stdout instead of text.
    pub json: bool,
    /// `--info=FLAGS`, as given; unset flags follow -v and the other options, as in rsync.
    pub info: InfoLevels,
    /// `--debug=sftp[LEVEL]`: `None` when not given, so -vvv can stand for it as rsync's
    /// -vvv stands for its debug flags.
    pub debug_sftp: Option<u8>,
    pub eight_bit_output: bool,
    /// `--list-only`, or no destination was given (one operand, or `host:a :b`): the
    /// sources are listed as rsync lists them.
    pub list_only: bool,
    /// At least one; all local, or all on one host.
    pub sources: Vec<Location>,
    /// `None` when the command only lists its single source (or `host:a :b` sources).
    pub dest: Option<Location>,
}

impl Default for CliArgs {
    fn default() -> Self {
        CliArgs {
            verbose: 0,
            quiet: false,
            recursive: false,
            links: false,
            copy_links: false,
            copy_unsafe_links: false,
            safe_links: false,
            perms: false,
            times: false,
            group: false,
            owner: false,
            devices: false,
            specials: false,
            hard_links: false,
            dry_run: false,
            itemize_changes: 0,
            delete: false,
            delete_excluded: false,
            delete_when: None,
            ignore_errors: false,
            checksum: false,
            size_only: false,
            ignore_times: false,
            max_size: None,
            min_size: None,
            update: false,
            ignore_existing: false,
            existing: false,
            prune_empty_dirs: false,
            ignore_missing_args: false,
            delete_missing_args: false,
            filters: Vec::new(),
            from0: false,
            stats: false,
            progress: false,
            partial: false,
            partial_dir: None,
            delay_updates: false,
            temp_dir: None,
            remove_source: 0,
            force: false,
            mkpath: false,
            omit_dir_times: false,
            omit_link_times: false,
            append: 0,
            inplace: false,
            executability: false,
            atimes: false,
            open_noatime: false,
            sparse: false,
            preallocate: false,
            human_readable: 1,
            rsh: None,
            sftp_server: None,
            require_atomic_replace: false,
            no_index: false,
            trust_index: false,
            verify: false,
            no_config: false,
            ssh_args: Vec::new(),
            channels: None,
            modify_window: None,
            timeout: None,
            contimeout: None,
            retries: None,
            whole_file: None,
            numeric_ids: false,
            compress: false,
            compress_level: None,
            compress_choice: None,
            messages_to_stderr: false,
            chmod: Vec::new(),
            chown: None,
            relative: false,
            no_implied_dirs: false,
            dirs: false,
            files_from: None,
            cvs_exclude: false,
            link_dest: Vec::new(),
            alt_dest: sync_engine::AltDest::Link,
            backup: false,
            backup_dir: None,
            suffix: None,
            bwlimit: None,
            max_delete: None,
            one_file_system: 0,
            out_format: None,
            log_file: None,
            log_file_format: None,
            json: false,
            info: InfoLevels::default(),
            debug_sftp: None,
            eight_bit_output: false,
            list_only: false,
            sources: Vec::new(),
            dest: None,
        }
    }
}

impl CliArgs {
    /// Which way the bytes flow; a listing of a remote source counts as a pull.
    pub fn direction(&self) -> Direction {
        if self.dest.as_ref().is_some_and(Location::is_remote) {
            Direction::Push
        } else if self.sources.iter().any(Location::is_remote) {
            Direction::Pull
        } else {
            Direction::Local
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Local sources, remote destination.
    Push,
    /// Remote sources, local destination (or none: a remote listing).
    Pull,
    /// Everything local.
    Local,
}

/// One filter-type option, kept raw: the filter engine parses rules, because `--exclude`
/// patterns still honour rsync's old `"- "`/`"+ "` prefixes and `*-from` files need `from0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterArg {
    Exclude(Vec<u8>),
    Include(Vec<u8>),
    ExcludeFrom(PathBuf),
    IncludeFrom(PathBuf),
    /// `--filter`/`-f` text, or the rule a `-F` stands for.
    Rule(Vec<u8>),
}

/// A SRC or DEST operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Bytes exactly as given, trailing slash included.
    Local(PathBuf),
    /// `[USER@]HOST:PATH`. `host` has IPv6 brackets removed. `path` keeps its trailing slash
    /// and may be empty (`host:`), which means the login directory (rsync sends `.`).
    Remote {
        user: Option<Vec<u8>>,
        host: Vec<u8>,
        path: Vec<u8>,
    },
}

impl Location {
    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Remote { .. })
    }
}

/// A usage error: print `message()` (rsync prefixes it with the program name) and exit
/// with [`ArgsError::EXIT_CODE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError {
    kind: ArgsErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsErrorKind {
    /// Not an rsync option at all.
    UnknownOption,
    /// An rsync option sftpsync does not implement yet.
    NotSupported,
    /// A missing, unexpected or malformed option value.
    BadValue,
    /// Wrong number or combination of SRC/DEST operands, or conflicting options.
    BadOperands,
    /// `host::module` or `rsync://`: there is no rsync daemon to talk to.
    Daemon,
    /// An unknown `--compress-choice` or `--checksum-choice` name: rsync reports these as
    /// an unsupported action (exit 4), not as a usage error.
    UnknownName,
}

impl ArgsError {
    /// rsync's RERR_SYNTAX.
    pub const EXIT_CODE: i32 = 1;
    /// rsync's RERR_UNSUPPORTED.
    pub const UNSUPPORTED_EXIT_CODE: i32 = 4;

    /// The exit code rsync gives for this error.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ArgsErrorKind::UnknownName => Self::UNSUPPORTED_EXIT_CODE,
            _ => Self::EXIT_CODE,
        }
    }

    fn new(kind: ArgsErrorKind, message: impl Into<String>) -> Self {
        ArgsError {
            kind,
            message: message.into(),
        }
    }

    #[cfg(test)]
    pub fn kind(&self) -> ArgsErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgsError {}

/// Parses a whole command line. The first item is the program name and is skipped, so
/// `std::env::args_os()` can be passed directly.
pub fn parse<I>(argv: I) -> Result<Parsed, ArgsError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let args: Vec<OsString> = argv.into_iter().skip(1).map(Into::into).collect();
    let mut st = State::default();
    let mut rest = args.iter();
    let mut only_operands = false;

    while let Some(arg) = rest.next() {
        let bytes = arg.as_bytes();
        // A lone "-" is an operand (a file named "-"), as with popt.
        if only_operands || bytes.len() < 2 || bytes[0] != b'-' {
            st.operands.push(arg.clone());
        } else if bytes == b"--" {
            only_operands = true;
        } else if let Some(body) = bytes.strip_prefix(b"--") {
            let (name, inline) = match body.iter().position(|&c| c == b'=') {
                Some(eq) => (&body[..eq], Some(&body[eq + 1..])),
                None => (body, None),
            };
            let spec = find_long(name)?;
            let shown = format!("--{}", show(name));
            match spec.kind {
                Kind::Flag(apply) | Kind::Ignored(apply) => {
                    if inline.is_some() {
                        return Err(ArgsError::new(
                            ArgsErrorKind::BadValue,
                            format!("option {shown} does not take an argument"),
                        ));
                    }
                    apply(&mut st);
                }
                Kind::Value(apply) => {
                    // Like popt, a separate value is taken even when it starts with '-'.
                    let value = match inline {
                        Some(v) => OsStr::from_bytes(v).to_os_string(),
                        None => rest.next().cloned().ok_or_else(|| missing_value(&shown))?,
                    };
                    apply(&mut st, &shown, value)?;
                }
                Kind::Help => return Ok(Parsed::Help(help_text())),
                Kind::Version => st.version = true,
            }
        } else {
            let mut i = 1;
            while i < bytes.len() {
                let c = bytes[i];
                i += 1;
                let spec = find_short(c, bytes)?;
                let shown = format!("-{}", c as char);
                match spec.kind {
                    Kind::Flag(apply) | Kind::Ignored(apply) => apply(&mut st),
                    Kind::Value(apply) => {
                        // The rest of the cluster is the value; popt drops one leading '='
                        // so `-e=ssh` means `ssh` and `-e=` an empty value.
                        let tail = &bytes[i..];
                        let value = if let Some(v) = tail.strip_prefix(b"=") {
                            OsStr::from_bytes(v).to_os_string()
                        } else if !tail.is_empty() {
                            OsStr::from_bytes(tail).to_os_string()
                        } else {
                            rest.next().cloned().ok_or_else(|| missing_value(&shown))?
                        };
                        apply(&mut st, &shown, value)?;
                        break;
                    }
                    Kind::Help => return Ok(Parsed::Help(help_text())),
                    Kind::Version => st.version = true,
                }
            }
        }
    }

    // rsync reports --version only after every option parsed cleanly, and before it looks
    // at operands.
    if st.version {
        return Ok(Parsed::Version(version_text()));
    }
    if st.info_help {
        return Ok(Parsed::Help(info_help_text()));
    }
    if st.debug_help {
        return Ok(Parsed::Help(debug_help_text()));
    }
    // rsync's -h used to mean --help; it still does when it is the whole command line.
    if args.len() == 1 && st.args.human_readable > 1 {
        return Ok(Parsed::Help(help_text()));
    }
    st.finish().map(|a| Parsed::Run(Box::new(a)))
}

fn missing_value(shown: &str) -> ArgsError {
    ArgsError::new(
        ArgsErrorKind::BadValue,
        format!("option {shown} requires an argument"),
    )
}

/// The `--info` flags rsync knows, in its order. Those that sftpsync acts on are listed in
/// [`info_help_text`]; the others are accepted so that rsync command lines keep working.
const INFO_FLAGS: [&str; 13] = [
    "backup", "copy", "del", "flist", "misc", "mount", "name", "nonreg", "progress", "remove",
    "skip", "stats", "symsafe",
];

/// Levels set with `--info`, later items overriding earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoLevels {
    levels: [Option<u8>; INFO_FLAGS.len()],
}

impl InfoLevels {
    /// The level given for `flag` (one of [`INFO_FLAGS`]), if any.
    pub fn get(&self, flag: &str) -> Option<u8> {
        let i = INFO_FLAGS.iter().position(|f| *f == flag)?;
        self.levels[i]
    }

    /// Applies one `--info` value: comma-separated `FLAG[LEVEL]` items, case-insensitive,
    /// with `ALL` and `NONE` for every flag. Returns whether `help` was asked for.
    fn apply(&mut self, value: &[u8]) -> Result<bool, ArgsError> {
        let mut help = false;
        for item in value.split(|&b| b == b',').filter(|i| !i.is_empty()) {
            let digits = item.iter().rev().take_while(|b| b.is_ascii_digit()).count();
            let (name, level) = item.split_at(item.len() - digits);
            let name = name.to_ascii_lowercase();
            // A missing level means 1; beyond 9 is as good as 9 (no flag goes that far).
            let level = if level.is_empty() {
                1
            } else {
                level.iter().fold(0u8, |n, d| {
                    n.saturating_mul(10).saturating_add(d - b'0').min(9)
                })
            };
            match &name[..] {
                b"help" => help = true,
                b"all" => self.levels = [Some(level); INFO_FLAGS.len()],
                b"none" => self.levels = [Some(0); INFO_FLAGS.len()],
                _ => match INFO_FLAGS.iter().position(|f| f.as_bytes() == name) {
                    Some(i) => self.levels[i] = Some(level),
                    None => {
                        return Err(ArgsError::new(
                            ArgsErrorKind::BadValue,
                            format!("Unknown --info item: \"{}\"", show(item)),
                        ))
                    }
                },
            }
        }
        Ok(help)
    }
}

/// rsync's `--debug` flags; none of them has a counterpart here, so they are accepted and
/// change nothing. sftpsync adds `sftp`.
const RSYNC_DEBUG_FLAGS: [&str; 24] = [
    "acl", "backup", "bind", "chdir", "connect", "cmd", "del", "deltasum", "dup", "exit", "filter",
    "flist", "fuzzy", "genr", "hash", "hlink", "iconv", "io", "nstr", "own", "proto", "recv",
    "send", "time",
];

/// Applies one `--debug` value with `--info`'s syntax (`FLAG[LEVEL]`, comma-separated,
/// `ALL`, `NONE`); only the `sftp` level is kept. Returns whether `help` was asked for.
fn apply_debug(sftp: &mut Option<u8>, value: &[u8]) -> Result<bool, ArgsError> {
    let mut help = false;
    for item in value.split(|&b| b == b',').filter(|i| !i.is_empty()) {
        let digits = item.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        let (name, level) = item.split_at(item.len() - digits);
        let name = name.to_ascii_lowercase();
        let level = level
            .iter()
            .fold(None, |n: Option<u8>, d| {
                Some(
                    n.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d - b'0')
                        .min(9),
                )
            })
            .unwrap_or(1);
        match &name[..] {
            b"help" => help = true,
            b"sftp" | b"all" => *sftp = Some(level),
            b"none" => *sftp = Some(0),
            _ if RSYNC_DEBUG_FLAGS.iter().any(|f| f.as_bytes() == name) => {}
            _ => {
                return Err(ArgsError::new(
                    ArgsErrorKind::BadValue,
                    format!("Unknown --debug item: \"{}\"", show(item)),
                ))
            }
        }
    }
    Ok(help)
}

/// rsync's `--delete-WHEN` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteTiming {
    Before,
    During,
    Delay,
    After,
}

#[derive(Default)]
struct State {
    args: CliArgs,
    /// Two different `--delete-WHEN` options were given.
    delete_when_clash: bool,
    f_count: u8,
    version: bool,
    /// `--info=help` was given.
    info_help: bool,
    /// `--debug=help` was given.
    debug_help: bool,
    /// The last of `-r` and `--no-r`, apart from `-a`: `--files-from` heeds only these.
    r_explicit: Option<bool>,
    /// The last of `-R` and `--no-R`.
    relative: Option<bool>,
    /// The last of `-d` and `--no-d`.
    dirs: Option<bool>,
    /// `-z`, `--no-z`, and a `--zc` that names an algorithm, in rsync's order: the level
    /// and a `none` choice are weighed in `finish`.
    compress: bool,
    operands: Vec<OsString>,
}

impl State {
    fn delete_when(&mut self, when: DeleteTiming) {
        if self.args.delete_when.is_some_and(|w| w != when) {
            self.delete_when_clash = true;
        }
        self.args.delete_when = Some(when);
    }

    fn finish(mut self) -> Result<CliArgs, ArgsError> {
        let a = &mut self.args;
        if self.operands.is_empty() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadOperands,
                "missing SRC and DEST (usage: sftpsync [OPTION]... SRC [SRC]... DEST; see --help)",
            ));
        }
        if a.delete_excluded || a.delete_when.is_some() {
            a.delete = true;
        }
        a.compress = compression_wanted(
            self.compress,
            a.compress_level,
            a.compress_choice.as_deref(),
        );
        a.relative = self.relative.unwrap_or(false);
        if a.files_from.is_some() {
            // rsync's --files-from side effects, wherever it stands on the line: -R and -d
            // implied, and -a without -r.
            a.recursive = self.r_explicit == Some(true);
            a.relative = self.relative.unwrap_or(true);
            a.dirs = self.dirs.unwrap_or(true);
            if !a.relative {
                return Err(ArgsError::new(
                    ArgsErrorKind::NotSupported,
                    "--files-from with --no-relative is not supported by sftpsync yet",
                ));
            }
            if self.operands.len() != 2 {
                return Err(ArgsError::new(
                    ArgsErrorKind::BadOperands,
                    "--files-from takes one SRC, the directory the listed names are in, and DEST",
                ));
            }
        }
        if a.backup_dir.is_some() {
            a.backup = true;
        }
        if a.backup && a.backup_dir.is_none() {
            // As rsync: backups beside their files leave directory times alone (an implied
            // -O that --no-O does not undo).
            a.omit_dir_times = true;
        }
        if a.backup {
            match &a.suffix {
                Some(sfx) if sfx.contains(&b'/') => {
                    return Err(ArgsError::new(
                        ArgsErrorKind::BadValue,
                        format!("--suffix cannot contain slashes: {}", show(sfx)),
                    ))
                }
                Some(sfx) if sfx.is_empty() && a.backup_dir.is_none() => {
                    return Err(ArgsError::new(
                        ArgsErrorKind::BadValue,
                        "--suffix cannot be empty without a --backup-dir",
                    ))
                }
                _ => {}
            }
        }
        if let Some((user, group)) = &a.chown {
            // As rsync: forcing an owner or group means preserving it.
            a.owner |= user.is_some();
            a.group |= group.is_some();
        }
        // What --partial-dir and --delay-updates clash with is named after the one given.
        let staging = if a.delay_updates {
            "delay-updates"
        } else {
            "partial-dir"
        };
        if a.delay_updates {
            match &a.partial_dir {
                Some(dir) if dir.starts_with(b"/") => {
                    return Err(ArgsError::new(
                        ArgsErrorKind::NotSupported,
                        "--delay-updates with an absolute --partial-dir is not supported by \
                         sftpsync: files of the same name from different directories would \
                         meet in it",
                    ))
                }
                Some(_) => {}
                // As rsync: the holding directory beside each file, which also keeps
                // interrupted files (--partial).
                None => a.partial_dir = Some(b".~tmp~".to_vec()),
            }
            a.partial = true;
        }
        if a.append > 0 {
            if a.whole_file == Some(true) {
                return Err(ArgsError::new(
                    ArgsErrorKind::BadOperands,
                    "--append cannot be used with --whole-file",
                ));
            }
            if a.partial_dir.is_some() {
                return Err(ArgsError::new(
                    ArgsErrorKind::BadOperands,
                    format!("--append cannot be used with --{staging}"),
                ));
            }
            a.inplace = true;
        }
        if a.inplace && a.partial_dir.is_some() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadOperands,
                format!("--inplace cannot be used with --{staging}"),
            ));
        }
        if self.delete_when_clash {
            return Err(ArgsError::new(
                ArgsErrorKind::BadOperands,
                "you may not combine multiple --delete-WHEN options",
            ));
        }
        let (sources, dest) = resolve_operands(&self.operands)?;
        // No destination (one operand, or `host:a :b`): the sources are listed.
        a.list_only |= dest.is_none();
        a.sources = sources;
        a.dest = dest;
        // rsync's listing mode implies --dirs (unless --no-d), which is enough for --delete.
        if a.files_from.is_none() {
            a.dirs = self.dirs.unwrap_or(a.list_only);
        }
        if a.delete && !a.recursive && !a.dirs {
            return Err(ArgsError::new(
                ArgsErrorKind::BadOperands,
                "--delete does not work without --recursive (-r) or --dirs (-d).",
            ));
        }
        Ok(self.args)
    }
}

type FlagFn = fn(&mut State);
type ValueFn = fn(&mut State, &str, OsString) -> Result<(), ArgsError>;

#[derive(Clone, Copy)]
enum Kind {
    Flag(FlagFn),
    Value(ValueFn),
    /// Accepted and meaningless here: sftpsync already behaves that way (e.g. `--no-z`,
    /// `--no-inc-recursive`), so scripts written for rsync keep working.
    Ignored(FlagFn),
    Help,
    Version,
}

struct Spec {
    long: Option<&'static str>,
    short: Option<u8>,
    kind: Kind,
}

const fn flag(long: &'static str, short: Option<u8>, f: FlagFn) -> Spec {
    Spec {
        long: Some(long),
        short,
        kind: Kind::Flag(f),
    }
}

const fn short_flag(short: u8, f: FlagFn) -> Spec {
    Spec {
        long: None,
        short: Some(short),
        kind: Kind::Flag(f),
    }
}

fn alt_dest_option(kind: AltDest) -> &'static str {
    match kind {
        AltDest::Link => "--link-dest",
        AltDest::Copy => "--copy-dest",
        AltDest::Compare => "--compare-dest",
    }
}

/// One `--link-dest`, `--copy-dest` or `--compare-dest`: they share rsync's limit of 20 and
/// cannot be mixed.
fn alt_dest(s: &mut State, name: &str, v: OsString, kind: AltDest) -> Result<(), ArgsError> {
    if v.is_empty() {
        return Err(ArgsError::new(
            ArgsErrorKind::BadValue,
            format!("option {name} needs a directory"),
        ));
    }
    if !s.args.link_dest.is_empty() && s.args.alt_dest != kind {
        return Err(ArgsError::new(
            ArgsErrorKind::BadValue,
            format!(
                "ERROR: the {} option conflicts with the {} option",
                alt_dest_option(kind),
                alt_dest_option(s.args.alt_dest)
            ),
        ));
    }
    if s.args.link_dest.len() == 20 {
        return Err(ArgsError::new(
            ArgsErrorKind::BadValue,
            format!(
                "ERROR: at most 20 {} args may be specified",
                alt_dest_option(kind)
            ),
        ));
    }
    s.args.alt_dest = kind;
    s.args.link_dest.push(v.into_vec());
    Ok(())
}

const fn value(long: &'static str, short: Option<u8>, f: ValueFn) -> Spec {
    Spec {
        long: Some(long),
        short,
        kind: Kind::Value(f),
    }
}

const fn ignored(long: &'static str, short: Option<u8>) -> Spec {
    Spec {
        long: Some(long),
        short,
        kind: Kind::Ignored(|_| {}),
    }
}

/// Everything sftpsync accepts. The `no-*` spellings are exactly rsync's: each negatable
/// option accepts both its long and its short name after `--no-`, and nothing else does.
static OPTIONS: &[Spec] = &[
    Spec {
        long: Some("help"),
        short: None,
        kind: Kind::Help,
    },
    Spec {
        long: Some("version"),
        short: Some(b'V'),
        kind: Kind::Version,
    },
    // Output.
    flag("verbose", Some(b'v'), |s| {
        s.args.verbose = s.args.verbose.saturating_add(1)
    }),
    flag("no-verbose", None, |s| s.args.verbose = 0),
    flag("no-v", None, |s| s.args.verbose = 0),
    flag("quiet", Some(b'q'), |s| s.args.quiet = true),
    flag("itemize-changes", Some(b'i'), |s| {
        s.args.itemize_changes = s.args.itemize_changes.saturating_add(1)
    }),
    flag("no-itemize-changes", None, |s| s.args.itemize_changes = 0),
    flag("no-i", None, |s| s.args.itemize_changes = 0),
    value("out-format", None, |s, _, v| {
        s.args.out_format = Some(v.into_vec());
        Ok(())
    }),
    // rsync's deprecated name for --out-format; "json" asks for --json.
    value("log-format", None, |s, _, v| {
        if v == "json" {
            s.args.json = true;
        } else {
            s.args.out_format = Some(v.into_vec());
        }
        Ok(())
    }),
    flag("json", None, |s| s.args.json = true),
    flag("no-json", None, |s| s.args.json = false),
    value("log-file", None, |s, _, v| {
        s.args.log_file = Some(PathBuf::from(v));
        Ok(())
    }),
    value("log-file-format", None, |s, _, v| {
        s.args.log_file_format = Some(v.into_vec());
        Ok(())
    }),
    value("stderr", None, |s, _, v| {
        s.args.messages_to_stderr = stderr_mode(v.as_bytes())?;
        Ok(())
    }),
    flag("msgs2stderr", None, |s| s.args.messages_to_stderr = true),
    flag("no-msgs2stderr", None, |s| {
        s.args.messages_to_stderr = false
    }),
    value("info", None, |s, _, v| {
        if s.args.info.apply(v.as_bytes())? {
            s.info_help = true;
        }
        Ok(())
    }),
    value("debug", None, |s, _, v| {
        if apply_debug(&mut s.args.debug_sftp, v.as_bytes())? {
            s.debug_help = true;
        }
        Ok(())
    }),
    flag("stats", None, |s| s.args.stats = true),
    flag("progress", None, |s| s.args.progress = true),
    flag("no-progress", None, |s| s.args.progress = false),
    short_flag(b'P', |s| {
        s.args.partial = true;
        s.args.progress = true;
    }),
    flag("human-readable", Some(b'h'), |s| {
        s.args.human_readable = s.args.human_readable.saturating_add(1)
    }),
    flag("no-human-readable", None, |s| s.args.human_readable = 0),
    flag("no-h", None, |s| s.args.human_readable = 0),
    flag("8-bit-output", Some(b'8'), |s| {
        s.args.eight_bit_output = true
    }),
    flag("no-8-bit-output", None, |s| s.args.eight_bit_output = false),
    flag("no-8", None, |s| s.args.eight_bit_output = false),
    flag("list-only", None, |s| s.args.list_only = true),
    // What to copy and keep. -a sets its parts at its position, so a later --no-X wins and
    // an earlier one is overridden, exactly as in rsync.
    flag("archive", Some(b'a'), |s| {
        let a = &mut s.args;
        a.recursive = true;
        a.links = true;
        a.perms = true;
        a.times = true;
        a.group = true;
        a.owner = true;
        a.devices = true;
        a.specials = true;
    }),
    flag("recursive", Some(b'r'), |s| {
        s.args.recursive = true;
        s.r_explicit = Some(true);
    }),
    flag("no-recursive", None, |s| {
        s.args.recursive = false;
        s.r_explicit = Some(false);
    }),
    flag("no-r", None, |s| {
        s.args.recursive = false;
        s.r_explicit = Some(false);
    }),
    flag("relative", Some(b'R'), |s| s.relative = Some(true)),
    flag("no-relative", None, |s| s.relative = Some(false)),
    flag("no-R", None, |s| s.relative = Some(false)),
    // The default, so not worth a line of help; each still undoes an earlier negation.
    Spec {
        long: Some("implied-dirs"),
        short: None,
        kind: Kind::Ignored(|s| s.args.no_implied_dirs = false),
    },
    Spec {
        long: Some("i-d"),
        short: None,
        kind: Kind::Ignored(|s| s.args.no_implied_dirs = false),
    },
    flag("no-implied-dirs", None, |s| s.args.no_implied_dirs = true),
    flag("no-i-d", None, |s| s.args.no_implied_dirs = true),
    flag("dirs", Some(b'd'), |s| s.dirs = Some(true)),
    flag("no-dirs", None, |s| s.dirs = Some(false)),
    flag("no-d", None, |s| s.dirs = Some(false)),
    flag("links", Some(b'l'), |s| s.args.links = true),
    flag("no-links", None, |s| s.args.links = false),
    flag("no-l", None, |s| s.args.links = false),
    flag("copy-links", Some(b'L'), |s| s.args.copy_links = true),
    flag("no-copy-links", None, |s| s.args.copy_links = false),
    flag("no-L", None, |s| s.args.copy_links = false),
    flag("copy-unsafe-links", None, |s| {
        s.args.copy_unsafe_links = true
    }),
    flag("no-copy-unsafe-links", None, |s| {
        s.args.copy_unsafe_links = false
    }),
    flag("safe-links", None, |s| s.args.safe_links = true),
    flag("no-safe-links", None, |s| s.args.safe_links = false),
    flag("omit-dir-times", Some(b'O'), |s| {
        s.args.omit_dir_times = true
    }),
    flag("no-omit-dir-times", None, |s| s.args.omit_dir_times = false),
    flag("no-O", None, |s| s.args.omit_dir_times = false),
    flag("omit-link-times", Some(b'J'), |s| {
        s.args.omit_link_times = true
    }),
    flag("no-omit-link-times", None, |s| {
        s.args.omit_link_times = false
    }),
    flag("no-J", None, |s| s.args.omit_link_times = false),
    flag("perms", Some(b'p'), |s| s.args.perms = true),
    flag("no-perms", None, |s| s.args.perms = false),
    flag("no-p", None, |s| s.args.perms = false),
    flag("executability", Some(b'E'), |s| s.args.executability = true),
    flag("atimes", Some(b'U'), |s| s.args.atimes = true),
    flag("no-atimes", None, |s| s.args.atimes = false),
    flag("no-U", None, |s| s.args.atimes = false),
    flag("open-noatime", None, |s| s.args.open_noatime = true),
    flag("no-open-noatime", None, |s| s.args.open_noatime = false),
    flag("sparse", Some(b'S'), |s| s.args.sparse = true),
    flag("no-sparse", None, |s| s.args.sparse = false),
    flag("no-S", None, |s| s.args.sparse = false),
    flag("preallocate", None, |s| s.args.preallocate = true),
    flag("times", Some(b't'), |s| s.args.times = true),
    flag("no-times", None, |s| s.args.times = false),
    flag("no-t", None, |s| s.args.times = false),
    flag("group", Some(b'g'), |s| s.args.group = true),
    flag("no-group", None, |s| s.args.group = false),
    flag("no-g", None, |s| s.args.group = false),
    flag("owner", Some(b'o'), |s| s.args.owner = true),
    flag("no-owner", None, |s| s.args.owner = false),
    flag("no-o", None, |s| s.args.owner = false),
    short_flag(b'D', |s| {
        s.args.devices = true;
        s.args.specials = true;
    }),
    flag("no-D", None, |s| {
        s.args.devices = false;
        s.args.specials = false;
    }),
    flag("devices", None, |s| s.args.devices = true),
    flag("no-devices", None, |s| s.args.devices = false),
    flag("specials", None, |s| s.args.specials = true),
    flag("no-specials", None, |s| s.args.specials = false),
    flag("hard-links", Some(b'H'), |s| s.args.hard_links = true),
    flag("no-hard-links", None, |s| s.args.hard_links = false),
    flag("no-H", None, |s| s.args.hard_links = false),
    value("chmod", None, |s, _, v| {
        let text = v.to_string_lossy().into_owned();
        crate::remap::parse_chmod(&text).map_err(|m| ArgsError::new(ArgsErrorKind::BadValue, m))?;
        s.args.chmod.push(text);
        Ok(())
    }),
    value("chown", None, |s, name, v| {
        let text = v.to_string_lossy();
        let (user, group) = crate::remap::split_chown(&text);
        if user.is_none() && group.is_none() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs USER, USER:GROUP or :GROUP"),
            ));
        }
        s.args.chown = Some((user.map(str::to_owned), group.map(str::to_owned)));
        Ok(())
    }),
    flag("numeric-ids", None, |s| s.args.numeric_ids = true),
    flag("no-numeric-ids", None, |s| s.args.numeric_ids = false),
    flag("one-file-system", Some(b'x'), |s| {
        s.args.one_file_system = s.args.one_file_system.saturating_add(1)
    }),
    flag("no-one-file-system", None, |s| s.args.one_file_system = 0),
    flag("no-x", None, |s| s.args.one_file_system = 0),
    // Deciding what to transfer.
    flag("checksum", Some(b'c'), |s| s.args.checksum = true),
    flag("no-checksum", None, |s| s.args.checksum = false),
    flag("no-c", None, |s| s.args.checksum = false),
    flag("size-only", None, |s| s.args.size_only = true),
    flag("ignore-times", Some(b'I'), |s| s.args.ignore_times = true),
    value("max-size", None, |s, _, v| {
        s.args.max_size = Some(size_limit("max-size", &v)?);
        Ok(())
    }),
    value("min-size", None, |s, _, v| {
        s.args.min_size = Some(size_limit("min-size", &v)?);
        Ok(())
    }),
    // These choose and seed rsync's own block and file hashes; sftpsync has none of those
    // (see README: delta), so the values are checked as rsync checks them and go no further.
    value("checksum-choice", None, |_, _, v| {
        checksum_choice(v.as_bytes())
    }),
    value("cc", None, |_, _, v| checksum_choice(v.as_bytes())),
    value("checksum-seed", None, |_, name, v| {
        c_int(name, &v).map(drop)
    }),
    value("modify-window", Some(b'@'), |s, name, v| {
        s.args.modify_window = Some(c_int(name, &v)?);
        Ok(())
    }),
    flag("update", Some(b'u'), |s| s.args.update = true),
    flag("existing", None, |s| s.args.existing = true),
    flag("ignore-non-existing", None, |s| s.args.existing = true),
    flag("ignore-existing", None, |s| s.args.ignore_existing = true),
    flag("prune-empty-dirs", Some(b'm'), |s| {
        s.args.prune_empty_dirs = true
    }),
    flag("no-prune-empty-dirs", None, |s| {
        s.args.prune_empty_dirs = false
    }),
    flag("no-m", None, |s| s.args.prune_empty_dirs = false),
    flag("ignore-missing-args", None, |s| {
        s.args.ignore_missing_args = true
    }),
    flag("delete-missing-args", None, |s| {
        s.args.delete_missing_args = true
    }),
    flag("whole-file", Some(b'W'), |s| s.args.whole_file = Some(true)),
    flag("no-whole-file", None, |s| s.args.whole_file = Some(false)),
    flag("no-W", None, |s| s.args.whole_file = Some(false)),
    // Deleting.
    flag("delete", None, |s| s.args.delete = true),
    flag("del", None, |s| s.delete_when(DeleteTiming::During)),
    flag("delete-during", None, |s| {
        s.delete_when(DeleteTiming::During)
    }),
    flag("delete-before", None, |s| {
        s.delete_when(DeleteTiming::Before)
    }),
    flag("delete-delay", None, |s| s.delete_when(DeleteTiming::Delay)),
    flag("delete-after", None, |s| s.delete_when(DeleteTiming::After)),
    flag("delete-excluded", None, |s| s.args.delete_excluded = true),
    value("max-delete", None, |s, name, v| {
        let n = c_int(name, &v)?;
        s.args.max_delete = Some(u32::try_from(n).unwrap_or(0));
        Ok(())
    }),
    flag("force", None, |s| s.args.force = true),
    flag("no-force", None, |s| s.args.force = false),
    flag("remove-source-files", None, |s| s.args.remove_source = 1),
    flag("remove-sent-files", None, |s| s.args.remove_source = 2),
    flag("ignore-errors", None, |s| s.args.ignore_errors = true),
    flag("no-ignore-errors", None, |s| s.args.ignore_errors = false),
    // Filtering: all of these append to one list so their relative order survives.
    value("filter", Some(b'f'), |s, _, v| {
        s.args.filters.push(FilterArg::Rule(v.into_vec()));
        Ok(())
    }),
    short_flag(b'F', |s| {
        // rsync ignores a third and later -F.
        s.f_count = s.f_count.saturating_add(1);
        let rule: &[u8] = match s.f_count {
            1 => b"dir-merge /.rsync-filter",
            2 => b"- .rsync-filter",
            _ => return,
        };
        s.args.filters.push(FilterArg::Rule(rule.to_vec()));
    }),
    flag("cvs-exclude", Some(b'C'), |s| s.args.cvs_exclude = true),
    value("exclude", None, |s, _, v| {
        s.args.filters.push(FilterArg::Exclude(v.into_vec()));
        Ok(())
    }),
    value("include", None, |s, _, v| {
        s.args.filters.push(FilterArg::Include(v.into_vec()));
        Ok(())
    }),
    value("exclude-from", None, |s, _, v| {
        s.args
            .filters
            .push(FilterArg::ExcludeFrom(PathBuf::from(v)));
        Ok(())
    }),
    value("include-from", None, |s, _, v| {
        s.args
            .filters
            .push(FilterArg::IncludeFrom(PathBuf::from(v)));
        Ok(())
    }),
    value("files-from", None, |s, name, v| {
        if v.is_empty() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs a file ('-' for standard input)"),
            ));
        }
        s.args.files_from = Some(v.into_vec());
        Ok(())
    }),
    flag("from0", Some(b'0'), |s| s.args.from0 = true),
    flag("no-from0", None, |s| s.args.from0 = false),
    value("link-dest", None, |s, name, v| {
        alt_dest(s, name, v, AltDest::Link)
    }),
    value("copy-dest", None, |s, name, v| {
        alt_dest(s, name, v, AltDest::Copy)
    }),
    value("compare-dest", None, |s, name, v| {
        alt_dest(s, name, v, AltDest::Compare)
    }),
    flag("backup", Some(b'b'), |s| s.args.backup = true),
    flag("no-backup", None, |s| s.args.backup = false),
    value("backup-dir", None, |s, name, v| {
        if v.is_empty() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs a directory"),
            ));
        }
        s.args.backup_dir = Some(v.into_vec());
        Ok(())
    }),
    value("suffix", None, |s, _, v| {
        s.args.suffix = Some(v.into_vec());
        Ok(())
    }),
    // Transfer and connection.
    flag("dry-run", Some(b'n'), |s| s.args.dry_run = true),
    flag("partial", None, |s| s.args.partial = true),
    flag("inplace", None, |s| s.args.inplace = true),
    flag("no-inplace", None, |s| s.args.inplace = false),
    value("partial-dir", None, |s, name, v| {
        let dir = partial_dir(&v.into_vec()).map_err(|why| {
            ArgsError::new(ArgsErrorKind::BadValue, format!("option {name}: {why}"))
        })?;
        s.args.partial = true;
        s.args.partial_dir = Some(dir);
        Ok(())
    }),
    flag("delay-updates", None, |s| s.args.delay_updates = true),
    value("temp-dir", Some(b'T'), |s, name, v| {
        if v.is_empty() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs a directory"),
            ));
        }
        s.args.temp_dir = Some(v.into_vec());
        Ok(())
    }),
    flag("no-delay-updates", None, |s| s.args.delay_updates = false),
    flag("mkpath", None, |s| s.args.mkpath = true),
    flag("no-mkpath", None, |s| s.args.mkpath = false),
    flag("append", None, |s| s.args.append = 1),
    flag("append-verify", None, |s| s.args.append = 2),
    flag("no-append", None, |s| s.args.append = 0),
    flag("no-partial", None, |s| s.args.partial = false),
    value("rsh", Some(b'e'), |s, name, v| {
        // rsync would run the host name as the command; refuse instead.
        if v.is_empty() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs a command, e.g. {name} 'ssh -p 2222'"),
            ));
        }
        s.args.rsh = Some(v);
        Ok(())
    }),
    flag("compress", Some(b'z'), |s| s.compress = true),
    flag("no-compress", None, |s| s.compress = false),
    flag("no-z", None, |s| s.compress = false),
    value("compress-level", None, |s, name, v| {
        s.args.compress_level = Some(c_int(name, &v)?);
        Ok(())
    }),
    value("zl", None, |s, name, v| {
        s.args.compress_level = Some(c_int(name, &v)?);
        Ok(())
    }),
    value("compress-choice", None, compress_choice),
    value("zc", None, compress_choice),
    flag("old-compress", None, |s| {
        s.compress = true;
        s.args.compress_choice = Some("zlib".into());
    }),
    flag("new-compress", None, |s| {
        s.compress = true;
        s.args.compress_choice = Some("zlibx".into());
    }),
    // ssh compresses the whole stream with its own settings: these are checked as rsync
    // checks them and change nothing.
    value("compress-threads", None, |_, name, v| {
        c_int(name, &v).map(drop)
    }),
    value("zt", None, |_, name, v| c_int(name, &v).map(drop)),
    value("skip-compress", None, |_, _, _| Ok(())),
    value("bwlimit", None, |s, _, v| {
        let text = v.to_string_lossy();
        s.args.bwlimit = crate::throttle::parse_rate(&text)
            .map_err(|m| ArgsError::new(ArgsErrorKind::BadValue, m))?;
        Ok(())
    }),
    flag("no-bwlimit", None, |s| s.args.bwlimit = None),
    // rsync caps its own allocations; sftpsync's memory use does not grow with a setting
    // like that, so the size is checked with rsync's syntax and limits and goes no further.
    value("max-alloc", None, |_, _, v| {
        crate::size_arg::parse_size(MAX_ALLOC, v.as_bytes())
            .map(drop)
            .map_err(|m| ArgsError::new(ArgsErrorKind::BadValue, m))
    }),
    flag("no-config", None, |s| s.args.no_config = true),
    flag("no-index", None, |s| s.args.no_index = true),
    flag("trust-index", None, |s| s.args.trust_index = true),
    flag("verify", None, |s| s.args.verify = true),
    flag("no-verify", None, |s| s.args.verify = false),
    flag("no-trust-index", None, |s| s.args.trust_index = false),
    flag("require-atomic-replace", None, |s| {
        s.args.require_atomic_replace = true
    }),
    flag("no-require-atomic-replace", None, |s| {
        s.args.require_atomic_replace = false
    }),
    value("sftp-server", None, |s, name, v| {
        if v.is_empty() {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs the path of an sftp-server binary"),
            ));
        }
        s.args.sftp_server = Some(PathBuf::from(v));
        Ok(())
    }),
    value("channels", None, |s, name, v| {
        let n = c_int(name, &v)?;
        if !(1..=64).contains(&n) {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs a number of channels from 1 to 64"),
            ));
        }
        s.args.channels = Some(n as u32);
        Ok(())
    }),
    value("timeout", None, |s, name, v| {
        s.args.timeout = seconds(name, &v)?;
        Ok(())
    }),
    flag("no-timeout", None, |s| s.args.timeout = None),
    value("contimeout", None, |s, name, v| {
        s.args.contimeout = seconds(name, &v)?;
        Ok(())
    }),
    flag("no-contimeout", None, |s| s.args.contimeout = None),
    value("retries", None, |s, name, v| {
        let n = c_int(name, &v)?;
        if !(0..=100).contains(&n) {
            return Err(ArgsError::new(
                ArgsErrorKind::BadValue,
                format!("option {name} needs a number of retries from 0 to 100"),
            ));
        }
        s.args.retries = Some(n as u32);
        Ok(())
    }),
    // Ignored: each one asks for what sftpsync always does.
    ignored("inc-recursive", None),
    ignored("i-r", None),
    ignored("no-inc-recursive", None),
    ignored("no-i-r", None),
    ignored("no-acls", None),
    ignored("no-A", None),
    ignored("no-xattrs", None),
    ignored("no-X", None),
    ignored("no-crtimes", None),
    ignored("no-N", None),
    ignored("no-fuzzy", None),
    ignored("no-y", None),
    ignored("no-write-devices", None),
    ignored("no-munge-links", None),
    ignored("no-iconv", None),
    ignored("no-blocking-io", None),
    ignored("no-motd", None),
    ignored("no-old-args", None),
    // No remote shell ever sees our paths, so they are always "secluded"; and we always
    // check what the server sends, which --trust-sender only allows rsync to skip.
    ignored("secluded-args", Some(b's')),
    ignored("protect-args", None),
    ignored("no-secluded-args", None),
    ignored("no-protect-args", None),
    ignored("no-s", None),
    ignored("trust-sender", None),
];

/// rsync options that sftpsync recognizes but does not implement yet: `(long, short)`.
/// To support one, delete it here and give it an entry in [`OPTIONS`].
static NOT_YET: &[(&str, Option<u8>)] = &[
    ("motd", None),
    ("old-dirs", None),
    ("old-d", None),
    ("acls", Some(b'A')),
    ("xattrs", Some(b'X')),
    ("crtimes", Some(b'N')),
    ("super", None),
    ("no-super", None),
    ("fake-super", None),
    ("copy-devices", None),
    ("write-devices", None),
    ("drop-D", None),
    ("insecure-links", None),
    ("confine-root", None),
    ("munge-links", None),
    ("copy-dirlinks", Some(b'k')),
    ("keep-dirlinks", Some(b'K')),
    ("block-size", Some(b'B')),
    ("fuzzy", Some(b'y')),
    ("read-batch", None),
    ("write-batch", None),
    ("only-write-batch", None),
    ("old-args", None),
    ("usermap", None),
    ("groupmap", None),
    ("copy-as", None),
    ("fsync", None),
    ("stop-after", None),
    ("time-limit", None),
    ("stop-at", None),
    ("rsync-path", None),
    ("remote-option", Some(b'M')),
    ("iconv", None),
    ("ipv4", Some(b'4')),
    ("ipv6", Some(b'6')),
    ("blocking-io", None),
    ("outbuf", None),
    ("qsort", None),
    ("protocol", None),
    ("address", None),
    ("port", None),
    ("sockopts", None),
    ("password-file", None),
    ("early-input", None),
    ("server", None),
    ("sender", None),
    ("daemon", None),
    ("config", None),
    ("dparam", None),
    ("detach", None),
    ("no-detach", None),
];

/// One entry of the option table, as the man page and completion generators see it.
#[derive(Debug, Clone, Copy)]
pub struct OptionDoc {
    pub long: Option<&'static str>,
    pub short: Option<char>,
    pub takes_value: bool,
    /// Listed in `--help` under its own name. The others are negations (`--no-X`), aliases
    /// and accepted-but-ignored rsync options.
    pub in_help: bool,
}

/// Every option sftpsync accepts, in table order.
pub fn option_docs() -> impl Iterator<Item = OptionDoc> {
    OPTIONS.iter().map(|spec| OptionDoc {
        long: spec.long,
        short: spec.short.map(char::from),
        takes_value: matches!(spec.kind, Kind::Value(_)),
        in_help: listed_in_help(spec),
    })
}

/// The `--help` text.
pub fn help() -> String {
    help_text()
}

/// Whether `--help` must name this option: negations and aliases are covered by the line
/// of what they negate or stand for.
fn listed_in_help(spec: &Spec) -> bool {
    if matches!(spec.kind, Kind::Ignored(_)) {
        return false;
    }
    match spec.long {
        Some(long) => {
            !long.starts_with("no-")
                && ![
                    "log-format",
                    "ignore-non-existing",
                    "remove-sent-files",
                    "zl",
                    "zc",
                    "zt",
                    "cc",
                ]
                .contains(&long)
        }
        None => true,
    }
}

fn find_long(name: &[u8]) -> Result<&'static Spec, ArgsError> {
    if let Some(spec) = OPTIONS
        .iter()
        .find(|s| s.long.is_some_and(|l| l.as_bytes() == name))
    {
        return Ok(spec);
    }
    if let Some(&(long, short)) = NOT_YET.iter().find(|(l, _)| l.as_bytes() == name) {
        return Err(not_yet(long, short));
    }
    Err(ArgsError::new(
        ArgsErrorKind::UnknownOption,
        format!("unknown option --{}", show(name)),
    ))
}

fn find_short(c: u8, cluster: &[u8]) -> Result<&'static Spec, ArgsError> {
    if let Some(spec) = OPTIONS.iter().find(|s| s.short == Some(c)) {
        return Ok(spec);
    }
    if let Some(&(long, short)) = NOT_YET.iter().find(|(_, s)| *s == Some(c)) {
        return Err(not_yet(long, short));
    }
    let shown = show(&[c]);
    let message = if cluster.len() > 2 {
        format!("unknown option -{shown} (in {})", show(cluster))
    } else {
        format!("unknown option -{shown}")
    };
    Err(ArgsError::new(ArgsErrorKind::UnknownOption, message))
}

fn not_yet(long: &str, short: Option<u8>) -> ArgsError {
    let short = short.map_or(String::new(), |c| format!(" (-{})", c as char));
    ArgsError::new(
        ArgsErrorKind::NotSupported,
        format!("option --{long}{short} is not supported by sftpsync yet"),
    )
}

/// Reads an integer the way popt's POPT_ARG_INT does: `strtol(s, &end, 0)` must consume
/// the whole text, so hex (`0x10`) and octal (`010` is 8) work, leading blanks and a sign
/// are allowed, and an empty string is 0.
fn c_int(name: &str, v: &OsStr) -> Result<i32, ArgsError> {
    let text = v.as_bytes();
    let invalid = || {
        ArgsError::new(
            ArgsErrorKind::BadValue,
            format!("{name}={}: invalid numeric value", show(text)),
        )
    };
    if text.is_empty() {
        return Ok(0);
    }
    let (negative, s) = match text.trim_ascii_start() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        s => (false, s),
    };
    let (radix, digits) = match s {
        [b'0', b'x' | b'X', d, ..] if d.is_ascii_hexdigit() => (16, &s[2..]),
        [b'0', ..] => (8, s),
        _ => (10, s),
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    let mut n: i64 = 0;
    for &d in digits {
        let d = (d as char).to_digit(radix).ok_or_else(invalid)?;
        // Saturate: anything past i32 is reported as out of range below anyway.
        n = n
            .saturating_mul(i64::from(radix))
            .saturating_add(i64::from(d));
    }
    let n = if negative { -n } else { n };
    i32::try_from(n).map_err(|_| {
        ArgsError::new(
            ArgsErrorKind::BadValue,
            format!("{name}={}: number too large or too small", show(text)),
        )
    })
}

/// `--max-alloc`: bytes unless a unit says otherwise, at least 1 MiB, 0 for no limit.
const MAX_ALLOC: crate::size_arg::SizeRule = crate::size_arg::SizeRule {
    name: "max-alloc",
    default_unit: b'b',
    min: 1 << 20,
    zero_unlimited: true,
};

/// `--max-size`/`--min-size`: a size in bytes by rsync's rules (bare numbers are bytes).
fn size_limit(name: &'static str, v: &OsStr) -> Result<u64, ArgsError> {
    let rule = crate::size_arg::SizeRule {
        name,
        default_unit: b'b',
        min: 0,
        zero_unlimited: false,
    };
    crate::size_arg::parse_size(rule, v.as_bytes())
        .map_err(|m| ArgsError::new(ArgsErrorKind::BadValue, m))
}

/// Whether ssh is asked to compress, by rsync's rules: a `--zc` naming an algorithm or any
/// `--zl` implies `-z`; `--zc=none` wins over everything; and level 0 means no compression
/// for zlib and zlibx (for zstd it is the default level, and lz4 has no levels).
fn compression_wanted(z: bool, level: Option<i32>, choice: Option<&str>) -> bool {
    let on = z || level.is_some();
    match choice {
        Some("none") => false,
        Some("zlib" | "zlibx") if level == Some(0) => false,
        _ => on,
    }
}

/// rsync's compression algorithms, as `--compress-choice` names them.
const COMPRESS_NAMES: [&str; 6] = ["zstd", "lz4", "zlibx", "zlib", "none", "auto"];

fn compress_choice(s: &mut State, _: &str, v: OsString) -> Result<(), ArgsError> {
    let name = v.to_string_lossy().to_ascii_lowercase();
    if !COMPRESS_NAMES.contains(&name.as_str()) {
        return Err(ArgsError::new(
            ArgsErrorKind::UnknownName,
            format!("unknown compress name: {}", show(v.as_bytes())),
        ));
    }
    // Naming an algorithm asks for compression; `auto` and `none` do not.
    if name != "auto" && name != "none" {
        s.compress = true;
    }
    s.args.compress_choice = Some(name);
    Ok(())
}

/// rsync's checksum names (`xxhash` is its older name for xxh64).
const CHECKSUM_NAMES: [&str; 9] = [
    "auto", "xxh128", "xxh3", "xxh64", "xxhash", "md5", "md4", "sha1", "none",
];

/// `--checksum-choice=STR` or `STR,STR` (transfer hash, then file hash). As rsync, a bad
/// name is reported with everything from where it starts.
fn checksum_choice(v: &[u8]) -> Result<(), ArgsError> {
    let known = |name: &[u8]| {
        CHECKSUM_NAMES
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    };
    let unknown = |from: &[u8]| {
        ArgsError::new(
            ArgsErrorKind::UnknownName,
            format!("unknown checksum name: {}", show(from)),
        )
    };
    match v.iter().position(|&b| b == b',') {
        Some(comma) => {
            if !known(&v[..comma]) {
                return Err(unknown(v));
            }
            if !known(&v[comma + 1..]) {
                return Err(unknown(&v[comma + 1..]));
            }
        }
        None if !known(v) => return Err(unknown(v)),
        None => {}
    }
    Ok(())
}

/// `--stderr=MODE`: any leading part of `errors`, `all` or `client`. Only `all` moves the
/// informational lines; `client` is `errors` for a client, which sftpsync always is.
fn stderr_mode(v: &[u8]) -> Result<bool, ArgsError> {
    let is = |word: &str| !v.is_empty() && word.as_bytes().starts_with(v);
    if is("errors") || is("client") {
        Ok(false)
    } else if is("all") {
        Ok(true)
    } else {
        Err(ArgsError::new(
            ArgsErrorKind::BadValue,
            format!(
                "--stderr mode \"{}\" is not one of errors, all, or client",
                show(v)
            ),
        ))
    }
}

/// rsync takes 0 as "no timeout"; a negative one has no sensible meaning, so it is refused
/// here rather than passed on as rsync does.
fn seconds(name: &str, v: &OsStr) -> Result<Option<u32>, ArgsError> {
    let n = c_int(name, v)?;
    match u32::try_from(n) {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(ArgsError::new(
            ArgsErrorKind::BadValue,
            format!("{name}={n}: must not be negative (0 means no timeout)"),
        )),
    }
}

/// The parts of a `[USER@]HOST:PATH` operand, borrowed from it.
#[derive(Clone, Copy)]
struct HostSpec<'a> {
    user: Option<&'a [u8]>,
    host: &'a [u8],
    path: &'a [u8],
}

/// rsync's `parse_hostspec`: remote when a ':' comes before any '/'. The user is what
/// precedes the last '@'; an IPv6 host must be bracketed right where the host starts, and
/// its brackets are dropped. Daemon syntax is an error here, for every operand.
fn split_operand(arg: &[u8]) -> Result<Option<HostSpec<'_>>, ArgsError> {
    let daemon = || {
        ArgsError::new(
            ArgsErrorKind::Daemon,
            format!(
                "rsync daemon (::, rsync://) is not supported: sftpsync talks SFTP ({})",
                show(arg)
            ),
        )
    };
    if arg.len() >= 8 && arg[..8].eq_ignore_ascii_case(b"rsync://") {
        return Err(daemon());
    }
    let mut host_start = 0;
    let mut host_len: Option<usize> = None;
    let mut user_end: Option<usize> = None;
    let mut i = 0;
    let colon = loop {
        let Some(&c) = arg.get(i) else {
            return Ok(None);
        };
        match c {
            b'/' => return Ok(None),
            b':' => break i,
            b'@' => {
                user_end = Some(i);
                host_start = i + 1;
            }
            b'[' => {
                if i != host_start {
                    return Ok(None);
                }
                host_start = i + 1;
                while i < arg.len() && arg[i] != b']' && arg[i] != b'/' {
                    i += 1;
                }
                let len = i - host_start;
                let after = arg.get(i + 1);
                if arg.get(i) != Some(&b']') || len == 0 || !matches!(after, Some(b':') | None) {
                    return Ok(None);
                }
                host_len = Some(len);
            }
            _ => {}
        }
        i += 1;
    };
    let host_len = host_len.unwrap_or(colon - host_start);
    let path = &arg[colon + 1..];
    if path.first() == Some(&b':') {
        return Err(daemon());
    }
    Ok(Some(HostSpec {
        user: user_end.map(|end| &arg[..end]),
        host: &arg[host_start..host_start + host_len],
        path,
    }))
}

/// `[USER@]HOST[:PATH]` for commands that take only a server (`doctor`): a name without a
/// colon is a host, not a local path.
pub fn server_operand(arg: &[u8]) -> Result<Location, ArgsError> {
    let with_colon;
    let arg = if arg.contains(&b':') {
        arg
    } else {
        with_colon = [arg, b":"].concat();
        &with_colon
    };
    match split_operand(arg)? {
        Some(spec) => remote(spec, arg),
        None => Err(ArgsError::new(
            ArgsErrorKind::BadOperands,
            format!("{} is not [USER@]HOST[:PATH]", show(arg)),
        )),
    }
}

fn remote(spec: HostSpec<'_>, arg: &[u8]) -> Result<Location, ArgsError> {
    if spec.host.is_empty() {
        return Err(ArgsError::new(
            ArgsErrorKind::BadOperands,
            format!("missing host name in {}", show(arg)),
        ));
    }
    if spec.user == Some(&[][..]) {
        return Err(ArgsError::new(
            ArgsErrorKind::BadOperands,
            format!("empty user name in {}", show(arg)),
        ));
    }
    Ok(Location::Remote {
        user: spec.user.map(<[u8]>::to_vec),
        host: spec.host.to_vec(),
        path: spec.path.to_vec(),
    })
}

fn local(arg: &OsStr, what: &str) -> Result<Location, ArgsError> {
    if arg.is_empty() {
        return Err(ArgsError::new(
            ArgsErrorKind::BadOperands,
            format!("empty {what} argument (use \".\" for the current directory)"),
        ));
    }
    Ok(Location::Local(PathBuf::from(arg)))
}

fn operand_error(message: String) -> ArgsError {
    ArgsError::new(ArgsErrorKind::BadOperands, message)
}

/// rsync's `start_client` rules: the first operand decides between pull and push/local.
fn resolve_operands(ops: &[OsString]) -> Result<(Vec<Location>, Option<Location>), ArgsError> {
    let mut specs = Vec::with_capacity(ops.len());
    for op in ops {
        specs.push(split_operand(op.as_bytes())?);
    }
    let n = ops.len();
    let mut specs = specs.into_iter();
    let first = specs.next().flatten();

    if let Some(first) = first {
        // Pull. A last operand starting with ':' is one more source, so nothing is copied.
        let has_dest = n > 1 && !ops[n - 1].as_bytes().starts_with(b":");
        let src_count = if has_dest { n - 1 } else { n };
        // Checked first, as rsync does: a remote DEST is the more basic mistake.
        let dest = match specs.as_slice().last() {
            _ if !has_dest => None,
            Some(Some(_)) => {
                return Err(operand_error(
                    "remote to remote copies are not supported".to_string(),
                ))
            }
            _ => Some(local(&ops[n - 1], "destination")?),
        };
        let first_arg = ops[0].as_bytes();
        let mut sources = vec![remote(first, first_arg)?];
        for (op, spec) in ops[1..src_count].iter().zip(specs.by_ref()) {
            let arg = op.as_bytes();
            let Some(spec) = spec else {
                return Err(operand_error(format!(
                    "cannot mix remote and local sources: {} is local (write :{} for \
                     another path on the same host)",
                    show(arg),
                    show(arg)
                )));
            };
            // ":path" (rsync's shorthand) continues on the first source's host.
            let follow_on = spec.host.is_empty() && spec.user.is_none();
            if !follow_on && (spec.host, spec.user) != (first.host, first.user) {
                return Err(operand_error(format!(
                    "all remote sources must be on the same host: {} and {}",
                    show(first_arg),
                    show(arg)
                )));
            }
            sources.push(remote(
                HostSpec {
                    path: spec.path,
                    ..first
                },
                first_arg,
            )?);
        }
        return Ok((sources, dest));
    }

    // Push or local copy; a single local operand is just listed.
    let src_count = if n > 1 { n - 1 } else { 1 };
    let mut sources = vec![local(&ops[0], "source")?];
    for (op, spec) in ops[1..src_count].iter().zip(specs.by_ref()) {
        if spec.is_some() {
            return Err(operand_error(format!(
                "cannot mix local and remote sources: {} is remote",
                show(op.as_bytes())
            )));
        }
        sources.push(local(op, "source")?);
    }
    let dest = if n > 1 {
        let arg = ops[n - 1].as_bytes();
        Some(match specs.next().flatten() {
            Some(spec) => remote(spec, arg)?,
            None => local(&ops[n - 1], "destination")?,
        })
    } else {
        None
    };
    Ok((sources, dest))
}

/// Quotes bytes for a one-line message the way rsync prints names: valid UTF-8 stays,
/// control characters and invalid bytes become `\#ooo` (octal).
pub(crate) fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_control() {
                let mut buf = [0; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\#{b:03o}"));
                }
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\#{b:03o}"));
        }
    }
    out
}

/// A `--partial-dir` value as the engine takes it: an absolute path (one directory for every
/// file), or one name to make beside each file. Trailing slashes go; a relative path of more
/// than one name is refused, since rsync would make only its last name and the rest would
/// have to exist in every directory.
fn partial_dir(dir: &[u8]) -> Result<Vec<u8>, &'static str> {
    let trimmed = match dir.iter().rposition(|&b| b != b'/') {
        Some(i) => &dir[..=i],
        None if dir.is_empty() => return Err("needs a directory"),
        None => b"/",
    };
    if trimmed.starts_with(b"/") {
        return Ok(trimmed.to_vec());
    }
    if trimmed.contains(&b'/') || trimmed == b"." || trimmed == b".." {
        return Err("must be one directory name or an absolute path");
    }
    Ok(trimmed.to_vec())
}

fn version_text() -> String {
    format!(
        "sftpsync {}\n\
         rsync's command line and behaviour over plain SFTP (protocol version 3);\n\
         nothing is ever executed on the server.\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn info_help_text() -> String {
    "Use OPT or OPT1 for level 1 output, OPT2 for level 2, etc.; OPT0 silences.
Flags are separated by commas and may be given in any case.

DEL        mention deletions (level 1)
FLIST      say that the file list is being sent or received (levels 1-2)
NAME       mention 1) updated names, 2) unchanged ones too, with %i
PROGRESS   show 1) per-file progress or 2) one line for the whole transfer
SKIP       mention files passed over (--max-size, --min-size, --existing,
           --ignore-existing, --update) (level 1)
REMOVE     mention sources removed by --remove-source-files (level 1)
STATS      end with 1) the two summary lines or 2) --stats
ALL        set every flag (e.g. all2); NONE silences all of them
HELP       show this text

BACKUP, COPY, MISC, MOUNT, NONREG and SYMSAFE are accepted as rsync does and
change nothing.
"
    .to_string()
}

fn debug_help_text() -> String {
    "Use OPT or OPT1 for level 1 output, OPT0 to silence it; flags are separated by
commas and may be given in any case. The log goes to stderr.

SFTP       log every SFTP request sent and every reply received (op, request
           id, path or handle, status); -vvv turns this on too
ALL        the same as SFTP; NONE silences it
HELP       show this text

rsync's other debug flags (ACL, BACKUP, BIND, ... TIME) are accepted and
change nothing: sftpsync has no such internals to trace.
"
    .to_string()
}

fn help_text() -> String {
    format!(
        "sftpsync {} - rsync's command line for SFTP-only servers; nothing runs there.

Usage: sftpsync [OPTION]... SRC [SRC]... [USER@]HOST:DEST     push
  or   sftpsync [OPTION]... [USER@]HOST:SRC [:SRC]... DEST    pull
  or   sftpsync [OPTION]... SRC [SRC]... DEST                 local copy
  or   sftpsync [OPTION]... SRC                               list only
  or   sftpsync doctor [OPTION]... [USER@]HOST[:PATH]         explain a server
An operand is remote when a ':' comes before any '/': name a local file
with a colon as ./a:b. Use [ADDR]:PATH for IPv6 and HOST: for the login
directory. A trailing '/' on SRC means its contents, not SRC itself.

Output:
 -v, --verbose              tell more; repeat for more (-vv: also unchanged
                            files and how sftpsync connects; -vvv: --debug=sftp)
 -q, --quiet                report errors only
 -i, --itemize-changes      a change summary per item (-ii: also unchanged)
     --out-format=FORMAT    describe each update with FORMAT (%n %i %l %b ...)
     --log-file=FILE        also append a log to FILE
     --log-file-format=FMT  its lines' format (default: %i %n%L)
     --json                 JSON lines on stdout instead of text: one per
                            change, errors, a summary (also --log-format=json)
     --stats                end with transfer statistics
     --progress             show per-file progress
     --info=FLAGS           finer control: progress2 (one line for the whole
                            transfer, on a terminal), name, stats, ... (help)
     --debug=FLAGS          sftp: log every SFTP request and reply to stderr
     --stderr=e|a|c         errors (the default) and client: only errors go to
                            stderr; all: every message does, stdout stays empty
     --msgs2stderr          the same as --stderr=all (--no-msgs2stderr: errors)
 -h, --human-readable       numbers with units (-hh: 1024-based; --no-h: raw)
 -8, --8-bit-output         print high-bit bytes in names as they are, not
                            escaped (C1 controls stay escaped)
     --list-only            list the sources instead of copying (as with a
                            single SRC; implies -d unless -r or --no-d)

Transfer (what is copied and kept):
 -n, --dry-run              show what would happen, change nothing
 -a, --archive              -rlptgoD (but not -H)
 -r, --recursive            descend into directories
 -d, --dirs                 send directories without their contents; with
                            --delete, delete only where contents are sent
 -l, --links                recreate symlinks as symlinks
 -L, --copy-links           send what symlinks point to instead of the links
     --copy-unsafe-links    the same only for links that lead outside the tree
     --safe-links           skip symlinks that lead outside the tree
 -H, --hard-links           keep hard-linked files linked
 -p, --perms                keep permissions
 -E, --executability        without -p, make execute bits follow the source's
 -t, --times                keep modification times
 -U, --atimes               keep access times of files and symlinks
     --open-noatime         read local sources without changing their access
                            times
 -O, --omit-dir-times       leave directories out of --times
 -J, --omit-link-times      leave symlinks out of --times
 -o, --owner                keep the owner (the receiver needs the right)
 -g, --group                keep the group
     --devices              recreate device files (the receiver needs the right)
     --specials             recreate FIFOs and sockets
 -D                         the same as --devices --specials
     --numeric-ids          keep uid/gid numbers (always so: SFTP has no names)
     --chmod=CHMOD          change modes as sent (D/F prefix, ugo+-=rwxXst, 644)
     --chown=USER:GROUP     give every entry this owner and group (names are
                            looked up on this machine; numbers pass as they are)
 -R, --relative             recreate source paths below DEST (a/./b: from b on)
     --no-implied-dirs      do not send the directories above -R paths
 -x, --one-file-system      do not cross filesystems (-xx: skip mount points)
     --mkpath               make DEST's missing directories (all of DEST, or
                            only those above it when DEST names one file)
     --no-OPTION            switch OPTION off (-a --no-o); the later one wins

Which files are updated:
 -c, --checksum             compare file contents, not size and mtime
     --size-only            compare sizes only
 -I, --ignore-times         send files even when their size and mtime match
 -@, --modify-window=NUM    mtimes within NUM seconds count as equal
 -u, --update               do not replace files newer on the receiver
     --existing             create no new files on the receiver
     --ignore-existing      leave files that exist on the receiver alone
     --max-size=SIZE        pass over files larger than SIZE (suffixes K M G T P
                            in 1024s, KB MB... in 1000s; +1 or -1 adjusts)
     --min-size=SIZE        pass over files smaller than SIZE
     --ignore-missing-args  pass over sources that do not exist, silently
     --remove-source-files  remove each source file and symlink once the
                            receiver has it (sent or found up to date); never
                            directories (--remove-sent-files: only those sent)

Deletion:
     --delete               remove receiver files that the sources lack
     --delete-before        delete in a listing pass before transferring
     --delete-during        delete in each directory as the walk reaches it
     --del                  the same as --delete-during (the default timing)
     --delete-delay         find deletions during, delete after transferring
     --delete-after         delete after transferring
     --delete-excluded      also remove excluded files (implies --delete)
     --max-delete=NUM       remove at most NUM entries
     --delete-missing-args  remove the receiver's entry for a source that does
                            not exist (a directory only when empty, or with
                            --delete)
     --ignore-errors        delete even when there were I/O errors
     --force                delete a non-empty directory that is in the way of
                            a file or symlink (--delete implies it)
 -b, --backup               keep what is replaced or deleted as NAME~ beside it
     --backup-dir=DIR       keep backups in DIR instead (relative to DEST;
                            implies -b)
     --suffix=SUFFIX        backup suffix (default ~, or none with --backup-dir)

Filters (in command-line order, the first matching rule wins):
 -f, --filter=RULE          add a filter RULE
 -C, --cvs-exclude          leave out what CVS would (a built-in list,
                            ~/.cvsignore, $CVSIGNORE, .cvsignore files)
 -F                         --filter='dir-merge /.rsync-filter'; twice also
                            --filter='- .rsync-filter'
     --exclude=PATTERN      leave out names matching PATTERN
     --include=PATTERN      keep names matching PATTERN
     --files-from=FILE      send the paths listed in FILE (relative to SRC;
                            implies -R and -d, and -a no longer implies -r)
     --exclude-from=FILE    read exclude patterns from FILE ('-' for stdin)
     --include-from=FILE    read include patterns from FILE
 -0, --from0                entries in *-from files end with NUL, not newline
 -m, --prune-empty-dirs     leave out directories that would have no files in
                            them (a 'protect' rule keeps one)

Delta and resume:
 -W, --whole-file           always send whole files
     --no-whole-file        allow sending only the changed parts (--no-W)
     --compare-dest=DIR     leave out files that DIR holds unchanged
     --copy-dest=DIR        copy unchanged files from DIR, where they are
     --link-dest=DIR        hard-link unchanged files from DIR
                            (DIR relative to DEST; each may repeat)
     --no-index             keep no record of what was sent, so changed files
                            are sent whole next time (see README: delta)
     --trust-index          with -c, take a hash from the index, not the server,
                            for files sftpsync wrote and nobody has touched
     --verify               read each written file back and compare its hash
                            with the source's before putting it in place
     --partial              keep an interrupted file as .NAME.partial and go on
                            from it next time
     --partial-dir=DIR      keep it as DIR/NAME instead, DIR beside the file, or
                            one absolute DIR on the receiver for every file
 -P                         the same as --partial --progress
 -T, --temp-dir=DIR         write new versions in DIR (relative to DEST, or
                            absolute, on the receiver) and rename them into
                            place; across file systems they are copied beside
                            the file first, so the replacement stays atomic
     --delay-updates        finish each updated file in .~tmp~ (or the
                            --partial-dir) beside it and put them all in place
                            at the end of the run
     --inplace              rewrite files where they are, no temp file (not
                            atomic); only changed blocks, when the index allows
 -S, --sparse               leave runs of zeros as holes in the files written
     --preallocate          allocate each file's space before writing it (local
                            receiver only: SFTP cannot; ignored on a push)
     --append               only add the new end of files that grew, in place;
                            files not longer on the sender are left alone, and
                            the receiver's data is taken as it is
     --append-verify        the same, but check the receiver's data against
                            the sender's start and resend the file if it differs
     --require-atomic-replace
                            where the server lacks posix-rename, fail rather
                            than replace files by remove + rename

Connection:
 -e, --rsh=COMMAND          ssh command line to use (default: $RSYNC_RSH or ssh)
 -z, --compress             have ssh compress the connection (OpenSSH only)
     --compress-level=NUM   any level implies -z; 0 means none with zlib
                            (--zl); ssh picks its own level
     --compress-choice=STR  zstd lz4 zlibx zlib none auto (--zc): a name
                            implies -z, none turns it off; ssh uses zlib
     --old-compress         the same as --zc=zlib
     --new-compress         the same as --zc=zlibx
     --compress-threads=NUM
                            checked and ignored (--zt)
     --skip-compress=LIST   accepted: ssh compresses the whole stream
     --checksum-choice=STR  checked and ignored (--cc; STR or STR,STR): it
                            chooses rsync's own hashes, which sftpsync lacks
     --checksum-seed=NUM    checked and ignored, for the same reason
     --max-alloc=SIZE       checked as rsync does (min 1M, 0: no limit) and
                            ignored: no setting changes what we allocate
     --sftp-server=PATH     run a local sftp-server over pipes instead of ssh
     --bwlimit=RATE         move file data at RATE KiB/s at most, on average
                            (suffixes B K M G; KB = 1000 bytes; 0: no limit)
     --channels=N           SFTP channels to use at once (default 8), sharing
                            one SSH login through OpenSSH multiplexing
     --timeout=SECONDS      give up after SECONDS without I/O (0: never)
     --contimeout=SECONDS   give up connecting after SECONDS
     --no-config            read no config file (see README; also
                            SFTPSYNC_CONFIG=FILE, or empty for none)
     --retries=N            after a lost connection, reconnect up to N times
                            (default 3, waiting 1, 2, 4... s) and sync again:
                            finished files are not sent again

Other:
 -V, --version              print the version
     --help                 print this help (so does -h on its own)

Other rsync options are recognized but refused until sftpsync supports them.
rsync daemons (HOST::MODULE, rsync://) are out of scope: sftpsync talks SFTP.
To check what a server allows: sftpsync doctor [USER@]HOST[:PATH] (see --help).
",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &[u8]) -> OsString {
        OsStr::from_bytes(s).to_os_string()
    }

    fn run(args: &[&str]) -> CliArgs {
        match parse_bytes(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()) {
            Ok(Parsed::Run(a)) => *a,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn parse_bytes(args: &[&[u8]]) -> Result<Parsed, ArgsError> {
        parse(std::iter::once(os(b"sftpsync")).chain(args.iter().map(|a| os(a))))
    }

    fn err(args: &[&str]) -> ArgsError {
        match parse_bytes(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()) {
            Err(e) => e,
            Ok(other) => panic!("{args:?} gave {other:?}"),
        }
    }

    fn local(p: &str) -> Location {
        Location::Local(PathBuf::from(p))
    }

    fn remote(user: Option<&str>, host: &str, path: &str) -> Location {
        Location::Remote {
            user: user.map(|u| u.as_bytes().to_vec()),
            host: host.as_bytes().to_vec(),
            path: path.as_bytes().to_vec(),
        }
    }

    #[test]
    fn defaults_match_rsync() {
        let a = run(&["src", "dst"]);
        let expected = CliArgs {
            sources: vec![local("src")],
            dest: Some(local("dst")),
            ..CliArgs::default()
        };
        assert_eq!(a, expected);
        assert_eq!(a.human_readable, 1);
        assert_eq!(a.direction(), Direction::Local);
    }

    #[test]
    fn combined_short_flags() {
        let a = run(&["-avn", "src/", "host:dst"]);
        assert!(a.recursive && a.links && a.perms && a.times);
        assert!(a.group && a.owner && a.devices && a.specials);
        assert!(!a.hard_links);
        assert_eq!(a.verbose, 1);
        assert!(a.dry_run);

        let a = run(&["-vvrtii", "-xx", "-HcuW0q8", "src", "dst"]);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.itemize_changes, 2);
        assert_eq!(a.one_file_system, 2);
        assert!(a.recursive && a.times && !a.perms);
        assert!(a.hard_links && a.checksum && a.update && a.from0 && a.quiet);
        assert!(a.eight_bit_output);
        assert_eq!(a.whole_file, Some(true));

        // -y is only "not yet": the whole cluster is refused, naming the culprit.
        let e = err(&["-avyn", "src", "host:dst"]);
        assert_eq!(e.kind(), ArgsErrorKind::NotSupported);
        assert_eq!(
            e.message(),
            "option --fuzzy (-y) is not supported by sftpsync yet"
        );

        let a = run(&["-avz", "src", "host:dst"]);
        assert!(a.compress && a.recursive);
        assert!(!run(&["-z", "--no-z", "src", "host:dst"]).compress);
        assert!(!run(&["-z", "--no-compress", "src", "host:dst"]).compress);
    }

    #[test]
    fn rsh_forms() {
        let rsh = |args: &[&str]| run(args).rsh.map(|r| r.into_vec());
        let want = Some(b"ssh -p 2222".to_vec());
        assert_eq!(rsh(&["-avHe", "ssh -p 2222", "a", "h:b"]), want);
        assert_eq!(rsh(&["-e", "ssh -p 2222", "a", "h:b"]), want);
        assert_eq!(rsh(&["-essh -p 2222", "a", "h:b"]), want);
        assert_eq!(rsh(&["--rsh=ssh -p 2222", "a", "h:b"]), want);
        assert_eq!(rsh(&["--rsh", "ssh -p 2222", "a", "h:b"]), want);
        // popt drops one '=' after a short option.
        assert_eq!(rsh(&["-e=ssh", "a", "h:b"]), Some(b"ssh".to_vec()));
        assert_eq!(rsh(&["-ae", "ssh", "a", "h:b"]), Some(b"ssh".to_vec()));
        // A separate value is taken even when it looks like an option.
        assert_eq!(rsh(&["-e", "-v", "a", "h:b"]), Some(b"-v".to_vec()));

        let a = run(&["-avHe", "ssh -p 2222", "a", "h:b"]);
        assert!(a.hard_links && a.recursive);
        assert_eq!(a.verbose, 1);

        assert_eq!(
            err(&["a", "h:b", "-e"]).message(),
            "option -e requires an argument"
        );
        assert_eq!(
            err(&["a", "h:b", "--rsh"]).message(),
            "option --rsh requires an argument"
        );
        assert_eq!(err(&["-e=", "a", "h:b"]).kind(), ArgsErrorKind::BadValue);
    }

    #[test]
    fn filters_keep_command_line_order_across_names() {
        let a = run(&[
            "--exclude=*.o",
            "-F",
            "--include",
            "keep/***",
            "-f",
            "- tmp/",
            "--exclude-from=ex.txt",
            "-FF",
            "--include-from",
            "in.txt",
            "--filter=merge rules",
            "--exclude",
            "*",
            "src",
            "dst",
        ]);
        assert_eq!(
            a.filters,
            vec![
                FilterArg::Exclude(b"*.o".to_vec()),
                FilterArg::Rule(b"dir-merge /.rsync-filter".to_vec()),
                FilterArg::Include(b"keep/***".to_vec()),
                FilterArg::Rule(b"- tmp/".to_vec()),
                FilterArg::ExcludeFrom(PathBuf::from("ex.txt")),
                FilterArg::Rule(b"- .rsync-filter".to_vec()),
                FilterArg::IncludeFrom(PathBuf::from("in.txt")),
                FilterArg::Rule(b"merge rules".to_vec()),
                FilterArg::Exclude(b"*".to_vec()),
            ]
        );
        // An empty pattern and a pattern that looks like an option are still patterns.
        let a = run(&["--exclude=", "--exclude", "-v", "src", "dst"]);
        assert_eq!(
            a.filters,
            vec![
                FilterArg::Exclude(vec![]),
                FilterArg::Exclude(b"-v".to_vec())
            ]
        );
        assert_eq!(a.verbose, 0);
    }

    #[test]
    fn last_of_option_and_negation_wins() {
        let a = run(&["-a", "--no-o", "src", "dst"]);
        assert!(!a.owner && a.group && a.recursive);
        // rsync: -a re-enables what an earlier --no-X turned off.
        let a = run(&["--no-o", "-a", "src", "dst"]);
        assert!(a.owner);
        let a = run(&["--no-r", "-a", "src", "dst"]);
        assert!(a.recursive);

        let a = run(&[
            "-a", "--no-p", "--no-t", "--no-g", "--no-l", "--no-D", "src", "dst",
        ]);
        assert!(!a.perms && !a.times && !a.group && !a.links);
        assert!(!a.devices && !a.specials && a.owner && a.recursive);

        let a = run(&[
            "-a",
            "--no-perms",
            "--no-times",
            "--no-owner",
            "--no-group",
            "src",
            "dst",
        ]);
        assert!(!a.perms && !a.times && !a.owner && !a.group);
        let a = run(&[
            "-a",
            "--no-recursive",
            "--no-links",
            "--no-devices",
            "src",
            "dst",
        ]);
        assert!(!a.recursive && !a.links && !a.devices && a.specials);
        let a = run(&["-D", "--no-specials", "src", "dst"]);
        assert!(a.devices && !a.specials);
        let a = run(&["-aH", "--no-H", "src", "dst"]);
        assert!(!a.hard_links);
        let a = run(&["-H", "--no-hard-links", "-H", "src", "dst"]);
        assert!(a.hard_links);
        let a = run(&["-vvv", "--no-v", "-ii", "--no-i", "src", "dst"]);
        assert_eq!((a.verbose, a.itemize_changes), (0, 0));
        let a = run(&["-v", "--no-verbose", "-v", "src", "dst"]);
        assert_eq!(a.verbose, 1);
        let a = run(&["-W", "--no-whole-file", "src", "dst"]);
        assert_eq!(a.whole_file, Some(false));
        let a = run(&["--no-W", "-W", "src", "dst"]);
        assert_eq!(a.whole_file, Some(true));
        let a = run(&["-P", "--no-progress", "src", "dst"]);
        assert!(a.partial && !a.progress);
        let a = run(&["-xx", "--no-x", "-c", "--no-c", "src", "dst"]);
        assert_eq!(a.one_file_system, 0);
        assert!(!a.checksum);
    }

    #[test]
    fn no_prefix_is_not_generic() {
        // rsync only knows the negations it lists; --no-delete is not one of them.
        for bad in [
            "--no-delete",
            "--no-stats",
            "--no-no-o",
            "--no-a",
            "--no-archive",
        ] {
            let e = err(&[bad, "src", "dst"]);
            assert_eq!(e.kind(), ArgsErrorKind::UnknownOption, "{bad}");
            assert_eq!(e.message(), format!("unknown option {bad}"));
        }
    }

    #[test]
    fn attribute_options_parse_with_rsyncs_negations() {
        let a = run(&["-EUS", "--open-noatime", "--preallocate", "a", "b"]);
        assert!(a.executability && a.atimes && a.sparse && a.open_noatime && a.preallocate);
        let a = run(&[
            "-US",
            "--open-noatime",
            "--no-U",
            "--no-S",
            "--no-open-noatime",
            "a",
            "b",
        ]);
        assert!(!a.atimes && !a.sparse && !a.open_noatime);
        let a = run(&[
            "--atimes",
            "--no-atimes",
            "--sparse",
            "--no-sparse",
            "a",
            "b",
        ]);
        assert!(!a.atimes && !a.sparse);
        // rsync has no negation for these two.
        for bad in ["--no-E", "--no-executability", "--no-preallocate"] {
            assert_eq!(
                err(&[bad, "a", "b"]).kind(),
                ArgsErrorKind::UnknownOption,
                "{bad}"
            );
        }
        // rsync 3.5 takes --sparse with --inplace and with --preallocate.
        assert!(run(&["-S", "--inplace", "--preallocate", "a", "b"]).sparse);
        assert!(!run(&["-a", "a", "b"]).executability);
    }

    #[test]
    fn ignored_negations_are_accepted() {
        let a = run(&["-a", "--no-inc-recursive", "--no-i-r", "-s", "src", "dst"]);
        assert!(a.recursive);
        assert_eq!(
            err(&["--no-i-r=1", "src", "dst"]).message(),
            "option --no-i-r does not take an argument"
        );
    }

    #[test]
    fn h_is_human_readable_except_alone() {
        let a = run(&["-avh", "src", "dst"]);
        assert_eq!(a.human_readable, 2);
        assert_eq!(a.verbose, 1);
        let a = run(&["-hh", "src", "dst"]);
        assert_eq!(a.human_readable, 3);
        let a = run(&["-h", "--no-h", "src", "dst"]);
        assert_eq!(a.human_readable, 0);
        let a = run(&["--human-readable", "src", "dst"]);
        assert_eq!(a.human_readable, 2);

        // rsync: "-h" (even inside "-avh") as the only argument still means help.
        for alone in ["-h", "-avh", "--human-readable"] {
            assert!(
                matches!(parse_bytes(&[alone.as_bytes()]), Ok(Parsed::Help(_))),
                "{alone}"
            );
        }
    }

    #[test]
    fn help_and_version() {
        let Ok(Parsed::Help(text)) = parse_bytes(&[b"--help"]) else {
            panic!("no help")
        };
        assert!(text.contains("--exclude=PATTERN"));
        // --help acts where it stands: later garbage is never looked at...
        assert!(matches!(
            parse_bytes(&[b"--help", b"--bogus", b"--timeout=x"]),
            Ok(Parsed::Help(_))
        ));
        // ...but an earlier error wins.
        assert_eq!(
            err(&["--bogus", "--help"]).kind(),
            ArgsErrorKind::UnknownOption
        );

        let Ok(Parsed::Version(text)) = parse_bytes(&[b"--version"]) else {
            panic!("no version")
        };
        assert!(text.starts_with("sftpsync "));
        assert!(matches!(parse_bytes(&[b"-V"]), Ok(Parsed::Version(_))));
        // --version needs no operands and beats -h alone, but waits for all options.
        assert!(matches!(parse_bytes(&[b"-hV"]), Ok(Parsed::Version(_))));
        assert!(matches!(
            parse_bytes(&[b"-V", b"a", b"b", b"c:d", b"e:f"]),
            Ok(Parsed::Version(_))
        ));
        assert_eq!(err(&["-V", "--bogus"]).kind(), ArgsErrorKind::UnknownOption);
    }

    #[test]
    fn help_lists_every_supported_option() {
        let text = help_text();
        for spec in OPTIONS {
            if matches!(spec.kind, Kind::Ignored(_)) {
                continue;
            }
            if let Some(long) = spec.long.filter(|_| listed_in_help(spec)) {
                assert!(text.contains(&format!("--{long}")), "--{long} not in help");
            }
            if let Some(c) = spec.short {
                assert!(
                    text.contains(&format!("-{}", c as char)),
                    "-{c} not in help"
                );
            }
        }
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "help line too long: {line}");
        }
    }

    #[test]
    fn info_takes_rsync_flag_lists() {
        let a = run(&["--info=progress2,STATS,name0", "src", "dst"]);
        assert_eq!(a.info.get("progress"), Some(2));
        assert_eq!(a.info.get("stats"), Some(1));
        assert_eq!(a.info.get("name"), Some(0));
        assert_eq!(a.info.get("del"), None);
        // Later items and later options win; ALL and NONE set every flag.
        let a = run(&["--info=all2", "--info=,del0,", "src", "dst"]);
        assert_eq!((a.info.get("flist"), a.info.get("del")), (Some(2), Some(0)));
        let a = run(&["--info=progress2", "--info=none", "src", "dst"]);
        assert_eq!(a.info.get("progress"), Some(0));
        for bad in ["--info=bogus", "--info=name-3", "--info=progress2,x"] {
            let e = err(&[bad, "src", "dst"]);
            assert_eq!(e.kind(), ArgsErrorKind::BadValue, "{bad}");
            assert!(e.message().starts_with("Unknown --info item: "), "{e}");
        }
        let Ok(Parsed::Help(text)) = parse_bytes(&[b"--info=help"]) else {
            panic!("--info=help shows the flags")
        };
        assert!(text.contains("PROGRESS"));
    }

    #[test]
    fn json_and_log_options() {
        let a = run(&["--json", "src", "dst"]);
        assert!(a.json && a.out_format.is_none());
        let a = run(&["--log-format=json", "src", "dst"]);
        assert!(a.json && a.out_format.is_none());
        let a = run(&["--log-format=%n", "--no-json", "src", "dst"]);
        assert!(!a.json);
        assert_eq!(a.out_format.as_deref(), Some(&b"%n"[..]));
        let a = run(&["--log-file=/tmp/l", "--log-file-format=%o %n", "src", "dst"]);
        assert_eq!(a.log_file, Some(PathBuf::from("/tmp/l")));
        assert_eq!(a.log_file_format.as_deref(), Some(&b"%o %n"[..]));
    }

    #[test]
    fn tables_are_consistent() {
        let mut longs: Vec<&str> = OPTIONS.iter().filter_map(|s| s.long).collect();
        longs.extend(NOT_YET.iter().map(|(l, _)| *l));
        let mut shorts: Vec<u8> = OPTIONS.iter().filter_map(|s| s.short).collect();
        shorts.extend(NOT_YET.iter().filter_map(|(_, s)| *s));
        let (nl, ns) = (longs.len(), shorts.len());
        longs.sort_unstable();
        longs.dedup();
        shorts.sort_unstable();
        shorts.dedup();
        assert_eq!(longs.len(), nl, "a long option is listed twice");
        assert_eq!(shorts.len(), ns, "a short option is listed twice");
    }

    #[test]
    fn partial_dir_implies_partial_and_is_one_name_or_absolute() {
        let a = run(&["--partial-dir=.rsync-partial", "a", "b"]);
        assert!(a.partial);
        assert_eq!(a.partial_dir.as_deref(), Some(&b".rsync-partial"[..]));
        for (given, kept) in [
            ("--partial-dir=/var/tmp/p//", "/var/tmp/p"),
            ("--partial-dir=/", "/"),
            ("--partial-dir=.part/", ".part"),
        ] {
            let a = run(&[given, "a", "b"]);
            assert_eq!(a.partial_dir.as_deref(), Some(kept.as_bytes()), "{given}");
        }
        for bad in [
            "--partial-dir=a/b",
            "--partial-dir=..",
            "--partial-dir=./",
            "--partial-dir=",
        ] {
            assert_eq!(
                err(&[bad, "a", "b"]).kind(),
                ArgsErrorKind::BadValue,
                "{bad}"
            );
        }
    }

    #[test]
    fn append_implies_inplace_last_one_wins_and_refuses_what_rsync_refuses() {
        let a = run(&["--append", "--no-inplace", "a", "b"]);
        assert_eq!((a.append, a.inplace), (1, true));
        assert_eq!(run(&["--append", "--append-verify", "a", "b"]).append, 2);
        assert_eq!(run(&["--append-verify", "--append", "a", "b"]).append, 1);
        let a = run(&["--append-verify", "--no-append", "a", "b"]);
        assert_eq!((a.append, a.inplace), (0, false));
        assert!(run(&["--append", "--no-W", "a", "b"]).inplace);
        for (args, msg) in [
            (
                &["--append", "-W"][..],
                "--append cannot be used with --whole-file",
            ),
            (
                &["--partial-dir=/p", "--append-verify"][..],
                "--append cannot be used with --partial-dir",
            ),
        ] {
            let mut all = args.to_vec();
            all.extend(["a", "b"]);
            let e = err(&all);
            assert_eq!(
                (e.kind(), e.message()),
                (ArgsErrorKind::BadOperands, msg),
                "{args:?}"
            );
        }
    }

    #[test]
    fn delete_when_options_imply_delete_and_do_not_combine() {
        for (flag, when) in [
            ("--del", DeleteTiming::During),
            ("--delete-during", DeleteTiming::During),
            ("--delete-before", DeleteTiming::Before),
            ("--delete-delay", DeleteTiming::Delay),
            ("--delete-after", DeleteTiming::After),
        ] {
            let a = run(&["-r", flag, "a", "b"]);
            assert!(a.delete, "{flag}");
            assert_eq!(a.delete_when, Some(when), "{flag}");
        }
        assert_eq!(run(&["-r", "--delete", "a", "b"]).delete_when, None);
        assert_eq!(
            run(&["-r", "--del", "--delete-during", "a", "b"]).delete_when,
            Some(DeleteTiming::During)
        );
        assert_eq!(
            err(&["-r", "--delete-before", "--delete-after", "a", "b"]).message(),
            "you may not combine multiple --delete-WHEN options"
        );
        assert_eq!(
            err(&["--delete-after", "a", "b"]).message(),
            "--delete does not work without --recursive (-r) or --dirs (-d)."
        );
    }

    #[test]
    fn source_removal_force_mkpath_and_omitted_times_parse_like_rsync() {
        let a = run(&[
            "-aO",
            "--remove-source-files",
            "--force",
            "--mkpath",
            "s",
            "d",
        ]);
        assert!(a.omit_dir_times && !a.omit_link_times);
        assert_eq!(a.remove_source, 1);
        assert!(a.force && a.mkpath);
        let a = run(&[
            "-aOJ",
            "--no-O",
            "--remove-source-files",
            "--remove-sent-files",
            "s",
            "d",
        ]);
        assert!(!a.omit_dir_times && a.omit_link_times);
        assert_eq!(a.remove_source, 2, "the later one wins");
        let a = run(&[
            "-a",
            "--force",
            "--no-force",
            "--mkpath",
            "--no-mkpath",
            "s",
            "d",
        ]);
        assert!(!a.force && !a.mkpath);
    }

    #[test]
    fn delay_updates_holds_files_in_a_partial_dir() {
        let a = run(&["-a", "--delay-updates", "s", "d"]);
        assert!(a.delay_updates && a.partial);
        assert_eq!(a.partial_dir.as_deref(), Some(&b".~tmp~"[..]));
        let a = run(&["-a", "--delay-updates", "--partial-dir=.hold", "s", "d"]);
        assert_eq!(a.partial_dir.as_deref(), Some(&b".hold"[..]));
        let a = run(&["-a", "--delay-updates", "--no-delay-updates", "s", "d"]);
        assert!(!a.delay_updates && !a.partial && a.partial_dir.is_none());
        assert_eq!(
            err(&["-a", "--delay-updates", "--inplace", "s", "d"]).message(),
            "--inplace cannot be used with --delay-updates"
        );
        assert_eq!(
            err(&["-a", "--append", "--delay-updates", "s", "d"]).message(),
            "--append cannot be used with --delay-updates"
        );
        let e = err(&["-a", "--delay-updates", "--partial-dir=/hold", "s", "d"]);
        assert_eq!(e.kind(), ArgsErrorKind::NotSupported);
    }

    #[test]
    fn unknown_and_unsupported_options() {
        let e = err(&["--foo", "src", "dst"]);
        assert_eq!(e.kind(), ArgsErrorKind::UnknownOption);
        assert_eq!(e.message(), "unknown option --foo");
        assert_eq!(e.to_string(), "unknown option --foo");
        assert_eq!(err(&["-Q", "src", "dst"]).message(), "unknown option -Q");
        assert_eq!(
            err(&["-avQ", "src", "dst"]).message(),
            "unknown option -Q (in -avQ)"
        );
        // No abbreviations, like popt.
        assert_eq!(
            err(&["--dele", "src", "dst"]).message(),
            "unknown option --dele"
        );

        for (arg, msg) in [
            (
                "--fuzzy",
                "option --fuzzy (-y) is not supported by sftpsync yet",
            ),
            (
                "--write-batch=x",
                "option --write-batch is not supported by sftpsync yet",
            ),
            (
                "-k",
                "option --copy-dirlinks (-k) is not supported by sftpsync yet",
            ),
            (
                "--daemon",
                "option --daemon is not supported by sftpsync yet",
            ),
        ] {
            let e = err(&["-r", arg, "src", "dst"]);
            assert_eq!(e.kind(), ArgsErrorKind::NotSupported, "{arg}");
            assert_eq!(e.message(), msg);
            assert_eq!(ArgsError::EXIT_CODE, 1);
        }
        assert_eq!(
            err(&["--delete=yes", "-r", "a", "b"]).message(),
            "option --delete does not take an argument"
        );
    }

    #[test]
    fn compression_options_follow_rsync() {
        let z = |args: &[&str]| {
            let mut line = args.to_vec();
            line.extend(["a", "b"]);
            run(&line).compress
        };
        // Measured with rsync 3.5.0 over a remote shell (bytes received with --stats).
        assert!(z(&["-z"]));
        assert!(!z(&["-v"]));
        assert!(z(&["--zl=5"]), "a level implies -z");
        assert!(
            z(&["--zl=0"]),
            "with rsync's auto choice (zstd) 0 is the default level"
        );
        assert!(z(&["-z", "--zl=0"]));
        assert!(
            z(&["--zl=5", "--no-z"]),
            "a level implies -z whatever its place"
        );
        assert!(
            !z(&["-z", "--zc=zlib", "--zl=0"]),
            "0 is no compression for zlib"
        );
        assert!(!z(&["--zl=0", "--compress-level=0", "--old-compress"]));
        assert!(!z(&["--zc=zlibx", "--zl=0"]));
        assert!(z(&["--zc=lz4", "--zl=0"]));
        assert!(z(&["--zc=zstd", "--zl=0"]));
        assert!(z(&["--zc=zstd"]), "naming an algorithm implies -z");
        assert!(z(&["--zc=ZSTD"]));
        assert!(!z(&["--zc=auto"]));
        assert!(z(&["-z", "--zc=auto"]));
        assert!(!z(&["--zc=none", "-z"]), "none wins wherever it is");
        assert!(!z(&["-z", "--compress-choice=zstd", "--zc=none"]));
        assert!(z(&["-z", "--zc=none", "--zc=zlib"]));
        assert!(z(&["-z", "--zc=none", "--zc=auto"]));
        assert!(!z(&["--zc=none", "--zc=auto"]));
        assert!(!z(&["--zc=zstd", "--no-z"]));
        assert!(z(&["--no-z", "--zc=zstd"]));
        assert!(z(&["--old-compress"]));
        assert!(z(&["--new-compress"]));
        assert!(!z(&["--old-compress", "--zc=none"]));
        assert!(!z(&["--zt=4"]), "threads do not imply -z");
        assert!(!z(&["--skip-compress=gz/jpg"]));
        assert!(z(&["-z", "--compress-threads=-1", "--skip-compress="]));

        let a = run(&["-z", "--zl=100", "--new-compress", "a", "b"]);
        assert_eq!(
            a.compress_level,
            Some(100),
            "rsync clamps, it does not refuse"
        );
        assert_eq!(a.compress_choice.as_deref(), Some("zlibx"));
        assert_eq!(run(&["--zl=", "a", "b"]).compress_level, Some(0));

        // rsync: "unknown compress name: foo", exit 4 (RERR_UNSUPPORTED).
        for (value, shown) in [("foo", "foo"), ("zlib,zlibx", "zlib,zlibx"), ("", "")] {
            for name in ["--zc", "--compress-choice"] {
                let e = err(&[&format!("{name}={value}"), "a", "b"]);
                assert_eq!(e.message(), format!("unknown compress name: {shown}"));
                assert_eq!(e.kind(), ArgsErrorKind::UnknownName);
                assert_eq!(e.exit_code(), 4);
            }
        }
        // rsync: "--zl=x: invalid numeric value", exit 1; likewise for the others.
        for name in ["--zl", "--compress-level", "--zt", "--compress-threads"] {
            let e = err(&[&format!("{name}=x"), "a", "b"]);
            assert_eq!(e.message(), format!("{name}=x: invalid numeric value"));
            assert_eq!(e.exit_code(), 1);
        }
        assert_eq!(
            err(&["--zc=zlib", "--zl=99999999999", "a", "b"]).message(),
            "--zl=99999999999: number too large or too small"
        );
    }

    #[test]
    fn checksum_choice_and_seed_are_checked_like_rsync() {
        for ok in [
            "auto",
            "xxh128",
            "xxh3",
            "xxh64",
            "xxhash",
            "md5",
            "MD5",
            "md4",
            "sha1",
            "none",
            "xxh128,md5",
            "auto,md5",
        ] {
            run(&[&format!("--cc={ok}"), "a", "b"]);
            run(&["--checksum-choice", ok, "a", "b"]);
        }
        // What rsync 3.5.0 prints for each (exit 4).
        for (value, shown) in [
            ("foo", "foo"),
            ("xxh", "xxh"),
            ("", ""),
            ("md5,foo", "foo"),
            ("md5,sha1,xxh3", "sha1,xxh3"),
            ("md5,", ""),
            (",md5", ",md5"),
            ("foo,md5", "foo,md5"),
        ] {
            let e = err(&[&format!("--cc={value}"), "a", "b"]);
            assert_eq!(
                e.message(),
                format!("unknown checksum name: {shown}"),
                "{value}"
            );
            assert_eq!(e.exit_code(), 4);
        }
        run(&["--checksum-seed=-5", "a", "b"]);
        run(&["--checksum-seed=", "a", "b"]);
        assert_eq!(
            err(&["--checksum-seed=x", "a", "b"]).message(),
            "--checksum-seed=x: invalid numeric value"
        );
        assert_eq!(
            err(&["--checksum-seed=99999999999", "a", "b"]).message(),
            "--checksum-seed=99999999999: number too large or too small"
        );
    }

    #[test]
    fn max_alloc_takes_rsync_sizes() {
        for ok in [
            "0",
            "",
            "k",
            ".",
            "1g",
            "1.5m",
            "5.m",
            "1m+1",
            "8p",
            "1MiB",
            "1048576",
            "1gb",
            "1.000001m",
        ] {
            run(&[&format!("--max-alloc={ok}"), "a", "b"]);
        }
        // Each message as rsync 3.5.0 prints it (exit 1).
        for (value, why) in [
            ("1", "is too small (min: 1.00M or 0 for unlimited)"),
            ("100k", "is too small (min: 1.00M or 0 for unlimited)"),
            ("1m-1", "is too small (min: 1.00M or 0 for unlimited)"),
            ("1mb", "is too small (min: 1.00M or 0 for unlimited)"),
            ("1kib", "is too small (min: 1.00M or 0 for unlimited)"),
            ("1048575", "is too small (min: 1.00M or 0 for unlimited)"),
            ("0.5m", "is too small (min: 1.00M or 0 for unlimited)"),
            ("x", "is invalid"),
            ("-", "is invalid"),
            ("+1", "is invalid"),
            ("1,5m", "is invalid"),
            ("1t+2", "is invalid"),
            ("4m-1x", "is invalid"),
            ("1e6", "is invalid"),
            ("-1", "is too large"),
            ("9000p", "is too large"),
        ] {
            let e = err(&[&format!("--max-alloc={value}"), "a", "b"]);
            assert_eq!(e.message(), format!("--max-alloc={value} {why}"));
            assert_eq!(e.exit_code(), 1);
        }
        let alloc = |v: &str| crate::size_arg::parse_size(MAX_ALLOC, v.as_bytes());
        assert_eq!(alloc("1m"), Ok(1 << 20));
        assert_eq!(alloc("0"), Ok(0));
        assert_eq!(alloc("1.5m"), Ok(3 << 19));
        assert_eq!(alloc("2MB"), Ok(2_000_000));
    }

    #[test]
    fn temp_dir_takes_a_directory() {
        assert_eq!(run(&["a", "b"]).temp_dir, None);
        for line in [
            &["-T", "/scratch", "a", "b"][..],
            &["-T/scratch", "a", "b"],
            &["--temp-dir=/scratch", "a", "b"],
            &["--temp-dir", "/scratch", "a", "b"],
        ] {
            assert_eq!(run(line).temp_dir.as_deref(), Some(&b"/scratch"[..]));
        }
        assert_eq!(
            run(&["-aT", "tmp", "a", "b"]).temp_dir.as_deref(),
            Some(&b"tmp"[..])
        );
        assert_eq!(
            err(&["--temp-dir=", "a", "b"]).message(),
            "option --temp-dir needs a directory"
        );
    }

    #[test]
    fn stderr_modes_and_msgs2stderr() {
        let to_stderr = |args: &[&str]| {
            let mut line = args.to_vec();
            line.extend(["a", "b"]);
            run(&line).messages_to_stderr
        };
        assert!(!to_stderr(&[]));
        for all in ["--stderr=all", "--stderr=a", "--stderr=al", "--msgs2stderr"] {
            assert!(to_stderr(&[all]), "{all}");
        }
        for errors in [
            "--stderr=errors",
            "--stderr=e",
            "--stderr=er",
            "--stderr=client",
            "--stderr=c",
        ] {
            assert!(!to_stderr(&["--msgs2stderr", errors]), "{errors}");
        }
        assert!(!to_stderr(&["--stderr=all", "--no-msgs2stderr"]));
        assert!(to_stderr(&["--no-msgs2stderr", "--stderr", "all"]));
        // rsync: '--stderr mode "foo" is not one of errors, all, or client', exit 1.
        for bad in ["foo", "", "ALL", "errorsx", "clientx"] {
            let e = err(&[&format!("--stderr={bad}"), "a", "b"]);
            assert_eq!(
                e.message(),
                format!("--stderr mode \"{bad}\" is not one of errors, all, or client")
            );
            assert_eq!(e.exit_code(), 1);
        }
    }

    #[test]
    fn numbers_follow_popt() {
        let a = run(&["--timeout=0x10", "--contimeout", "010", "a", "b"]);
        assert_eq!(a.timeout, Some(16));
        assert_eq!(a.contimeout, Some(8));
        assert_eq!(run(&["--timeout=0", "a", "b"]).timeout, None);
        assert_eq!(run(&["--timeout= 5", "a", "b"]).timeout, Some(5));
        assert_eq!(
            run(&["--timeout=5", "--no-timeout", "a", "b"]).timeout,
            None
        );
        assert_eq!(run(&["--timeout=", "a", "b"]).timeout, None);
        assert_eq!(run(&["-@-1", "a", "b"]).modify_window, Some(-1));
        assert_eq!(run(&["-@", "2", "a", "b"]).modify_window, Some(2));
        assert_eq!(
            run(&["--modify-window", "-1", "a", "b"]).modify_window,
            Some(-1)
        );
        assert_eq!(run(&["--max-delete=+3", "a", "b"]).max_delete, Some(3));
        assert_eq!(run(&["--max-delete=-3", "a", "b"]).max_delete, Some(0));
        assert_eq!(run(&["--max-delete=0", "a", "b"]).max_delete, Some(0));
        assert_eq!(run(&["a", "b"]).max_delete, None);

        for bad in [
            "--timeout=abc",
            "--timeout=5 ",
            "--timeout=08",
            "--timeout=0x",
            "--modify-window=1.5",
        ] {
            let e = err(&[bad, "a", "b"]);
            assert_eq!(e.kind(), ArgsErrorKind::BadValue, "{bad}");
            assert!(e.message().ends_with("invalid numeric value"), "{bad}");
        }
        assert_eq!(
            err(&["--timeout=99999999999", "a", "b"]).message(),
            "--timeout=99999999999: number too large or too small"
        );
        assert_eq!(
            err(&["--timeout=-5", "a", "b"]).message(),
            "--timeout=-5: must not be negative (0 means no timeout)"
        );
        // Like rsync, a missing value swallows the next operand and then fails on it.
        assert_eq!(
            err(&["--timeout", "src", "dst"]).message(),
            "--timeout=src: invalid numeric value"
        );
    }

    #[test]
    fn bwlimit_takes_rsync_rates() {
        assert_eq!(
            run(&["--bwlimit=256", "a", "h:b"]).bwlimit,
            Some(256 * 1024)
        );
        assert_eq!(run(&["--bwlimit", "1M", "a", "h:b"]).bwlimit, Some(1 << 20));
        assert_eq!(
            run(&["--bwlimit=1m", "--bwlimit=0", "a", "h:b"]).bwlimit,
            None
        );
        assert_eq!(
            run(&["--bwlimit=1m", "--no-bwlimit", "a", "h:b"]).bwlimit,
            None
        );
        let e = err(&["--bwlimit=1x", "a", "h:b"]);
        assert_eq!(e.kind(), ArgsErrorKind::BadValue);
        assert_eq!(e.message(), "--bwlimit=1x is invalid");
    }

    #[test]
    fn chmod_and_chown_values() {
        let a = run(&["--chmod=D755", "--chmod", "Fu+x,go-w", "a", "h:b"]);
        assert_eq!(a.chmod, ["D755", "Fu+x,go-w"]);
        let e = err(&["--chmod=u+r-w", "a", "h:b"]);
        assert_eq!(e.message(), "Invalid argument passed to --chmod (u+r-w)");

        let a = run(&["-r", "--chown=web:www", "a", "h:b"]);
        assert_eq!(
            a.chown,
            Some((Some("web".to_string()), Some("www".to_string())))
        );
        assert!(a.owner && a.group);
        let a = run(&["-r", "--chown=:www", "a", "h:b"]);
        assert!(!a.owner && a.group);
        let a = run(&["-r", "--chown=web", "a", "h:b"]);
        assert!(a.owner && !a.group);
        assert_eq!(
            err(&["--chown=:", "a", "h:b"]).kind(),
            ArgsErrorKind::BadValue
        );
    }

    #[test]
    fn backup_options_follow_rsync() {
        let a = run(&["-b", "a", "h:b"]);
        assert!(a.backup && a.backup_dir.is_none() && a.suffix.is_none());
        let a = run(&["--backup-dir=../old", "--suffix=.1", "a", "h:b"]);
        assert!(a.backup);
        assert_eq!(a.backup_dir.as_deref(), Some(&b"../old"[..]));
        assert_eq!(a.suffix.as_deref(), Some(&b".1"[..]));
        assert!(!run(&["-b", "--no-backup", "a", "h:b"]).backup);
        // A suffix alone does nothing, as in rsync.
        assert!(!run(&["--suffix=x", "a", "h:b"]).backup);
        assert!(run(&["--backup-dir=d", "--suffix=", "a", "h:b"]).backup);
        assert_eq!(
            err(&["-b", "--suffix=a/b", "a", "h:b"]).message(),
            "--suffix cannot contain slashes: a/b"
        );
        assert_eq!(
            err(&["-b", "--suffix=", "a", "h:b"]).message(),
            "--suffix cannot be empty without a --backup-dir"
        );
        assert!(run(&["-b", "--inplace", "a", "h:b"]).backup);
    }

    #[test]
    fn files_from_implies_relative_and_dirs_but_not_recursion() {
        let a = run(&["-a", "--files-from=list", "src", "h:dst"]);
        assert!(a.relative && a.dirs && !a.recursive && a.perms);
        assert_eq!(a.files_from.as_deref(), Some(&b"list"[..]));
        // Wherever -r and -a stand.
        let a = run(&["--files-from=-", "-ra", "src", "h:dst"]);
        assert!(a.recursive);
        let a = run(&["-r", "--files-from=x", "--no-r", "-a", "src", "h:dst"]);
        assert!(!a.recursive);
        assert!(!run(&["--files-from=x", "--no-d", "src", "h:dst"]).dirs);
        assert_eq!(
            err(&["--files-from=x", "--no-R", "src", "h:dst"]).kind(),
            ArgsErrorKind::NotSupported
        );
        assert_eq!(
            err(&["--files-from=x", "a", "b", "h:dst"]).kind(),
            ArgsErrorKind::BadOperands
        );

        let a = run(&["-aR", "a/./b", "h:dst"]);
        assert!(a.relative && a.recursive && !a.dirs && !a.no_implied_dirs);
        assert!(!run(&["-R", "--no-R", "a", "h:dst"]).relative);
        assert!(run(&["-R", "--no-implied-dirs", "a", "h:dst"]).no_implied_dirs);
        assert!(!run(&["--no-i-d", "--i-d", "a", "h:dst"]).no_implied_dirs);
    }

    #[test]
    fn link_dest_repeats_up_to_twenty() {
        let a = run(&["--link-dest=../a", "--link-dest", "/b", "x", "h:y"]);
        assert_eq!(a.link_dest, [b"../a".to_vec(), b"/b".to_vec()]);
        let many: Vec<String> = (0..21).map(|i| format!("--link-dest=d{i}")).collect();
        let mut args: Vec<&str> = many.iter().map(String::as_str).collect();
        args.extend(["x", "h:y"]);
        assert_eq!(err(&args).kind(), ArgsErrorKind::BadValue);
        args.remove(0);
        assert_eq!(run(&args).link_dest.len(), 20);
    }

    #[test]
    fn copy_and_compare_dest_are_kinds_of_link_dest_that_do_not_mix() {
        let a = run(&["--copy-dest=../a", "--copy-dest=b", "x", "h:y"]);
        assert_eq!((a.alt_dest, a.link_dest.len()), (AltDest::Copy, 2));
        assert_eq!(
            run(&["--compare-dest=a", "x", "h:y"]).alt_dest,
            AltDest::Compare
        );
        let mixed = err(&["--link-dest=a", "--compare-dest=b", "x", "h:y"]);
        assert_eq!(mixed.kind(), ArgsErrorKind::BadValue);
        assert!(mixed
            .to_string()
            .contains("--compare-dest option conflicts with the --link-dest"));
    }

    #[test]
    fn cvs_exclude_flag() {
        assert!(run(&["-aC", "a", "h:b"]).cvs_exclude);
        assert!(run(&["--cvs-exclude", "a", "h:b"]).cvs_exclude);
        assert!(!run(&["a", "h:b"]).cvs_exclude);
        // rsync has no negation for it.
        assert_eq!(
            err(&["--no-C", "a", "h:b"]).kind(),
            ArgsErrorKind::UnknownOption
        );
    }

    #[test]
    fn retries_take_a_small_count() {
        assert_eq!(run(&["a", "b"]).retries, None);
        assert_eq!(run(&["--retries=0", "a", "b"]).retries, Some(0));
        assert_eq!(run(&["--retries", "5", "a", "b"]).retries, Some(5));
        for bad in ["--retries=-1", "--retries=101"] {
            assert_eq!(
                err(&[bad, "a", "b"]).kind(),
                ArgsErrorKind::BadValue,
                "{bad}"
            );
        }
    }

    #[test]
    fn other_value_options() {
        let a = run(&[
            "--out-format=%i %n",
            "--log-file",
            "/tmp/log",
            "--sftp-server=/usr/lib/openssh/sftp-server",
            "--list-only",
            "--stats",
            "--progress",
            "--partial",
            "--numeric-ids",
            "--existing",
            "--ignore-existing",
            "--size-only",
            "--ignore-errors",
            "a",
            "b",
        ]);
        assert_eq!(a.out_format.as_deref(), Some(&b"%i %n"[..]));
        assert_eq!(a.log_file, Some(PathBuf::from("/tmp/log")));
        assert_eq!(
            a.sftp_server,
            Some(PathBuf::from("/usr/lib/openssh/sftp-server"))
        );
        assert_eq!(run(&["--channels=8", "a", "b"]).channels, Some(8));
        assert_eq!(run(&["a", "b"]).channels, None);
        assert_eq!(
            err(&["--channels=0", "a", "b"]).kind,
            ArgsErrorKind::BadValue
        );
        assert!(a.list_only && a.stats && a.progress && a.partial && a.numeric_ids);
        assert!(a.existing && a.ignore_existing && a.size_only && a.ignore_errors);
        assert!(run(&["--ignore-non-existing", "a", "b"]).existing);
        assert_eq!(
            run(&["--log-format=%n", "a", "b"]).out_format,
            Some(b"%n".to_vec())
        );
        let a = run(&["-P", "a", "b"]);
        assert!(a.partial && a.progress);
    }

    #[test]
    fn selection_options() {
        let a = run(&["-rIm", "--max-size=1.5k", "--min-size", "1KB-1", "a", "h:b"]);
        assert!(a.ignore_times && a.prune_empty_dirs);
        assert_eq!((a.max_size, a.min_size), (Some(1536), Some(999)));
        assert!(run(&["--ignore-times", "a", "b"]).ignore_times);
        // The last value wins; 0 is a limit, not "none" (rsync 3.1 and later).
        assert_eq!(
            run(&["--max-size=1m", "--max-size=0", "a", "b"]).max_size,
            Some(0)
        );
        assert!(!run(&["-m", "--no-m", "a", "b"]).prune_empty_dirs);
        assert!(!run(&["--prune-empty-dirs", "--no-prune-empty-dirs", "a", "b"]).prune_empty_dirs);
        let a = run(&["--ignore-missing-args", "a", "b"]);
        assert!(a.ignore_missing_args && !a.delete_missing_args);
        let a = run(&["--delete-missing-args", "--ignore-missing-args", "a", "b"]);
        assert!(a.delete_missing_args);
        // As rsync: none of these has a negation.
        for bad in [
            "--no-I",
            "--no-ignore-times",
            "--no-max-size",
            "--no-delete-missing-args",
        ] {
            assert_eq!(
                err(&[bad, "a", "b"]).kind(),
                ArgsErrorKind::UnknownOption,
                "{bad}"
            );
        }
        for (bad, message) in [
            ("--max-size=1x", "--max-size=1x is invalid"),
            ("--min-size=-1", "--min-size=-1 is too large"),
            ("--max-size=8192p", "--max-size=8192p is too large"),
        ] {
            let e = err(&[bad, "a", "b"]);
            assert_eq!(e.kind(), ArgsErrorKind::BadValue, "{bad}");
            assert_eq!(e.message(), message);
        }
        assert_eq!(
            err(&["--max-size", "a", "b"]).message(),
            "--max-size=a is invalid"
        );
    }

    #[test]
    fn delete_needs_recursion() {
        assert_eq!(
            err(&["--delete", "a", "b"]).message(),
            "--delete does not work without --recursive (-r) or --dirs (-d)."
        );
        let a = run(&["-r", "--delete-excluded", "a", "b"]);
        assert!(a.delete && a.delete_excluded);
        assert_eq!(
            err(&["--delete-excluded", "a", "b"]).kind(),
            ArgsErrorKind::BadOperands
        );
        // Listing is fine without -r, as in rsync: it implies -d.
        let a = run(&["--delete", "host:x"]);
        assert!(a.delete && a.list_only && a.dirs);
        assert!(!run(&["--no-d", "host:x"]).dirs);
        // -d is enough, and the later of -d and --no-d wins.
        let a = run(&["-d", "--delete", "a", "b"]);
        assert!(a.delete && a.dirs && !a.recursive);
        assert!(!run(&["-d", "--no-d", "a", "b"]).dirs);
        assert!(run(&["--no-dirs", "--dirs", "a", "b"]).dirs);
        assert_eq!(
            err(&["-d", "--no-d", "--delete", "a", "b"]).kind(),
            ArgsErrorKind::BadOperands
        );
    }

    #[test]
    fn non_utf8_arguments() {
        let latin1 = b"caf\xe9";
        let r = parse_bytes(&[
            b"-r",
            b"--exclude=\xff*.o",
            b"-f",
            b"+ \xe9",
            b"--exclude-from",
            b"ex\xfe",
            b"-e",
            b"ssh -i k\xe9y",
            latin1,
            b"us\xe9r@host:dir/\xe9/",
        ])
        .unwrap();
        let Parsed::Run(a) = r else { panic!() };
        assert_eq!(
            a.filters,
            vec![
                FilterArg::Exclude(b"\xff*.o".to_vec()),
                FilterArg::Rule(b"+ \xe9".to_vec()),
                FilterArg::ExcludeFrom(PathBuf::from(os(b"ex\xfe"))),
            ]
        );
        assert_eq!(a.rsh, Some(os(b"ssh -i k\xe9y")));
        assert_eq!(a.sources, vec![Location::Local(PathBuf::from(os(latin1)))]);
        assert_eq!(
            a.dest,
            Some(Location::Remote {
                user: Some(b"us\xe9r".to_vec()),
                host: b"host".to_vec(),
                path: b"dir/\xe9/".to_vec(),
            })
        );
        assert_eq!(a.direction(), Direction::Push);

        let e = parse_bytes(&[b"--fo\xffo", b"a", b"b"]).unwrap_err();
        assert_eq!(e.message(), "unknown option --fo\\#377o");
        let e = parse_bytes(&[b"-\xe9", b"a", b"b"]).unwrap_err();
        assert_eq!(e.message(), "unknown option -\\#351");
        let e = parse_bytes(&[b"a", b"h:x", b"h\n::m"]).unwrap_err();
        assert_eq!(e.kind(), ArgsErrorKind::Daemon);
        assert!(e.message().ends_with("(h\\#012::m)"));
    }

    #[test]
    fn remote_spec_parsing() {
        let dest = |spec: &str| run(&["src", spec]).dest.unwrap();
        assert_eq!(dest("user@host:path"), remote(Some("user"), "host", "path"));
        assert_eq!(dest("host:dir/"), remote(None, "host", "dir/"));
        assert_eq!(dest("host:/abs/x"), remote(None, "host", "/abs/x"));
        assert_eq!(dest("host:"), remote(None, "host", ""));
        assert_eq!(dest("host:a:b"), remote(None, "host", "a:b"));
        assert_eq!(dest("a@b@host:x"), remote(Some("a@b"), "host", "x"));
        assert_eq!(dest("[::1]:x"), remote(None, "::1", "x"));
        assert_eq!(
            dest("me@[fe80::1%eth0]:"),
            remote(Some("me"), "fe80::1%eth0", "")
        );
        assert_eq!(dest("c:/x"), remote(None, "c", "/x"));

        // A '/' before any ':' keeps it local.
        assert_eq!(dest("./a:b"), local("./a:b"));
        assert_eq!(dest("/x/y:z"), local("/x/y:z"));
        assert_eq!(dest("dir/"), local("dir/"));
        assert_eq!(dest("[::1]"), local("[::1]"));
        assert_eq!(dest("[::1]/x:y"), local("[::1]/x:y"));
        assert_eq!(dest("a[::1]:x"), local("a[::1]:x"));
        assert_eq!(dest("[]:x"), local("[]:x"));
        assert_eq!(dest("[::1]x:y"), local("[::1]x:y"));
        assert_eq!(dest("-"), local("-"));

        for daemon in [
            "host::mod",
            "host::",
            "u@h::m/x",
            "rsync://host/mod",
            "RSYNC://h:873/m",
        ] {
            let e = err(&["src", daemon]);
            assert_eq!(e.kind(), ArgsErrorKind::Daemon, "{daemon}");
            assert!(e
                .message()
                .starts_with("rsync daemon (::, rsync://) is not supported: sftpsync talks SFTP"));
            assert_eq!(err(&[daemon, "dst"]).kind(), ArgsErrorKind::Daemon);
        }
        assert_eq!(err(&["src", ":x"]).message(), "missing host name in :x");
        assert_eq!(err(&[":x", "dst"]).message(), "missing host name in :x");
        assert_eq!(err(&["src", "u@:x"]).message(), "missing host name in u@:x");
        assert_eq!(err(&["src", "@h:x"]).message(), "empty user name in @h:x");
    }

    #[test]
    fn operands_and_direction() {
        let a = run(&["-a", "a", "b/", "user@host:backup/"]);
        assert_eq!(a.direction(), Direction::Push);
        assert_eq!(a.sources, vec![local("a"), local("b/")]);
        assert_eq!(a.dest, Some(remote(Some("user"), "host", "backup/")));

        let a = run(&["host:a/", "host:b", ":c", "dst"]);
        assert_eq!(a.direction(), Direction::Pull);
        assert_eq!(
            a.sources,
            vec![
                remote(None, "host", "a/"),
                remote(None, "host", "b"),
                remote(None, "host", "c")
            ]
        );
        assert_eq!(a.dest, Some(local("dst")));

        // Follow-on sources inherit the user too.
        let a = run(&["u@h:a", ":b", "."]);
        assert_eq!(a.sources[1], remote(Some("u"), "h", "b"));

        let a = run(&["src", "dst"]);
        assert_eq!(a.direction(), Direction::Local);
        assert!(!a.list_only);

        // One operand lists it; so does a remote list ending in a ':path' source.
        let a = run(&["host:dir/"]);
        assert!(a.list_only && a.dest.is_none());
        assert_eq!(a.direction(), Direction::Pull);
        let a = run(&["host:a", ":b"]);
        assert!(a.list_only && a.dest.is_none());
        assert_eq!(a.sources.len(), 2);
        let a = run(&["dir"]);
        assert!(a.list_only && a.dest.is_none());
        assert_eq!(a.direction(), Direction::Local);

        assert_eq!(
            err(&["h1:a", "h2:b"]).message(),
            "remote to remote copies are not supported"
        );
        assert_eq!(
            err(&["h1:a", "h2:b", "dst"]).message(),
            "all remote sources must be on the same host: h1:a and h2:b"
        );
        assert_eq!(
            err(&["u@h:a", "h:b", "dst"]).kind(),
            ArgsErrorKind::BadOperands
        );
        assert_eq!(
            err(&["h:a", "b", "dst"]).message(),
            "cannot mix remote and local sources: b is local (write :b for another path on the same host)"
        );
        assert_eq!(
            err(&["a", "h:b", "dst"]).message(),
            "cannot mix local and remote sources: h:b is remote"
        );
        assert_eq!(
            err(&["a", "h:b", "h:dst"]).kind(),
            ArgsErrorKind::BadOperands
        );
        assert_eq!(
            err(&["", "dst"]).message(),
            "empty source argument (use \".\" for the current directory)"
        );
        assert_eq!(
            err(&["src", ""]).message(),
            "empty destination argument (use \".\" for the current directory)"
        );
        assert_eq!(err(&["h:a", ""]).kind(), ArgsErrorKind::BadOperands);
        assert!(err(&[]).message().starts_with("missing SRC and DEST"));
        assert!(err(&["-av"]).message().starts_with("missing SRC and DEST"));
    }

    #[test]
    fn operands_mix_with_options_and_double_dash() {
        let a = run(&["src", "-a", "dst", "--delete"]);
        assert!(a.recursive && a.delete);
        assert_eq!(a.sources, vec![local("src")]);
        let a = run(&["-r", "--", "-a", "--delete", "dst"]);
        assert!(!a.delete && !a.perms);
        assert_eq!(a.sources, vec![local("-a"), local("--delete")]);
        let a = run(&["-", "dst"]);
        assert_eq!(a.sources, vec![local("-")]);
    }

    #[test]
    fn show_escapes_like_rsync() {
        assert_eq!(show(b"plain caf\xc3\xa9"), "plain café");
        assert_eq!(show(b"a\tb\xff"), "a\\#011b\\#377");
    }
}

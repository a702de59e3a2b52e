//! The man page and the bash, zsh and fish completions, generated from the option table and
//! the `--help` text so that they cannot drift apart from what the parser accepts.
//!
//! The parser is not clap (see [`crate::args`]); a `clap::Command` is built here only as the
//! input clap_mangen and clap_complete expect. Each option's words come from its `--help`
//! line, the option itself (name, letter, whether it takes a value) from the table.

use std::collections::HashMap;
use std::io::{self, Write};

use clap::{Arg, ArgAction, Command, ValueHint};
use roff::{bold, roman, Roff};

use crate::args::{self, OptionDoc};

/// What `sftpsync --generate=WHAT` writes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Target {
    pub const NAMES: &'static str = "man, bash, zsh or fish";

    pub fn from_name(name: &str) -> Option<Target> {
        match name {
            "man" => Some(Target::Man),
            "bash" => Some(Target::Bash),
            "zsh" => Some(Target::Zsh),
            "fish" => Some(Target::Fish),
            _ => None,
        }
    }
}

/// Writes the man page or a completion script.
pub fn generate(target: Target, out: &mut dyn Write) -> io::Result<()> {
    let shell = match target {
        Target::Man => return man_page(out),
        Target::Bash => clap_complete::Shell::Bash,
        Target::Zsh => clap_complete::Shell::Zsh,
        Target::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = command(Use::Completion);
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sftpsync", &mut buf);
    out.write_all(&buf)
}

/// One option's entry in `--help`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct HelpEntry {
    /// The heading it is listed under, without the colon.
    heading: String,
    /// `FILE` in `--exclude-from=FILE`.
    value_name: Option<String>,
    /// Its description, continuation lines joined.
    text: String,
    /// Its place in the help, so the man page keeps the help's order.
    order: usize,
}

/// The help text split up: the lines before the first heading, the option entries by every
/// name they list (`--verbose` and `-v`), and the lines after the last entry.
#[derive(Debug, Default)]
struct ParsedHelp {
    preamble: Vec<String>,
    entries: HashMap<String, HelpEntry>,
    closing: Vec<String>,
}

/// Reads the layout `--help` uses: headings start in column 0 and end with ':' (anything
/// after a parenthesis is commentary); entries start with a space and a dash, their names
/// separated by ", " and ended by two spaces; deeper-indented lines continue the
/// description, which may also start on the line after a long name.
fn parse_help(text: &str) -> ParsedHelp {
    let mut parsed = ParsedHelp::default();
    let mut heading: Option<String> = None;
    let mut current: Vec<String> = Vec::new();
    let mut order = 0;
    let finish = |names: &mut Vec<String>, entry: &HelpEntry, parsed: &mut ParsedHelp| {
        for name in names.drain(..) {
            parsed.entries.insert(name, entry.clone());
        }
    };
    let mut entry = HelpEntry::default();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if !line.starts_with(' ') && line.ends_with(':') && !line.starts_with("Usage") {
            finish(&mut current, &entry, &mut parsed);
            let name = line.trim_end_matches(':');
            let name = name.split(" (").next().unwrap_or(name);
            heading = Some(name.trim().to_string());
            continue;
        }
        let Some(heading) = &heading else {
            parsed.preamble.push(line.to_string());
            continue;
        };
        if indent > 0 && indent <= 5 && trimmed.starts_with('-') {
            finish(&mut current, &entry, &mut parsed);
            let (spec, text) = match trimmed.find("  ") {
                Some(i) => (&trimmed[..i], trimmed[i..].trim()),
                None => (trimmed, ""),
            };
            let mut value_name = None;
            for name in spec.split(", ") {
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (name, None),
                };
                value_name = value_name.or(value);
                current.push(name.to_string());
            }
            order += 1;
            entry = HelpEntry {
                heading: heading.clone(),
                value_name,
                text: text.to_string(),
                order,
            };
        } else if indent > 5 && !current.is_empty() {
            if !entry.text.is_empty() {
                entry.text.push(' ');
            }
            entry.text.push_str(trimmed);
        } else if !line.is_empty() {
            finish(&mut current, &entry, &mut parsed);
            parsed.closing.push(line.to_string());
        } else {
            finish(&mut current, &entry, &mut parsed);
        }
    }
    finish(&mut current, &entry, &mut parsed);
    parsed
}

/// What the command is built for: the man page shows the options `--help` lists; the
/// completions also offer the `--no-X` negations, which `--help` mostly covers with one
/// line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Man,
    Completion,
}

fn value_hint(value_name: &str) -> ValueHint {
    match value_name {
        "FILE" => ValueHint::FilePath,
        "DIR" => ValueHint::DirPath,
        "PATH" => ValueHint::ExecutablePath,
        "COMMAND" => ValueHint::CommandString,
        _ => ValueHint::Other,
    }
}

/// The clap view of the option table.
fn command(purpose: Use) -> Command {
    let help = parse_help(&args::help());
    let mut cmd = Command::new("sftpsync")
        .version(env!("CARGO_PKG_VERSION"))
        .about("rsync's command line and behaviour for servers that allow only SFTP")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .override_usage(usage_lines(&help.preamble).join("\n"));
    let no_help = HelpEntry {
        order: usize::MAX,
        ..HelpEntry::default()
    };
    let mut options: Vec<(String, OptionDoc, &HelpEntry)> = Vec::new();
    for opt in args::option_docs() {
        let key = match (opt.long, opt.short) {
            (Some(long), _) => format!("--{long}"),
            (None, Some(c)) => format!("-{c}"),
            (None, None) => continue,
        };
        let short_key = opt.short.map(|c| format!("-{c}"));
        let entry = help
            .entries
            .get(&key)
            .or_else(|| short_key.and_then(|k| help.entries.get(&k)))
            .unwrap_or(&no_help);
        options.push((key, opt, entry));
    }
    // clap_mangen orders the headings by their first option, so options go in help order.
    options.sort_by_key(|(_, _, entry)| entry.order);
    for (key, opt, entry) in options {
        let mut arg = Arg::new(key.trim_start_matches('-').to_string())
            .display_order(entry.order)
            .action(if opt.takes_value {
                ArgAction::Set
            } else if repeatable(&opt, entry) {
                ArgAction::Count
            } else {
                ArgAction::SetTrue
            });
        if let Some(long) = opt.long {
            arg = arg.long(long);
        }
        if let Some(c) = opt.short {
            arg = arg.short(c);
        }
        if opt.takes_value {
            let name = entry.value_name.clone().unwrap_or_else(|| "VALUE".into());
            arg = arg
                .value_hint(value_hint(&name))
                .value_name(name)
                .require_equals(purpose == Use::Man);
        }
        if !entry.heading.is_empty() {
            arg = arg.help_heading(entry.heading.clone());
        }
        arg = match describe(&opt, entry) {
            Some(text) => arg.help(text),
            None => arg.hide(true),
        };
        if purpose == Use::Man && entry.text.is_empty() {
            arg = arg.hide(true);
        }
        cmd = cmd.arg(arg);
    }
    // Only completions need the operands: the man page says more about them in prose.
    let hidden = purpose == Use::Man;
    cmd.arg(
        Arg::new("SRC")
            .num_args(1..)
            .required(true)
            .hide(hidden)
            .value_hint(ValueHint::AnyPath)
            .help("what to copy: a local path, or [USER@]HOST:PATH"),
    )
    .arg(
        Arg::new("DEST")
            .required(true)
            .hide(hidden)
            .value_hint(ValueHint::AnyPath)
            .help("where to copy it: a local path, or [USER@]HOST:PATH"),
    )
}

/// Whether the help tells what giving the option twice does (`-vv`, `-ii`), so a shell
/// should offer it again.
fn repeatable(opt: &OptionDoc, entry: &HelpEntry) -> bool {
    opt.short
        .is_some_and(|c| entry.text.contains(&format!("-{c}{c}")))
}

/// An option's description: its help line, or for a negation what it switches off. `None`
/// for options that are accepted and do nothing, which are not offered.
fn describe(opt: &OptionDoc, entry: &HelpEntry) -> Option<String> {
    if !entry.text.is_empty() {
        return Some(entry.text.clone());
    }
    let long = opt.long?;
    let negated = long.strip_prefix("no-")?;
    let known = args::option_docs().any(|o| {
        o.in_help
            && (o.long == Some(negated)
                || (negated.chars().count() == 1 && o.short == negated.chars().next()))
    });
    known.then(|| {
        let shown = if negated.chars().count() == 1 {
            format!("-{negated}")
        } else {
            format!("--{negated}")
        };
        format!("switch {shown} off")
    })
}

/// The `Usage:` block of the help, without the word itself.
fn usage_lines(preamble: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for line in preamble {
        let rest = if let Some(rest) = line.strip_prefix("Usage:") {
            rest
        } else if let Some(rest) = line.trim_start().strip_prefix("or ") {
            rest
        } else if lines.is_empty() {
            continue;
        } else {
            break;
        };
        lines.push(rest.trim().to_string());
    }
    lines
}

/// The prose of the help's preamble that follows the usage lines.
fn operand_rules(preamble: &[String]) -> String {
    let mut past_usage = false;
    let mut text = Vec::new();
    for line in preamble {
        let usage = line.starts_with("Usage:") || line.trim_start().starts_with("or ");
        if usage {
            past_usage = true;
        } else if past_usage && !line.trim().is_empty() {
            text.push(line.trim());
        }
    }
    text.join(" ")
}

const DESCRIPTION: &str = "\
sftpsync copies files the way rsync does, with rsync's options, filter rules, itemized \
output and exit codes, to and from servers that allow SFTP and nothing else \
(OpenSSH's ForceCommand internal-sftp, chrooted upload accounts, appliances). It speaks \
SFTP version 3 through the system ssh, asking for the sftp subsystem, so no program ever \
runs on the server: rsync's own server process is not needed.

Changed files are sent as deltas without a server process: sftpsync keeps, on the client, \
a record of the blocks of each file it wrote (see FILES), and writes only the blocks that \
differ. Many SFTP requests are kept in flight at once, over several channels.";

/// Extra sections after the options: roff text, each `(title, paragraphs)`.
fn extra_sections() -> Vec<(&'static str, Vec<(String, String)>)> {
    let codes = crate::exit::ALL
        .iter()
        .map(|&c| {
            let words = match c {
                0 => "success",
                // rsync's words for it say nothing; ssh's own message says the rest.
                crate::exit::SSH_FAILED => {
                    "ssh failed or no SFTP session came up (the cause is on the line before)"
                }
                _ => crate::describe_code(c),
            };
            (c.to_string(), words.to_string())
        })
        .collect();
    vec![
        (
            "DOCTOR",
            vec![(
                "sftpsync doctor [-e COMMAND] [--json] [USER@]HOST[:PATH]".into(),
                "Logs in and reports what the server allows: whether a shell (and so plain \
                 rsync) would work, the SFTP version and extensions, limits, whether PATH is \
                 writable and keeps modes and times, clock skew, round-trip time and \
                 throughput, and the flags to use. Exit status 0 when healthy, 2 when \
                 problems were found, 255 when no SFTP session came up. See sftpsync doctor \
                 --help."
                    .into(),
            )],
        ),
        ("EXIT STATUS", codes),
        (
            "ENVIRONMENT",
            vec![
                (
                    "RSYNC_RSH".into(),
                    "The remote shell command when -e is not given, as in rsync.".into(),
                ),
                (
                    "XDG_STATE_HOME, HOME".into(),
                    "Where the delta index is kept (see FILES).".into(),
                ),
            ],
        ),
        (
            "FILES",
            vec![(
                "$XDG_STATE_HOME/sftpsync/index.sqlite (or ~/.local/state/...)".into(),
                "The delta index: size, mtime, hash and block signatures of what sftpsync \
                 last wrote to each remote file. Deleting it costs speed, never correctness \
                 (--no-index keeps none)."
                    .into(),
            )],
        ),
        (
            "SEE ALSO",
            vec![(
                "rsync(1), ssh(1), sftp(1), sshd_config(5)".into(),
                "rsync's manual explains the options sftpsync shares with it.".into(),
            )],
        ),
    ]
}

fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let help = parse_help(&args::help());
    let man = clap_mangen::Man::new(command(Use::Man))
        .section("1")
        .manual("User Commands")
        .source(format!("sftpsync {}", env!("CARGO_PKG_VERSION")));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;

    let mut roff = Roff::default();
    roff.control("SH", ["DESCRIPTION"]);
    for (i, paragraph) in DESCRIPTION.split("\n\n").enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(paragraph)]);
    }
    roff.control("PP", []);
    roff.text([roman(operand_rules(&help.preamble))]);
    roff.to_writer(out)?;

    man.render_options_section(out)?;

    let mut roff = Roff::default();
    if !help.closing.is_empty() {
        roff.control("SH", ["NOTES"]);
        roff.text([roman(help.closing.join(" "))]);
    }
    for (title, items) in extra_sections() {
        roff.control("SH", [title]);
        for (tag, text) in items {
            roff.control("TP", []);
            roff.text([bold(tag)]);
            roff.text([roman(text)]);
        }
    }
    roff.to_writer(out)?;
    man.render_version_section(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(target: Target) -> String {
        let mut out = Vec::new();
        generate(target, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn help_entries_are_read_with_headings_values_and_continuations() {
        let help = parse_help(&args::help());
        let v = &help.entries["--verbose"];
        assert_eq!(v, &help.entries["-v"]);
        assert_eq!(v.heading, "Output");
        let x = &help.entries["--exclude-from"];
        assert_eq!(x.value_name.as_deref(), Some("FILE"));
        assert!(x.heading.starts_with("Filters"));
        let f = &help.entries["-F"];
        assert!(f.text.contains("dir-merge") && f.text.contains("twice also"));
        let atomic = &help.entries["--require-atomic-replace"];
        assert!(atomic.text.starts_with("where the server lacks"));
        assert!(help.preamble[0].starts_with("sftpsync "));
        assert!(usage_lines(&help.preamble)[0].ends_with("push"));
        assert!(operand_rules(&help.preamble).starts_with("An operand is remote"));
    }

    #[test]
    fn every_option_has_its_help_text() {
        let help = parse_help(&args::help());
        for opt in args::option_docs().filter(|o| o.in_help) {
            let key = match (opt.long, opt.short) {
                (Some(l), _) => format!("--{l}"),
                (None, Some(c)) => format!("-{c}"),
                _ => continue,
            };
            let entry = help.entries.get(&key);
            assert!(
                entry.is_some_and(|e| !e.text.is_empty()),
                "{key} has no help line"
            );
        }
    }

    #[test]
    fn man_page_lists_every_option_under_the_help_headings() {
        let man = generated(Target::Man);
        assert!(man.contains("\n.TH sftpsync 1 "), "{man}");
        for opt in args::option_docs().filter(|o| o.in_help) {
            if let Some(long) = opt.long {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(man.contains(&roff), "--{long} not in the man page");
            }
            if let Some(c) = opt.short {
                assert!(
                    man.contains(&format!("\\fB\\-{c}\\fR")),
                    "-{c} not in the man page"
                );
            }
        }
        for heading in [
            "OUTPUT",
            "DELETION",
            "FILTERS",
            "DELTA AND RESUME",
            "CONNECTION",
        ] {
            let plain = man.contains(&format!(".SH {heading}\n"));
            assert!(
                plain || man.contains(&format!(".SH \"{heading}\"\n")),
                "{heading}"
            );
        }
        for section in ["DOCTOR", "EXIT STATUS", "SYNOPSIS", "DESCRIPTION"] {
            let plain = man.contains(&format!(".SH {section}\n"));
            assert!(
                plain || man.contains(&format!(".SH \"{section}\"\n")),
                "{section}"
            );
        }
        // Exit codes come from the same list the binary exits with.
        assert!(man.contains("some files/attrs were not transferred"));
    }

    #[test]
    fn completions_offer_every_option_and_its_negations() {
        for target in [Target::Bash, Target::Zsh, Target::Fish] {
            let script = generated(target);
            for opt in args::option_docs() {
                // A negation is offered when what it negates is documented.
                let offered = opt.in_help
                    || describe(&opt, &HelpEntry::default())
                        .is_some_and(|d| d.starts_with("switch"));
                let Some(long) = opt.long.filter(|_| offered) else {
                    continue;
                };
                let shown = match target {
                    // fish names long options without their dashes: `-l verbose`.
                    Target::Fish => format!("-l {long}"),
                    _ => format!("--{long}"),
                };
                assert!(script.contains(&shown), "{target:?} lacks --{long}");
            }
        }
        assert!(generated(Target::Bash).contains("complete -F"));
        assert!(generated(Target::Zsh).starts_with("#compdef sftpsync"));
    }
}

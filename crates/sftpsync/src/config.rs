//! The config file, `$XDG_CONFIG_HOME/sftpsync/config.toml` (`~/.config/...`): defaults for
//! every run and for each server, below what the command line says.
//!
//! ```toml
//! [defaults]
//! args = ["--timeout=60"]
//!
//! [host."backup.example.com"]
//! channels = 4
//! rsh = "ssh -p 2222"
//! ssh_args = ["-i", "/home/me/.ssh/backup_key"]
//! args = ["-z", "--bwlimit=2M"]
//! ```
//!
//! Settings become options put before the command line's own, so an option given there wins
//! wherever rsync lets a later option override an earlier one. A host's section comes after
//! `[defaults]`, so it wins over them the same way.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One section: `[defaults]` or `[host."NAME"]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// `--channels`.
    pub channels: Option<u32>,
    /// `-z`.
    pub compress: Option<bool>,
    /// `--bwlimit`, as on the command line (`"1M"`, or a number of KiB/s).
    pub bwlimit: Option<toml::Value>,
    /// The remote shell, as `-e` takes it; `-e` and `$RSYNC_RSH` win over it.
    pub rsh: Option<String>,
    /// Words added to the remote shell command, whichever one is used.
    pub ssh_args: Option<Vec<String>>,
    /// Any other options, exactly as they would be written on the command line.
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Section,
    #[serde(default)]
    host: BTreeMap<String, Section>,
}

/// What the config file says for one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Options to parse before the command line's.
    pub args: Vec<OsString>,
    /// The host's `rsh`, else the defaults'.
    pub rsh: Option<String>,
    /// The defaults' `ssh_args`, then the host's.
    pub ssh_args: Vec<OsString>,
}

/// The file to read: `$SFTPSYNC_CONFIG` when set (empty: none), else the XDG location.
/// `explicit` tells whether a missing file is an error.
pub fn location() -> Option<(PathBuf, bool)> {
    if let Some(p) = std::env::var_os("SFTPSYNC_CONFIG") {
        return (!p.is_empty()).then(|| (PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((base.join("sftpsync").join("config.toml"), false))
}

/// Reads the settings for `host` (`None`: a local copy, only `[defaults]`). A file that
/// cannot be read or understood is a one-line error naming it and, where known, the line.
pub fn load(path: &Path, explicit: bool, host: Option<&str>) -> Result<Settings, String> {
    // A default location that cannot even be looked at (someone else's HOME, as under
    // sudo -u) is as good as absent; a file that is there but unreadable is an error.
    if !explicit && std::fs::symlink_metadata(path).is_err() {
        return Ok(Settings::default());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Err(format!("cannot read config file {}: {e}", path.display())),
    };
    settings(&text, host).map_err(|(line, why)| match line {
        Some(n) => format!("config file {}:{n}: {why}", path.display()),
        None => format!("config file {}: {why}", path.display()),
    })
}

/// The settings in `text` for `host`; errors carry a line number where one is known.
fn settings(text: &str, host: Option<&str>) -> Result<Settings, (Option<usize>, String)> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        (line, e.message().trim().replace('\n', " "))
    })?;
    let mut out = Settings::default();
    let host_section = host.and_then(|h| file.host.get(h));
    for section in std::iter::once(&file.defaults).chain(host_section) {
        // serde has no position for a value it accepted: the key's first line will do.
        let where_ = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map(|i| i + 1)
        };
        if let Some(n) = section.channels {
            out.args.push(format!("--channels={n}").into());
        }
        match section.compress {
            Some(true) => out.args.push("-z".into()),
            Some(false) => out.args.push("--no-z".into()),
            None => {}
        }
        match &section.bwlimit {
            None => {}
            Some(toml::Value::String(s)) => out.args.push(format!("--bwlimit={s}").into()),
            Some(toml::Value::Integer(n)) => out.args.push(format!("--bwlimit={n}").into()),
            Some(_) => {
                return Err((
                    where_("bwlimit"),
                    "bwlimit must be a number (KiB/s) or a string such as \"1M\"".into(),
                ))
            }
        }
        if let Some(rsh) = &section.rsh {
            out.rsh = Some(rsh.clone());
        }
        out.ssh_args
            .extend(section.ssh_args.iter().flatten().map(OsString::from));
        for arg in section.args.iter().flatten() {
            // Operands in a config file would turn every command line into another one.
            if !arg.starts_with('-') || arg == "-" || arg == "--" {
                return Err((
                    where_("args"),
                    format!("args holds options only, and {arg:?} is not one"),
                ));
            }
            out.args.push(arg.into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[defaults]
channels = 2
args = ["--timeout=60", "-v"]
ssh_args = ["-oServerAliveInterval=15"]

[host."backup.example.com"]
channels = 4
compress = true
bwlimit = "1M"
rsh = "ssh -p 2222"
ssh_args = ["-i", "/k"]
args = ["--retries=5"]
"#;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn host_sections_follow_the_defaults() {
        let s = settings(TEXT, Some("backup.example.com")).unwrap();
        assert_eq!(
            s.args,
            os(&[
                "--channels=2",
                "--timeout=60",
                "-v",
                "--channels=4",
                "-z",
                "--bwlimit=1M",
                "--retries=5"
            ])
        );
        assert_eq!(s.rsh.as_deref(), Some("ssh -p 2222"));
        assert_eq!(s.ssh_args, os(&["-oServerAliveInterval=15", "-i", "/k"]));

        let s = settings(TEXT, Some("other")).unwrap();
        assert_eq!(s.args, os(&["--channels=2", "--timeout=60", "-v"]));
        assert_eq!(s.rsh, None);
        assert_eq!(settings(TEXT, None).unwrap(), s);
        assert_eq!(settings("", Some("h")).unwrap(), Settings::default());
        let s = settings("[defaults]\nbwlimit = 300\ncompress = false\n", None).unwrap();
        assert_eq!(s.args, os(&["--no-z", "--bwlimit=300"]));
    }

    #[test]
    fn mistakes_name_their_line() {
        let e = settings("[defaults]\nchannels = 2\nchanels = 3\n", None).unwrap_err();
        assert_eq!(e.0, Some(3), "{e:?}");
        assert!(e.1.contains("chanels"), "{e:?}");
        let e = settings("[defaults]\nchannels = \"x\"\n", None).unwrap_err();
        assert_eq!(e.0, Some(2), "{e:?}");
        let e = settings("[defaults\n", None).unwrap_err();
        assert_eq!(e.0, Some(1), "{e:?}");
        let e = settings("[defaults]\n\nargs = [\"src\"]\n", None).unwrap_err();
        assert_eq!(
            e,
            (
                Some(3),
                "args holds options only, and \"src\" is not one".into()
            )
        );
        let e = settings("[defaults]\nbwlimit = true\n", None).unwrap_err();
        assert_eq!(e.0, Some(2));
        assert!(!e.1.contains('\n'));
    }

    #[test]
    fn files_are_optional_unless_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert_eq!(load(&missing, false, None), Ok(Settings::default()));
        let e = load(&missing, true, None).unwrap_err();
        assert!(e.starts_with("cannot read config file "), "{e}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[defaults]\nbogus = 1\n").unwrap();
        let e = load(&bad, false, Some("h")).unwrap_err();
        assert!(
            e.starts_with(&format!("config file {}:2: ", bad.display())),
            "{e}"
        );
    }
}

//! rsync's include/exclude filter rules: parsing them, and deciding what the sender skips and what the receiver protects from deletion.
//!
//! Covers `--filter`, `--exclude`, `--include`, the `*-from` lists and merge files. The parser
//! and matcher follow rsync 3.x (`exclude.c`, `lib/wildmatch.c`) closely, quirks included,
//! because users carry their rsync filter files over unchanged and expect the same files to be
//! selected. Paths and patterns are bytes throughout: names need not be UTF-8.

use std::fmt;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

/// Which side of a transfer a rule acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleSide {
    /// Sender (what is transferred) and receiver (what is protected from deletion).
    Both,
    /// Only the sender: hide/show.
    Sender,
    /// Only the receiver: protect/risk.
    Receiver,
}

/// What a list read by [`FilterRules::add_from_reader`] / [`FilterRules::add_from_file`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `--exclude-from`: one pattern per line, exclude unless the line starts with `+ `.
    Exclude,
    /// `--include-from`: one pattern per line, include unless the line starts with `- `.
    Include,
    /// `--filter='. FILE'`: one full filter rule per line.
    Filter,
}

/// Where a rule came from, so errors can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOrigin {
    /// A command-line option (`--filter`, `--exclude`, ...).
    CommandLine,
    /// Line (or NUL-separated record, with `--from0`) `line` of a rule file; `name` is the file
    /// as the user named it.
    File { name: String, line: usize },
}

impl fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleOrigin::CommandLine => Ok(()),
            RuleOrigin::File { name, line } => write!(f, "{name}:{line}: "),
        }
    }
}

/// A filter rule that cannot be used. `rule` is the offending rule text as given.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{origin}unknown filter rule: `{}`", show(rule))]
    UnknownRule { rule: Vec<u8>, origin: RuleOrigin },
    #[error(
        "{origin}invalid modifier '{}' at position {position} in filter rule: `{}`",
        show(&[*modifier]),
        show(rule)
    )]
    InvalidModifier {
        rule: Vec<u8>,
        modifier: u8,
        position: usize,
        origin: RuleOrigin,
    },
    #[error("{origin}'!' rule has trailing characters: `{}`", show(rule))]
    ClearWithArgument { rule: Vec<u8>, origin: RuleOrigin },
    #[error("{origin}unexpected end of filter rule: `{}`", show(rule))]
    MissingPattern { rule: Vec<u8>, origin: RuleOrigin },
    #[error(
        "{origin}specified-side merge file contains specified-side filter: `{}`",
        show(rule)
    )]
    ConflictingSides { rule: Vec<u8>, origin: RuleOrigin },
    #[error(
        "{origin}a dir-merge rule inside a per-directory merge file is not supported yet: `{}`",
        show(rule)
    )]
    NestedDirMerge { rule: Vec<u8>, origin: RuleOrigin },
    #[error(
        "{origin}CVS-exclude filter rules (the `C` modifier) are not supported yet: `{}`",
        show(rule)
    )]
    CvsExcludeUnsupported { rule: Vec<u8>, origin: RuleOrigin },
    #[error("{origin}failed to open filter file {}: {error}", path.display())]
    Open {
        path: PathBuf,
        origin: RuleOrigin,
        error: io::Error,
    },
    #[error("failed to read filter rules from {name}: {error}")]
    Read { name: String, error: io::Error },
    #[error("{origin}merge file {} includes itself", path.display())]
    MergeCycle { path: PathBuf, origin: RuleOrigin },
}

/// Rule text for messages: lossy for non-UTF-8 and with control characters neutralised, since
/// rule files are user data that should not drive the terminal.
fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The flags rsync keeps per rule (`FILTRULE_*`). Merge rules use the container flags too, as
/// the template for the rules read from their file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    include: bool,
    abs_path: bool,
    negate: bool,
    perishable: bool,
    xattr: bool,
    sender: bool,
    receiver: bool,
    no_prefixes: bool,
    word_split: bool,
    cvs: bool,
    /// `n` on a dir-merge rule: a directory's rules do not reach its subdirectories.
    no_inherit: bool,
}

impl Flags {
    /// rsync's `FILTRULES_FROM_CONTAINER`: what a rule read from a merge file inherits from the
    /// merge rule. Sides are inherited separately because they must not be given twice.
    fn inherited(&self) -> Flags {
        Flags {
            include: self.include,
            abs_path: self.abs_path,
            perishable: self.perishable,
            ..Flags::default()
        }
    }
}

/// One include/exclude rule after parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterRule {
    /// Without the trailing `/` of a directory-only rule, with the leading `/` of an anchored one.
    pattern: Vec<u8>,
    include: bool,
    dir_only: bool,
    negate: bool,
    abs_path: bool,
    perishable: bool,
    xattr: bool,
    // rsync keeps the two side bits separately: `-sr` names both sides explicitly, which is not
    // the same as naming none, because --delete-excluded only moves rules that name no side.
    sender: bool,
    receiver: bool,
    slash_cnt: usize,
    wild: bool,
    wild2: bool,
    wild2_prefix: bool,
    wild3_suffix: bool,
}

impl FilterRule {
    /// rsync's `add_rule`: precomputes what the matcher needs to know about the pattern.
    fn new(pattern: &[u8], flags: Flags) -> FilterRule {
        let mut pattern = pattern.to_vec();
        // A lone "/" keeps its slash: rsync strips only when something would remain.
        let dir_only = pattern.len() > 1 && pattern.ends_with(b"/");
        if dir_only {
            pattern.pop();
        }
        let slash_cnt = pattern.iter().filter(|&&b| b == b'/').count();
        let wild = pattern.iter().any(|b| matches!(b, b'*' | b'[' | b'?'));
        let wild2 = wild && pattern.windows(2).any(|w| w == b"**");
        FilterRule {
            wild2_prefix: wild2 && pattern.starts_with(b"**"),
            wild3_suffix: wild2 && pattern.ends_with(b"***"),
            pattern,
            include: flags.include,
            dir_only,
            negate: flags.negate,
            abs_path: flags.abs_path,
            perishable: flags.perishable,
            xattr: flags.xattr,
            sender: flags.sender,
            receiver: flags.receiver,
            slash_cnt,
            wild,
            wild2,
        }
    }

    /// The pattern as matched: no trailing `/` (see [`FilterRule::is_dir_only`]).
    pub fn pattern(&self) -> &[u8] {
        &self.pattern
    }

    pub fn is_include(&self) -> bool {
        self.include
    }

    /// The pattern had a trailing `/`: only directories match it.
    pub fn is_dir_only(&self) -> bool {
        self.dir_only
    }

    /// The `!` modifier: the rule takes effect when the pattern does not match.
    pub fn is_negated(&self) -> bool {
        self.negate
    }

    /// The `p` modifier: ignored inside directories that are being deleted.
    pub fn is_perishable(&self) -> bool {
        self.perishable
    }

    /// The `/` modifier: matched against the absolute path.
    pub fn is_absolute(&self) -> bool {
        self.abs_path
    }

    pub fn side(&self) -> RuleSide {
        match (self.sender, self.receiver) {
            (true, false) => RuleSide::Sender,
            (false, true) => RuleSide::Receiver,
            _ => RuleSide::Both,
        }
    }

    fn applies_on(&self, side: RuleSide) -> bool {
        match side {
            RuleSide::Both => true,
            RuleSide::Sender => self.sender || !self.receiver,
            RuleSide::Receiver => self.receiver || !self.sender,
        }
    }

    /// The rule in `--filter` syntax; feeding it back to [`FilterRules::add_filter_rule`] gives
    /// an equal rule.
    pub fn to_rule_bytes(&self) -> Vec<u8> {
        let mut out = vec![if self.include { b'+' } else { b'-' }];
        for (on, modifier) in [
            (self.abs_path, b'/'),
            (self.negate, b'!'),
            (self.perishable, b'p'),
            (self.sender, b's'),
            (self.receiver, b'r'),
            (self.xattr, b'x'),
        ] {
            if on {
                out.push(modifier);
            }
        }
        out.push(b' ');
        out.extend_from_slice(&self.pattern);
        if self.dir_only {
            out.push(b'/');
        }
        out
    }

    /// rsync's `rule_matches`: whether the rule takes effect for `path` (negation included).
    fn matches(&self, path: &[u8], is_dir: bool, abs_root: &[u8]) -> bool {
        let (name, rooted) = match path.split_first() {
            Some((b'/', rest)) => (rest, true),
            _ => (path, false),
        };
        // Neither an empty name nor an xattr rule ever takes effect, not even a negated one.
        if name.is_empty() || self.xattr {
            return false;
        }
        let hit = !self.negate;

        let mut prefix: &[u8] = b"";
        let mut slash_before = false;
        let mut name = name;
        if self.slash_cnt == 0 && !self.wild2 {
            name = match name.iter().rposition(|&b| b == b'/') {
                Some(i) => &name[i + 1..],
                None => name,
            };
        } else if self.abs_path && !rooted && !abs_root.is_empty() {
            prefix = abs_root;
            slash_before = true;
        } else if self.wild2_prefix && !rooted {
            // Lets "**/foo" match a top-level "foo".
            slash_before = true;
        }
        let mut slash_after = false;
        if is_dir {
            // Lets "dir/***" match "dir" itself.
            slash_after = self.wild3_suffix;
        } else if self.dir_only {
            return !hit;
        }

        let joined;
        let text: &[u8] = if prefix.is_empty() && !slash_before && !slash_after {
            name
        } else {
            let mut t = Vec::with_capacity(prefix.len() + name.len() + 2);
            t.extend_from_slice(prefix);
            if slash_before {
                t.push(b'/');
            }
            t.extend_from_slice(name);
            if slash_after {
                t.push(b'/');
            }
            joined = t;
            &joined
        };

        let (anchored, pattern) = match self.pattern.split_first() {
            Some((b'/', rest)) => (true, rest),
            _ => (false, &self.pattern[..]),
        };
        let place = if !anchored && self.slash_cnt > 0 && !self.wild2 {
            Place::LastElements(self.slash_cnt + 1)
        } else if !anchored && self.wild2 && !self.wild2_prefix {
            Place::AfterAnySlash
        } else {
            Place::Start
        };
        let matched = if self.wild {
            wildmatch_at(pattern, text, place)
        } else {
            literal_match_at(pattern, text, place)
        };
        if matched {
            hit
        } else {
            !hit
        }
    }
}

impl fmt::Display for FilterRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&show(&self.to_rule_bytes()))
    }
}

/// A `dir-merge FILE` rule: the FILE in each directory holds rules for that directory and,
/// unless `n` was given, those below it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DirMerge {
    /// The name looked for in each directory.
    name: Vec<u8>,
    template: Flags,
    /// `rules[at..at + len]` are the rules read so far for the directory at hand, the
    /// deepest directory's first.
    at: usize,
    len: usize,
}

/// The ordered rule list of one transfer. The first rule that matches a path decides; a path no
/// rule matches is included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterRules {
    rules: Vec<FilterRule>,
    /// `dir-merge` rules, each with the place in `rules` where its files' rules go.
    dir_merges: Vec<DirMerge>,
    sender_root: Vec<u8>,
    receiver_root: Vec<u8>,
    from0: bool,
}

impl FilterRules {
    pub fn new() -> Self {
        Self::default()
    }

    /// `--exclude=PATTERN`. As in rsync, a leading `- ` or `+ ` picks the rule type and a lone
    /// `!` clears the list. rsync rejects `- ` with nothing after it as a syntax error; this
    /// cannot fail, so such a rule, like an empty pattern, adds nothing.
    pub fn add_exclude(&mut self, pattern: &[u8]) {
        self.add_old_style(pattern, false);
    }

    /// `--include=PATTERN`, with the same prefix handling as [`FilterRules::add_exclude`].
    pub fn add_include(&mut self, pattern: &[u8]) {
        self.add_old_style(pattern, true);
    }

    fn add_old_style(&mut self, pattern: &[u8], include: bool) {
        let template = Flags {
            include,
            ..Flags::default()
        };
        let result = self.transaction(|p| {
            p.apply(
                pattern,
                &template,
                Syntax::OldPrefixes,
                &RuleOrigin::CommandLine,
            )
        });
        debug_assert!(
            matches!(result, Ok(()) | Err(FilterError::MissingPattern { .. })),
            "old-style rules can only lack a pattern: {result:?}"
        );
    }

    /// `--filter=RULE` / `-f RULE`. Merge files named here are read now; a relative name is
    /// relative to the current directory, as in rsync.
    pub fn add_filter_rule(&mut self, rule: &[u8]) -> Result<(), FilterError> {
        self.transaction(|p| {
            p.apply(
                rule,
                &Flags::default(),
                Syntax::Full,
                &RuleOrigin::CommandLine,
            )
        })
    }

    /// Reads a rule list: `--exclude-from` / `--include-from` style patterns or, for
    /// [`ListKind::Filter`], full filter rules. Records end at NUL if `from0`, else at CR or
    /// LF; empty records and records starting with `;` or `#` are skipped. `source` names the
    /// input in error messages. On error no rule from the input is kept.
    pub fn add_from_reader(
        &mut self,
        kind: ListKind,
        mut reader: impl BufRead,
        from0: bool,
        source: &str,
    ) -> Result<(), FilterError> {
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .map_err(|error| FilterError::Read {
                name: source.to_string(),
                error,
            })?;
        let (template, syntax) = list_template(kind);
        self.transaction(|p| p.apply_list(&data, &template, syntax, source, from0))
    }

    /// Reads a rule list from `path`; `-` is standard input.
    pub fn add_from_file(
        &mut self,
        kind: ListKind,
        path: &Path,
        from0: bool,
    ) -> Result<(), FilterError> {
        let (template, syntax) = list_template(kind);
        self.transaction(|p| p.apply_file(path, &template, syntax, from0, &RuleOrigin::CommandLine))
    }

    /// `--from0` for merge files named by later [`FilterRules::add_filter_rule`] calls (the
    /// list readers take the flag per call).
    pub fn set_from0(&mut self, from0: bool) {
        self.from0 = from0;
    }

    /// The absolute path of the sender's transfer root. Only rules with the `/` modifier use
    /// it: they match against this path joined with the relative path. Unset, they match the
    /// relative path as if the root were `/`.
    pub fn set_sender_root(&mut self, abs_dir: &[u8]) {
        self.sender_root = trim_slashes(abs_dir).to_vec();
    }

    /// Like [`FilterRules::set_sender_root`], for the receiver's destination directory.
    pub fn set_receiver_root(&mut self, abs_dir: &[u8]) {
        self.receiver_root = trim_slashes(abs_dir).to_vec();
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rules in the order they are checked.
    pub fn rules(&self) -> impl Iterator<Item = &FilterRule> {
        self.rules.iter()
    }

    /// The file names `dir-merge` rules look for in every directory.
    pub fn dir_merge_names(&self) -> Vec<Vec<u8>> {
        self.dir_merges.iter().map(|d| d.name.clone()).collect()
    }

    /// The rules for the entries of `dir`, where these are its parent's: the rules of each
    /// per-directory file found there (`read` gives a name's contents, `None` when absent)
    /// go where their `dir-merge` rule stands, before those inherited from above (which go,
    /// for a rule with `n`). An anchored pattern in such a file is anchored at `dir`.
    pub fn for_subdir(
        &self,
        dir: &[u8],
        read: impl Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<FilterRules, FilterError> {
        let mut out = self.clone();
        for k in 0..out.dir_merges.len() {
            let dm = out.dir_merges[k].clone();
            let mut parser = Parser {
                rules: Vec::new(),
                dir_merges: Vec::new(),
                from0: self.from0,
                open_files: Vec::new(),
                anchor: dir.to_vec(),
            };
            if let Some(data) = read(&dm.name) {
                let shown = String::from_utf8_lossy(&crate::path::join(dir, &dm.name)).into_owned();
                parser.apply_list(&data, &dm.template, Syntax::Full, &shown, self.from0)?;
            }
            if !parser.dir_merges.is_empty() {
                return Err(FilterError::NestedDirMerge {
                    rule: parser.dir_merges[0].name.clone(),
                    origin: RuleOrigin::File {
                        name: String::from_utf8_lossy(&dm.name).into_owned(),
                        line: 0,
                    },
                });
            }
            let dropped = if dm.template.no_inherit { dm.len } else { 0 };
            let added = parser.rules.len();
            out.rules.splice(dm.at..dm.at + dropped, parser.rules);
            out.dir_merges[k].len = dm.len - dropped + added;
            for (j, other) in out.dir_merges.iter_mut().enumerate() {
                if j != k && (other.at > dm.at || (other.at == dm.at && j > k)) {
                    other.at = other.at + added - dropped;
                }
            }
        }
        Ok(out)
    }

    /// Sender side: is this entry left out of the transfer? `path` is relative to the transfer
    /// root, `/`-separated. A directory that is left out must not be descended into.
    pub fn excluded_on_sender(&self, path: &[u8], is_dir: bool) -> bool {
        self.sender_match(path, is_dir).is_some_and(|r| !r.include)
    }

    /// Receiver side: is this destination entry protected from deletion? Excluded entries are
    /// kept by `--delete` unless the rules came through
    /// [`FilterRules::without_receiver_excludes`].
    pub fn protected_on_receiver(&self, path: &[u8], is_dir: bool) -> bool {
        self.receiver_match(path, is_dir, false)
            .is_some_and(|r| !r.include)
    }

    /// Like [`FilterRules::protected_on_receiver`], for entries inside a directory that is being
    /// deleted: perishable (`p`) rules no longer protect there.
    pub fn protected_in_deleted_dir(&self, path: &[u8], is_dir: bool) -> bool {
        self.receiver_match(path, is_dir, true)
            .is_some_and(|r| !r.include)
    }

    /// The rule that decides `path` on the sender, for `--debug=FILTER`-style reporting.
    pub fn sender_match(&self, path: &[u8], is_dir: bool) -> Option<&FilterRule> {
        self.rules
            .iter()
            .filter(|r| r.applies_on(RuleSide::Sender))
            .find(|r| r.matches(path, is_dir, &self.sender_root))
    }

    /// The rule that decides `path` on the receiver, for `--debug=FILTER`-style reporting.
    pub fn receiver_match(
        &self,
        path: &[u8],
        is_dir: bool,
        in_deleted_dir: bool,
    ) -> Option<&FilterRule> {
        self.rules
            .iter()
            .filter(|r| r.applies_on(RuleSide::Receiver))
            .filter(|r| !(in_deleted_dir && r.perishable))
            .find(|r| r.matches(path, is_dir, &self.receiver_root))
    }

    /// For `--delete-excluded`: rules that name no side become sender-only, so excluded files
    /// are no longer protected on the receiver. Protect/risk rules and rules naming a side keep
    /// acting on the receiver.
    pub fn without_receiver_excludes(&self) -> Self {
        let mut out = self.clone();
        for rule in &mut out.rules {
            if !rule.sender && !rule.receiver {
                rule.sender = true;
            }
        }
        out
    }

    /// Runs `f` on a copy of the rules and keeps the result only on success, so a bad line deep
    /// in a merge file does not leave half of the file applied.
    fn transaction(
        &mut self,
        f: impl FnOnce(&mut Parser) -> Result<(), FilterError>,
    ) -> Result<(), FilterError> {
        let mut parser = Parser {
            rules: self.rules.clone(),
            dir_merges: self.dir_merges.clone(),
            from0: self.from0,
            open_files: Vec::new(),
            anchor: Vec::new(),
        };
        f(&mut parser)?;
        self.rules = parser.rules;
        self.dir_merges = parser.dir_merges;
        Ok(())
    }
}

fn list_template(kind: ListKind) -> (Flags, Syntax) {
    match kind {
        ListKind::Exclude => (Flags::default(), Syntax::OldPrefixes),
        ListKind::Include => (
            Flags {
                include: true,
                ..Flags::default()
            },
            Syntax::OldPrefixes,
        ),
        ListKind::Filter => (Flags::default(), Syntax::Full),
    }
}

fn trim_slashes(mut s: &[u8]) -> &[u8] {
    while let Some((b'/', rest)) = s.split_first() {
        s = rest;
    }
    while let Some((b'/', rest)) = s.split_last() {
        s = rest;
    }
    s
}

/// C `isspace` in the C locale; unlike `u8::is_ascii_whitespace` it includes vertical tab.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// How much rule syntax a rule string may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    /// `--exclude`, `--include` and their `-from` lists: only `- `, `+ ` and a lone `!`.
    OldPrefixes,
    /// `--filter` and merge files.
    Full,
}

enum Parsed<'a> {
    Clear,
    Rule {
        pattern: &'a [u8],
        flags: Flags,
    },
    Merge {
        file: &'a [u8],
        flags: Flags,
        per_dir: bool,
        exclude_self: bool,
    },
    /// `-C`: rsync's default CVS ignore list, `~/.cvsignore` and `$CVSIGNORE`.
    CvsDefaults {
        flags: Flags,
    },
}

/// The names CVS ignores by default, as rsync's `--cvs-exclude` lists them.
const DEFAULT_CVSIGNORE: &[u8] = b"RCS SCCS CVS CVS.adm RCSLOG cvslog.* tags TAGS \
    .make.state .nse_depinfo *~ #* .#* ,* _$* *$ *.old *.bak *.BAK *.orig *.rej .del-* \
    *.a *.olb *.o *.obj *.so *.exe *.Z *.elc *.ln core .svn/ .git/ .hg/ .bzr/";

const LONG_NAMES: [(&[u8], u8); 9] = [
    (b"clear", b'!'),
    (b"dir-merge", b':'),
    (b"exclude", b'-'),
    (b"hide", b'H'),
    (b"include", b'+'),
    (b"merge", b'.'),
    (b"protect", b'P'),
    (b"risk", b'R'),
    (b"show", b'S'),
];

/// rsync's `parse_rule_tok` for one rule string. `Ok(None)` means there was nothing to parse.
fn parse_rule<'a>(
    s: &'a [u8],
    template: &Flags,
    syntax: Syntax,
    origin: &RuleOrigin,
) -> Result<Option<Parsed<'a>>, FilterError> {
    let err_rule = || s.to_vec();
    if s.is_empty() {
        return Ok(None);
    }
    let mut flags = template.inherited();
    let mut clear = false;
    let mut merge: Option<bool> = None; // Some(per_dir)
    let mut exclude_self = false;
    let pos;

    if template.no_prefixes {
        // Only a CVS-style list may clear itself; anything else is a bare pattern.
        clear = s[0] == b'!' && template.cvs;
        pos = 0;
    } else if syntax == Syntax::OldPrefixes {
        if s.starts_with(b"- ") {
            flags.include = false;
            pos = 2;
        } else if s.starts_with(b"+ ") {
            flags.include = true;
            pos = 2;
        } else {
            clear = s[0] == b'!';
            pos = 0;
        }
    } else {
        let unknown = || FilterError::UnknownRule {
            rule: err_rule(),
            origin: origin.clone(),
        };
        // `i` mirrors rsync's cursor: it rests on the last byte of the rule name (or on the
        // comma after it), and the modifier loop pre-increments.
        let (ch, mut i) = match LONG_NAMES.iter().find(|(name, _)| name[0] == s[0]) {
            Some(&(name, ch)) => {
                if !s.starts_with(name) {
                    return Err(unknown());
                }
                match s.get(name.len()) {
                    None | Some(b'_') => (ch, name.len() - 1),
                    Some(&c) if is_c_space(c) => (ch, name.len() - 1),
                    Some(b',') => (ch, name.len()),
                    Some(_) => return Err(unknown()),
                }
            }
            None => (s[0], usize::from(s.get(1) == Some(&b','))),
        };
        let mut side_from_name = false;
        match ch {
            b':' => merge = Some(true),
            b'.' => merge = Some(false),
            b'+' => flags.include = true,
            b'-' => {}
            b'S' | b'H' => {
                flags.include = ch == b'S';
                flags.sender = true;
                side_from_name = true;
            }
            b'R' | b'P' => {
                flags.include = ch == b'R';
                flags.receiver = true;
                side_from_name = true;
            }
            b'!' => clear = true,
            _ => return Err(unknown()),
        }
        if !clear {
            loop {
                i += 1;
                let Some(&c) = s.get(i) else { break };
                if c == b' ' || c == b'_' {
                    break;
                }
                if template.word_split && is_c_space(c) {
                    i -= 1;
                    break;
                }
                let is_merge = merge.is_some();
                let ok = match c {
                    b'-' | b'+' if is_merge && !flags.no_prefixes => {
                        flags.no_prefixes = true;
                        flags.include = c == b'+';
                        true
                    }
                    b'/' => {
                        flags.abs_path = true;
                        true
                    }
                    // Negation belongs to a pattern, so a merge file cannot default to it.
                    b'!' if !is_merge => {
                        flags.negate = true;
                        true
                    }
                    b'C' if !flags.no_prefixes && !side_from_name => {
                        flags.no_prefixes = true;
                        flags.word_split = true;
                        flags.cvs = true;
                        // As CVS: a .cvsignore speaks for its own directory only.
                        flags.no_inherit |= is_merge;
                        true
                    }
                    b'e' if is_merge => {
                        exclude_self = true;
                        true
                    }
                    // Not inheriting only means something for per-directory merges.
                    b'n' if is_merge => {
                        flags.no_inherit = true;
                        true
                    }
                    b'p' => {
                        flags.perishable = true;
                        true
                    }
                    b'r' if !side_from_name => {
                        flags.receiver = true;
                        true
                    }
                    b's' if !side_from_name => {
                        flags.sender = true;
                        true
                    }
                    b'w' if is_merge => {
                        flags.word_split = true;
                        true
                    }
                    b'x' => {
                        flags.xattr = true;
                        true
                    }
                    _ => false,
                };
                if !ok {
                    return Err(FilterError::InvalidModifier {
                        rule: err_rule(),
                        modifier: c,
                        position: i,
                        origin: origin.clone(),
                    });
                }
            }
        }
        pos = (i + 1).min(s.len());
    }

    if template.sender || template.receiver {
        if flags.sender || flags.receiver {
            return Err(FilterError::ConflictingSides {
                rule: err_rule(),
                origin: origin.clone(),
            });
        }
        flags.sender = template.sender;
        flags.receiver = template.receiver;
    }

    let pattern = &s[pos..];
    if clear {
        if !template.no_prefixes && syntax == Syntax::Full && !pattern.is_empty() {
            return Err(FilterError::ClearWithArgument {
                rule: err_rule(),
                origin: origin.clone(),
            });
        }
        // In the prefix-less forms "!" is only a clear when alone; "!foo" is a pattern.
        if pattern.len() <= 1 {
            return Ok(Some(Parsed::Clear));
        }
    } else if pattern.is_empty() && !flags.cvs {
        return Err(FilterError::MissingPattern {
            rule: err_rule(),
            origin: origin.clone(),
        });
    }

    if let Some(per_dir) = merge {
        let file: &[u8] = if pattern.is_empty() {
            b".cvsignore"
        } else {
            pattern
        };
        return Ok(Some(Parsed::Merge {
            file,
            flags,
            per_dir,
            exclude_self,
        }));
    }
    if flags.cvs {
        if pattern.is_empty() {
            return Ok(Some(Parsed::CvsDefaults { flags }));
        }
        return Err(FilterError::CvsExcludeUnsupported {
            rule: err_rule(),
            origin: origin.clone(),
        });
    }
    Ok(Some(Parsed::Rule { pattern, flags }))
}

/// The state of one `add_*` call: the rule list being built and the merge files being read.
struct Parser {
    rules: Vec<FilterRule>,
    dir_merges: Vec<DirMerge>,
    from0: bool,
    open_files: Vec<PathBuf>,
    /// For a per-directory file: its directory, where its anchored patterns start.
    anchor: Vec<u8>,
}

impl Parser {
    fn apply(
        &mut self,
        text: &[u8],
        template: &Flags,
        syntax: Syntax,
        origin: &RuleOrigin,
    ) -> Result<(), FilterError> {
        match parse_rule(text, template, syntax, origin)? {
            None => Ok(()),
            Some(Parsed::Clear) => {
                self.rules.clear();
                self.dir_merges.clear();
                Ok(())
            }
            Some(Parsed::Rule { pattern, flags }) => {
                if pattern.starts_with(b"/") && !self.anchor.is_empty() && !flags.abs_path {
                    let anchored = [&b"/"[..], &self.anchor, pattern].concat();
                    self.rules.push(FilterRule::new(&anchored, flags));
                } else {
                    self.rules.push(FilterRule::new(pattern, flags));
                }
                Ok(())
            }
            Some(Parsed::CvsDefaults { flags }) => {
                // rsync makes the built-in names perishable: they do not keep a directory
                // that is being deleted.
                let builtin = Flags {
                    perishable: true,
                    ..flags
                };
                self.apply_records(
                    DEFAULT_CVSIGNORE,
                    &builtin,
                    Syntax::Full,
                    "CVS defaults",
                    false,
                )?;
                if let Some(home) = std::env::var_os("HOME") {
                    let file = PathBuf::from(home).join(".cvsignore");
                    if let Ok(data) = std::fs::read(&file) {
                        let name = file.display().to_string();
                        self.apply_records(&data, &flags, Syntax::Full, &name, false)?;
                    }
                }
                if let Some(env) = std::env::var_os("CVSIGNORE") {
                    use std::os::unix::ffi::OsStrExt;
                    self.apply_records(env.as_bytes(), &flags, Syntax::Full, "CVSIGNORE", false)?;
                }
                Ok(())
            }
            Some(Parsed::Merge {
                file,
                flags,
                per_dir,
                exclude_self,
            }) => {
                let base = match file.iter().rposition(|&b| b == b'/') {
                    Some(i) => &file[i + 1..],
                    None => file,
                };
                if exclude_self && !base.is_empty() {
                    self.rules.push(FilterRule::new(base, Flags::default()));
                }
                if per_dir {
                    // Read in each directory as the walk reaches it (`for_subdir`); a path
                    // before the name only says where rsync starts looking, the transfer's
                    // root here.
                    if base.is_empty() {
                        return Err(FilterError::MissingPattern {
                            rule: text.to_vec(),
                            origin: origin.clone(),
                        });
                    }
                    self.dir_merges.push(DirMerge {
                        name: base.to_vec(),
                        template: flags,
                        at: self.rules.len(),
                        len: 0,
                    });
                    return Ok(());
                }
                let path = bytes_to_path(file);
                self.apply_file(&path, &flags, Syntax::Full, self.from0, origin)
            }
        }
    }

    /// Reads the rule file `path` (`-` is stdin) with `template` as the default for its rules.
    fn apply_file(
        &mut self,
        path: &Path,
        template: &Flags,
        syntax: Syntax,
        from0: bool,
        origin: &RuleOrigin,
    ) -> Result<(), FilterError> {
        let open_error = |error| FilterError::Open {
            path: path.to_path_buf(),
            origin: origin.clone(),
            error,
        };
        let (data, name, key) = if path.as_os_str() == "-" {
            let mut data = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut data)
                .map_err(open_error)?;
            (data, "stdin".to_string(), None)
        } else {
            let data = std::fs::read(path).map_err(open_error)?;
            let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            (data, path.display().to_string(), Some(key))
        };
        // rsync would recurse until it runs out of file descriptors.
        if let Some(key) = &key {
            if self.open_files.contains(key) {
                return Err(FilterError::MergeCycle {
                    path: path.to_path_buf(),
                    origin: origin.clone(),
                });
            }
            self.open_files.push(key.clone());
        }
        let result = self.apply_list(&data, template, syntax, &name, from0);
        if key.is_some() {
            self.open_files.pop();
        }
        result
    }

    /// rsync's `parse_filter_file` over bytes already read. Merge files named inside use the
    /// same `from0` as the list naming them.
    fn apply_list(
        &mut self,
        data: &[u8],
        template: &Flags,
        syntax: Syntax,
        name: &str,
        from0: bool,
    ) -> Result<(), FilterError> {
        let outer_from0 = std::mem::replace(&mut self.from0, from0);
        let result = self.apply_records(data, template, syntax, name, from0);
        self.from0 = outer_from0;
        result
    }

    fn apply_records(
        &mut self,
        data: &[u8],
        template: &Flags,
        syntax: Syntax,
        name: &str,
        from0: bool,
    ) -> Result<(), FilterError> {
        let word_split = template.word_split;
        let is_end = |b: u8| {
            (word_split && is_c_space(b))
                || if from0 {
                    b == 0
                } else {
                    b == b'\n' || b == b'\r'
                }
        };
        // Counted by LF (or NUL) only, so a CRLF file reports the line numbers an editor shows.
        let line_break = if from0 { 0 } else { b'\n' };
        let mut line = 1;
        let mut start = 0;
        let mut start_line = 1;
        for i in 0..=data.len() {
            let at_end = i == data.len();
            if !at_end && !is_end(data[i]) {
                continue;
            }
            let token = &data[start..i];
            let skip = token.is_empty() || (!word_split && (token[0] == b';' || token[0] == b'#'));
            if !skip {
                let origin = RuleOrigin::File {
                    name: name.to_string(),
                    line: start_line,
                };
                self.apply(token, template, syntax, &origin)?;
            }
            if !at_end && data[i] == line_break {
                line += 1;
            }
            start = i + 1;
            start_line = line;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// Where in the text a pattern may start matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// At the start only.
    Start,
    /// At the start of the last N `/`-separated elements (and nowhere if there are fewer).
    LastElements(usize),
    /// At the start or right after any `/`.
    AfterAnySlash,
}

/// rsync's `trailing_N_elements`.
fn last_elements(text: &[u8], count: usize) -> Option<&[u8]> {
    let mut left = count;
    for (i, &b) in text.iter().enumerate().rev() {
        if b == b'/' {
            left -= 1;
            if left == 0 {
                return Some(&text[i + 1..]);
            }
        }
    }
    (left == 1).then_some(text)
}

fn literal_match_at(pattern: &[u8], text: &[u8], place: Place) -> bool {
    match place {
        Place::LastElements(n) => last_elements(text, n) == Some(pattern),
        // A literal pattern never has "**", so it is never tried after every slash.
        Place::Start | Place::AfterAnySlash => text == pattern,
    }
}

/// rsync's `wildmatch_array`.
fn wildmatch_at(pattern: &[u8], text: &[u8], place: Place) -> bool {
    let text = match place {
        Place::LastElements(n) => match last_elements(text, n) {
            Some(t) => t,
            None => return false,
        },
        _ => text,
    };
    let mut result = dowild(pattern, text);
    if result != Wild::Match && result != Wild::AbortAll && place == Place::AfterAnySlash {
        for (i, &b) in text.iter().enumerate() {
            if b != b'/' {
                continue;
            }
            result = dowild(pattern, &text[i + 1..]);
            if result != Wild::NoMatch && result != Wild::AbortToStarStar {
                break;
            }
        }
    }
    result == Wild::Match
}

/// Outcome of [`dowild`]. The abort values are rsync's pruning: they tell enclosing `*` loops
/// that trying later start positions cannot succeed, which keeps matching polynomial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wild {
    Match,
    NoMatch,
    AbortAll,
    AbortToStarStar,
}

/// rsync's `dowild`: `*` stops at `/`, `**` does not, `?` and classes never match `/`, and a
/// backslash makes the next pattern byte literal.
fn dowild(p: &[u8], text: &[u8]) -> Wild {
    let mut pi = 0;
    let mut ti = 0;
    while pi < p.len() {
        let p_ch = p[pi];
        let t_ch = match text.get(ti) {
            Some(&c) => c,
            None if p_ch != b'*' => return Wild::AbortAll,
            None => 0, // unused: the `*` arm checks for the end itself
        };
        match p_ch {
            b'\\' => {
                // A trailing backslash matches nothing.
                pi += 1;
                if p.get(pi) != Some(&t_ch) {
                    return Wild::NoMatch;
                }
            }
            b'?' => {
                if t_ch == b'/' {
                    return Wild::NoMatch;
                }
            }
            b'*' => {
                pi += 1;
                let special = p.get(pi) == Some(&b'*');
                while p.get(pi) == Some(&b'*') {
                    pi += 1;
                }
                let rest = &p[pi..];
                if rest.is_empty() {
                    return if special || !text[ti..].contains(&b'/') {
                        Wild::Match
                    } else {
                        Wild::NoMatch
                    };
                }
                while ti < text.len() {
                    let matched = dowild(rest, &text[ti..]);
                    if matched != Wild::NoMatch {
                        if !special || matched != Wild::AbortToStarStar {
                            return matched;
                        }
                    } else if !special && text[ti] == b'/' {
                        return Wild::AbortToStarStar;
                    }
                    ti += 1;
                }
                return Wild::AbortAll;
            }
            b'[' => match match_class(p, pi, t_ch) {
                Ok((true, end)) => pi = end,
                Ok((false, _)) => return Wild::NoMatch,
                Err(abort) => return abort,
            },
            _ => {
                if t_ch != p_ch {
                    return Wild::NoMatch;
                }
            }
        }
        pi += 1;
        ti += 1;
    }
    if ti == text.len() {
        Wild::Match
    } else {
        Wild::NoMatch
    }
}

/// Matches the bracket expression starting at `p[open]` against `t`. Returns whether it matched
/// and the index of its closing `]`, or the abort for a malformed expression.
fn match_class(p: &[u8], open: usize, t: u8) -> Result<(bool, usize), Wild> {
    let mut pi = open + 1;
    let mut ch = p.get(pi).copied();
    if ch == Some(b'^') {
        ch = Some(b'!');
    }
    let negated = ch == Some(b'!');
    if negated {
        pi += 1;
        ch = p.get(pi).copied();
    }
    let mut prev: Option<u8> = None;
    let mut matched = false;
    // A `]` right after the opening (or after the negation) is a member, not the end, because
    // the end test only happens after the first member.
    loop {
        let Some(c) = ch else {
            return Err(Wild::AbortAll);
        };
        let current;
        if c == b'\\' {
            pi += 1;
            let Some(&lit) = p.get(pi) else {
                return Err(Wild::AbortAll);
            };
            matched |= t == lit;
            current = Some(lit);
        } else if c == b'-' && prev.is_some() && p.get(pi + 1).is_some_and(|&n| n != b']') {
            pi += 1;
            let mut hi = p[pi];
            if hi == b'\\' {
                pi += 1;
                let Some(&lit) = p.get(pi) else {
                    return Err(Wild::AbortAll);
                };
                hi = lit;
            }
            let lo = prev.unwrap_or(0);
            matched |= lo <= t && t <= hi;
            current = None;
        } else if c == b'[' && p.get(pi + 1) == Some(&b':') {
            let name_start = pi + 2;
            let Some(close) = p[name_start..].iter().position(|&b| b == b']') else {
                return Err(Wild::AbortAll);
            };
            let close = name_start + close;
            if close == name_start || p[close - 1] != b':' {
                // Not "[:name:]" after all: the `[` is an ordinary member.
                matched |= t == b'[';
                current = Some(b'[');
            } else {
                let Some(member) = char_class(&p[name_start..close - 1], t) else {
                    return Err(Wild::AbortAll);
                };
                matched |= member;
                pi = close;
                current = None;
            }
        } else {
            matched |= t == c;
            current = Some(c);
        }
        prev = current;
        pi += 1;
        ch = p.get(pi).copied();
        if ch == Some(b']') {
            break;
        }
    }
    Ok((matched != negated && t != b'/', pi))
}

/// POSIX character classes in the C locale: bytes above 0x7f belong to none.
fn char_class(name: &[u8], c: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => is_c_space(c),
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::ffi::OsString;
    use std::process::Command;

    fn filters(rules: &[&str]) -> FilterRules {
        let mut f = FilterRules::new();
        for rule in rules {
            f.add_filter_rule(rule.as_bytes())
                .unwrap_or_else(|e| panic!("rule {rule:?}: {e}"));
        }
        f
    }

    /// Checks `(path, is_dir, excluded_on_sender)` triples against `rules`.
    fn check(rules: &[&str], cases: &[(&str, bool, bool)]) {
        let f = filters(rules);
        for &(path, is_dir, want) in cases {
            assert_eq!(
                f.excluded_on_sender(path.as_bytes(), is_dir),
                want,
                "rules {rules:?}, path {path:?} (dir: {is_dir})"
            );
        }
    }

    const F: bool = false;
    const D: bool = true;

    #[test]
    fn no_rules_include_everything() {
        let f = FilterRules::new();
        assert!(f.is_empty());
        assert!(!f.excluded_on_sender(b"anything", false));
        assert!(!f.protected_on_receiver(b"a/b", true));
    }

    #[test]
    fn suffix_pattern_matches_final_component_at_any_depth() {
        check(
            &["- *.o"],
            &[
                ("foo.o", F, true),
                ("a/b/foo.o", F, true),
                ("x.o", D, true),
                ("foo.oo", F, false),
                ("foo.c", F, false),
                ("dir.o/file", F, false),
            ],
        );
    }

    #[test]
    fn leading_slash_anchors_to_transfer_root() {
        check(
            &["- /foo"],
            &[
                ("foo", F, true),
                ("foo", D, true),
                ("a/foo", F, false),
                ("foobar", F, false),
            ],
        );
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        check(
            &["- foo/"],
            &[
                ("foo", D, true),
                ("a/foo", D, true),
                ("foo", F, false),
                ("a/foo", F, false),
            ],
        );
    }

    #[test]
    fn infix_slash_matches_trailing_components() {
        check(
            &["- foo/*/bar"],
            &[
                ("foo/x/bar", F, true),
                ("a/foo/x/bar", F, true),
                ("foo/x/y/bar", F, false),
                ("foo/bar", F, false),
                ("x/bar", F, false),
                ("bar", F, false),
            ],
        );
    }

    #[test]
    fn anchored_double_star_spans_levels() {
        check(
            &["- /foo/**/bar"],
            &[
                ("foo/x/bar", F, true),
                ("foo/x/y/bar", F, true),
                // The man page: "/foo/bar is not excluded by this".
                ("foo/bar", F, false),
                ("a/foo/x/bar", F, false),
            ],
        );
    }

    #[test]
    fn unanchored_double_star_may_start_after_any_slash() {
        check(
            &["- foo/**/bar"],
            &[
                ("foo/x/bar", F, true),
                ("a/foo/x/y/bar", F, true),
                ("afoo/x/bar", F, false),
                ("foo/bar", F, false),
            ],
        );
        check(
            &["- **/foo"],
            &[("foo", F, true), ("a/b/foo", F, true), ("a/bfoo", F, false)],
        );
        check(
            &["- **"],
            &[("x", F, true), ("a/b", D, true), ("a/b/c", F, true)],
        );
        // "**" without a slash still makes the pattern see the whole path.
        check(
            &["- a**"],
            &[("a/b/c", F, true), ("x/ab", F, true), ("x/b", F, false)],
        );
    }

    #[test]
    fn triple_star_matches_directory_and_contents() {
        check(
            &["- foo/***"],
            &[
                ("foo", D, true),
                ("foo/a", F, true),
                ("foo/a/b", F, true),
                ("x/foo/b", F, true),
                ("foo", F, false),
                ("foobar", D, false),
                ("foobar/a", F, false),
            ],
        );
    }

    #[test]
    fn include_directories_and_c_files_only() {
        check(
            &["+ */", "+ *.c", "- *"],
            &[
                ("src", D, false),
                ("src/a.c", F, false),
                ("a.c", F, false),
                ("a.h", F, true),
                ("src/lib/b.h", F, true),
                ("Makefile", F, true),
            ],
        );
    }

    #[test]
    fn include_one_file_in_one_directory() {
        check(
            &["+ foo/", "+ foo/bar.c", "- *"],
            &[
                ("foo", D, false),
                ("foo/bar.c", F, false),
                ("foo/baz.c", F, true),
                ("bar.c", F, true),
                ("foo", F, true),
                ("other", D, true),
            ],
        );
    }

    #[test]
    fn directory_rule_vs_file_of_the_same_name() {
        check(
            &["- dir/"],
            &[("dir", D, true), ("dir", F, false), ("a/dir", F, false)],
        );
        check(&["- dir"], &[("dir", D, true), ("dir", F, true)]);
    }

    #[test]
    fn character_classes() {
        check(
            &["- [abc].txt"],
            &[("a.txt", F, true), ("c.txt", F, true), ("d.txt", F, false)],
        );
        check(
            &["- [!a]x"],
            &[("ax", F, false), ("bx", F, true), ("x", F, false)],
        );
        check(&["- [^a]x"], &[("ax", F, false), ("bx", F, true)]);
        check(
            &["- file[0-9]"],
            &[
                ("file5", F, true),
                ("filex", F, false),
                ("file10", F, false),
            ],
        );
        check(
            &["- [[:digit:]]*"],
            &[("1file", F, true), ("file1", F, false)],
        );
        check(
            &["- [[:upper:][:space:]]*"],
            &[("Abc", F, true), (" x", F, true), ("abc", F, false)],
        );
        // "]" first in a class is a member; "-" last is literal.
        check(
            &["- a[]]b", "- c[x-]d"],
            &[
                ("a]b", F, true),
                ("c-d", F, true),
                ("cxd", F, true),
                ("cyd", F, false),
            ],
        );
        // Malformed classes never match.
        check(
            &["- x[abc", "- y[[:bogus:]]"],
            &[("x[abc", F, false), ("ya", F, false)],
        );
        // A class never matches "/", even negated.
        check(&["- a[!x]b"], &[("a/b", F, false), ("a-b", F, true)]);
    }

    #[test]
    fn backslash_escapes_only_in_wildcard_patterns() {
        check(&["- foo\\*"], &[("foo*", F, true), ("foox", F, false)]);
        // Without a wildcard the backslash is literal.
        check(
            &["- foo\\bar"],
            &[("foo\\bar", F, true), ("foobar", F, false)],
        );
        // With one, "\b" is just "b".
        check(
            &["- foo\\bar*"],
            &[("foobarx", F, true), ("foo\\barx", F, false)],
        );
        check(
            &["- \\[br]acket"],
            &[("[br]acket", F, true), ("backet", F, false)],
        );
        check(
            &["- *\\\\*"],
            &[("back\\slash", F, true), ("slash", F, false)],
        );
    }

    #[test]
    fn question_mark_is_one_non_slash_byte() {
        check(
            &["- ?.txt"],
            &[
                ("a.txt", F, true),
                ("ab.txt", F, false),
                ("\u{e9}.txt", F, false),
            ],
        );
        check(&["- a?b"], &[("a/b", F, false), ("a-b", F, true)]);
    }

    #[test]
    fn star_does_not_cross_slashes() {
        check(
            &["- a/*"],
            &[("a/b", F, true), ("x/a/b", F, true), ("a/b/c", F, false)],
        );
        check(&["- /a*"], &[("abc", F, true), ("a/b", F, false)]);
    }

    #[test]
    fn non_utf8_names_and_patterns() {
        let mut f = FilterRules::new();
        f.add_exclude(b"caf\xe9*");
        f.add_exclude(b"\xff\xfe/");
        assert!(f.excluded_on_sender(b"caf\xe9.txt", false));
        assert!(f.excluded_on_sender(b"sub/caf\xe9", false));
        assert!(f.excluded_on_sender(b"x/\xff\xfe", true));
        assert!(!f.excluded_on_sender(b"x/\xff\xfe", false));
        assert!(!f.excluded_on_sender(b"cafe", false));
        f.add_exclude(b"*[\x80-\xff]");
        assert!(f.excluded_on_sender(b"name\x80", false));
        assert!(f.excluded_on_sender(b"x/\xff\xfe", false));
        assert!(!f.excluded_on_sender(b"name", false));
        let mut g = FilterRules::new();
        g.add_filter_rule(b"- /\xc3(/**").unwrap();
        assert!(g.excluded_on_sender(b"\xc3(/x/y", false));
        assert!(!g.excluded_on_sender(b"a/\xc3(/x", false));
    }

    #[test]
    fn first_matching_rule_wins() {
        check(
            &["+ keep.o", "- *.o"],
            &[("keep.o", F, false), ("drop.o", F, true)],
        );
        check(&["- *.o", "+ keep.o"], &[("keep.o", F, true)]);
    }

    #[test]
    fn clear_rule_discards_earlier_rules() {
        check(
            &["- foo", "!", "- bar"],
            &[("foo", F, false), ("bar", F, true)],
        );
        check(&["- foo", "clear"], &[("foo", F, false)]);
        check(&["- foo", "!,"], &[("foo", F, false)]);
        assert!(filters(&["- foo", "!"]).is_empty());
    }

    #[test]
    fn negated_rules() {
        check(
            &["-! */"],
            &[("file", F, true), ("a/file", F, true), ("dir", D, false)],
        );
        check(
            &["exclude,! *.c"],
            &[("x.c", F, false), ("x.h", F, true), ("d", D, true)],
        );
        check(&["+! *.c", "- *"], &[("x.h", F, false), ("x.c", F, true)]);
    }

    #[test]
    fn anchoring_against_nested_paths() {
        let path = "a/b/foo";
        for (rule, want) in [
            ("- foo", true),
            ("- b/foo", true),
            ("- a/b/foo", true),
            ("- /a/b/foo", true),
            ("- /b/foo", false),
            ("- /foo", false),
            ("- c/foo", false),
            ("- ab/foo", false),
            ("- x/a/b/foo", false),
            ("- *b/foo", true),
            ("- /*/b/foo", true),
            ("- /*/foo", false),
            ("- /*/*/foo", true),
        ] {
            assert_eq!(
                filters(&[rule]).excluded_on_sender(path.as_bytes(), false),
                want,
                "{rule}"
            );
        }
    }

    #[test]
    fn empty_path_never_matches() {
        let f = filters(&["-! foo", "- **"]);
        assert!(!f.excluded_on_sender(b"", true));
        assert!(f.excluded_on_sender(b"x", false));
    }

    #[test]
    fn trailing_whitespace_is_part_of_the_pattern() {
        check(&["- foo "], &[("foo", F, false), ("foo ", F, true)]);
        check(&["-  foo"], &[("foo", F, false), (" foo", F, true)]);
    }

    #[test]
    fn rule_name_forms() {
        for rule in [
            "- foo",
            "-_foo",
            "-,p foo",
            "exclude foo",
            "exclude_foo",
            "exclude,p foo",
            "exclude,p_foo",
        ] {
            let f = filters(&[rule]);
            assert!(f.excluded_on_sender(b"foo", false), "{rule}");
            assert_eq!(f.len(), 1);
        }
        for rule in [
            "+ foo",
            "include foo",
            "S foo",
            "show foo",
            "R foo",
            "risk foo",
        ] {
            let f = filters(&[rule]);
            assert!(f.rules().next().unwrap().is_include(), "{rule}");
        }
        // "-_" separates; more underscores or spaces belong to the pattern.
        check(&["-__foo"], &[("_foo", F, true), ("foo", F, false)]);
    }

    #[test]
    fn rule_sides() {
        let side = |rule: &str| filters(&[rule]).rules().next().unwrap().side();
        assert_eq!(side("- x"), RuleSide::Both);
        assert_eq!(side("H x"), RuleSide::Sender);
        assert_eq!(side("hide x"), RuleSide::Sender);
        assert_eq!(side("S x"), RuleSide::Sender);
        assert_eq!(side("P x"), RuleSide::Receiver);
        assert_eq!(side("protect x"), RuleSide::Receiver);
        assert_eq!(side("R x"), RuleSide::Receiver);
        assert_eq!(side("-s x"), RuleSide::Sender);
        assert_eq!(side("+r x"), RuleSide::Receiver);
        assert_eq!(side("-sr x"), RuleSide::Both);

        let f = filters(&[
            "H hidden",
            "P protected",
            "- both",
            "-s sendonly",
            "-r recvonly",
        ]);
        for (path, sender, receiver) in [
            ("hidden", true, false),
            ("protected", false, true),
            ("both", true, true),
            ("sendonly", true, false),
            ("recvonly", false, true),
            ("other", false, false),
        ] {
            assert_eq!(
                f.excluded_on_sender(path.as_bytes(), false),
                sender,
                "{path}"
            );
            assert_eq!(
                f.protected_on_receiver(path.as_bytes(), false),
                receiver,
                "{path}"
            );
        }
    }

    #[test]
    fn show_and_risk_only_override_their_own_side() {
        let f = filters(&["S keep.o", "R risky.o", "- *.o"]);
        assert!(!f.excluded_on_sender(b"keep.o", false));
        assert!(f.protected_on_receiver(b"keep.o", false));
        assert!(f.excluded_on_sender(b"risky.o", false));
        assert!(!f.protected_on_receiver(b"risky.o", false));
    }

    #[test]
    fn delete_excluded_makes_plain_rules_sender_only() {
        let f = filters(&["- *.o", "+ keep", "P prot", "-sr both", "H hid"]);
        let g = f.without_receiver_excludes();
        assert!(g.excluded_on_sender(b"x.o", false));
        assert!(!g.protected_on_receiver(b"x.o", false));
        assert!(g.protected_on_receiver(b"prot", false));
        assert!(!g.excluded_on_sender(b"prot", false));
        assert_eq!(g.rules().nth(2).unwrap().side(), RuleSide::Receiver);
        assert!(g.protected_on_receiver(b"both", false));
        assert!(g.excluded_on_sender(b"both", false));
        assert!(g.excluded_on_sender(b"hid", false));
        assert_eq!(g.rules().next().unwrap().side(), RuleSide::Sender);
        // The original is untouched.
        assert!(f.protected_on_receiver(b"x.o", false));
    }

    #[test]
    fn perishable_rules_do_not_protect_inside_deleted_directories() {
        let f = filters(&["-p *.o", "- *.keep"]);
        assert!(f.rules().next().unwrap().is_perishable());
        assert!(f.protected_on_receiver(b"gone/x.o", false));
        assert!(!f.protected_in_deleted_dir(b"gone/x.o", false));
        assert!(f.protected_in_deleted_dir(b"gone/x.keep", false));
        assert!(f.excluded_on_sender(b"x.o", false));
    }

    #[test]
    fn xattr_rules_never_match_names() {
        let f = filters(&["-x user.*", "-x! *"]);
        assert_eq!(f.len(), 2);
        assert!(!f.excluded_on_sender(b"user.foo", false));
        assert!(!f.protected_on_receiver(b"anything", false));
    }

    #[test]
    fn absolute_modifier_uses_the_root_path() {
        let mut f = filters(&["-/ /etc/passwd", "-/ subdir/foo"]);
        f.set_sender_root(b"/etc");
        assert!(f.excluded_on_sender(b"passwd", false));
        assert!(!f.excluded_on_sender(b"x/passwd", false));
        assert!(!f.excluded_on_sender(b"foo", false));
        f.set_sender_root(b"/home/subdir/");
        assert!(!f.excluded_on_sender(b"passwd", false));
        assert!(f.excluded_on_sender(b"foo", false));
        assert!(f.excluded_on_sender(b"a/subdir/foo", false));
        // The receiver has its own root.
        assert!(!f.protected_on_receiver(b"foo", false));
        f.set_receiver_root(b"/dest/subdir");
        assert!(f.protected_on_receiver(b"foo", false));
        // Without a root the transfer root stands in for "/".
        let g = filters(&["-/ /etc/passwd", "-/ /top"]);
        assert!(g.excluded_on_sender(b"etc/passwd", false));
        assert!(g.excluded_on_sender(b"top", false));
        assert!(!g.excluded_on_sender(b"passwd", false));
    }

    #[test]
    fn old_style_prefixes_in_exclude_and_include() {
        let mut f = FilterRules::new();
        f.add_exclude(b"+ keep.o");
        f.add_exclude(b"*.o");
        assert!(!f.excluded_on_sender(b"keep.o", false));
        assert!(f.excluded_on_sender(b"x.o", false));
        f.add_exclude(b"!");
        assert!(f.is_empty());
        f.add_exclude(b"!x");
        assert!(f.excluded_on_sender(b"!x", false));
        f.add_include(b"- inc");
        assert!(f.excluded_on_sender(b"inc", false));
        let n = f.len();
        f.add_exclude(b"");
        f.add_exclude(b"- ");
        assert_eq!(f.len(), n);
        // Full rule syntax is not interpreted: this is the pattern "H foo".
        f.add_exclude(b"H foo");
        assert!(f.excluded_on_sender(b"H foo", false));
        assert!(!f.excluded_on_sender(b"foo", false));
        // Only "- " and "+ " are prefixes here; "-_x" is an include pattern.
        f.add_include(b"-_x");
        let last = f.rules().last().unwrap();
        assert!(last.is_include());
        assert_eq!(last.pattern(), b"-_x");
    }

    fn parse_err(rule: &str) -> FilterError {
        let mut f = filters(&["- before"]);
        let err = f.add_filter_rule(rule.as_bytes()).unwrap_err();
        assert_eq!(
            f,
            filters(&["- before"]),
            "a failed rule must change nothing"
        );
        err
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(
            parse_err("e foo"),
            FilterError::UnknownRule { .. }
        ));
        assert!(matches!(
            parse_err("excludefoo"),
            FilterError::UnknownRule { .. }
        ));
        assert!(matches!(
            parse_err("x foo"),
            FilterError::UnknownRule { .. }
        ));
        assert!(matches!(
            parse_err(" - foo"),
            FilterError::UnknownRule { .. }
        ));
        match parse_err("-foo") {
            FilterError::InvalidModifier {
                modifier, position, ..
            } => {
                assert_eq!((modifier, position), (b'f', 1));
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            parse_err("-e foo"),
            FilterError::InvalidModifier { .. }
        ));
        assert!(matches!(
            parse_err("Hs foo"),
            FilterError::InvalidModifier { .. }
        ));
        assert!(matches!(
            parse_err("Pr foo"),
            FilterError::InvalidModifier { .. }
        ));
        assert!(matches!(
            parse_err(".! file"),
            FilterError::InvalidModifier { .. }
        ));
        assert!(matches!(
            parse_err("-w foo"),
            FilterError::InvalidModifier { .. }
        ));
        assert!(matches!(parse_err("-"), FilterError::MissingPattern { .. }));
        assert!(matches!(
            parse_err("- "),
            FilterError::MissingPattern { .. }
        ));
        assert!(matches!(
            parse_err("merge"),
            FilterError::MissingPattern { .. }
        ));
        assert!(matches!(
            parse_err("! x"),
            FilterError::ClearWithArgument { .. }
        ));
        assert!(matches!(
            parse_err("clear x"),
            FilterError::ClearWithArgument { .. }
        ));
        assert!(matches!(
            parse_err("-C x"),
            FilterError::CvsExcludeUnsupported { .. }
        ));
        assert!(matches!(
            parse_err("dir-merge,q .x"),
            FilterError::InvalidModifier { .. }
        ));
    }

    #[test]
    fn error_messages_name_the_rule_and_hide_control_characters() {
        let mut f = FilterRules::new();
        let e = f.add_filter_rule(b"?\x1b[31m foo").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown filter rule"), "{msg}");
        assert!(!msg.contains('\x1b'), "{msg}");
        assert!(msg.contains("[31m foo"), "{msg}");
    }

    #[test]
    fn rules_round_trip_through_their_text() {
        let f = filters(&[
            "- *.o",
            "+ */",
            "-/! /abs/",
            "H hid",
            "S shown",
            "P prot",
            "R risk",
            "-sr both",
            "-p per",
            "-x user.*",
            "- foo//",
            "- /",
            "-  spaced ",
        ]);
        for rule in f.rules() {
            let mut g = FilterRules::new();
            g.add_filter_rule(&rule.to_rule_bytes()).unwrap();
            assert_eq!(g.rules().next(), Some(rule), "{rule}");
        }
        assert_eq!(f.rules().nth(2).unwrap().to_string(), "-/! /abs/");
        assert_eq!(f.rules().nth(3).unwrap().to_string(), "-s hid");
    }

    #[test]
    fn exclude_from_list() {
        let list: &[u8] = b"# comment\n; also comment\n\n*.o\r\n+ keep.tmp\n*.tmp\n- /top\n";
        let mut f = FilterRules::new();
        f.add_from_reader(ListKind::Exclude, list, false, "list")
            .unwrap();
        assert_eq!(f.len(), 4);
        assert!(f.excluded_on_sender(b"x.o", false));
        assert!(!f.excluded_on_sender(b"keep.tmp", false));
        assert!(f.excluded_on_sender(b"x.tmp", false));
        assert!(f.excluded_on_sender(b"top", false));
        assert!(!f.excluded_on_sender(b"# comment", false));
        // "!" clears, even rules from before the list.
        f.add_from_reader(ListKind::Exclude, &b"!\nnew\n"[..], false, "list2")
            .unwrap();
        assert_eq!(f.len(), 1);
        assert!(f.excluded_on_sender(b"new", false));
    }

    #[test]
    fn include_from_list() {
        let mut f = FilterRules::new();
        f.add_from_reader(ListKind::Include, &b"*.c\n- *.h\n"[..], false, "inc")
            .unwrap();
        f.add_exclude(b"*");
        assert!(!f.excluded_on_sender(b"a.c", false));
        assert!(f.excluded_on_sender(b"a.h", false));
        assert!(f.excluded_on_sender(b"a.txt", false));
    }

    #[test]
    fn from0_lists_split_on_nul_only() {
        let mut f = FilterRules::new();
        f.add_from_reader(
            ListKind::Exclude,
            &b"with\nnewline\0with space \0#comment\0\0*.o"[..],
            true,
            "nul",
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        assert!(f.excluded_on_sender(b"with\nnewline", false));
        assert!(f.excluded_on_sender(b"with space ", false));
        assert!(f.excluded_on_sender(b"a.o", false));
        assert!(!f.excluded_on_sender(b"#comment", false));
    }

    #[test]
    fn filter_list_uses_full_syntax_and_reports_line_numbers() {
        let mut f = FilterRules::new();
        f.add_from_reader(
            ListKind::Filter,
            &b"H *.o\n# c\nP keep\n"[..],
            false,
            "rules",
        )
        .unwrap();
        assert!(f.excluded_on_sender(b"a.o", false));
        assert!(!f.protected_on_receiver(b"a.o", false));
        assert!(f.protected_on_receiver(b"keep", false));

        let before = f.clone();
        let err = f
            .add_from_reader(
                ListKind::Filter,
                &b"- ok\r\n\r\n\nbogus rule\n"[..],
                false,
                "bad.rules",
            )
            .unwrap_err();
        match &err {
            FilterError::UnknownRule { rule, origin } => {
                assert_eq!(rule, b"bogus rule");
                assert_eq!(
                    origin,
                    &RuleOrigin::File {
                        name: "bad.rules".into(),
                        line: 4
                    }
                );
            }
            e => panic!("{e}"),
        }
        assert!(err.to_string().starts_with("bad.rules:4: "), "{err}");
        assert_eq!(f, before, "the good first line must not be kept");
    }

    #[test]
    fn read_errors_are_reported() {
        struct Broken;
        impl io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut f = FilterRules::new();
        let err = f
            .add_from_reader(
                ListKind::Exclude,
                io::BufReader::new(Broken),
                false,
                "broken",
            )
            .unwrap_err();
        assert!(matches!(err, FilterError::Read { .. }));
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn rule_with_path(prefix: &str, path: &Path) -> Vec<u8> {
        let mut rule = prefix.as_bytes().to_vec();
        rule.extend_from_slice(path.to_str().unwrap().as_bytes());
        rule
    }

    #[test]
    fn merge_files_are_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let inner = write(dir.path(), "inner.rules", b"+ special.o\n");
        let outer_text = [
            rule_with_path("merge ", &inner).as_slice(),
            b"\n- *.o\n# comment\n\nH hidden\n",
        ]
        .concat();
        let outer = write(dir.path(), "outer.rules", &outer_text);
        let mut f = filters(&["+ first.o"]);
        f.add_filter_rule(&rule_with_path(". ", &outer)).unwrap();
        f.add_exclude(b"last");
        let patterns: Vec<&[u8]> = f.rules().map(|r| r.pattern()).collect();
        assert_eq!(
            patterns,
            [&b"first.o"[..], b"special.o", b"*.o", b"hidden", b"last"]
        );
        assert!(!f.excluded_on_sender(b"special.o", false));
        assert!(f.excluded_on_sender(b"other.o", false));
    }

    #[test]
    fn merge_modifiers_set_defaults_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = write(dir.path(), "plain", b"+ literal\n*.o\n");
        // "-": every line is an exclude pattern, even one that looks like a rule.
        let f = filters(&[std::str::from_utf8(&rule_with_path(".- ", &plain)).unwrap()]);
        assert!(f.excluded_on_sender(b"+ literal", false));
        assert!(f.excluded_on_sender(b"x.o", false));
        // "+": include patterns.
        let f = filters(&[std::str::from_utf8(&rule_with_path("merge,+ ", &plain)).unwrap()]);
        assert!(f.rules().all(|r| r.is_include()));
        // Sides, perishable and "/" are inherited.
        let f = filters(&[std::str::from_utf8(&rule_with_path(".-sp/ ", &plain)).unwrap()]);
        assert!(f
            .rules()
            .all(|r| r.side() == RuleSide::Sender && r.is_perishable() && r.is_absolute()));
        // "e" also excludes the merge file itself.
        let f = filters(&[std::str::from_utf8(&rule_with_path(".e- ", &plain)).unwrap()]);
        assert_eq!(f.rules().next().unwrap().pattern(), b"plain");
        assert!(f.excluded_on_sender(b"sub/plain", false));
        // "n" is accepted (it only matters for dir-merge).
        filters(&[std::str::from_utf8(&rule_with_path(".n- ", &plain)).unwrap()]);
    }

    #[test]
    fn sided_merge_file_must_not_contain_sided_rules() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "sided", b"- ok\nH nope\n");
        let mut f = FilterRules::new();
        let err = f
            .add_filter_rule(&rule_with_path(".s ", &file))
            .unwrap_err();
        match err {
            FilterError::ConflictingSides { rule, origin } => {
                assert_eq!(rule, b"H nope");
                assert!(matches!(origin, RuleOrigin::File { line: 2, .. }));
            }
            e => panic!("{e}"),
        }
        assert!(f.is_empty());
    }

    #[test]
    fn clear_inside_merge_file_clears_everything_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "clearing", b"- a\n!\n- b\n");
        let mut f = filters(&["- before"]);
        f.add_filter_rule(&rule_with_path(". ", &file)).unwrap();
        let patterns: Vec<&[u8]> = f.rules().map(|r| r.pattern()).collect();
        assert_eq!(patterns, [b"b"]);
    }

    #[test]
    fn dir_merge_rules_come_from_each_directory_deepest_first() {
        let mut f = FilterRules::new();
        f.add_filter_rule(b"+ keep.o").unwrap();
        f.add_filter_rule(b"dir-merge /.rsync-filter").unwrap();
        f.add_filter_rule(b"dir-merge,n- .local").unwrap();
        f.add_filter_rule(b"- *.tmp").unwrap();
        assert_eq!(
            f.dir_merge_names(),
            [b".rsync-filter".to_vec(), b".local".to_vec()]
        );
        let files = |map: &'static [(&'static str, &'static str)]| {
            move |name: &[u8]| {
                map.iter()
                    .find(|(n, _)| n.as_bytes() == name)
                    .map(|(_, d)| d.as_bytes().to_vec())
            }
        };
        let root = f
            .for_subdir(b"", files(&[(".rsync-filter", "- *.o\n- /top-only\n")]))
            .unwrap();
        assert!(root.excluded_on_sender(b"x.o", false));
        assert!(!root.excluded_on_sender(b"keep.o", false));
        assert!(root.excluded_on_sender(b"top-only", false));
        let sub = root
            .for_subdir(
                b"d",
                files(&[(".rsync-filter", "+ *.o\n- /here\n"), (".local", "a\nb")]),
            )
            .unwrap();
        // The deeper file's rules win; anchored ones start at their own directory.
        assert!(!sub.excluded_on_sender(b"d/x.o", false));
        assert!(sub.excluded_on_sender(b"d/here", false));
        assert!(!sub.excluded_on_sender(b"here", false));
        assert!(sub.excluded_on_sender(b"d/a", false) && sub.excluded_on_sender(b"d/b", false));
        assert!(sub.excluded_on_sender(b"d/y.tmp", false));
        // "n": .local's rules stop at d; .rsync-filter's go on down.
        let deeper = sub.for_subdir(b"d/e", files(&[])).unwrap();
        assert!(!deeper.excluded_on_sender(b"d/e/a", false));
        assert!(!deeper.excluded_on_sender(b"d/e/x.o", false));
        assert!(deeper.excluded_on_sender(b"d/e/z.tmp", false));
        let bad = root.for_subdir(b"d", files(&[(".rsync-filter", "dir-merge .x\n")]));
        assert!(matches!(bad, Err(FilterError::NestedDirMerge { .. })));
    }

    #[test]
    fn cvs_defaults_and_cvsignore_files() {
        let mut f = FilterRules::new();
        f.add_filter_rule(b":C").unwrap();
        f.add_filter_rule(b"-C").unwrap();
        assert_eq!(f.dir_merge_names(), [b".cvsignore".to_vec()]);
        for name in ["core", "x.o", "CVS", "a~", "#x", ".#y", "z.bak"] {
            assert!(f.excluded_on_sender(name.as_bytes(), false), "{name}");
        }
        assert!(f.excluded_on_sender(b".git", true));
        assert!(!f.excluded_on_sender(b".git", false));
        assert!(!f.excluded_on_sender(b"main.c", false));
        assert!(f
            .rules()
            .any(|r| r.pattern() == b"core" && r.is_perishable()));
        let d = f
            .for_subdir(b"src", |n: &[u8]| {
                (n == b".cvsignore").then(|| b"*.c gen".to_vec())
            })
            .unwrap();
        assert!(d.excluded_on_sender(b"src/main.c", false));
        assert!(d.excluded_on_sender(b"src/gen", true));
        let below = d.for_subdir(b"src/lib", |_: &[u8]| None).unwrap();
        assert!(!below.excluded_on_sender(b"src/lib/util.c", false));
    }

    #[test]
    fn word_split_and_cvs_merge_files() {
        let dir = tempfile::tempdir().unwrap();
        let words = write(dir.path(), "words", b"foo  bar\tbaz\n+ qux");
        let f = filters(&[std::str::from_utf8(&rule_with_path(".w- ", &words)).unwrap()]);
        let patterns: Vec<&[u8]> = f.rules().map(|r| r.pattern()).collect();
        assert_eq!(patterns, [&b"foo"[..], b"bar", b"baz", b"+", b"qux"]);
        // Without a prefix modifier each word is a rule, so "- foo" is two broken ones (as in
        // rsync 3.x).
        let broken = write(dir.path(), "broken", b"- foo");
        let mut g = FilterRules::new();
        assert!(matches!(
            g.add_filter_rule(&rule_with_path(".w ", &broken)),
            Err(FilterError::MissingPattern { .. })
        ));
        // CVS style: words, no prefixes, "!" clears.
        let cvs = write(dir.path(), "ignore", b"*.o core\n! *.tmp #x\n");
        let f = filters(&[std::str::from_utf8(&rule_with_path(".C ", &cvs)).unwrap()]);
        let patterns: Vec<&[u8]> = f.rules().map(|r| r.pattern()).collect();
        assert_eq!(patterns, [&b"*.tmp"[..], b"#x"]);
    }

    #[test]
    fn merge_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut f = FilterRules::new();
        let err = f
            .add_filter_rule(&rule_with_path(". ", &missing))
            .unwrap_err();
        match &err {
            FilterError::Open { path, origin, .. } => {
                assert_eq!(path, &missing);
                assert_eq!(origin, &RuleOrigin::CommandLine);
            }
            e => panic!("{e}"),
        }
        assert!(err.to_string().contains("missing"), "{err}");

        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(
            &a,
            [b"- x\n".as_slice(), &rule_with_path(". ", &b)].concat(),
        )
        .unwrap();
        std::fs::write(&b, rule_with_path("merge ", &a)).unwrap();
        let err = f.add_filter_rule(&rule_with_path(". ", &a)).unwrap_err();
        match &err {
            FilterError::MergeCycle { path, origin } => {
                assert_eq!(path, &a);
                assert!(matches!(origin, RuleOrigin::File { line: 1, .. }));
            }
            e => panic!("{e}"),
        }
        assert!(f.is_empty());

        // A file may be merged twice when it does not include itself.
        let leaf = write(dir.path(), "leaf", b"- leaf\n");
        let twice = [
            rule_with_path(". ", &leaf),
            b"\n".to_vec(),
            rule_with_path(". ", &leaf),
        ]
        .concat();
        let twice = write(dir.path(), "twice", &twice);
        f.add_filter_rule(&rule_with_path(". ", &twice)).unwrap();
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn add_from_file_reads_paths() {
        let dir = tempfile::tempdir().unwrap();
        let list = write(dir.path(), "list", b"a\0b\0");
        let mut f = FilterRules::new();
        f.add_from_file(ListKind::Include, &list, true).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.rules().all(|r| r.is_include()));
        let err = f
            .add_from_file(ListKind::Exclude, &dir.path().join("nope"), false)
            .unwrap_err();
        assert!(matches!(err, FilterError::Open { .. }));
    }

    #[test]
    fn from0_carries_into_merge_files() {
        let dir = tempfile::tempdir().unwrap();
        let inner = write(dir.path(), "inner", b"- a\nb\0- c\0");
        let outer = [rule_with_path(". ", &inner), b"\0".to_vec()].concat();
        let mut f = FilterRules::new();
        f.add_from_reader(ListKind::Filter, outer.as_slice(), true, "outer")
            .unwrap();
        let patterns: Vec<&[u8]> = f.rules().map(|r| r.pattern()).collect();
        assert_eq!(patterns, [&b"a\nb"[..], b"c"]);
        let mut g = FilterRules::new();
        g.set_from0(true);
        g.add_filter_rule(&rule_with_path(". ", &inner)).unwrap();
        assert_eq!(g, FilterRules { from0: true, ..f });
    }

    #[test]
    fn wildmatch_cases() {
        // Mostly from rsync's wildtest.txt.
        for (pattern, text, want) in [
            ("foo", "foo", true),
            ("bar", "foo", false),
            ("???", "foo", true),
            ("??", "foo", false),
            ("*", "foo", true),
            ("f*", "foo", true),
            ("*f", "foo", false),
            ("*foo*", "foo", true),
            ("*ob*a*r*", "foobar", true),
            ("*ab", "aaaaaaabababab", true),
            ("foo\\*", "foo*", true),
            ("foo\\*bar", "foobar", false),
            ("*[al]?", "ball", true),
            ("[ten]", "ten", false),
            ("**[!te]", "ten", true),
            ("**[!ten]", "ten", false),
            ("t[a-g]n", "ten", true),
            ("t[!a-g]n", "ten", false),
            ("t[!a-g]n", "ton", true),
            ("t[^a-g]n", "ton", true),
            ("a[]]b", "a]b", true),
            ("a[]-]b", "a-b", true),
            ("a[]-]b", "a]b", true),
            ("a[]-]b", "aab", false),
            ("a[]a-]b", "aab", true),
            ("]", "]", true),
            ("foo*bar", "foo/baz/bar", false),
            ("foo**bar", "foo/baz/bar", true),
            ("foo?bar", "foo/bar", false),
            ("foo[/]bar", "foo/bar", false),
            ("f[^eiu][^eiu][^eiu][^eiu][^eiu]r", "foo/bar", false),
            ("f[^eiu][^eiu][^eiu][^eiu][^eiu]r", "foo-bar", true),
            ("**/foo", "/foo", true),
            ("**/foo", "bar/baz/foo", true),
            ("*/foo", "bar/baz/foo", false),
            ("**/bar*", "foo/bar/baz", false),
            ("**/bar/*", "deep/foo/bar/baz", true),
            ("**/bar/*", "deep/foo/bar/baz/", false),
            ("**/bar/**", "deep/foo/bar/baz/", true),
            ("**/bar/*", "deep/foo/bar", false),
            ("**/bar/**", "deep/foo/bar/", true),
            ("**/bar**", "foo/bar/baz", true),
            ("*/bar/**", "foo/bar/baz/x", true),
            ("*/bar/**", "deep/foo/bar/baz/x", false),
            ("**/bar/*/*", "deep/foo/bar/baz/x", true),
            ("[[:alpha:]][[:digit:]][[:upper:]]", "a1B", true),
            ("[[:digit:][:upper:][:space:]]", "A", true),
            ("[[:digit:][:upper:][:space:]]", "1", true),
            ("[[:digit:][:upper:][:space:]]", ".", false),
            ("[[:xdigit:]]", "f", true),
            ("[[:xdigit:]]", "g", false),
            ("[a-c[:digit:]x-z]", "5", true),
            ("[a-c[:digit:]x-z]", "y", true),
            ("[a-c[:digit:]x-z]", "q", false),
            ("[\\]]", "]", true),
            ("[\\]", "\\", false),
            ("[!]-]", "]", false),
            ("[!]-]", "a", true),
            ("[[]", "[", true),
            // "[:" without ":]" is an ordinary "[" member.
            ("[[:]", ":", true),
            ("[[:]", "[", true),
            ("[[:]", "]", false),
            (
                "-*-*-*-*-*-*-12-*-*-*-m-*-*-*",
                "-adobe-courier-bold-o-normal--12-120-75-75-m-70-iso8859-1",
                true,
            ),
            (
                "-*-*-*-*-*-*-12-*-*-*-m-*-*-*",
                "-adobe-courier-bold-o-normal--12-120-75-75-X-70-iso8859-1",
                false,
            ),
            (
                "XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*",
                "XXX/adobe/courier/bold/o/normal//12/120/75/75/m/70/iso8859/1",
                true,
            ),
            (
                "XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*",
                "XXX/adobe/courier/bold/o/normal//12/120/75/75/X/70/iso8859/1",
                false,
            ),
            (
                "**/*a*b*g*n*t",
                "abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txt",
                true,
            ),
            (
                "**/*a*b*g*n*t",
                "abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txtz",
                false,
            ),
        ] {
            assert_eq!(
                wildmatch_at(pattern.as_bytes(), text.as_bytes(), Place::Start),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn wildmatch_stays_fast_on_pathological_patterns() {
        let text = vec![b'a'; 200];
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let start = std::time::Instant::now();
        assert!(!wildmatch_at(pattern, &text, Place::Start));
        let mut with_slashes = b"a/".repeat(100);
        with_slashes.push(b'c');
        assert!(!wildmatch_at(
            b"**a**a**a**a**a**a**b",
            &with_slashes,
            Place::AfterAnySlash
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    // ---- Comparison with real rsync ----

    fn have_rsync() -> bool {
        match Command::new("rsync").arg("--version").output() {
            Ok(out) if out.status.success() => true,
            _ => {
                eprintln!("note: rsync is not on PATH; skipping the comparison with real rsync");
                false
            }
        }
    }

    fn os(bytes: &[u8]) -> OsString {
        bytes_to_path(bytes).into_os_string()
    }

    /// Creates `entries` under `root`; an entry ending in `/` is a directory.
    fn make_tree(root: &Path, entries: &[&[u8]]) {
        for entry in entries {
            let path = root.join(bytes_to_path(entry));
            if entry.ends_with(b"/") {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, b"x").unwrap();
            }
        }
    }

    /// Builds rules the way the command line would from rsync options.
    fn rules_from_args(args: &[Vec<u8>]) -> FilterRules {
        let mut f = FilterRules::new();
        // Like rsync, these two options apply to all rules wherever they appear.
        let from0 = args.iter().any(|a| a == b"--from0");
        f.set_from0(from0);
        for arg in args {
            let value = |prefix: &[u8]| arg.strip_prefix(prefix).map(<[u8]>::to_vec);
            if let Some(p) = value(b"--exclude=") {
                f.add_exclude(&p);
            } else if let Some(p) = value(b"--include=") {
                f.add_include(&p);
            } else if let Some(r) = value(b"--filter=") {
                f.add_filter_rule(&r).unwrap();
            } else if let Some(p) = value(b"--exclude-from=") {
                f.add_from_file(ListKind::Exclude, &bytes_to_path(&p), from0)
                    .unwrap();
            } else if let Some(p) = value(b"--include-from=") {
                f.add_from_file(ListKind::Include, &bytes_to_path(&p), from0)
                    .unwrap();
            }
        }
        if args.iter().any(|a| a == b"--delete-excluded") {
            f = f.without_receiver_excludes();
        }
        f
    }

    fn strip_dir_slash(mut name: &[u8]) -> Vec<u8> {
        if name.len() > 1 {
            if let Some(stripped) = name.strip_suffix(b"/") {
                name = stripped;
            }
        }
        name.to_vec()
    }

    /// Runs rsync from `src/` to `dst/`; with `dry_run`, returns what it reports it would send.
    fn run_rsync(src: &Path, dst: &Path, args: &[Vec<u8>], dry_run: bool) -> BTreeSet<Vec<u8>> {
        let mut cmd = Command::new("rsync");
        cmd.args(["-r", "-8", "--out-format=%n"]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        for a in args {
            cmd.arg(os(a));
        }
        let mut src_arg = src.as_os_str().to_owned();
        src_arg.push("/");
        let mut dst_arg = dst.as_os_str().to_owned();
        dst_arg.push("/");
        let out = cmd.arg(src_arg).arg(dst_arg).output().unwrap();
        assert!(
            out.status.success(),
            "rsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty() && *line != b"./")
            .map(strip_dir_slash)
            .collect()
    }

    fn dir_entries(dir: &Path, rel: &[u8]) -> Vec<(Vec<u8>, bool)> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        let Ok(read) = std::fs::read_dir(dir) else {
            return out;
        };
        for entry in read {
            let entry = entry.unwrap();
            let mut path = rel.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(entry.file_name().as_bytes());
            out.push((path, entry.file_type().unwrap().is_dir()));
        }
        out
    }

    /// What the engine would send: a walk that skips excluded entries and does not descend
    /// into excluded directories.
    fn model_sent(root: &Path, rules: &FilterRules, rel: &[u8], out: &mut BTreeSet<Vec<u8>>) {
        for (path, is_dir) in dir_entries(&root.join(bytes_to_path(rel)), rel) {
            if rules.excluded_on_sender(&path, is_dir) {
                continue;
            }
            out.insert(path.clone());
            if is_dir {
                model_sent(root, rules, &path, out);
            }
        }
    }

    /// What `--delete` would remove on the receiver, the way rsync's generator decides it.
    fn model_deleted(
        root: &Path,
        rules: &FilterRules,
        sent: &BTreeSet<Vec<u8>>,
        rel: &[u8],
        out: &mut BTreeSet<Vec<u8>>,
    ) {
        fn delete(
            root: &Path,
            rules: &FilterRules,
            path: &[u8],
            is_dir: bool,
            out: &mut BTreeSet<Vec<u8>>,
        ) -> bool {
            let mut emptied = true;
            if is_dir {
                for (child, child_is_dir) in dir_entries(&root.join(bytes_to_path(path)), path) {
                    if rules.protected_in_deleted_dir(&child, child_is_dir)
                        || !delete(root, rules, &child, child_is_dir, out)
                    {
                        emptied = false;
                    }
                }
            }
            if emptied {
                out.insert(path.to_vec());
            }
            emptied
        }
        for (path, is_dir) in dir_entries(&root.join(bytes_to_path(rel)), rel) {
            if rules.protected_on_receiver(&path, is_dir) {
                continue;
            }
            if sent.contains(&path) {
                if is_dir {
                    model_deleted(root, rules, sent, &path, out);
                }
            } else {
                delete(root, rules, &path, is_dir, out);
            }
        }
    }

    const SRC_TREE: &[&[u8]] = &[
        b"foo",
        b"foo.o",
        b"keep.o",
        b"bar.c",
        b"bar.h",
        b"a/foo",
        b"a/bfoo",
        b"a/b/foo",
        b"a/b/c/foo/inner.c",
        b"ab/foo",
        b"b/foo",
        b"x/foo/bar",
        b"x/foo/bar.c",
        b"x/foo/baz/bar",
        b"x/foo/baz/q/bar",
        b"src/main.c",
        b"src/lib/util.c",
        b"src/lib/util.h",
        b"src/lib/deep/er.c",
        b"star*name",
        b"starxname",
        b"back\\slash",
        b"[br]acket",
        b"bracket",
        b"q",
        b"z",
        b"1file",
        b"q?",
        b" space",
        b"trailing ",
        b"trailing",
        b".hidden",
        b"caf\xe9",
        b"\xff\xfe/inner",
        b"\xff\xfe/caf\xe9.o",
        b"dir/file",
        b"d2/dir",
        b"deep/er/est/file.txt",
        b"empty/",
        b"-dash",
        b"!",
        b"+ plus",
    ];

    fn arg_sets(list_dir: &Path) -> Vec<Vec<Vec<u8>>> {
        let exclude_list = write(
            list_dir,
            "exclude.list",
            b"# comment\n; comment\n\n*.o\r\n+ keep.c\n*.c\n- /deep\n!\n*.h\n/x/foo/\n",
        );
        let include_list = write(list_dir, "include.list", b"*/\n*.c\n- *.h\n");
        let nul_list = write(list_dir, "nul.list", b"*.o\0foo\0#x\0");
        let inner = write(list_dir, "inner.rules", b"+ src/lib/\n- src/*/\n");
        let merge_text = [
            b"# merged\n- *.o\nhide /deep/\nexclude,! */\n".as_slice(),
            &rule_with_path("merge ", &inner),
            b"\n+ *.c\n- *\n",
        ]
        .concat();
        let merge = write(list_dir, "merge.rules", &merge_text);
        let plain = write(list_dir, "plain.rules", b"foo\n+ bar.c\n");
        let path_arg = |prefix: &str, path: &Path| rule_with_path(prefix, path);

        let sets: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b"--exclude=*.o"],
            vec![b"--exclude=/foo"],
            vec![b"--exclude=foo/"],
            vec![b"--exclude=foo"],
            vec![b"--exclude=foo/*/bar"],
            vec![b"--exclude=/x/foo/**/bar"],
            vec![b"--exclude=foo/**/bar"],
            vec![b"--exclude=**/foo"],
            vec![b"--exclude=**foo"],
            vec![b"--exclude=a**"],
            vec![b"--exclude=*/foo"],
            vec![b"--include=*/", b"--include=*.c", b"--exclude=*"],
            vec![
                b"--include=x/",
                b"--include=x/foo/",
                b"--include=x/foo/bar.c",
                b"--exclude=*",
            ],
            vec![b"--filter=+ src/***", b"--filter=- *"],
            vec![b"--exclude=b/foo"],
            vec![b"--exclude=/b/foo"],
            vec![b"--exclude=a/b/foo"],
            vec![b"--exclude=/a/b/foo"],
            vec![b"--exclude=[br]*"],
            vec![b"--exclude=[!a-f]*"],
            vec![b"--exclude=[[:digit:]]*"],
            vec![b"--exclude=[[:punct:]]*"],
            vec![b"--exclude=star\\*name"],
            vec![b"--exclude=back\\slash"],
            vec![b"--exclude=*\\\\*"],
            vec![b"--exclude=\\[br]acket"],
            vec![b"--exclude=[br]acket"],
            vec![b"--exclude=q?"],
            vec![b"--exclude=q\\?"],
            vec![b"--exclude=caf\xe9"],
            vec![b"--exclude=\xff*"],
            vec![b"--exclude=*[\x80-\xff]*"],
            vec![b"--filter=-! */"],
            vec![b"--filter=exclude,! */"],
            vec![b"--filter=+! */", b"--exclude=*"],
            vec![b"--exclude=+ foo.o", b"--exclude=*.o"],
            vec![b"--include=- foo.o", b"--include=foo.o"],
            vec![b"--exclude=foo", b"--exclude=!", b"--exclude=*.c"],
            vec![b"--filter=- foo", b"--filter=clear", b"--filter=- bar.c"],
            vec![b"--filter=H *.o"],
            vec![b"--filter=P *.o"],
            vec![b"--filter=-r foo"],
            vec![b"--filter=-s foo"],
            vec![b"--filter=S keep.o", b"--filter=- *.o"],
            vec![b"--exclude=trailing "],
            vec![b"--exclude=trailing"],
            vec![b"--exclude= space"],
            vec![b"--exclude=?"],
            vec![b"--exclude=*/"],
            vec![b"--exclude=dir"],
            vec![b"--exclude=dir/"],
            vec![b"--exclude=deep/**"],
            vec![b"--exclude=er/***"],
            vec![b"--exclude=/deep/er"],
            vec![b"--exclude=deep/er/"],
            vec![b"--exclude=lib/*.c"],
            vec![b"--exclude=src/**.c"],
            vec![b"--exclude=**/lib"],
            vec![b"--exclude=.*"],
            vec![b"--exclude=/"],
            vec![b"--exclude=*"],
            vec![b"--exclude=-dash"],
            vec![b"--exclude=- -dash"],
            vec![b"--filter=-p *.o"],
            vec![b"--filter=-_foo"],
            vec![b"--filter=exclude,p_foo"],
            vec![b"--filter=-  space"],
            vec![b"--exclude=!", b"--exclude=+ plus"],
            vec![b"--include=+ plus", b"--exclude=+*"],
            vec![b"--exclude=x/foo/baz/"],
            vec![b"--exclude=/x/*/baz"],
            vec![b"--exclude=**/baz/**"],
            vec![b"--exclude=x/**/q/***"],
            vec![b"--exclude=[a-c]/**/foo"],
        ];
        let mut sets: Vec<Vec<Vec<u8>>> = sets
            .into_iter()
            .map(|s| s.into_iter().map(<[u8]>::to_vec).collect())
            .collect();
        sets.push(vec![path_arg("--exclude-from=", &exclude_list)]);
        sets.push(vec![
            path_arg("--include-from=", &include_list),
            b"--exclude=*".to_vec(),
        ]);
        sets.push(vec![
            b"--from0".to_vec(),
            path_arg("--exclude-from=", &nul_list),
        ]);
        sets.push(vec![path_arg("--filter=. ", &merge)]);
        sets.push(vec![path_arg("--filter=merge,- ", &plain)]);
        sets.push(vec![
            path_arg("--filter=.+ ", &plain),
            b"--exclude=*.c".to_vec(),
        ]);
        sets.push(vec![path_arg("--filter=.e ", &inner)]);
        sets.push(vec![path_arg("--filter=.e- ", &plain)]);
        sets
    }

    #[test]
    fn transfer_lists_match_real_rsync() {
        if !have_rsync() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        make_tree(&src, SRC_TREE);
        let dst = tmp.path().join("dst");
        let mut failures = Vec::new();
        for args in arg_sets(tmp.path()) {
            let want = run_rsync(&src, &dst, &args, true);
            let rules = rules_from_args(&args);
            let mut got = BTreeSet::new();
            model_sent(&src, &rules, b"", &mut got);
            if got != want {
                let show_set =
                    |s: &BTreeSet<Vec<u8>>| -> Vec<String> { s.iter().map(|p| show(p)).collect() };
                failures.push(format!(
                    "{:?}:\n  only rsync sends: {:?}\n  only we send: {:?}",
                    args.iter().map(|a| show(a)).collect::<Vec<_>>(),
                    show_set(&want.difference(&got).cloned().collect()),
                    show_set(&got.difference(&want).cloned().collect()),
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn absolute_rules_match_real_rsync() {
        use std::os::unix::ffi::OsStrExt;
        if !have_rsync() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        make_tree(&src, SRC_TREE);
        let root = src.as_os_str().as_bytes();
        let rules: Vec<Vec<u8>> = vec![
            [b"-/ ".as_slice(), root, b"/a/b/foo"].concat(),
            [b"-/ ".as_slice(), root, b"/x/**/bar"].concat(),
            b"-/ src/foo".to_vec(),
            b"-/ src/*.c".to_vec(),
            b"-/ /src".to_vec(),
            b"+/ lib/*.c".to_vec(),
            b"-/ *.c".to_vec(),
        ];
        for rule in rules {
            let arg = [b"--filter=".as_slice(), &rule].concat();
            let want = run_rsync(&src, &tmp.path().join("dst"), &[arg], true);
            let mut f = FilterRules::new();
            f.add_filter_rule(&rule).unwrap();
            f.set_sender_root(root);
            let mut got = BTreeSet::new();
            model_sent(&src, &f, b"", &mut got);
            assert_eq!(got, want, "{}", show(&rule));
        }
    }

    /// Every entry under `root`, directories included.
    fn all_entries(root: &Path, rel: &[u8], out: &mut BTreeSet<Vec<u8>>) {
        for (path, is_dir) in dir_entries(&root.join(bytes_to_path(rel)), rel) {
            out.insert(path.clone());
            if is_dir {
                all_entries(root, &path, out);
            }
        }
    }

    #[test]
    fn deletions_match_real_rsync() {
        if !have_rsync() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        make_tree(
            &src,
            &[b"foo.o", b"keep", b"a/foo", b"a/b/x.c", b"lib/util.c"],
        );
        let dst_tree: &[&[u8]] = &[
            b"foo.o",
            b"stray.o",
            b"extra",
            b"keep",
            b"a/extra.o",
            b"a/b/old.c",
            b"a/b/old.h",
            b"gone/sub/x",
            b"gone/y.o",
            b"gone2/sub/x.o",
            b"gone2/z",
            b"lib/old.c",
            b"hidden/",
            b"caf\xe9.o",
        ];
        let sets: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b"--exclude=*.o"],
            vec![b"--filter=H *.o"],
            vec![b"--filter=P *.o"],
            vec![b"--filter=-p *.o"],
            vec![b"--filter=-pr *.o"],
            vec![b"--delete-excluded", b"--exclude=*.o"],
            vec![b"--delete-excluded", b"--filter=-sr *.o"],
            vec![b"--delete-excluded", b"--filter=P *.o", b"--exclude=extra"],
            vec![b"--filter=R stray.o", b"--exclude=*.o"],
            vec![b"--filter=protect gone/"],
            vec![b"--filter=P gone/***"],
            vec![b"--exclude=gone/sub/"],
            vec![b"--exclude=/gone2/sub/x.o"],
            vec![b"--filter=-! */", b"--filter=+ *"],
            vec![b"--include=*/", b"--include=*.c", b"--exclude=*"],
            vec![b"--filter=P *", b"--filter=R *.h"],
            vec![b"--filter=P caf\xe9*"],
            vec![b"--filter=P hidden/"],
            vec![b"--filter=H a/"],
        ];
        let mut failures = Vec::new();
        for (i, args) in sets.into_iter().enumerate() {
            let mut args: Vec<Vec<u8>> = args.into_iter().map(<[u8]>::to_vec).collect();
            args.push(b"--delete".to_vec());
            let dst = tmp.path().join(format!("dst{i}"));
            make_tree(&dst, dst_tree);
            let mut before = BTreeSet::new();
            all_entries(&dst, b"", &mut before);

            let rules = rules_from_args(&args);
            let mut sent = BTreeSet::new();
            model_sent(&src, &rules, b"", &mut sent);
            let mut deleted = BTreeSet::new();
            model_deleted(&dst, &rules, &sent, b"", &mut deleted);
            let want: BTreeSet<Vec<u8>> =
                before.difference(&deleted).chain(&sent).cloned().collect();

            run_rsync(&src, &dst, &args, false);
            let mut after = BTreeSet::new();
            all_entries(&dst, b"", &mut after);
            if after != want {
                let list =
                    |s: BTreeSet<Vec<u8>>| -> Vec<String> { s.iter().map(|p| show(p)).collect() };
                failures.push(format!(
                    "{:?}:\n  only rsync leaves: {:?}\n  only we leave: {:?}",
                    args.iter().map(|a| show(a)).collect::<Vec<_>>(),
                    list(after.difference(&want).cloned().collect()),
                    list(want.difference(&after).cloned().collect()),
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

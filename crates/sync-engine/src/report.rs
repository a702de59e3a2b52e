//! How the engine tells the caller what happened: itemized changes, errors, statistics.

use crate::path::{display_path, escape_name, RelPath};
use crate::tree::{Kind, Meta, TreeError};

/// rsync's update type, the first letter of an itemize string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateType {
    /// `<`: content sent to the remote side.
    Sent,
    /// `>`: content received on the local side.
    Received,
    /// `c`: created or changed locally on the receiving side (dirs, links, devices).
    LocalChange,
    /// `h`: made a hard link to another entry.
    HardLink,
    /// `.`: not updated (attributes at most).
    NoUpdate,
    /// `*deleting`.
    Deleting,
}

/// One change to one entry, as rsync's `--itemize-changes` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub update: UpdateType,
    pub kind: Kind,
    pub path: RelPath,
    pub created: bool,
    pub checksum: bool,
    pub size: bool,
    pub time: bool,
    /// The mtime is set to the transfer time (`T`), because times are not preserved.
    pub time_now: bool,
    pub perms: bool,
    pub owner: bool,
    pub group: bool,
    /// The access time changes (`-U`).
    pub atime: bool,
    /// Symlink target, for `-> target` in output.
    pub link_target: Option<Vec<u8>>,
    /// For hard links: the path linked to.
    pub hard_link_to: Option<RelPath>,
    /// Made from its twin in a `--link-dest`/`--copy-dest`/`--compare-dest` directory:
    /// how (`HardLink` for a link, `LocalChange` for a copy or a directory made). The item
    /// itself stays `NoUpdate`, so it counts as a change only for what differs from the
    /// twin, but shows this letter where an unchanged entry shows `.`.
    pub alt_dest_update: Option<UpdateType>,
    /// Bytes of file content moved for this item.
    pub transferred: u64,
    /// Bytes of the file found on the receiver instead of being moved (a delta's matches).
    pub matched: u64,
    /// The entry's attributes as the walk saw them: the source's, or for a deletion the
    /// removed entry's. For output formats that show sizes, modes and times.
    pub meta: Option<Meta>,
    /// How long moving them took.
    pub elapsed: Option<std::time::Duration>,
}

impl Item {
    pub fn new(update: UpdateType, kind: Kind, path: RelPath) -> Item {
        Item {
            update,
            kind,
            path,
            created: false,
            checksum: false,
            size: false,
            time: false,
            time_now: false,
            perms: false,
            owner: false,
            group: false,
            atime: false,
            link_target: None,
            hard_link_to: None,
            alt_dest_update: None,
            transferred: 0,
            matched: 0,
            meta: None,
            elapsed: None,
        }
    }

    /// The same item with the attributes of its entry.
    pub fn with_meta(mut self, meta: &Meta) -> Item {
        self.meta = Some(meta.clone());
        self
    }

    /// Whether anything about the item changed (rsync prints only such items with one -i).
    pub fn is_change(&self) -> bool {
        self.update != UpdateType::NoUpdate
            || self.created
            || self.checksum
            || self.size
            || self.time
            || self.time_now
            || self.perms
            || self.owner
            || self.group
            || self.atime
    }

    /// The 11-character `YXcstpoguax` string.
    pub fn code(&self) -> String {
        if self.update == UpdateType::Deleting {
            return "*deleting  ".to_string();
        }
        let y = match self.update {
            UpdateType::Sent => '<',
            UpdateType::Received => '>',
            UpdateType::LocalChange => 'c',
            UpdateType::HardLink => 'h',
            UpdateType::NoUpdate => match self.alt_dest_update {
                Some(UpdateType::HardLink) => 'h',
                Some(UpdateType::LocalChange) => 'c',
                _ => '.',
            },
            UpdateType::Deleting => '.',
        };
        let x = match self.kind {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'L',
            Kind::Device => 'D',
            Kind::Special | Kind::Unknown => 'S',
        };
        if self.created {
            return format!("{y}{x}+++++++++");
        }
        let flag = |on: bool, c: char| if on { c } else { '.' };
        let t = if self.time_now {
            'T'
        } else {
            flag(self.time, 't')
        };
        let attrs = format!(
            "{}{}{t}{}{}{}{}..",
            flag(self.checksum, 'c'),
            flag(self.size, 's'),
            flag(self.perms, 'p'),
            flag(self.owner, 'o'),
            flag(self.group, 'g'),
            flag(self.atime, 'u'),
        );
        // As rsync's log.c: an item that was not transferred and has nothing to show gets
        // blanks, so `-ii`'s unchanged entries stand out from attribute-only changes.
        if y != '<' && y != '>' && attrs.bytes().all(|b| b == b'.') {
            return format!("{y}{x}         ");
        }
        format!("{y}{x}{attrs}")
    }

    /// The name as rsync prints it: escaped, directories with a trailing `/`.
    pub fn display_name(&self) -> String {
        let mut s = if self.path.is_empty() {
            ".".to_string()
        } else {
            escape_name(&self.path)
        };
        if self.kind == Kind::Dir {
            s.push('/');
        }
        s
    }

    /// The tail rsync adds after the name: ` -> target` for links, ` => path` for hard links.
    pub fn display_suffix(&self) -> String {
        if let Some(t) = &self.link_target {
            format!(" -> {}", escape_name(t))
        } else if let Some(h) = &self.hard_link_to {
            format!(" => {}", display_path(h))
        } else {
            String::new()
        }
    }
}

/// Counters for `--stats`, named as rsync names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub regular_files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub devices: u64,
    pub specials: u64,
    pub created_files: u64,
    pub created_regular: u64,
    pub created_dirs: u64,
    pub created_symlinks: u64,
    pub deleted_files: u64,
    pub deleted_regular: u64,
    pub deleted_dirs: u64,
    pub deleted_symlinks: u64,
    pub transferred_files: u64,
    pub total_size: u64,
    pub transferred_size: u64,
    pub literal_data: u64,
    pub matched_data: u64,
    /// `--checksum` on a remote destination: hashes taken from the delta index, and files
    /// read back from the server to hash them.
    pub checksums_from_index: u64,
    pub checksums_read_remotely: u64,
    /// `--checksum` with hashes the server computed (`check-file`), nothing read remotely.
    pub checksums_by_server: u64,
    /// `--append-verify`: receivers' starts checked against the delta index, and bytes read
    /// from the server only to check them (rsync moves neither).
    pub append_checks_from_index: u64,
    pub append_check_data_read: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.files += o.files;
        self.regular_files += o.regular_files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.devices += o.devices;
        self.specials += o.specials;
        self.created_files += o.created_files;
        self.created_regular += o.created_regular;
        self.created_dirs += o.created_dirs;
        self.created_symlinks += o.created_symlinks;
        self.deleted_files += o.deleted_files;
        self.deleted_regular += o.deleted_regular;
        self.deleted_dirs += o.deleted_dirs;
        self.deleted_symlinks += o.deleted_symlinks;
        self.transferred_files += o.transferred_files;
        self.total_size += o.total_size;
        self.transferred_size += o.transferred_size;
        self.literal_data += o.literal_data;
        self.matched_data += o.matched_data;
        self.checksums_from_index += o.checksums_from_index;
        self.checksums_read_remotely += o.checksums_read_remotely;
        self.checksums_by_server += o.checksums_by_server;
        self.append_checks_from_index += o.append_checks_from_index;
        self.append_check_data_read += o.append_check_data_read;
    }
}

/// Why [`Reporter::skipped`] left an entry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// A directory, with neither `-r` nor `-d`: rsync's "skipping directory NAME".
    Directory,
    /// A symlink without `-l`, a device without `-D` or a special file without
    /// `--specials`: rsync's "skipping non-regular file "NAME"".
    NonRegular,
}

/// Receives what the engine does, as it happens. The engine itself never prints.
pub trait Reporter: Send + Sync {
    /// A change was made (or would be, in a dry run), or an unchanged item was checked.
    fn item(&self, item: &Item);
    /// An entry could not be handled; the run goes on and ends with a partial-transfer code.
    fn error(&self, error: &TreeError);
    /// Something the user should know that is not an error.
    fn warning(&self, message: &str);
    /// A note shown only when the user asked for detail (-v, -i), like rsync's
    /// "created directory".
    fn info(&self, _message: &str) {}
    /// A note shown only with -v, like rsync's "ignoring unsafe symlink".
    fn verbose_info(&self, _message: &str) {}
    /// A source entry was removed once the receiver had it (`--remove-source-files`); `path`
    /// is where it was in its source tree. rsync says "sender removed NAME" at `-vv`.
    fn source_removed(&self, _path: &RelPath) {}

    /// An entry left out because the options do not send its kind; rsync names it at its
    /// default verbosity. `path` is empty for the directory of a `dir/` source.
    fn skipped(&self, _why: Skipped, _path: &RelPath) {}

    /// Why a file was passed over (`--max-size`, `--existing`...), for rsync's `--info=skip`
    /// (on from -vv).
    fn skip_note(&self, _message: &str) {}
    /// A note rsync prints unless -q, such as "cannot delete non-empty directory: NAME".
    fn notice(&self, _message: &str) {}
    /// Whether regular files found up to date are told to [`Reporter::item`] too, for
    /// rsync's `-vv` ("NAME is uptodate") and `-ii`. Off by default: on a big tree that is
    /// mostly unchanged it is an item per file.
    fn wants_unchanged(&self) -> bool {
        false
    }
}

/// Live progress of a run, for progress displays. Called from transfer tasks while data
/// moves, many times a second: implementations must be cheap and must not block.
pub trait Progress: Send + Sync {
    /// The walk reached one more entry. `entries` and `bytes` are running totals that end as
    /// `Stats::files` and `Stats::total_size`; `working` is how many tasks are not done yet.
    fn walked(&self, _entries: u64, _bytes: u64, _working: u64) {}
    /// The walk has reached every entry: the totals of `walked` grow no more.
    fn walk_done(&self) {}
    /// A file's content starts moving. `item` is what will be reported when it is done,
    /// still without its byte counts; its `meta` holds the size.
    fn file_started(&self, _item: &Item) {}
    /// `done` of the `size` bytes of the file at `path` are through: written to the
    /// receiver, or found there already.
    fn file_bytes(&self, _path: &RelPath, _done: u64, _size: u64) {}
}

/// A reporter that keeps everything, for tests and library users.
#[derive(Default)]
pub struct CollectingReporter {
    pub items: std::sync::Mutex<Vec<Item>>,
    pub errors: std::sync::Mutex<Vec<String>>,
    pub warnings: std::sync::Mutex<Vec<String>>,
    pub skipped: std::sync::Mutex<Vec<(Skipped, RelPath)>>,
}

impl Reporter for CollectingReporter {
    fn item(&self, item: &Item) {
        self.items.lock().unwrap().push(item.clone());
    }
    fn error(&self, error: &TreeError) {
        self.errors.lock().unwrap().push(error.to_string());
    }
    fn warning(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
    fn skipped(&self, why: Skipped, path: &RelPath) {
        self.skipped.lock().unwrap().push((why, path.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itemize_codes_like_rsync() {
        let mut i = Item::new(UpdateType::Sent, Kind::File, b"a".to_vec());
        i.created = true;
        assert_eq!(i.code(), "<f+++++++++");
        let mut i = Item::new(UpdateType::Received, Kind::File, b"a".to_vec());
        i.size = true;
        i.time = true;
        assert_eq!(i.code(), ">f.st......");
        let mut i = Item::new(UpdateType::NoUpdate, Kind::Dir, b"d".to_vec());
        i.perms = true;
        assert_eq!(i.code(), ".d...p.....");
        assert_eq!(i.display_name(), "d/");
        let i = Item::new(UpdateType::NoUpdate, Kind::File, b"f".to_vec());
        assert_eq!(i.code(), ".f         ");
        let i = Item::new(UpdateType::Sent, Kind::File, b"f".to_vec());
        assert_eq!(i.code(), "<f.........");
        let i = Item::new(UpdateType::Deleting, Kind::File, b"x".to_vec());
        assert_eq!(i.code(), "*deleting  ");
        let mut i = Item::new(UpdateType::LocalChange, Kind::Symlink, b"l".to_vec());
        i.created = true;
        i.link_target = Some(b"t".to_vec());
        assert_eq!(
            format!("{} {}{}", i.code(), i.display_name(), i.display_suffix()),
            "cL+++++++++ l -> t"
        );
        let root = Item::new(UpdateType::LocalChange, Kind::Dir, Vec::new());
        assert_eq!(root.display_name(), "./");
    }
}

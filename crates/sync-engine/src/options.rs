//! What the user asked the sync to do, as typed options (rsync's flags, after parsing).

use crate::filter::FilterRules;

/// When extraneous destination entries are deleted (rsync's `--delete-WHEN`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeleteWhen {
    /// A listing pass over both trees deletes before anything is transferred.
    Before,
    /// Each directory's extras go as the walk reaches it (rsync's default).
    #[default]
    During,
    /// Found during the walk, deleted once every transfer is done.
    Delay,
    /// Deleted after the transfers (found during the walk here too: same result, one pass).
    After,
}

/// rsync's `--append` and `--append-verify`: files that grew on the sender get only their new
/// tail, written onto the end of the receiver's file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppendMode {
    #[default]
    Off,
    /// `--append`: the receiver's data is taken to be the sender's start, unchecked.
    Append,
    /// `--append-verify`: the receiver's data is checked against the sender's start, and the
    /// file is rewritten whole when they differ.
    Verify,
}

/// What a source named on the command line (or in `--files-from`) that does not exist means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MissingArgs {
    /// An error, as for any file that cannot be read (but not one that stops deletions).
    #[default]
    Error,
    /// `--ignore-missing-args`: nothing at all.
    Ignore,
    /// `--delete-missing-args`: the destination's entry of that name is deleted, a directory
    /// with its contents only when `--delete` or `--force` is on.
    Delete,
}

/// rsync's `--remove-source-files` and `--remove-sent-files`: which source entries go once
/// the receiver has them. Directories never do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RemoveSource {
    #[default]
    Off,
    /// `--remove-source-files`: every file and symlink the receiver ends up holding, whether
    /// it was sent now or found up to date (rsync 3's rule).
    Synced,
    /// `--remove-sent-files` (rsync's older option): only files whose data was sent in this
    /// run, and symlinks made in it.
    Sent,
}

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub recursive: bool,
    pub links: bool,
    /// `-L`: every symlink in the source is sent as what it points to.
    pub copy_links: bool,
    /// `--copy-unsafe-links`: symlinks that lead outside the tree are sent as what they
    /// point to; the others stay links.
    pub copy_unsafe_links: bool,
    /// `--safe-links`: symlinks that lead outside the tree are not created.
    pub safe_links: bool,
    pub perms: bool,
    /// `-E`: without `perms`, a regular file's execute bits follow the source's (rsync's
    /// rule: turned off when the source has none, turned on where read is allowed when the
    /// receiver's file has none); with `perms` it adds nothing.
    pub executability: bool,
    pub times: bool,
    /// `-U`: regular files and symlinks get the source's access time (not directories,
    /// as in rsync).
    pub atimes: bool,
    /// `-S`: runs of zeros in what is written become holes (skipped, not written).
    pub sparse: bool,
    /// `-O`: with `times`, directories keep the mtime they have on the receiver.
    pub omit_dir_times: bool,
    /// `-J`: with `times`, symlinks keep the mtime they have on the receiver.
    pub omit_link_times: bool,
    pub owner: bool,
    pub group: bool,
    pub devices: bool,
    pub specials: bool,
    pub hard_links: bool,
    pub dry_run: bool,
    pub delete: bool,
    pub delete_when: DeleteWhen,
    /// `--force`: a non-empty directory in the way of a file or symlink is deleted with its
    /// contents. `delete` implies it, as in rsync 3; without either such a directory stays
    /// and the entry fails.
    pub force: bool,
    /// `--remove-source-files` / `--remove-sent-files`.
    pub remove_source: RemoveSource,
    pub ignore_errors: bool,
    pub max_delete: Option<u64>,
    pub checksum: bool,
    /// `--partial`: an interrupted file is kept under `.NAME.partial` and the next run goes on
    /// from where it stopped.
    pub partial: bool,
    /// `--partial-dir=DIR`: partial files go into DIR, one name relative to each file's
    /// directory, made when needed and removed when empty again. An absolute DIR is one
    /// directory on the receiving side for every file (`SyncJob::partial_dir_tree`).
    pub partial_dir: Option<Vec<u8>>,
    /// `--delay-updates`: each updated file is finished in the partial directory (`partial_dir`,
    /// which the caller sets to `.~tmp~` when the user gave none, with `partial`) and renamed
    /// into place only once every file is written.
    pub delay_updates: bool,
    /// `--append`/`--append-verify`; the caller sets `inplace` with it, as rsync does.
    pub append: AppendMode,
    /// `--trust-index` (ours): `-c` takes a remote file's hash from the delta index when its
    /// size and mtime are still what was written, instead of reading the file back.
    pub trust_index: bool,
    /// `--verify` (ours): each written file is read back and its hash compared with what was
    /// read from the source before it is put in place.
    pub verify: bool,
    /// `--inplace`: files are rewritten where they are, without a temp file; with an index
    /// entry for the old version, only the blocks that changed are written.
    pub inplace: bool,
    /// `-W`: never send a delta, always the whole file.
    pub whole_file: bool,
    pub size_only: bool,
    /// `-I`: a file whose size and mtime match is sent anyway (after `--size-only` and `-c`,
    /// which still decide when given).
    pub ignore_times: bool,
    /// `--max-size` and `--min-size`: regular files larger or smaller are passed over.
    pub max_size: Option<u64>,
    pub min_size: Option<u64>,
    pub update: bool,
    pub ignore_existing: bool,
    pub existing: bool,
    /// `--dirs` (implied by `--files-from`): a directory named by path is made even without
    /// `-r`, instead of being skipped.
    pub dirs: bool,
    /// `--no-implied-dirs`: the directories above a path sent with `-R` are not sent: an
    /// existing one is left alone, a missing one made with default permissions.
    pub no_implied_dirs: bool,
    /// `-m`: a directory with no file below it after filtering is left out, as if excluded
    /// (so `--delete` removes it on the receiver) unless a receiver-side rule protects it.
    pub prune_empty_dirs: bool,
    pub missing_args: MissingArgs,
    /// Seconds two mtimes may differ and still count as equal.
    pub modify_window: i64,
    pub filters: FilterRules,
}

impl SyncOptions {
    /// Whether rsync would build its file list incrementally as it walks (its default with
    /// -r), rather than whole before anything is transferred (-m, --delete-before and
    /// --delete-after need the whole list). Some of rsync's behaviour and output differs.
    pub fn incremental_list(&self) -> bool {
        let whole_first = self.prune_empty_dirs
            || (self.delete && matches!(self.delete_when, DeleteWhen::Before | DeleteWhen::After));
        self.recursive && !whole_first
    }

    /// Whether directories get the source's mtime (`-t` without `-O`).
    pub fn dir_times(&self) -> bool {
        self.times && !self.omit_dir_times
    }

    /// Whether symlinks get the source's mtime (`-t` without `-J`).
    pub fn link_times(&self) -> bool {
        self.times && !self.omit_link_times
    }

    /// Whether sources the receiver is found to have already are removed (rsync 3's
    /// `--remove-source-files`; a dry run included, so that it shows what the run would do).
    pub fn removes_up_to_date(&self) -> bool {
        self.remove_source == RemoveSource::Synced
    }

    /// Whether a non-empty directory in the way of a non-directory is deleted (`--force`, or
    /// any `--delete`, as in rsync 3).
    pub fn force_delete(&self) -> bool {
        self.force || self.delete
    }
}

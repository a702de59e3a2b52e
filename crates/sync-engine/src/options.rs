//! What the user asked the sync to do, as typed options (rsync's flags, after parsing).

use crate::filter::FilterRules;

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub recursive: bool,
    pub links: bool,
    pub perms: bool,
    pub times: bool,
    pub owner: bool,
    pub group: bool,
    pub devices: bool,
    pub specials: bool,
    pub hard_links: bool,
    pub dry_run: bool,
    pub delete: bool,
    pub ignore_errors: bool,
    pub max_delete: Option<u64>,
    pub checksum: bool,
    pub size_only: bool,
    pub update: bool,
    pub ignore_existing: bool,
    pub existing: bool,
    /// Seconds two mtimes may differ and still count as equal.
    pub modify_window: i64,
    pub filters: FilterRules,
}

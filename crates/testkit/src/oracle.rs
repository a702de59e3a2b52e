//! Local rsync as the oracle: two trees are equal when `rsync -ani --delete` finds nothing to
//! do, and sftpsync's itemized output can be compared with what a real rsync prints.
//!
//! Run as root, `-a` includes `-o -g`, so ownership is compared too: chown the source to the
//! SFTP test user ([`crate::chown_tree`]) or pass `--no-o --no-g` when comparing with a tree
//! the server wrote. Hard links are compared only with `-H` in `extra_args`, and mtimes to the
//! second only unless `--modify-window=-1` is passed (then nanoseconds count too).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Command;

use crate::run_checked;

/// `path` as an rsync operand meaning "the contents of this directory": trailing slash, and a
/// leading `./` for relative paths so neither a leading `-` nor a `host:` colon can change
/// its meaning.
fn dir_operand(path: &Path) -> OsString {
    let mut bytes = Vec::new();
    if path.is_relative() {
        bytes.extend_from_slice(b"./");
    }
    bytes.extend_from_slice(path.as_os_str().as_encoded_bytes());
    if bytes.last() != Some(&b'/') {
        bytes.push(b'/');
    }
    OsString::from_vec(bytes)
}

fn run_rsync(flags: &[&str], extra_args: &[&str], src: &Path, dst: &Path) -> String {
    let mut cmd = Command::new("rsync");
    cmd.args(flags)
        .args(extra_args)
        .arg(dir_operand(src))
        .arg(dir_operand(dst));
    let out = run_checked(&mut cmd).unwrap_or_else(|e| panic!("rsync oracle: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `rsync -ani --delete [extra_args] SRC/ DST/` would change; empty when DST already
/// matches SRC. rsync escapes unprintable name bytes as `\#ooo`, so the text is readable.
pub fn rsync_diff(src: &Path, dst: &Path, extra_args: &[&str]) -> String {
    run_rsync(&["-ani", "--delete"], extra_args, src, dst)
}

/// Runs a real `rsync -ai [extra_args] SRC/ DST/` (changes DST) and returns its itemized
/// lines, for comparing sftpsync's `-i` output with rsync's.
pub fn rsync_itemize(src: &Path, dst: &Path, extra_args: &[&str]) -> Vec<String> {
    run_rsync(&["-ai"], extra_args, src, dst)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Panics, showing rsync's itemized differences, unless `dst` matches `src` per `rsync -a`
/// plus `extra_args`.
pub fn assert_trees_match_with(src: &Path, dst: &Path, extra_args: &[&str]) {
    let diff = rsync_diff(src, dst, extra_args);
    assert!(
        diff.is_empty(),
        "trees differ: `rsync -ani --delete {} {}/ {}/` would do:\n{diff}",
        extra_args.join(" "),
        src.display(),
        dst.display()
    );
}

/// Quick-check comparison (size and mtime), as rsync decides what to transfer.
pub fn assert_trees_match(src: &Path, dst: &Path) {
    assert_trees_match_with(src, dst, &[]);
}

/// Like [`assert_trees_match`] but comparing file contents (`-c`).
pub fn assert_trees_match_checksum(src: &Path, dst: &Path) {
    assert_trees_match_with(src, dst, &["-c"]);
}

/// Copies the contents of `src` into `dst` (created if missing) with `cp -a`, keeping modes,
/// ownership, mtimes, symlinks and hard links. Panics on failure.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir -p {}: {e}", dst.display()));
    // "SRC/." copies the contents and the directory's own attributes onto an existing DST.
    let mut from = dir_operand(src);
    from.push(".");
    run_checked(
        Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(from)
            .arg(dir_operand(dst)),
    )
    .unwrap_or_else(|e| panic!("copy_tree: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_are_unambiguous() {
        assert_eq!(dir_operand(Path::new("/a/b")), OsString::from("/a/b/"));
        assert_eq!(dir_operand(Path::new("/a/b/")), OsString::from("/a/b/"));
        assert_eq!(dir_operand(Path::new("-x:y")), OsString::from("./-x:y/"));
    }
}

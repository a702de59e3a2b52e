//! The local tree never reaches outside its root through a symlink, with `openat2` and with the
//! component-by-component fallback alike.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sync_engine::local::PARENT_SYMLINK;
use sync_engine::tree::{Kind, SetMeta, Tree, TreeError};
use sync_engine::LocalTree;

/// Both resolvers over the same directory: `openat2` where the kernel has it, and the walk.
fn trees(root: &Path) -> [(&'static str, LocalTree); 2] {
    [
        ("openat2", LocalTree::new(root)),
        ("walk", LocalTree::with_legacy_syscalls(root)),
    ]
}

/// Everything observable about a directory tree: names, kinds, modes, mtimes, owners, contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let body = if m.is_file() {
                format!("{:?}", std::fs::read(&p).unwrap())
            } else if m.is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).unwrap())
            } else {
                todo.push(p.clone());
                String::new()
            };
            let desc = format!(
                "{:o} {} {}:{} {} {body}",
                m.mode(),
                m.mtime(),
                m.uid(),
                m.gid(),
                m.nlink()
            );
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), desc);
        }
    }
    out
}

fn assert_parent_symlink<T>(what: &str, mode: &str, r: Result<T, TreeError>) {
    match r {
        Ok(_) => panic!("{what} ({mode}) went through a symlinked parent"),
        Err(e) => assert_eq!(e.cause, PARENT_SYMLINK, "{what} ({mode}): {e}"),
    }
}

/// An outside directory with something to damage, and a root whose `a` points at it.
struct Escape {
    root: tempfile::TempDir,
    outside: tempfile::TempDir,
}

fn escape_fixture() -> Escape {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(outside.path().join("b")).unwrap();
    std::fs::write(outside.path().join("b/f"), b"outside").unwrap();
    std::fs::set_permissions(
        outside.path().join("b/f"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::create_dir(outside.path().join("b/emptydir")).unwrap();
    symlink(outside.path(), root.path().join("a")).unwrap();
    std::fs::write(root.path().join("x"), b"inside").unwrap();
    Escape { root, outside }
}

async fn write_file(tree: &LocalTree, path: &[u8], expected: u64) -> Result<(), TreeError> {
    let mut w = tree.create_file(&path.to_vec(), 0o644, expected).await?;
    w.write(Bytes::from_static(b"written")).await?;
    w.finish(&SetMeta {
        mode: Some(0o644),
        mtime: Some(1_000_000),
        ..SetMeta::default()
    })
    .await
}

#[tokio::test]
async fn every_operation_under_a_symlinked_parent_fails_and_changes_nothing_outside() {
    let fx = escape_fixture();
    let before = snapshot(fx.outside.path());
    for (mode, tree) in trees(fx.root.path()) {
        let p = |s: &str| s.as_bytes().to_vec();
        let meta = SetMeta {
            mode: Some(0o777),
            mtime: Some(1),
            uid: Some(4242),
            gid: Some(4242),
            ..Default::default()
        };
        assert_parent_symlink("create small", mode, write_file(&tree, b"a/b/new", 0).await);
        assert_parent_symlink(
            "create big",
            mode,
            tree.create_file(&p("a/b/new"), 0o644, 1 << 30).await,
        );
        assert_parent_symlink(
            "create based on",
            mode,
            tree.create_file_based_on(&p("a/b/new"), 0o644, &p("x"))
                .await,
        );
        assert_parent_symlink(
            "base of a create",
            mode,
            tree.create_file_based_on(&p("new"), 0o644, &p("a/b/f"))
                .await,
        );
        assert_parent_symlink("mkdir", mode, tree.mkdir(&p("a/b/d"), 0o755).await);
        assert_parent_symlink("symlink", mode, tree.symlink(&p("a/b/s"), b"/etc").await);
        assert_parent_symlink("link", mode, tree.hard_link(&p("x"), &p("a/b/h")).await);
        assert_parent_symlink(
            "link from",
            mode,
            tree.hard_link(&p("a/b/f"), &p("h")).await,
        );
        assert_parent_symlink(
            "rename onto",
            mode,
            tree.rename_replace(&p("x"), &p("a/b/f")).await,
        );
        assert_parent_symlink(
            "rename from",
            mode,
            tree.rename_replace(&p("a/b/f"), &p("y")).await,
        );
        assert_parent_symlink(
            "set_meta",
            mode,
            tree.set_meta(&p("a/b/f"), Kind::File, &meta).await,
        );
        assert_parent_symlink(
            "set_meta dir",
            mode,
            tree.set_meta(&p("a/b"), Kind::Dir, &meta).await,
        );
        assert_parent_symlink("unlink", mode, tree.remove_file(&p("a/b/f")).await);
        assert_parent_symlink("rmdir", mode, tree.remove_dir(&p("a/b/emptydir")).await);
        assert_parent_symlink("lstat", mode, tree.lstat(&p("a/b/f")).await);
        assert_parent_symlink("read_dir", mode, tree.read_dir(&p("a/b")).await);
        assert_parent_symlink("read_dir of the link", mode, tree.read_dir(&p("a")).await);
        assert_parent_symlink("readlink", mode, tree.read_link(&p("a/b/f"), None).await);
        assert_parent_symlink("open", mode, tree.open_read(&p("a/b/f"), 0, 7).await);
    }
    assert_eq!(
        snapshot(fx.outside.path()),
        before,
        "the outside directory changed"
    );
    assert!(!fx.root.path().join("y").exists() && !fx.root.path().join("h").exists());
}

#[tokio::test]
async fn create_file_on_a_symlink_name_fails_with_eexist() {
    let fx = escape_fixture();
    symlink(fx.outside.path().join("b/f"), fx.root.path().join("link")).unwrap();
    symlink(
        fx.outside.path().join("b/new"),
        fx.root.path().join("dangling"),
    )
    .unwrap();
    let before = snapshot(fx.outside.path());
    for (mode, tree) in trees(fx.root.path()) {
        for (name, expected) in [
            ("link", 0),
            ("link", 1 << 30),
            ("dangling", 0),
            ("dangling", 1 << 30),
        ] {
            let e = write_file(&tree, name.as_bytes(), expected)
                .await
                .expect_err("created through a symlink");
            assert!(e.cause.ends_with("(17)"), "{mode} {name} {expected}: {e}");
        }
    }
    assert_eq!(snapshot(fx.outside.path()), before);
}

#[tokio::test]
async fn set_meta_on_a_symlink_leaves_its_target_alone() {
    let fx = escape_fixture();
    let target = fx.outside.path().join("b/f");
    symlink(&target, fx.root.path().join("link")).unwrap();
    let before = snapshot(fx.outside.path());
    for (mode, tree) in trees(fx.root.path()) {
        // Also as a file: the entry may have been swapped for a symlink since it was listed.
        for kind in [Kind::Symlink, Kind::File] {
            let meta = SetMeta {
                mode: Some(0o777),
                mtime: Some(12345),
                uid: Some(4242),
                gid: Some(4242),
                ..Default::default()
            };
            tree.set_meta(&b"link".to_vec(), kind, &meta)
                .await
                .unwrap_or_else(|e| panic!("{mode} {kind:?}: {e}"));
            let link = std::fs::symlink_metadata(fx.root.path().join("link")).unwrap();
            assert_eq!(link.mtime(), 12345, "the link itself is stamped");
        }
    }
    assert_eq!(snapshot(fx.outside.path()), before, "the target changed");
}

#[tokio::test]
async fn directory_swapped_for_a_symlink_between_operations_is_caught() {
    let fx = escape_fixture();
    for (mode, tree) in trees(fx.root.path()) {
        let d = format!("d-{mode}");
        tree.mkdir(&d.clone().into_bytes(), 0o755).await.unwrap();
        write_file(&tree, format!("{d}/f").as_bytes(), 0)
            .await
            .unwrap();
        assert!(tree
            .lstat(&format!("{d}/f").into_bytes())
            .await
            .unwrap()
            .is_some());

        // A racing process replaces the directory with a symlink to the outside.
        let real = fx.root.path().join(&d);
        std::fs::rename(&real, fx.root.path().join(format!("{d}.moved"))).unwrap();
        symlink(fx.outside.path().join("b"), &real).unwrap();
        let before = snapshot(fx.outside.path());

        let f = format!("{d}/f").into_bytes();
        assert_parent_symlink(
            "create",
            mode,
            write_file(&tree, format!("{d}/g").as_bytes(), 0).await,
        );
        let meta = SetMeta {
            mode: Some(0o777),
            mtime: Some(1),
            ..SetMeta::default()
        };
        assert_parent_symlink("set_meta", mode, tree.set_meta(&f, Kind::File, &meta).await);
        assert_parent_symlink("unlink", mode, tree.remove_file(&f).await);
        assert_parent_symlink(
            "rename",
            mode,
            tree.rename_replace(&b"x".to_vec(), &f).await,
        );
        assert_eq!(
            snapshot(fx.outside.path()),
            before,
            "{mode}: the outside changed"
        );
    }
}

#[tokio::test]
async fn writer_opened_before_a_swap_keeps_writing_to_its_own_file() {
    let fx = escape_fixture();
    for (mode, tree) in trees(fx.root.path()) {
        let d = format!("w-{mode}");
        tree.mkdir(&d.clone().into_bytes(), 0o755).await.unwrap();
        // Big enough to be created at once, then stamped through its descriptor at finish.
        let mut w = tree
            .create_file(&format!("{d}/big").into_bytes(), 0o600, 1 << 30)
            .await
            .unwrap();
        let real = fx.root.path().join(&d);
        let moved = fx.root.path().join(format!("{d}.moved"));
        std::fs::rename(&real, &moved).unwrap();
        symlink(fx.outside.path().join("b"), &real).unwrap();
        let before = snapshot(fx.outside.path());
        w.write(Bytes::from_static(b"data")).await.unwrap();
        w.finish(&SetMeta {
            mode: Some(0o640),
            mtime: Some(777),
            ..SetMeta::default()
        })
        .await
        .unwrap();
        assert_eq!(snapshot(fx.outside.path()), before, "{mode}");
        let m = std::fs::metadata(moved.join("big")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime(), m.len()), (0o640, 777, 4));
    }
}

#[tokio::test]
async fn ordinary_operations_work_with_both_resolvers() {
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("real")).unwrap();
    // The root itself may be reached through a symlink, as rsync allows.
    symlink("real", base.path().join("dest")).unwrap();
    for (mode, tree) in trees(&base.path().join("dest")) {
        let p = |s: &str| format!("{mode}/{s}").into_bytes();
        assert_eq!(
            tree.lstat(&Vec::new()).await.unwrap().unwrap().kind,
            Kind::Dir
        );
        tree.mkdir(&mode.as_bytes().to_vec(), 0o755).await.unwrap();
        tree.mkdir(&p("sub"), 0o700).await.unwrap();
        // Bigger than the write buffer: created at once and written as it comes.
        let big = vec![7u8; 3 << 20];
        let mut w = tree
            .create_file(&p("sub/.big.tmp"), 0o600, big.len() as u64)
            .await
            .unwrap();
        for c in big.chunks(1 << 18) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        let stamp = SetMeta {
            mode: Some(0o644),
            mtime: Some(1_600_000_000),
            ..SetMeta::default()
        };
        w.finish(&stamp).await.unwrap();
        tree.rename_replace(&p("sub/.big.tmp"), &p("sub/big"))
            .await
            .unwrap();
        write_file(&tree, &p("small"), 7).await.unwrap();
        tree.hard_link(&p("small"), &p("sub/hard")).await.unwrap();
        tree.symlink(&p("sub/link"), b"../small").await.unwrap();
        assert_eq!(
            tree.read_link(&p("sub/link"), None).await.unwrap(),
            b"../small"
        );
        tree.set_meta(&p("sub"), Kind::Dir, &stamp).await.unwrap();

        let mut names: Vec<_> = tree
            .read_dir(&p("sub"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| (String::from_utf8(e.name).unwrap(), e.meta.kind))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            names,
            [
                ("big".into(), Kind::File),
                ("hard".into(), Kind::File),
                ("link".into(), Kind::Symlink)
            ]
        );
        let sub = tree.lstat(&p("sub")).await.unwrap().unwrap();
        assert_eq!((sub.mode, sub.mtime), (0o644, 1_600_000_000));
        let small = tree.lstat(&p("small")).await.unwrap().unwrap();
        assert_eq!(
            (small.size, small.mode, small.mtime, small.nlink),
            (7, 0o644, 1_000_000, 2)
        );

        let mut r = tree
            .open_read(&p("sub/big"), 0, big.len() as u64)
            .await
            .unwrap();
        let mut read = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            read.extend_from_slice(&c);
        }
        assert!(read == big, "{mode}: content differs");
        assert!(tree.lstat(&p("missing/deeper")).await.unwrap().is_none());

        tree.remove_file(&p("sub/link")).await.unwrap();
        tree.remove_file(&p("sub/hard")).await.unwrap();
        tree.remove_file(&p("sub/big")).await.unwrap();
        tree.remove_dir(&p("sub")).await.unwrap();
        assert!(tree.lstat(&p("sub")).await.unwrap().is_none());
    }
    let set = sync_engine::local::openat2_in_use();
    eprintln!("openat2 in use on this kernel: {set:?}");
    assert!(set.is_some(), "the openat2 probe ran");
}

#[tokio::test]
async fn dot_dot_in_a_path_is_refused() {
    let fx = escape_fixture();
    for (mode, tree) in trees(fx.root.path()) {
        for bad in ["../escape", "x/../../escape", ".."] {
            let e = tree
                .mkdir(&bad.as_bytes().to_vec(), 0o755)
                .await
                .expect_err(bad);
            assert!(e.cause.contains(". or .."), "{mode} {bad}: {e}");
        }
    }
}

#[tokio::test]
async fn root_that_is_not_a_directory_is_reported_as_what_it_is() {
    let base = tempfile::tempdir().unwrap();
    std::fs::write(base.path().join("file"), b"x").unwrap();
    symlink("nowhere", base.path().join("dangling")).unwrap();
    symlink("file", base.path().join("filelink")).unwrap();
    for (name, want) in [
        ("file", Some(Kind::File)),
        ("dangling", Some(Kind::Symlink)),
        ("filelink", Some(Kind::Symlink)),
        ("missing", None),
    ] {
        for (mode, tree) in trees(&base.path().join(name)) {
            let got = tree.lstat(&Vec::new()).await.unwrap().map(|m| m.kind);
            assert_eq!(got, want, "{mode} {name}");
        }
    }
}

#[tokio::test]
async fn a_file_built_from_ranges_of_its_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("old"), &old).unwrap();
    for (mode, tree) in trees(dir.path()) {
        let new = format!("new-{mode}").into_bytes();
        let mut w = tree
            .create_file_based_on(&new, 0o644, &b"old".to_vec())
            .await
            .unwrap();
        w.write(Bytes::from_static(b"head")).await.unwrap();
        w.copy_from_base(1000, 2_000_000).await.unwrap();
        w.write(Bytes::from(vec![7u8; 70_000])).await.unwrap();
        w.copy_from_base(0, 10).await.unwrap();
        w.finish(&SetMeta::default()).await.unwrap();

        let mut want = b"head".to_vec();
        want.extend_from_slice(&old[1000..2_001_000]);
        want.extend_from_slice(&[7u8; 70_000]);
        want.extend_from_slice(&old[..10]);
        let got = std::fs::read(dir.path().join(std::str::from_utf8(&new).unwrap())).unwrap();
        assert!(got == want, "{mode}: the new file is not what was built");

        // A range past the old version's end is an error, not a short file.
        let mut w = tree
            .create_file_based_on(
                &format!("short-{mode}").into_bytes(),
                0o644,
                &b"old".to_vec(),
            )
            .await
            .unwrap();
        assert!(w.copy_from_base(2_999_000, 2000).await.is_err(), "{mode}");
    }
    assert_eq!(std::fs::read(dir.path().join("old")).unwrap(), old);
}

/// `--partial-dir=/DIR` on a pull: a file finished in a tree of its own is renamed into the
/// destination with each end resolved in its own tree, so a symlinked parent on either side
/// is refused and nothing outside either root changes.
#[tokio::test]
async fn rename_between_two_trees_stays_inside_both() {
    let fx = escape_fixture();
    let partials = tempfile::tempdir().unwrap();
    let before = snapshot(fx.outside.path());
    for (mode, dest) in trees(fx.root.path()) {
        let part = LocalTree::new(partials.path());
        let from = format!("{mode}-part").into_bytes();
        write_file(&part, &from, 7).await.unwrap();
        let to = format!("{mode}-moved").into_bytes();

        // Into a symlinked parent of the destination: refused, the partial stays.
        let (anchor, into_link) = (part.anchor(), [&b"a/b/"[..], &to].concat());
        let r = dest.rename_replace_from(&anchor, &from, &into_link).await;
        assert_parent_symlink("rename into", mode, r);
        assert!(partials.path().join(mode.to_string() + "-part").exists());

        // Out of a symlinked parent of the partial tree: refused too.
        symlink(fx.outside.path(), partials.path().join("l")).unwrap();
        let r = dest
            .rename_replace_from(&anchor, &b"l/b/f".to_vec(), &to)
            .await;
        assert_parent_symlink("rename out of", mode, r);
        std::fs::remove_file(partials.path().join("l")).unwrap();

        dest.rename_replace_from(&anchor, &from, &to).await.unwrap();
        let moved = fx.root.path().join(mode.to_string() + "-moved");
        assert_eq!(std::fs::read(&moved).unwrap(), b"written");
        assert_eq!(std::fs::metadata(&moved).unwrap().mtime(), 1_000_000);
        assert!(!partials.path().join(mode.to_string() + "-part").exists());
    }
    assert_eq!(snapshot(fx.outside.path()), before);
}

//! `--remove-source-files` as a library option: a source written to while it was being
//! copied is kept (as rsync keeps it), and one that stayed as it was goes.

use std::path::PathBuf;
use std::sync::Arc;

use sync_engine::{
    CollectingReporter, Item, LocalTree, Progress, RemoveSource, SourceContent, SourceRoot,
    SyncJob, SyncOptions, Tree,
};

/// Changes the mtime of one source file as its copy starts: someone writing to it meanwhile.
struct Toucher {
    src: PathBuf,
    name: &'static [u8],
}

impl Progress for Toucher {
    fn file_started(&self, item: &Item) {
        if item.path == self.name {
            let path = self.src.join(std::str::from_utf8(self.name).unwrap());
            sync_engine::local::set_mtime_nofollow(&path, 1_600_000_000).unwrap();
        }
    }
}

#[tokio::test]
async fn a_source_changed_during_its_copy_is_kept() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    for name in ["steady", "touched"] {
        let path = src.path().join(name);
        std::fs::write(&path, name).unwrap();
        sync_engine::local::set_mtime_nofollow(&path, 1_500_000_000).unwrap();
    }
    let job = SyncJob {
        progress: Some(Arc::new(Toucher {
            src: src.path().to_path_buf(),
            name: b"touched",
        })),
        ..SyncJob::new(
            vec![SourceRoot {
                tree: Arc::new(LocalTree::new(src.path())) as Arc<dyn Tree>,
                content: SourceContent::Contents,
            }],
            LocalTree::new(dst.path()),
        )
    };
    let opts = SyncOptions {
        remove_source: RemoveSource::Synced,
        ..SyncOptions::archive()
    };
    let reporter = CollectingReporter::default();
    let outcome = sync_engine::run(&job, &opts, &reporter).await;
    assert!(outcome.fatal.is_none());
    assert_eq!(outcome.errors, 1);
    let errors = reporter.errors.lock().unwrap().clone();
    assert!(
        errors[0].contains("\"touched\"") && errors[0].contains("changed since it was synced"),
        "{errors:?}"
    );
    assert!(src.path().join("touched").exists());
    assert!(!src.path().join("steady").exists());
    assert_eq!(std::fs::read(dst.path().join("steady")).unwrap(), b"steady");
    assert_eq!(
        std::fs::read(dst.path().join("touched")).unwrap(),
        b"touched"
    );
}

#[tokio::test]
async fn a_dry_run_and_the_default_remove_nothing() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"f").unwrap();
    for opts in [
        SyncOptions::archive(),
        SyncOptions {
            remove_source: RemoveSource::Synced,
            dry_run: true,
            ..SyncOptions::archive()
        },
    ] {
        let job = SyncJob::new(
            vec![SourceRoot::contents(LocalTree::new(src.path()))],
            LocalTree::new(dst.path()),
        );
        let reporter = CollectingReporter::default();
        let outcome = sync_engine::run(&job, &opts, &reporter).await;
        assert!(outcome.fatal.is_none() && outcome.errors == 0);
        assert!(src.path().join("f").exists());
    }
}

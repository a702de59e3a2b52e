//! The progress hook hears about every file as its bytes move, and its running totals end
//! where the run's statistics do.

use std::sync::{Arc, Mutex};

use sync_engine::{
    CollectingReporter, Item, LocalTree, Progress, SourceContent, SourceRoot, SyncJob, SyncOptions,
    Tree,
};

#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<(Vec<u8>, u64)>>,
    bytes: Mutex<Vec<(Vec<u8>, u64, u64)>>,
    walked: Mutex<Vec<(u64, u64, u64)>>,
    walk_done: Mutex<u32>,
}

impl Progress for Recorder {
    fn walked(&self, entries: u64, bytes: u64, working: u64) {
        self.walked.lock().unwrap().push((entries, bytes, working));
    }
    fn walk_done(&self) {
        *self.walk_done.lock().unwrap() += 1;
    }
    fn file_started(&self, item: &Item) {
        let size = item.meta.as_ref().map(|m| m.size).unwrap();
        self.started.lock().unwrap().push((item.path.clone(), size));
    }
    fn file_bytes(&self, path: &Vec<u8>, done: u64, size: u64) {
        self.bytes.lock().unwrap().push((path.clone(), done, size));
    }
}

#[tokio::test]
async fn every_file_is_followed_to_its_end_and_totals_match_the_stats() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    // Several chunks' worth, so that progress is told more than once.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.path().join("big"), &big).unwrap();
    std::fs::write(src.path().join("d/small"), b"hello").unwrap();

    let recorder = Arc::new(Recorder::default());
    let job = SyncJob {
        sources: vec![SourceRoot {
            tree: Arc::new(LocalTree::new(src.path())) as Arc<dyn Tree>,
            content: SourceContent::Contents,
        }],
        dest: Arc::new(LocalTree::new(dst.path())),
        dest_file_name: None,
        dest_is_dir: true,
        tasks_per_lane: 4,
        index: None,
        partial_dir_tree: None,
        temp_dir_tree: None,
        progress: Some(recorder.clone()),
        backup: None,
        link_dest: None,
    };
    let opts = SyncOptions {
        recursive: true,
        whole_file: true,
        ..Default::default()
    };
    let reporter = CollectingReporter::default();
    let outcome = sync_engine::run(&job, &opts, &reporter).await;
    assert!(outcome.fatal.is_none() && outcome.errors == 0);

    let mut started = recorder.started.lock().unwrap().clone();
    started.sort();
    assert_eq!(
        started,
        [
            (b"big".to_vec(), big.len() as u64),
            (b"d/small".to_vec(), 5)
        ]
    );

    let bytes = recorder.bytes.lock().unwrap().clone();
    for name in [&b"big"[..], b"d/small"] {
        let seen: Vec<u64> = bytes
            .iter()
            .filter(|(p, _, _)| p == name)
            .map(|(_, done, _)| *done)
            .collect();
        let size = bytes.iter().find(|(p, _, _)| p == name).unwrap().2;
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&size));
    }
    let big_ticks = bytes.iter().filter(|(p, _, _)| p == b"big").count();
    assert!(big_ticks > 1, "a big file is told about while it moves");

    let walked = recorder.walked.lock().unwrap().clone();
    let (entries, total, _) = walked.iter().copied().max_by_key(|(e, _, _)| *e).unwrap();
    assert_eq!(
        (entries, total),
        (outcome.stats.files, outcome.stats.total_size)
    );
    assert_eq!(walked.last().unwrap().2, 0, "no task is left at the end");
    assert_eq!(*recorder.walk_done.lock().unwrap(), 1);

    // The items carry what output formats need.
    let items = reporter.items.lock().unwrap();
    let big_item = items.iter().find(|i| i.path == b"big").unwrap();
    assert_eq!(big_item.meta.as_ref().unwrap().size, big.len() as u64);
    assert_eq!(big_item.transferred + big_item.matched, big.len() as u64);
}

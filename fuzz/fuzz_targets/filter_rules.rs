//! Fuzzes the filter-rule parser and matcher: any rule text must parse or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_engine::filter::ListKind;
use sync_engine::FilterRules;

const PATHS: [(&[u8], bool); 8] = [
    (b"a.o", false),
    (b"dir", true),
    (b"dir/sub/file.c", false),
    (b"dir/sub", true),
    (b".rsync-filter", false),
    (b"keep", false),
    (b"caf\xe9/x", false),
    (b"", true),
];

fuzz_target!(|data: &[u8]| {
    // Merge rules read the file they name at parse time; keep the fuzzer away from device
    // and proc files that never end. `-` means stdin, which the fuzz script points at
    // /dev/null.
    if [&b"/dev"[..], b"/proc"]
        .iter()
        .any(|bad| data.windows(bad.len()).any(|w| w == *bad))
    {
        return;
    }
    let Some((&selector, text)) = data.split_first() else {
        return;
    };

    let mut rules = FilterRules::new();
    let parsed = match selector % 4 {
        0 => rules.add_filter_rule(text).is_ok(),
        1 => rules
            .add_from_reader(ListKind::Filter, text, selector & 4 != 0, "fuzz")
            .is_ok(),
        2 => rules
            .add_from_reader(ListKind::Exclude, text, selector & 4 != 0, "fuzz")
            .is_ok(),
        _ => {
            rules.add_exclude(text);
            rules.add_include(text);
            true
        }
    };
    if !parsed {
        return;
    }
    if selector & 8 != 0 {
        rules.set_sender_root(b"/src/root");
        rules.set_receiver_root(b"/");
    }
    let deleting = rules.without_receiver_excludes();
    for (path, is_dir) in PATHS {
        let _ = rules.excluded_on_sender(path, is_dir);
        let _ = rules.protected_on_receiver(path, is_dir);
        let _ = rules.protected_in_deleted_dir(path, is_dir);
        let _ = deleting.protected_on_receiver(path, is_dir);
        // Whatever matched must print back as a rule.
        if let Some(rule) = rules.sender_match(path, is_dir) {
            let _ = rule.to_rule_bytes();
        }
    }
    // The fuzzer's own bytes as a path: patterns against hostile names.
    let _ = rules.excluded_on_sender(text, false);
});

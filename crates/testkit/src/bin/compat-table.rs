//! Writes `docs/compatibility.md` from the compatibility suite's latest results.
//!
//! ```text
//! compat-table [RESULTS.json [OUTPUT.md]]
//! ```
//!
//! Defaults: `target/compat-results.json` and `docs/compatibility.md`, relative to the
//! workspace root.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args_os().skip(1);
    let results = args
        .next()
        .map_or_else(|| root.join("target/compat-results.json"), PathBuf::from);
    let output = args
        .next()
        .map_or_else(|| root.join("docs/compatibility.md"), PathBuf::from);
    let text = std::fs::read_to_string(&results).unwrap_or_else(|e| {
        eprintln!(
            "compat-table: cannot read {}: {e} (run the suite first: scripts/compat.sh)",
            results.display()
        );
        std::process::exit(1);
    });
    let page = testkit::compat::render(&text).unwrap_or_else(|e| {
        eprintln!("compat-table: {}: {e}", results.display());
        std::process::exit(1);
    });
    if let Err(e) = std::fs::write(&output, page) {
        eprintln!("compat-table: cannot write {}: {e}", output.display());
        std::process::exit(1);
    }
    println!("wrote {}", output.display());
}

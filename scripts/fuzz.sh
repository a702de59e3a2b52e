#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for SECONDS (default 60); exits non-zero if one
# crashes. Only a stable toolchain is needed: RUSTC_BOOTSTRAP lets it take cargo-fuzz's -Z flags.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

targets=(packet_decoder filter_rules)
cargo fuzz build
for t in "${targets[@]}"; do
    echo "fuzzing $t for ${seconds}s"
    # stdin is /dev/null: a `merge -` rule found by the fuzzer reads it and must not block.
    cargo fuzz run "$t" -- -max_total_time="$seconds" -print_final_stats=1 </dev/null
done

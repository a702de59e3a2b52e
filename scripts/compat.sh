#!/usr/bin/env bash
# Runs the compatibility suite (the same scenarios against every SFTP server the test kit can
# start) and regenerates docs/compatibility.md from its results, even when some server failed,
# so the page always shows the latest run. Needs root and the packages scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the compatibility suite starts servers confined to their directories and must run as root" >&2
    exit 1
fi
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    export PATH="$CARGO_HOME/bin:$PATH"
fi
started=$(date +%s)
status=0
cargo test --locked -p sftpsync --test e2e compat:: || status=$?
echo "compatibility suite: $(( $(date +%s) - started )) s"
cargo run --locked --quiet -p testkit --bin compat-table
exit "$status"

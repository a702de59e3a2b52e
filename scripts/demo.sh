#!/usr/bin/env bash
# Shows sftpsync doing what rsync cannot: syncing to a server that allows SFTP and nothing else.
#
#   sudo bash scripts/demo.sh
#
# Run as root on Debian 12 (or similar) with a Rust toolchain. It installs openssh-server,
# openssh-client and rsync if they are missing, builds sftpsync, starts a throwaway SFTP-only
# sshd on 127.0.0.1 with scripts/demo-server.sh (ForceCommand internal-sftp + ChrootDirectory),
# and then:
#   1. shows plain rsync failing against it with its protocol error;
#   2. pushes a small tree with sftpsync and checks the result with a local rsync -ani;
#   3. changes the tree and pushes again (incremental, with --delete);
#   4. pulls the tree back into another directory and checks it the same way.
# The server and all temporary files are removed on exit. Exit status 0 means every check passed.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BIN=$REPO/target/release/sftpsync
# Where demo-server.sh keeps the server (chroot, keys, config). Must not be under /tmp.
export SFTPSYNC_DEMO_DIR=${SFTPSYNC_DEMO_DIR:-/srv/sftpsync-demo}

die() {
    echo "demo: $*" >&2
    exit 1
}

step() {
    printf '\n==> %s\n' "$*"
}

# Prints a command the way one would type it.
show() {
    local arg out="$"
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:@=+,-]+$ ]]; then
            out+=" $arg"
        else
            out+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    echo "$out"
}

run() {
    show "$@"
    "$@"
}

# Fails unless `rsync -ani --delete SRC/ DST/` (run locally, rsync as the judge) has nothing to do.
check_in_sync() { # SRC DST
    local diff
    echo "$ rsync -ani --delete $1/ $2/"
    diff=$(rsync -ani --delete "$1/" "$2/")
    if [[ -n $diff ]]; then
        echo "$diff"
        die "NOT in sync: rsync would still change the lines above"
    fi
    echo "(no output) in sync"
}

# Sets every mtime under $1 (symlinks included, not followed) to a whole second. SFTP v3 carries
# whole seconds only, so a sub-second source mtime could never be reproduced on the server, and
# rsync, comparing two local trees, would report the difference.
whole_second_mtimes() {
    local path
    while IFS= read -r -d '' path; do
        touch -h -d "@$(stat -c %Y "$path")" "$path"
    done < <(find "$1" -depth -print0)
}

[[ $EUID -eq 0 ]] || die "run as root (the demo server needs a chroot and a system user): sudo bash $0"

step "Checking for openssh-server, openssh-client and rsync"
need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
if ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then need+=(openssh-client); fi
command -v rsync >/dev/null || need+=(rsync)
if ((${#need[@]} > 0)); then
    echo "installing: ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
else
    echo "all present"
fi

step "Building sftpsync (cargo build --release)"
# Under sudo, build as the user who owns the checkout so that target/ does not end up owned by
# root, and look for their rustup toolchain, which sudo's PATH does not include.
owner=$(stat -c %U "$REPO")
if [[ -n ${SUDO_USER:-} && $SUDO_USER != root && $owner == "$SUDO_USER" ]]; then
    # shellcheck disable=SC2016 # expanded by the inner shell
    sudo -u "$SUDO_USER" -H bash -c 'cd "$1" && PATH=$HOME/.cargo/bin:$PATH && cargo build --release' _ "$REPO"
else
    PATH=$HOME/.cargo/bin:$PATH
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (https://rustup.rs)"
    cargo build --release
fi
[[ -x $BIN ]] || die "$BIN was not built"

WORK=$(mktemp -d /tmp/sftpsync-demo.XXXXXX)
server_started=0
cleanup() {
    local rc=$?
    if ((server_started)); then
        "$REPO/scripts/demo-server.sh" stop || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Starting a throwaway SFTP-only OpenSSH server (scripts/demo-server.sh start)"
if "$REPO/scripts/demo-server.sh" env >/dev/null 2>&1; then
    die "a demo server is already running in $SFTPSYNC_DEMO_DIR; stop it first (scripts/demo-server.sh stop)"
fi
server_started=1
env_lines=$("$REPO/scripts/demo-server.sh" start)
eval "$env_lines"
echo "$env_lines"
echo "sshd_config for the user $SFTP_USER:"
sed -n '/^Match User/,$p' "$SFTPSYNC_DEMO_DIR/sshd_config"

SRC=$WORK/src
PULL=$WORK/pulled
step "Creating a sample tree in $SRC"
mkdir -p "$SRC/docs/notes"
printf 'hello from sftpsync\n' >"$SRC/hello.txt"
printf 'a file whose name has a space\n' >"$SRC/with space.txt"
printf '#!/bin/sh\necho run\n' >"$SRC/run.sh"
chmod 0755 "$SRC/run.sh"
printf 'draft, to be deleted later\n' >"$SRC/docs/draft.md"
seq 1 20000 >"$SRC/docs/numbers.txt"
printf 'nested\n' >"$SRC/docs/notes/todo.txt"
ln -s docs/numbers.txt "$SRC/numbers-link"
chmod 0755 "$SRC"
# The files on the server belong to the SFTP user, who cannot chown; give the source the same
# owner so that rsync's -a ownership check compares like with like.
chown -hR "$SFTP_USER:$(id -g "$SFTP_USER")" "$SRC"
whole_second_mtimes "$SRC"
ls -laR "$SRC"

step "Plain rsync against the SFTP-only server (expected to fail)"
show rsync -a "$SRC/" "$SFTP_USER@127.0.0.1:dst/" -e "$SSH_CMD"
rc=0
timeout 60 rsync -a "$SRC/" "$SFTP_USER@127.0.0.1:dst/" -e "$SSH_CMD" || rc=$?
if ((rc == 0)); then
    die "rsync unexpectedly succeeded: the server is not SFTP-only"
fi
echo "rsync failed with exit code $rc, as expected: the server will not run rsync's remote half."

step "Pushing with sftpsync"
run "$BIN" -ai --delete -e "$SSH_CMD" "$SRC/" "$SFTP_USER@127.0.0.1:dst/"

step "What the server has now, seen from the host ($DATA/dst)"
ls -laR "$DATA/dst"

step "Checking the server copy against the source with local rsync"
check_in_sync "$SRC" "$DATA/dst"

step "Changing the source: edit hello.txt, delete docs/draft.md, add new.txt"
printf 'hello again, now a little longer\n' >>"$SRC/hello.txt"
rm "$SRC/docs/draft.md"
printf 'added after the first sync\n' >"$SRC/new.txt"
chown -h "$SFTP_USER:$(id -g "$SFTP_USER")" "$SRC/new.txt"
# A later whole second than anything the first run saw, so the change is visible by mtime too.
sleep 1
touch "$SRC/hello.txt" "$SRC/new.txt"
whole_second_mtimes "$SRC"

step "Pushing again: only the differences are sent, and the deleted file goes"
run "$BIN" -ai --delete -e "$SSH_CMD" "$SRC/" "$SFTP_USER@127.0.0.1:dst/"

step "Checking the server copy again"
check_in_sync "$SRC" "$DATA/dst"

step "Pushing once more: nothing to do"
run "$BIN" -ai --delete -e "$SSH_CMD" "$SRC/" "$SFTP_USER@127.0.0.1:dst/"

step "Pulling the tree back into $PULL with sftpsync"
run "$BIN" -ai -e "$SSH_CMD" "$SFTP_USER@127.0.0.1:dst/" "$PULL/"

step "Checking the pulled copy against the source with local rsync"
check_in_sync "$SRC" "$PULL"

step "Done: push, incremental push and pull all verified by rsync"

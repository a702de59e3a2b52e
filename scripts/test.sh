#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit, integration and end-to-end tests.
# The end-to-end tests start throwaway servers (OpenSSH sshd, ProFTPD, gesftpserver, rclone,
# asyncssh) confined to their directories and running as a test user, which needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/lib/openssh/sftp-server ] || need+=(openssh-sftp-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v make >/dev/null || need+=(make)
[ -x /usr/sbin/proftpd ] || need+=(proftpd-core)
[ -f /usr/lib/proftpd/mod_sftp.so ] || need+=(proftpd-mod-crypto)
[ -x /usr/libexec/gesftpserver ] || need+=(gesftpserver)
[ -x /usr/bin/rclone ] || need+=(rclone)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${need[*]} (run as root or install them first)" >&2
        exit 1
    fi
    apt-get update -q
    # The tests start their own ProFTPD; keep the package's postinst from starting the system
    # one (a policy-rc.d exiting 101 denies service starts), and remove only a policy we made.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" ||
        { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
# asyncssh for the compatibility suite's Python server, pinned, where the unprivileged test
# user's python3 finds it (testkit/src/asyncssh.rs); --target keeps it out of Debian's python.
asyncssh_lib=/usr/local/lib/sftpsync-test-python
asyncssh_version=2.24.1
if ! PYTHONPATH=$asyncssh_lib /usr/bin/python3 -c "import asyncssh, sys; sys.exit(asyncssh.__version__ != '$asyncssh_version')" 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "asyncssh $asyncssh_version missing from $asyncssh_lib (run as root to install it)" >&2
        exit 1
    fi
    rm -rf "$asyncssh_lib"
    /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$asyncssh_lib" "asyncssh==$asyncssh_version"
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "the end-to-end tests start sshd with a chroot and must run as root" >&2
    exit 1
fi

# Under sudo, use the invoking user's rustup toolchain rather than expecting one for root.
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    export PATH="$CARGO_HOME/bin:$PATH"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

#!/usr/bin/env bash
# Starts or stops a throwaway SFTP-only OpenSSH server on 127.0.0.1, set up like the test
# fixture in crates/testkit/src/server.rs (same user, same sshd_config shape, chroot with the
# login directory /data), so demos and manual checks run against what the tests use.
#
# Run as root on Debian with openssh-server installed.
#
#   eval "$(scripts/demo-server.sh start)"   # prints `export` lines, see below
#   sftpsync -av src/ "$REMOTE:dst/" -e "$SSH_CMD"
#   ls -la "$DATA/dst"                        # what the server wrote, seen locally
#   scripts/demo-server.sh env               # print the export lines again
#   scripts/demo-server.sh stop              # kill sshd (by its recorded PID), delete everything
#
# Exported: PORT, KEY (client private key), KNOWN_HOSTS, CHROOT, DATA (= $CHROOT/data, the
# remote login directory), SFTP_USER, REMOTE (user@127.0.0.1) and SSH_CMD (for -e).
# Everything lives in $SFTPSYNC_DEMO_DIR (default /srv/sftpsync-demo). It cannot be under
# /tmp: sshd refuses a chroot any of whose path components is group/world-writable or not
# owned by root.
#
# Where PID 1 does not reap orphans (containers such as this project's machines), each SFTP
# session leaves one defunct sshd behind: OpenSSH's per-connection monitor exits before its
# child. Harmless for a demo; the Rust fixture reaps them itself.
set -euo pipefail

BASE=${SFTPSYNC_DEMO_DIR:-/srv/sftpsync-demo}
TEST_USER=sftpsynctest
LOGIN_DIR=/data
NOLOGIN=/usr/sbin/nologin
SSHD=/usr/sbin/sshd
HOST=127.0.0.1

die() {
    echo "demo-server: $*" >&2
    exit 1
}
say() { echo "demo-server: $*" >&2; }

# Paths end up unquoted inside SSH_CMD and sshd_config, so keep them boring.
[[ $BASE =~ ^/[A-Za-z0-9/._-]+$ ]] || die "SFTPSYNC_DEMO_DIR must be an absolute path of [A-Za-z0-9/._-]"

CHROOT=$BASE/chroot
DATA=$CHROOT${LOGIN_DIR}
PIDFILE=$BASE/sshd.pid
ENVFILE=$BASE/env

# Prints the PID of our running sshd, or nothing.
running_pid() {
    [[ -f $PIDFILE ]] || return 0
    local pid
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # Only a process that is sshd *and* runs our config counts: the PID may have been reused.
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-f $BASE/sshd_config"; then
        echo "$pid"
    fi
}

ensure_user() {
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir "$LOGIN_DIR" --shell "$NOLOGIN" "$TEST_USER"
    fi
    # '*' rather than useradd's '!': without PAM, sshd treats '!' as a locked account and
    # refuses even key logins. Home = login dir, or sshd complains it cannot chdir.
    usermod -p '*' -d "$LOGIN_DIR" -s "$NOLOGIN" "$TEST_USER"
}

# Fails unless every component of $1 is a root-owned directory not writable by group/others.
check_chroot_path() {
    local path=$1 p="" part
    local -a parts
    IFS=/ read -ra parts <<<"${path#/}"
    for part in "" "${parts[@]}"; do
        p=$p/$part
        p=${p//\/\//\/}
        local owner perms
        owner=$(stat -c %u "$p")
        perms=$(stat -c %a "$p")
        [[ $owner == 0 ]] || die "$p is not owned by root: sshd will refuse the chroot"
        ((8#$perms & 8#022)) && die "$p is group/world-writable: sshd will refuse the chroot"
    done
    return 0
}

openssh_at_least() { # MAJOR MINOR
    local v
    # Older sshd has no -V and prints its version in the usage message instead.
    v=$({ "$SSHD" -V 2>&1 || true; } | grep -o 'OpenSSH_[0-9]*\.[0-9]*' | head -n1) || return 1
    [[ -n $v ]] || return 1
    v=${v#OpenSSH_}
    local major=${v%.*} minor=${v#*.}
    ((major > $1 || (major == $1 && minor >= $2)))
}

port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

write_config() { # PORT
    local penalties=""
    # 9.8+ would otherwise block 127.0.0.1 for a while after failed or dropped connections.
    if openssh_at_least 9 8; then penalties="PerSourcePenalties no"; fi
    cat >"$BASE/sshd_config" <<EOF
# Written by scripts/demo-server.sh for a throwaway demo server. Not a production config.
Port $1
ListenAddress $HOST
AddressFamily inet
HostKey $BASE/host_ed25519
PidFile $PIDFILE
UsePAM no
StrictModes no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
AuthorizedKeysFile $BASE/authorized_keys
AllowUsers $TEST_USER
Subsystem sftp internal-sftp
LogLevel VERBOSE
UseDNS no
PrintMotd no
MaxStartups 200
MaxSessions 100
$penalties
Match User $TEST_USER
    ForceCommand internal-sftp -d $LOGIN_DIR
    ChrootDirectory $CHROOT
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    PermitTunnel no
    PermitTTY no
EOF
}

write_env() { # PORT
    local port=$1
    local ssh_cmd="ssh -F /dev/null -p $port -i $BASE/client_ed25519 -o IdentitiesOnly=yes"
    ssh_cmd+=" -o UserKnownHostsFile=$BASE/known_hosts -o StrictHostKeyChecking=yes"
    ssh_cmd+=" -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
    cat >"$ENVFILE" <<EOF
export PORT=$port
export KEY=$BASE/client_ed25519
export KNOWN_HOSTS=$BASE/known_hosts
export CHROOT=$CHROOT
export DATA=$DATA
export SFTP_USER=$TEST_USER
export REMOTE=$TEST_USER@$HOST
export SSH_CMD='$ssh_cmd'
EOF
}

start() {
    [[ $EUID -eq 0 ]] || die "must run as root (chroot, user creation)"
    [[ -x $SSHD ]] || die "$SSHD missing: apt-get install -y openssh-server"
    if [[ -n $(running_pid) ]]; then
        say "already running (pid $(running_pid))"
        cat "$ENVFILE"
        return
    fi

    ensure_user
    # sshd's privilege-separation directory; Debian creates it only when the service starts.
    install -d -m 0755 -o root -g root /run/sshd

    rm -rf "$BASE"
    mkdir -p "$BASE"
    chmod 0755 "$BASE"
    install -d -m 0755 -o root -g root "$CHROOT"
    check_chroot_path "$CHROOT"
    install -d -m 0755 -o "$TEST_USER" -g "$(id -g "$TEST_USER")" "$DATA"

    ssh-keygen -q -t ed25519 -N '' -C sftpsync-demo-host -f "$BASE/host_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C sftpsync-demo-client -f "$BASE/client_ed25519"
    # Read by sshd as the test user, hence world-readable; root-owned so the user cannot add keys.
    cut -d' ' -f1,2 "$BASE/client_ed25519.pub" >"$BASE/authorized_keys"
    chmod 0644 "$BASE/authorized_keys"

    local attempt port
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        echo "[$HOST]:$port $(cut -d' ' -f1,2 "$BASE/host_ed25519.pub")" >"$BASE/known_hosts"
        write_config "$port"
        # Without -D, sshd binds before daemonizing, so a zero exit means it is listening;
        # a port taken in the meantime makes it exit non-zero, and we try another.
        if "$SSHD" -f "$BASE/sshd_config" -E "$BASE/sshd.log"; then
            for _ in $(seq 50); do
                [[ -s $PIDFILE ]] && break
                sleep 0.1
            done
            [[ -n $(running_pid) ]] || die "sshd started but $PIDFILE is missing; see $BASE/sshd.log"
            write_env "$port"
            say "sshd pid $(running_pid) listening on $HOST:$port, chroot $CHROOT, log $BASE/sshd.log"
            cat "$ENVFILE"
            return
        fi
        say "attempt $attempt: sshd could not start on port $port:"
        tail -n 5 "$BASE/sshd.log" >&2 || true
    done
    die "could not start sshd; see $BASE/sshd.log"
}

stop() {
    local pid
    pid=$(running_pid)
    if [[ -n $pid ]]; then
        kill -TERM "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
        say "stopped sshd pid $pid"
    else
        say "not running"
    fi
    rm -rf "$BASE"
}

case ${1:-} in
start) start ;;
stop) stop ;;
env)
    [[ -n $(running_pid) ]] || die "not running"
    cat "$ENVFILE"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac

#!/usr/bin/env python3
"""Benchmark sftpsync against rsync, rclone, lftp, sftp and sshfs+rsync over a delayed link.

Started by bench/run (which installs the tools and builds the binaries); see bench/README.md.
Python 3.11 standard library only. Must run as root: it creates a user, starts two sshd
instances, mounts FUSE and writes under /srv.

Raw results go to bench/results.json, keyed by scale (full/quick), then by
"set/direction/tool/rtt"; bench/RESULTS.md is regenerated from that file after every
measured cell, so partial runs merge.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import fcntl
import json
import os
import platform
import pwd
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_JSON = BENCH_DIR / "results.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
# Hand-written reading of the results (why a target is or is not met), placed under the
# targets table when present.
ANALYSIS_MD = BENCH_DIR / "ANALYSIS.md"

# Everything the benchmark creates lives here. Not under /tmp: sshd refuses a ChrootDirectory
# with a group- or world-writable component.
ROOT = Path("/srv/sftpsync-bench")
CHROOT = ROOT / "chroot"
DATA = CHROOT / "data"  # the SFTP login dir (/data in the chroot); also the rsync target
LOCAL = ROOT / "local"  # pull destinations
MOUNT = ROOT / "mnt"  # sshfs mount point
SETS_DIR = ROOT / "sets"  # pristine data sets, never written by a tool
RUN_DIR = ROOT / "run"  # configs, keys, logs, proxy stats
USER = "sftpsyncbench"
HOST = "127.0.0.1"
SFTP_LOGIN = "/data"
TIME = "/usr/bin/time"  # GNU time, for the peak RSS of measured commands

ALL_TOOLS = ["sftpsync", "rsync", "rclone", "lftp", "lftp-p8", "sftp", "sshfs-rsync"]
# lftp without --parallel and sshfs+rsync need minutes for even a few hundred files at
# RTT 20 (they wait for one reply at a time), so quick mode leaves them out.
QUICK_TOOLS = ["sftpsync", "rsync", "rclone", "lftp-p8", "sftp"]
ALL_SETS = ["A", "B", "C", "D"]
ALL_RTTS = [0, 20, 100]
TOOL_LABEL = {
    "sftpsync": "sftpsync",
    "rsync": "rsync over ssh",
    "rclone": "rclone sync",
    "lftp": "lftp mirror",
    "lftp-p8": "lftp mirror --parallel=8",
    "sftp": "sftp -b put/get -r",
    "sshfs-rsync": "sshfs + rsync",
}
SET_LABEL = {
    "A": "A: many small files, empty destination",
    "B": "B: one big file, empty destination",
    "C": "C: A+B after changes (1% small files changed, 100 x 4 KiB rewritten in the big "
    "file, files added and deleted)",
    "D": "D: A+B, nothing changed",
}


@dataclass
class Scale:
    name: str
    files: int
    dirs: int
    big_mib: int
    changed_pct: float
    added: int
    deleted: int
    regions: int

    def params(self) -> dict:
        return dict(self.__dict__)


FULL = Scale("full", 10_000, 100, 1024, 1.0, 50, 50, 100)
QUICK = Scale("quick", 300, 10, 64, 1.0, 10, 10, 100)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*argv, check=True, capture=False, **kw) -> subprocess.CompletedProcess:
    """Runs a helper command (not a measured one)."""
    return subprocess.run(
        [str(a) for a in argv],
        check=check,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Data sets


def set_mtime(path: Path, t: int) -> None:
    os.utime(path, (t, t), follow_symlinks=False)


def write_random(path: Path, size: int, rng: random.Random) -> None:
    path.write_bytes(rng.randbytes(size))
    os.chmod(path, 0o644)


def small_name(i: int, dirs: int) -> str:
    return f"d{i % dirs:03d}/f{i:05d}.bin"


def generate_sets(scale: Scale) -> Path:
    """Creates A, B, Cold (= A+B) and Cnew (= Cold changed) once per scale parameters."""
    base = SETS_DIR / scale.name
    marker = base / "params.json"
    if marker.exists() and json.loads(marker.read_text()) == scale.params():
        return base
    log(f"generating data sets for scale {scale.name} in {base}")
    if base.exists():
        shutil.rmtree(base)
    # Server-side copies of the old sets (pull sources) are stale now.
    for stale in DATA.glob(f"src-{scale.name}-*"):
        shutil.rmtree(stale)
    for stale in DATA.glob(f".src-{scale.name}-*.complete"):
        stale.unlink()
    base.mkdir(parents=True)
    rng = random.Random(20240601)
    # Whole-second mtimes well in the past: SFTP v3 carries seconds only, so every tool can
    # reproduce them exactly, and "nothing changed" really means nothing changed.
    t0 = 1_700_000_000

    a = base / "A"
    for d in range(scale.dirs):
        (a / f"d{d:03d}").mkdir(parents=True)
    for i in range(scale.files):
        p = a / small_name(i, scale.dirs)
        write_random(p, rng.randint(1024, 16 * 1024), rng)
        set_mtime(p, t0 + i)
    for d in range(scale.dirs):
        set_mtime(a / f"d{d:03d}", t0)
    set_mtime(a, t0)

    b = base / "B"
    b.mkdir()
    with open(b / "big.bin", "wb") as f:
        for _ in range(scale.big_mib):
            f.write(rng.randbytes(1 << 20))
    os.chmod(b / "big.bin", 0o644)
    set_mtime(b / "big.bin", t0)
    set_mtime(b, t0)

    # Cold = A + B as one tree. Hard links save space and time; pristine trees are only ever
    # read (destinations are real copies), so sharing inodes is harmless.
    cold = base / "Cold"
    cold.mkdir()
    sh("cp", "-al", a, cold / "small")
    os.link(b / "big.bin", cold / "big.bin")
    set_mtime(cold, t0)

    # Cnew = Cold after the changes of scenario C.
    cnew = base / "Cnew"
    sh("cp", "-al", cold, cnew)
    t1 = t0 + 10_000_000
    order = list(range(scale.files))
    rng.shuffle(order)
    n_changed = max(1, round(scale.files * scale.changed_pct / 100))
    changed, deleted = order[:n_changed], order[n_changed : n_changed + scale.deleted]
    for i in changed:
        p = cnew / "small" / small_name(i, scale.dirs)
        size = p.stat().st_size
        p.unlink()  # break the hard link before writing
        write_random(p, size, rng)
        set_mtime(p, t1)
    for i in deleted:
        (cnew / "small" / small_name(i, scale.dirs)).unlink()
    for k in range(scale.added):
        p = cnew / "small" / f"d{k % scale.dirs:03d}" / f"new{k:05d}.bin"
        write_random(p, rng.randint(1024, 16 * 1024), rng)
        set_mtime(p, t1)
    big = cnew / "big.bin"
    big.unlink()
    shutil.copyfile(b / "big.bin", big)
    os.chmod(big, 0o644)
    size = scale.big_mib << 20
    with open(big, "r+b") as f:
        for off in sorted(rng.randrange(0, size // 4096) * 4096 for _ in range(scale.regions)):
            f.seek(off)
            f.write(rng.randbytes(4096))
    set_mtime(big, t1)
    for d in range(scale.dirs):
        set_mtime(cnew / "small" / f"d{d:03d}", t1)
    set_mtime(cnew / "small", t0)
    set_mtime(cnew, t0)
    sh("sync")
    marker.write_text(json.dumps(scale.params()))
    return base


def scenario_trees(base: Path, set_name: str) -> tuple[Path, Path | None]:
    """(source tree, initial destination tree or None for no destination)."""
    return {
        "A": (base / "A", None),
        "B": (base / "B", None),
        "C": (base / "Cnew", base / "Cold"),
        "D": (base / "Cold", base / "Cold"),
    }[set_name]


# ---------------------------------------------------------------------------------------------
# Servers and proxies


def ensure_user() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        sh("useradd", "--system", "--no-create-home", "--home-dir", SFTP_LOGIN,
           "--shell", "/bin/sh", USER)
        pw = pwd.getpwnam(USER)
    # Without PAM, sshd refuses even key logins for a locked password ('!'); '*' is "no
    # password". The shell must run rsync on the full-shell server. The home is the login dir
    # in the chroot; on the full-shell server it does not exist and sshd starts in / instead.
    sh("usermod", "-p", "*", "-s", "/bin/sh", "-d", SFTP_LOGIN, USER)
    return pw.pw_uid, pw.pw_gid


SSHD_COMMON = """\
# Written by sftpsync's bench/bench.py for a throwaway benchmark server.
Port {port}
ListenAddress {host}
AddressFamily inet
HostKey {run}/host_ed25519
PidFile {run}/sshd-{kind}.pid
UsePAM no
StrictModes no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
AuthorizedKeysFile {run}/authorized_keys
AllowUsers {user}
Subsystem sftp internal-sftp
LogLevel INFO
UseDNS no
PrintMotd no
PrintLastLog no
Compression no
MaxStartups 200
MaxSessions 100
"""

SSHD_SFTP_ONLY = """
Match User {user}
    ForceCommand internal-sftp -d {login}
    ChrootDirectory {chroot}
    AllowTcpForwarding no
    AllowAgentForwarding no
    X11Forwarding no
    PermitTTY no
"""


# ProFTPD with mod_sftp, for the pull with server-side hashes (check-file): the bench user
# is confined to DATA, which the client sees as "/".
PROFTPD_CONF = """\
# Written by sftpsync's bench/bench.py for a throwaway benchmark server.
ServerType standalone
ServerName "sftpsync bench"
DefaultAddress {host}
SocketBindTight on
Port {port}
UseIPv6 off
UseReverseDNS off
User nobody
Group nogroup
PidFile {run}/proftpd.pid
ScoreboardFile {run}/proftpd.scoreboard
TransferLog none
WtmpLog off
DelayEngine off
AuthPAM off
AuthOrder mod_auth_unix.c
RequireValidShell off
DefaultRoot {data}
AllowOverwrite on
Umask 022
ModulePath /usr/lib/proftpd
LoadModule mod_sftp.c
SFTPEngine on
SFTPLog {run}/proftpd-sftp.log
SFTPHostKey {run}/host_ed25519
SFTPAuthMethods publickey
SFTPAuthorizedUserKeys file:{run}/authorized_keys.rfc4716
SFTPCompression off
"""


@dataclass
class Endpoint:
    """One sshd plus, per RTT, a delay-proxy in front of it."""

    kind: str  # "sftp" (SFTP-only, chrooted), "shell", or "proftpd" (SFTP-only, confined)
    port: int
    proxies: dict = field(default_factory=dict)  # rtt -> (port, stats file)


class Lab:
    """Servers, proxies and the ssh options every tool uses. Stops what it started."""

    def __init__(self, rtts: list[int], proxy_bin: Path, cipher: str | None,
                 proftpd: bool = False):
        self.procs: list[subprocess.Popen] = []
        self.uid, self.gid = ensure_user()
        for d in (ROOT, CHROOT):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        DATA.mkdir(exist_ok=True)
        os.chown(DATA, self.uid, self.gid)
        os.chmod(DATA, 0o755)
        for d in (RUN_DIR, LOCAL, MOUNT):
            d.mkdir(exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.key = RUN_DIR / "client_ed25519"
        for name in ("host_ed25519", "client_ed25519"):
            if not (RUN_DIR / name).exists():
                sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"bench-{name}",
                   "-f", RUN_DIR / name)
        shutil.copyfile(RUN_DIR / "client_ed25519.pub", RUN_DIR / "authorized_keys")

        kinds = ["sftp", "shell"] + (["proftpd"] if proftpd else [])
        self.endpoints = {k: Endpoint(k, free_port()) for k in kinds}
        for ep in self.endpoints.values():
            if ep.kind == "proftpd":
                self.procs.append(self.start_proftpd(ep.port))
            else:
                self.procs.append(self.start_sshd(ep))
            for rtt in rtts:
                port = free_port()
                stats = RUN_DIR / f"proxy-{ep.kind}-{rtt}.json"
                stats.unlink(missing_ok=True)
                plog = open(RUN_DIR / f"proxy-{ep.kind}-{rtt}.log", "ab")
                self.procs.append(subprocess.Popen(
                    [str(proxy_bin), "--listen", f"{HOST}:{port}",
                     "--target", f"{HOST}:{ep.port}",
                     "--one-way-delay-ms", str(rtt // 2), "--stats-file", str(stats)],
                    stdout=plog, stderr=subprocess.STDOUT, start_new_session=True))
                ep.proxies[rtt] = (port, stats)

        hostkey = (RUN_DIR / "host_ed25519.pub").read_text().split()[:2]
        names = ["benchhost"] + [f"[{HOST}]:{p}" for ep in self.endpoints.values()
                                 for p, _ in ep.proxies.values()]
        names += [f"[{HOST}]:{ep.port}" for ep in self.endpoints.values()]
        self.known_hosts = RUN_DIR / "known_hosts"
        self.known_hosts.write_text(f"{','.join(names)} {' '.join(hostkey)}\n")
        # Options shared by every ssh-based tool; the port is added per tool, since lftp and
        # sshfs pass their own -p.
        self.ssh_opts = [
            "-F", "/dev/null",
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "Compression=no",
            "-o", "LogLevel=ERROR",
        ] + (["-o", f"Ciphers={cipher}"] if cipher else [])
        self.rclone_conf = RUN_DIR / "rclone.conf"
        self.rclone_conf.write_text("")
        self.known_pids = {p.pid for p in self.procs}
        self.wait_ready()

    def start_sshd(self, ep: Endpoint) -> subprocess.Popen:
        conf = RUN_DIR / f"sshd-{ep.kind}.conf"
        text = SSHD_COMMON.format(port=ep.port, host=HOST, run=RUN_DIR, kind=ep.kind,
                                  user=USER)
        if ep.kind == "sftp":
            text += SSHD_SFTP_ONLY.format(user=USER, login=SFTP_LOGIN, chroot=CHROOT)
        conf.write_text(text)
        sh("/usr/sbin/sshd", "-t", "-f", conf)
        logf = open(RUN_DIR / f"sshd-{ep.kind}.log", "ab")
        return subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)

    def start_proftpd(self, port: int) -> subprocess.Popen:
        if not os.path.exists("/usr/lib/proftpd/mod_sftp.so"):
            raise RuntimeError("ProFTPD's mod_sftp is missing: apt-get install proftpd-core "
                               "proftpd-mod-crypto")
        # mod_sftp reads user keys only in RFC 4716 form.
        exported = sh("ssh-keygen", "-e", "-f", RUN_DIR / "client_ed25519.pub", capture=True)
        (RUN_DIR / "authorized_keys.rfc4716").write_text(exported.stdout)
        conf = RUN_DIR / "proftpd.conf"
        conf.write_text(PROFTPD_CONF.format(host=HOST, port=port, run=RUN_DIR, data=DATA))
        sh("/usr/sbin/proftpd", "-t", "-c", conf, capture=True)
        logf = open(RUN_DIR / "proftpd.log", "ab")
        return subprocess.Popen(["/usr/sbin/proftpd", "-n", "-c", str(conf)],
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        for ep in self.endpoints.values():
            for port in [ep.port] + [p for p, _ in ep.proxies.values()]:
                while True:
                    try:
                        socket.create_connection((HOST, port), timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"nothing listens on {HOST}:{port}; see {RUN_DIR}")
                        time.sleep(0.05)
        # Wait until those probe connections are gone from the proxies' counters.
        for ep in self.endpoints.values():
            for rtt in ep.proxies:
                self.proxy_stats(ep.kind, rtt, wait_idle=5)

    def proxy_port(self, kind: str, rtt: int) -> int:
        return self.endpoints[kind].proxies[rtt][0]

    def proxy_stats(self, kind: str, rtt: int, wait_idle: float = 0) -> dict:
        """The proxy's counters; with wait_idle, first waits that long for open == 0."""
        path = self.endpoints[kind].proxies[rtt][1]
        deadline = time.monotonic() + wait_idle
        while True:
            try:
                stats = json.loads(path.read_text())
            except (OSError, ValueError):
                stats = None
            if stats is not None and (stats["open"] == 0 or time.monotonic() >= deadline):
                return stats
            if time.monotonic() >= deadline:
                return {"up": 0, "down": 0, "open": -1}
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ---------------------------------------------------------------------------------------------
# Running one measured command


def set_child_subreaper() -> None:
    """Orphaned descendants of a tool (e.g. an ssh ControlMaster) are re-parented to us, so we
    can reap them and count their CPU time."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log("warning: PR_SET_CHILD_SUBREAPER failed; orphaned helpers are not counted")


def own_children() -> list[int]:
    me = str(os.getpid())
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        if stat[stat.rindex(")") + 2 :].split()[1] == me:
            kids.append(int(entry))
    return kids


@dataclass
class Proc:
    """A started measured process."""

    popen: subprocess.Popen
    log: Path
    rss: Path


class Runner:
    """Starts measured processes, enforces the timeout, collects rusage."""

    def __init__(self, lab: Lab, timeout: float, logdir: Path):
        self.lab = lab
        self.timeout = timeout
        self.logdir = logdir

    def start(self, argv: list[str], name: str, env: dict | None = None) -> Proc:
        """Starts argv under GNU time, in a new process group.

        Peak RSS comes from `time -f %M` rather than from our own wait4: Linux charges a
        process with the peak RSS of the memory image it had before exec, and a child forked
        from this Python process starts with Python's ~25 MB. time is a small C program, so
        what it reports is the tool's own peak (the largest of the tool and the descendants it
        waited for; Linux reports a maximum, not a sum)."""
        logpath = self.logdir / f"{name}.log"
        rsspath = self.logdir / f"{name}.maxrss"
        rsspath.unlink(missing_ok=True)
        logf = open(logpath, "ab")
        logf.write(("\n$ " + shlex.join(argv) + "\n").encode())
        logf.flush()
        wrapped = [TIME, "-f", "%M", "-o", str(rsspath), "--"] + argv
        p = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             env=env, start_new_session=True)
        logf.close()
        return Proc(p, logpath, rsspath)

    def wait(self, proc: Proc, deadline: float) -> tuple[int | None, int]:
        """Waits for proc; returns (exit code or None on timeout, peak RSS in KiB)."""
        pid = proc.popen.pid
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(pid, signal.SIGKILL)  # the process group we created for it
            except ProcessLookupError:
                pass

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), kill)
        timer.start()
        try:
            if proc.popen.returncode is None:
                _, status, ru = os.wait4(pid, 0)
                proc.popen.returncode = os.waitstatus_to_exitcode(status)
            # else a poll() while it ran (the kill loop of the delta targets) reaped it.
        finally:
            timer.cancel()
        try:
            maxrss = int(proc.rss.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = 0  # time was killed (timeout) before it could write
        if timed_out.is_set():
            return None, maxrss
        return proc.popen.returncode, maxrss

    def reap_orphans(self, kind: str, rtt: int) -> dict:
        """After a tool exited: waits for its connections to close, then reaps (and, after
        a grace period, kills) descendants that were re-parented to us."""
        stats = self.lab.proxy_stats(kind, rtt, wait_idle=15)
        for pid in own_children():
            if pid in self.lab.known_pids:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in own_children():
            if pid in self.lab.known_pids:
                continue
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        # Reap anything that already exited.
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if stats["open"] != 0:
            stats = self.lab.proxy_stats(kind, rtt, wait_idle=5)
        return stats


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------------
# Tools


def which(name: str) -> str | None:
    return shutil.which(name)


class Tools:
    def __init__(self, lab: Lab, sftpsync_bin: Path, extra: dict[str, list[str]]):
        self.lab = lab
        self.sftpsync = sftpsync_bin
        self.extra = extra

    def missing(self, tool: str) -> str | None:
        need = {
            "sftpsync": [str(self.sftpsync)],
            "rsync": ["rsync", "ssh"],
            "rclone": ["rclone"],
            "lftp": ["lftp", "ssh"],
            "lftp-p8": ["lftp", "ssh"],
            "sftp": ["sftp"],
            "sshfs-rsync": ["sshfs", "rsync"],
        }[tool]
        for prog in need:
            if not (which(prog) or (os.path.isabs(prog) and os.access(prog, os.X_OK))):
                return f"n/a: {prog} not installed"
        if tool == "sshfs-rsync" and not os.path.exists("/dev/fuse"):
            return "n/a: /dev/fuse missing"
        return None

    def ssh_cmd(self, port: int | None) -> str:
        opts = (["-p", str(port)] if port else []) + self.lab.ssh_opts
        return shlex.join(["ssh"] + opts)

    def endpoint(self, tool: str) -> str:
        return "shell" if tool == "rsync" else "sftp"

    def command(self, tool: str, direction: str, rtt: int, src: str, dst: str,
                workdir: Path) -> list[str] | None:
        """argv for tool; src/dst are paths on their side (remote ones as the server sees them:
        relative to /data for the SFTP-only server, absolute for the shell server).
        sshfs-rsync is handled separately."""
        port = self.lab.proxy_port(self.endpoint(tool), rtt)
        remote = lambda p: f"{USER}@{HOST}:{p}"
        extra = self.extra.get(tool, [])
        if tool == "sftpsync":
            a, b = (src + "/", remote(dst + "/")) if direction == "push" else (remote(src + "/"), dst + "/")
            return [str(self.sftpsync), "-a", "--delete", *extra, "-e", self.ssh_cmd(port), a, b]
        if tool == "rsync":
            a, b = (src + "/", remote(dst + "/")) if direction == "push" else (remote(src + "/"), dst + "/")
            return ["rsync", "-a", "--delete", *extra, "-e", self.ssh_cmd(port), a, b]
        if tool == "rclone":
            key = ",".join([
                ":sftp", f"host={HOST}", f"port={port}", f"user={USER}",
                f"key_file={self.lab.key}", f"known_hosts_file={self.lab.known_hosts}",
                "shell_type=none", "disable_hashcheck=true",
            ])
            a, b = (src, f"{key}:{dst}") if direction == "push" else (f"{key}:{src}", dst)
            return ["rclone", "sync", a, b, "--transfers", "8", "--checkers", "8",
                    "--config", str(self.lab.rclone_conf), *extra]
        if tool in ("lftp", "lftp-p8"):
            par = ["--parallel=8"] if tool == "lftp-p8" else []
            if direction == "push":
                mirror = ["mirror", "--reverse", "--delete", *par, *extra, src, dst]
            else:
                mirror = ["mirror", "--delete", *par, *extra, src, dst]
            script = "; ".join([
                f"set sftp:connect-program {shlex.quote(self.ssh_cmd(None).replace('ssh ', 'ssh -a -x ', 1))}",
                "set cmd:fail-exit yes",
                "set net:max-retries 1",
                "set net:reconnect-interval-base 1",
                f"open -u {USER},unused -p {port} sftp://{HOST}",
                shlex.join(mirror),
            ])
            return ["lftp", "-c", script]
        if tool == "sftp":
            batch = workdir / "sftp.batch"
            if direction == "push":
                batch.write_text(f"put -rp {src} {dst}\n")
            else:
                batch.write_text(f"get -rp {src} {dst}\n")
            return ["sftp", "-q", "-b", str(batch), "-P", str(port), *self.lab.ssh_opts, *extra,
                    f"{USER}@{HOST}"]
        raise ValueError(tool)


# ---------------------------------------------------------------------------------------------
# Preparing destinations and verifying results


def reset_tree(path: Path, initial: Path | None, owner: tuple[int, int] | None,
               create_empty: bool) -> None:
    """Makes path hold exactly a copy of initial (or nothing). Untimed."""
    if path.exists() or path.is_symlink():
        shutil.rmtree(path)
    if initial is not None:
        sh("cp", "-a", "--reflink=never", initial, path)
        if owner:
            sh("chown", "-R", f"{owner[0]}:{owner[1]}", path)
    elif create_empty:
        path.mkdir()
        if owner:
            os.chown(path, *owner)


def verify(src: Path, dst: Path) -> tuple[bool, str]:
    """Compares trees with local rsync (checksums, no ownership). Returns (content ok, note).

    Content problems (a file missing, extra, or with other bytes) fail the run; attribute-only
    differences (mtime, permissions) are reported as a note."""
    if not dst.is_dir():
        return False, "destination missing"
    out = sh("rsync", "-rlptD", "-nci", "--delete", f"{src}/", f"{dst}/", capture=True,
             check=False)
    if out.returncode != 0:
        return False, f"rsync verify exit {out.returncode}: {out.stderr.strip()[:200]}"
    bad, attrs = [], []
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        if line.startswith("."):
            attrs.append(line)
        else:
            bad.append(line)
    if bad:
        return False, f"{len(bad)} entries differ, e.g. {bad[0]!r}"
    if attrs:
        kinds = sorted({"mtime" if l[4] == "t" else "perms" if l[5] == "p" else l[2:11]
                        for l in attrs})
        return True, f"{len(attrs)} entries differ in {'/'.join(kinds)} only"
    return True, ""


# ---------------------------------------------------------------------------------------------
# One measured run


def run_once(lab: Lab, tools: Tools, runner: Runner, tool: str, set_name: str, direction: str,
             rtt: int, base: Path, deadline: float) -> dict:
    src_tree, init_tree = scenario_trees(base, set_name)
    owner = (lab.uid, lab.gid)
    empty_dest = False  # A and B start without a destination directory for every tool
    if direction == "push":
        source_local = src_tree
        dest_local = DATA / "dst"
        reset_tree(dest_local, init_tree, owner, empty_dest)
        remote_dst = "dst" if tool == "sftpsync" else \
            str(dest_local) if tool == "rsync" else f"{SFTP_LOGIN}/dst"
        a, b = str(source_local), remote_dst
        if tool == "sftpsync" and set_name == "C":
            prime_delta_index(lab, tools, runner, rtt, init_tree, dest_local, remote_dst,
                              deadline)
    else:
        # The server-side source is a long-lived copy of the pristine tree.
        served = DATA / f"src-{base.name}-{src_tree.name}"
        ensure_served(served, src_tree, owner)
        dest_local = LOCAL / "dst"
        reset_tree(dest_local, init_tree, None, empty_dest)
        source_remote = served.name if tool == "sftpsync" else \
            str(served) if tool == "rsync" else f"{SFTP_LOGIN}/{served.name}"
        a, b = source_remote, str(dest_local)
    sh("sync")

    kind = tools.endpoint(tool)
    before = lab.proxy_stats(kind, rtt, wait_idle=5)
    cpu0 = children_cpu()
    t0 = time.monotonic()
    rss = 0
    exit_code: int | None
    cmdline: str
    if tool == "sshfs-rsync":
        exit_code, rss, cmdline = run_sshfs_rsync(lab, tools, runner, direction, rtt,
                                                  src_tree, dest_local, deadline)
    else:
        argv = tools.command(tool, direction, rtt, a, b, runner.logdir)
        cmdline = shlex.join(argv)
        proc = runner.start(argv, tool)
        exit_code, rss = runner.wait(proc, deadline)
    wall = time.monotonic() - t0
    after = runner.reap_orphans(kind, rtt)
    cpu = children_cpu() - cpu0
    result = {
        "wall": round(wall, 3),
        "cpu": round(cpu, 3),
        "rss_kib": rss,
        "up": after["up"] - before["up"],
        "down": after["down"] - before["down"],
        "exit": exit_code,
        "cmd": cmdline,
    }
    if after.get("open", 0) != 0:
        result["note"] = "connections still open after the tool exited; byte counts may be short"
    elif after.get("conns", 0) == before.get("conns", 0):
        result["note"] = "no connection went through the proxy"
    if exit_code is None:
        result["status"] = "timeout"
        return result
    ok, note = verify(src_tree, dest_local)
    if note:
        result["note"] = (result.get("note", "") + " " + note).strip()
    if not ok:
        result["status"] = "FAILED"
    elif exit_code != 0:
        result["status"] = f"FAILED (exit {exit_code})"
    else:
        result["status"] = "ok"
    return result


def prime_delta_index(lab: Lab, tools: Tools, runner: Runner, rtt: int, old_tree: Path,
                      dest_local: Path, remote_dst: str, deadline: float) -> None:
    """Set C measures a re-push after a first push. sftpsync's delta works from the index its
    own first push leaves behind, so for it that first push (untimed, through the same
    proxy, hence the same server identity) stands in for copying the old tree into place."""
    reset_tree(dest_local, None, None, False)
    argv = tools.command("sftpsync", "push", rtt, str(old_tree), remote_dst, runner.logdir)
    proc = runner.start(argv, "sftpsync-prime")
    code, _ = runner.wait(proc, deadline)
    runner.reap_orphans(tools.endpoint("sftpsync"), rtt)
    if code != 0:
        raise NotAvailable(f"the untimed first push of the old tree failed (exit {code})")


def ensure_served(served: Path, src_tree: Path, owner: tuple[int, int]) -> None:
    """The server-side copy of a pull source, made once and reused (pulls only read it)."""
    marker = served.parent / f".{served.name}.complete"
    if marker.exists() and served.is_dir():
        return
    reset_tree(served, src_tree, owner, False)
    marker.write_text("")


def run_sshfs_rsync(lab: Lab, tools: Tools, runner: Runner, direction: str, rtt: int,
                    src_tree: Path, dest_local: Path, deadline: float):
    """Mounts the SFTP-only server with sshfs, runs a local rsync into/out of it, unmounts.
    All three steps are timed; sshfs's CPU is counted because it runs in the foreground as
    our child and is reaped after the unmount."""
    port = lab.proxy_port("sftp", rtt)
    MOUNT.mkdir(exist_ok=True)
    if os.path.ismount(MOUNT):
        sh("fusermount3", "-u", "-z", MOUNT, check=False)
    sshfs_argv = ["sshfs", "-f", "-p", str(port),
                  "-o", "ssh_command=" + shlex.join(["ssh"] + lab.ssh_opts),
                  f"{USER}@{HOST}:{SFTP_LOGIN}", str(MOUNT)]
    mounted = runner.start(sshfs_argv, "sshfs")
    while not os.path.ismount(MOUNT):
        if mounted.popen.poll() is not None or time.monotonic() > deadline:
            code, rss = runner.wait(mounted, deadline)
            reason = mounted.log.read_text(errors="replace").strip().splitlines()[-1:]
            raise NotAvailable(f"n/a: sshfs mount failed ({'; '.join(reason) or code})")
        time.sleep(0.02)
    # -a without -o/-g: chown on the sshfs mount fails for a non-root SFTP user.
    if direction == "push":
        argv = ["rsync", "-rlptD", "--delete", f"{src_tree}/", f"{MOUNT}/dst/"]
    else:
        served = f"src-{src_tree.parent.name}-{src_tree.name}"
        argv = ["rsync", "-rlptD", "--delete", f"{MOUNT}/{served}/", f"{dest_local}/"]
    argv[1:1] = tools.extra.get("sshfs-rsync", [])
    proc = runner.start(argv, "sshfs-rsync")
    code, rss = runner.wait(proc, deadline)
    sh("fusermount3", "-u", MOUNT, check=False)
    if os.path.ismount(MOUNT):
        sh("fusermount3", "-u", "-z", MOUNT, check=False)
    mcode, mrss = runner.wait(mounted, max(deadline, time.monotonic() + 10))
    cmdline = f"{shlex.join(sshfs_argv)} && {shlex.join(argv)} && fusermount3 -u {MOUNT}"
    return code, max(rss, mrss), cmdline


class NotAvailable(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Result storage


def load_results() -> dict:
    if RESULTS_JSON.exists():
        return json.loads(RESULTS_JSON.read_text())
    return {}


def save_results(results: dict) -> None:
    tmp = RESULTS_JSON.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.rename(RESULTS_JSON)


def cell_key(set_name: str, direction: str, tool: str, rtt: int) -> str:
    return f"{set_name}/{direction}/{tool}/{rtt}"


def summarize(runs: list[dict], planned: int) -> dict:
    statuses = [r["status"] for r in runs]
    good = [r for r in runs if r["status"] == "ok"]
    entry = {"runs": runs, "planned_runs": planned}
    if "timeout" in statuses:
        entry["status"] = "timeout"
    elif any(s.startswith("FAILED") for s in statuses):
        entry["status"] = next(s for s in statuses if s.startswith("FAILED"))
    else:
        entry["status"] = "ok"
    if good:
        entry["median"] = {k: statistics.median(r[k] for r in good)
                           for k in ("wall", "cpu", "rss_kib", "up", "down")}
    notes = sorted({r["note"] for r in runs if r.get("note")})
    if notes:
        entry["note"] = "; ".join(notes)
    entry["cmd"] = runs[-1].get("cmd", "") if runs else ""
    return entry


def machine_info(sftpsync_bin: Path) -> dict:
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "openssh": first_line(["ssh", "-V"]),
        "rsync": first_line(["rsync", "--version"]),
        "rclone": first_line(["rclone", "version"]),
        "lftp": first_line(["lftp", "--version"]),
        "sshfs": first_line(["sh", "-c", "sshfs --version 2>&1 | grep -i '^sshfs'"]),
        "sftpsync": f"{first_line([str(sftpsync_bin), '--version'])} (git {commit})",
    }


# ---------------------------------------------------------------------------------------------
# Markdown report


def fmt_s(x):
    return "" if x is None else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_mb(b):
    """Bytes in MB, with enough digits to tell a handshake from a listing."""
    mb = b / 1e6
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.3f}"


def cell_text(entry: dict | None) -> str:
    if entry is None:
        return ""
    if entry["status"] == "ok":
        return fmt_s(entry["median"]["wall"])
    return entry["status"].split(":")[0]  # "n/a: why" -> "n/a"; the details table says why


def render_markdown(results: dict) -> str:
    out = ["# sftpsync benchmark results", "",
           "Generated by `bench/bench.py` from `bench/results.json`; see `bench/README.md` for "
           "what is measured and how. Times are medians of the runs made (wall seconds); "
           "CPU is user+sys of the tool and every descendant (ssh, sshfs), client side only.",
           ""]
    scales = [s for s in ("full", "quick") if results.get(s, {}).get("cells")]
    target_scale = "full" if "full" in scales else ("quick" if scales else None)
    out += render_targets(results, target_scale)
    if ANALYSIS_MD.exists():
        out += [ANALYSIS_MD.read_text().rstrip(), ""]
    for scale in scales:
        data = results[scale]
        cells = data["cells"]
        out += [f"## {scale.capitalize()} run", ""]
        p = data.get("params", {})
        if p:
            out.append(f"Sets: A = {p['files']:,} files of 1-16 KiB in {p['dirs']} directories; "
                       f"B = one {p['big_mib']} MiB random file; C = A+B with "
                       f"{p['changed_pct']}% of the small files rewritten, {p['regions']} "
                       f"scattered 4 KiB regions of the big file rewritten, {p['added']} files "
                       f"added and {p['deleted']} deleted; D = A+B unchanged.")
            out.append("")
        out += render_machine(data.get("machine", {}))
        rtts = sorted({int(k.split("/")[3]) for k in cells})
        out += ["### Wall time (s, median)", "",
                "| set | dir | tool | " + " | ".join(f"RTT {r} ms" for r in rtts) + " |",
                "|---|---|---|" + "---:|" * len(rtts)]
        for set_name in ALL_SETS:
            for direction in ("push", "pull"):
                for tool in ALL_TOOLS:
                    row = [cells.get(cell_key(set_name, direction, tool, r)) for r in rtts]
                    if all(c is None for c in row):
                        continue
                    out.append(f"| {set_name} | {direction} | {TOOL_LABEL[tool]} | "
                               + " | ".join(cell_text(c) for c in row) + " |")
        out += ["", "### Details", "",
                "| set | dir | RTT ms | tool | wall s | CPU s | peak RSS MB | up MB | down MB "
                "| runs | status |",
                "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for set_name in ALL_SETS:
            for direction in ("push", "pull"):
                for rtt in rtts:
                    for tool in ALL_TOOLS:
                        e = cells.get(cell_key(set_name, direction, tool, rtt))
                        if e is None:
                            continue
                        m = e.get("median")
                        status = e["status"] + (f" ({e['note']})" if e.get("note") else "")
                        if m:
                            nums = [fmt_s(m["wall"]), fmt_s(m["cpu"]),
                                    f"{m['rss_kib'] / 1024:.0f}", fmt_mb(m["up"]),
                                    fmt_mb(m["down"])]
                        else:
                            nums = [""] * 5
                        out.append(f"| {set_name} | {direction} | {rtt} | {TOOL_LABEL[tool]} | "
                                   + " | ".join(nums)
                                   + f" | {len(e.get('runs', []))} | {status} |")
        out += ["", "### Commands (last run of each tool)", ""]
        seen = set()
        for key in sorted(cells):
            tool = key.split("/")[2]
            cmd = cells[key].get("cmd")
            if cmd and (tool, key.split("/")[1]) not in seen:
                seen.add((tool, key.split("/")[1]))
                out.append(f"- {TOOL_LABEL[tool]} ({key.split('/')[1]}): `{cmd}`")
        out.append("")
    if results.get("million"):
        out += render_million(results["million"])
    if results.get("delta_targets"):
        out += render_delta_targets(results["delta_targets"])
    return "\n".join(out) + "\n"


def render_machine(m: dict) -> list[str]:
    if not m:
        return []
    rows = [f"| {k} | {str(v).replace('|', '/')} |" for k, v in m.items()]
    return ["| machine | |", "|---|---|"] + rows + [""]


def render_million(m: dict) -> list[str]:
    out = ["## Bounded memory: one tree of many entries (sftpsync push, RTT 0)", ""]
    out.append(f"Tree: {m['entries']:,} empty files in {m['dirs']} directories of "
               f"{m['files_per_dir']}. Target: peak RSS < 300 MB, and the re-sync transfers "
               "no file data.")
    out.append("")
    out += render_machine(m.get("machine", {}))
    out += ["| run | wall s | CPU s | peak RSS MB | files transferred | literal data bytes | "
            "status |", "|---|---:|---:|---:|---:|---:|---|"]
    for name in ("initial", "no-change"):
        r = m.get(name)
        if not r:
            continue
        out.append(f"| {name} | {fmt_s(r['wall'])} | {fmt_s(r['cpu'])} | "
                   f"{r['rss_kib'] / 1024:.0f} | {r.get('files_transferred', '')} | "
                   f"{r.get('literal_bytes', '')} | {r['status']} |")
    out.append("")
    return out


def render_targets(results: dict, scale: str | None) -> list[str]:
    out = ["## Targets", ""]
    if scale is None and not results.get("million"):
        return out + ["No results yet.", ""]
    cells = results.get(scale, {}).get("cells", {}) if scale else {}
    if scale == "quick":
        out += ["Computed from the **quick** run (scaled-down sets, fewer RTTs and tools); "
                "a full run replaces these.", ""]

    def wall(set_name, direction, tool, rtt):
        e = cells.get(cell_key(set_name, direction, tool, rtt))
        return e["median"]["wall"] if e and e["status"] == "ok" and e.get("median") else None

    rows = []

    def verdict(checks):
        """checks: list of (ok, text); met only if there is at least one and all hold."""
        if not checks:
            return "not measured", ""
        return ("met" if all(ok for ok, _ in checks) else "**not met**",
                "; ".join(text for _, text in checks if text))

    # 1. every scenario no slower than rsync
    checks = []
    for key, e in sorted(cells.items()):
        s, d, tool, rtt = key.split("/")
        if tool != "sftpsync":
            continue
        mine, theirs = wall(s, d, "sftpsync", int(rtt)), wall(s, d, "rsync", int(rtt))
        if mine is not None and theirs is not None:
            if mine > theirs:
                checks.append((False, f"{s} {d} RTT {rtt}: sftpsync {mine:.2f} s, "
                                      f"rsync {theirs:.2f} s"))
            else:
                checks.append((True, ""))
        elif e["status"] != "ok":
            checks.append((False, f"{s} {d} RTT {rtt}: sftpsync {e['status']}"))
    v, text = verdict(checks)
    n_ok = sum(1 for ok, _ in checks if ok)
    rows.append(("every scenario: sftpsync no slower than rsync over ssh", v,
                 f"{n_ok}/{len(checks)} scenarios hold" + (f"; slower: {text}" if text else "")))

    def ratio_target(label, set_name, rtt, other, factor):
        checks = []
        for d in ("push", "pull"):
            mine, theirs = wall(set_name, d, "sftpsync", rtt), wall(set_name, d, other, rtt)
            if mine is not None and theirs is not None:
                r = theirs / mine
                checks.append((r >= factor, f"{d}: {r:.1f}x ({other} {theirs:.2f} s, "
                                            f"sftpsync {mine:.2f} s)"))
            elif mine is not None:
                e = cells.get(cell_key(set_name, d, other, rtt))
                if e and e["status"] == "timeout":
                    t = max(r["wall"] for r in e["runs"])
                    checks.append((t / mine >= factor,
                                   f"{d}: >{t / mine:.0f}x ({other} timed out after {t:.0f} s)"))
        v, text = verdict(checks)
        rows.append((label, v, text))

    ratio_target("A at RTT 20: >= 40x faster than rclone", "A", 20, "rclone", 40)
    ratio_target("A at RTT 20: >= 15x faster than lftp --parallel=8", "A", 20, "lftp-p8", 15)
    ratio_target("B at RTT 20: >= 2x faster than rsync", "B", 20, "rsync", 2)
    ratio_target("B at RTT 20: >= 2x faster than sftp put", "B", 20, "sftp", 2)

    checks = []
    for rtt in ALL_RTTS:
        for d in ("push", "pull"):
            mine, theirs = wall("D", d, "sftpsync", rtt), wall("D", d, "rsync", rtt)
            if mine is not None and theirs is not None:
                checks.append((mine <= theirs, f"{d} RTT {rtt}: sftpsync {mine:.2f} s, "
                                               f"rsync {theirs:.2f} s"))
    v, text = verdict(checks)
    rows.append(("D (no change): no slower than rsync at every RTT", v, text))

    rss = [e["median"]["rss_kib"] for k, e in cells.items()
           if k.startswith("A/") and k.split("/")[2] == "sftpsync" and e.get("median")]
    if rss:
        mb = max(rss) / 1024
        rows.append(("peak RSS for set A < 100 MB", "met" if mb < 100 else "**not met**",
                     f"{mb:.0f} MB (largest median over A runs)"))
    else:
        rows.append(("peak RSS for set A < 100 MB", "not measured", ""))
    m = results.get("million", {})
    if m.get("initial"):
        mb = max(m[r]["rss_kib"] for r in ("initial", "no-change") if m.get(r)) / 1024
        ok = mb < 300 and all(m[r]["status"] == "ok" for r in ("initial", "no-change") if m.get(r))
        rows.append((f"peak RSS for {m['entries']:,} files < 300 MB",
                     "met" if ok else "**not met**",
                     f"{mb:.0f} MB; no-change re-sync: {m.get('no-change', {}).get('status', '-')}"))
    else:
        rows.append(("peak RSS for 1,000,000 files < 300 MB", "not measured", "run --million"))

    e_s = cells.get(cell_key("B", "push", "sftpsync", 0))
    e_p = cells.get(cell_key("B", "push", "sftp", 0))
    if e_s and e_p and e_s.get("median") and e_p.get("median"):
        gib = results[scale]["params"]["big_mib"] / 1024
        cs, cp = e_s["median"]["cpu"] / gib, e_p["median"]["cpu"] / gib
        rows.append(("CPU s per GiB (B push, RTT 0): sftpsync <= sftp put",
                     "met" if cs <= cp else "**not met**",
                     f"{cs:.2f} vs {cp:.2f} CPU s per GiB of file data (client side)"))
    else:
        rows.append(("CPU s per GiB (B push, RTT 0): sftpsync <= sftp put", "not measured", ""))

    out += ["| target | result | detail |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


# ---------------------------------------------------------------------------------------------
# Main loops


def run_matrix(args, lab: Lab, tools: Tools, scale: Scale, results: dict) -> None:
    base = generate_sets(scale)
    logdir = RUN_DIR / "logs"
    logdir.mkdir(exist_ok=True)
    runner = Runner(lab, args.timeout, logdir)
    section = results.setdefault(scale.name, {})
    if section.get("params") not in (None, scale.params()):
        log(f"set parameters changed: dropping the old {scale.name} results")
        section.clear()
    section["params"] = scale.params()
    section["machine"] = machine_info(tools.sftpsync)
    cells = section.setdefault("cells", {})
    timed_out: set[tuple] = set()
    for rtt in args.rtts:
        for set_name in args.sets:
            for direction in args.directions:
                for tool in args.tools:
                    key = cell_key(set_name, direction, tool, rtt)
                    if tool == "sftp" and set_name in ("C", "D"):
                        cells[key] = {"status": "n/a: cannot delete or skip unchanged files",
                                      "runs": []}
                        save_and_render(results)
                        continue
                    reason = tools.missing(tool)
                    if reason:
                        cells[key] = {"status": reason, "runs": []}
                        save_and_render(results)
                        continue
                    if (set_name, direction, tool) in timed_out:
                        cells[key] = {"status": "timeout", "runs": [],
                                      "note": "skipped: timed out at a lower RTT"}
                        save_and_render(results)
                        continue
                    runs = []
                    cell_start = time.monotonic()
                    for i in range(args.runs):
                        log(f"{key} run {i + 1}/{args.runs}")
                        deadline = time.monotonic() + args.timeout
                        try:
                            r = run_once(lab, tools, runner, tool, set_name, direction, rtt,
                                         base, deadline)
                        except NotAvailable as e:
                            cells[key] = {"status": str(e), "runs": []}
                            runs = None
                            break
                        r["when"] = datetime.datetime.now().astimezone().isoformat(
                            timespec="seconds")
                        log(f"  {r['status']}: wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s, "
                            f"rss {r['rss_kib'] / 1024:.0f} MB, up {fmt_mb(r['up'])} MB, "
                            f"down {fmt_mb(r['down'])} MB {r.get('note', '')}")
                        runs.append(r)
                        if r["status"] != "ok":
                            break
                        # Slow tools: one run is enough once a cell has used its time budget.
                        if time.monotonic() - cell_start > args.cell_budget:
                            break
                    if runs is None:
                        save_and_render(results)
                        continue
                    cells[key] = summarize(runs, args.runs)
                    if cells[key]["status"] == "timeout":
                        timed_out.add((set_name, direction, tool))
                    save_and_render(results)


def save_and_render(results: dict) -> None:
    save_results(results)
    RESULTS_MD.write_text(render_markdown(results))


def run_million(args, lab: Lab, tools: Tools, results: dict) -> None:
    n = args.million_entries
    dirs = max(1, round(n ** 0.5))
    per_dir = n // dirs
    base = SETS_DIR / f"million-{dirs}x{per_dir}"
    if not (base / ".complete").exists():
        log(f"generating {dirs} x {per_dir} empty files in {base}")
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        t0 = 1_700_000_000
        for d in range(dirs):
            dp = base / f"d{d:04d}"
            dp.mkdir()
            for f in range(per_dir):
                fd = os.open(dp / f"f{f:04d}", os.O_WRONLY | os.O_CREAT, 0o644)
                os.utime(fd, (t0, t0))
                os.close(fd)
            os.utime(dp, (t0, t0))
        (base / ".complete").write_text("")
    logdir = RUN_DIR / "logs"
    logdir.mkdir(exist_ok=True)
    runner = Runner(lab, args.timeout, logdir)
    dest = DATA / "million"
    log("clearing the server-side destination")
    reset_tree(dest, None, (lab.uid, lab.gid), False)
    entry = {"entries": dirs * per_dir, "dirs": dirs, "files_per_dir": per_dir,
             "machine": machine_info(tools.sftpsync)}
    for name in ("initial", "no-change"):
        argv = tools.command("sftpsync", "push", 0, str(base), "million", logdir)
        argv.insert(1, "--stats")
        argv.insert(1, "--exclude=/.complete")
        log(f"million: {name} push")
        before = lab.proxy_stats("sftp", 0, wait_idle=5)
        cpu0 = children_cpu()
        t0 = time.monotonic()
        proc = runner.start(argv, "sftpsync-million")
        start_size = proc.log.stat().st_size
        code, rss = runner.wait(proc, time.monotonic() + args.timeout)
        wall = time.monotonic() - t0
        after = runner.reap_orphans("sftp", 0)
        r = {"wall": round(wall, 3), "cpu": round(children_cpu() - cpu0, 3), "rss_kib": rss,
             "up": after["up"] - before["up"], "down": after["down"] - before["down"],
             "exit": code, "cmd": shlex.join(argv)}
        with open(proc.log, "rb") as f:
            f.seek(start_size)
            text = f.read().decode(errors="replace")
        m = re.search(r"Number of regular files transferred:\s*([\d,]+)", text)
        lit = re.search(r"Literal data:\s*([\d,]+)", text)
        r["files_transferred"] = int(m.group(1).replace(",", "")) if m else None
        r["literal_bytes"] = int(lit.group(1).replace(",", "")) if lit else None
        if code is None:
            r["status"] = "timeout"
        elif code != 0:
            r["status"] = f"FAILED (exit {code})"
        elif name == "no-change" and (r["files_transferred"] != 0 or r["literal_bytes"] != 0):
            r["status"] = (f"FAILED (transferred {r['files_transferred']} files, "
                           f"{r['literal_bytes']} literal bytes)")
        else:
            r["status"] = "ok"
        if name == "initial" and r["status"] == "ok":
            count = sum(len(files) for _, _, files in os.walk(dest))
            if count != dirs * per_dir:
                r["status"] = f"FAILED ({count} files on the server, expected {dirs * per_dir})"
        log(f"  {r['status']}: wall {wall:.1f} s, rss {rss / 1024:.0f} MB, "
            f"files {r['files_transferred']}, literal {r['literal_bytes']}")
        entry[name] = r
        if r["status"] != "ok":
            break
    results["million"] = entry
    save_and_render(results)


def run_delta_targets(args, lab: Lab, tools: Tools, results: dict) -> None:
    """Issue 5's single-file targets at RTT 20, on set B's 1 GiB file: a byte inserted at its
    start, and a push killed at about half way and then resumed with --partial."""
    rtt = 20
    base = generate_sets(args.scale)
    big = next(p for p in (base / "B").iterdir() if p.is_file())
    size = big.stat().st_size
    work = ROOT / "delta-work"
    if work.exists():
        shutil.rmtree(work)
    src = work / "src"
    src.mkdir(parents=True)
    shutil.copy2(big, src / big.name)
    logdir = RUN_DIR / "logs"
    logdir.mkdir(exist_ok=True)
    runner = Runner(lab, args.timeout, logdir)
    dest = DATA / "delta"
    owner = (lab.uid, lab.gid)

    def push(name: str, extra: list[str], kill_at: int | None = None) -> dict:
        argv = tools.command("sftpsync", "push", rtt, str(src), "delta", logdir)
        argv[1:1] = ["--stats", *extra]
        before = lab.proxy_stats("sftp", rtt, wait_idle=5)
        t0 = time.monotonic()
        proc = runner.start(argv, f"sftpsync-{name}")
        if kill_at is not None:
            # kill -9 of the whole process group once about kill_at bytes went up.
            while proc.popen.poll() is None:
                if lab.proxy_stats("sftp", rtt)["up"] - before["up"] >= kill_at:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
        code, _ = runner.wait(proc, time.monotonic() + args.timeout)
        wall = time.monotonic() - t0
        after = runner.reap_orphans("sftp", rtt)
        r = {"wall": round(wall, 3), "up": after["up"] - before["up"],
             "down": after["down"] - before["down"], "exit": code, "cmd": shlex.join(argv)}
        log(f"  {name}: exit {code}, wall {wall:.2f} s, up {fmt_mb(r['up'])} MB")
        return r

    entry = {"file_size": size, "rtt": rtt, "machine": machine_info(tools.sftpsync)}
    log("delta targets: first push, then a byte inserted at the start")
    reset_tree(dest, None, owner, False)
    entry["first"] = push("first", [])
    data = (src / big.name).read_bytes()
    (src / big.name).write_bytes(b"!" + data)
    del data
    entry["insert"] = push("insert", [])
    ok, _ = verify(src, dest)
    entry["insert"]["status"] = "ok" if ok and entry["insert"]["exit"] == 0 else "FAILED"

    log("delta targets: a push killed at about half way, then resumed")
    reset_tree(dest, None, owner, False)
    entry["killed"] = push("killed", ["--partial"], kill_at=size // 2)
    entry["resumed"] = push("resumed", ["--partial"])
    ok, _ = verify(src, dest)
    entry["resumed"]["status"] = "ok" if ok and entry["resumed"]["exit"] == 0 else "FAILED"
    entry.update(pull_with_server_hashes(args, lab, tools, runner, base, rtt))
    results["delta_targets"] = entry
    save_and_render(results)
    shutil.rmtree(work)


def pull_with_server_hashes(args, lab: Lab, tools: Tools, runner: Runner, base: Path,
                            rtt: int) -> dict:
    """Set C's big file pulled over its old version: from ProFTPD, which hashes blocks for
    the client (check-file), and for contrast from OpenSSH, which cannot."""
    old, new = base / "Cold" / "big.bin", base / "Cnew" / "big.bin"
    served = DATA / "pull-new"
    if served.exists():
        shutil.rmtree(served)
    served.mkdir()
    shutil.copy2(new, served / "big.bin")
    sh("chown", "-R", f"{lab.uid}:{lab.gid}", served)
    local = LOCAL / "pull-old"
    out = {}
    # ProFTPD confines the user to DATA, which it shows as "/"; the sshd's login dir is DATA.
    for kind, remote_dir, name in (("proftpd", "/pull-new", "proftpd_pull"),
                                   ("sftp", "pull-new", "openssh_pull")):
        if kind not in lab.endpoints:
            continue
        if local.exists():
            shutil.rmtree(local)
        local.mkdir(parents=True)
        shutil.copy2(old, local / "big.bin")
        port = lab.proxy_port(kind, rtt)
        argv = [str(tools.sftpsync), "-a", "--stats", "-e", tools.ssh_cmd(port),
                f"{USER}@{HOST}:{remote_dir}/", f"{local}/"]
        before = lab.proxy_stats(kind, rtt, wait_idle=5)
        t0 = time.monotonic()
        proc = runner.start(argv, f"sftpsync-{name}")
        code, _ = runner.wait(proc, time.monotonic() + args.timeout)
        wall = time.monotonic() - t0
        after = runner.reap_orphans(kind, rtt)
        ok, _ = verify(served, local)
        r = {"wall": round(wall, 3), "up": after["up"] - before["up"],
             "down": after["down"] - before["down"], "exit": code, "cmd": shlex.join(argv),
             "status": "ok" if ok and code == 0 else "FAILED"}
        log(f"  {name}: exit {code}, wall {wall:.2f} s, down {fmt_mb(r['down'])} MB")
        out[name] = r
    shutil.rmtree(served)
    shutil.rmtree(local, ignore_errors=True)
    return out


def render_delta_targets(d: dict) -> list[str]:
    mib = d["file_size"] / (1 << 20)
    out = [f"## Delta and resume on one {mib:.0f} MiB file (sftpsync push, RTT {d['rtt']} ms)",
           "",
           "Targets (issue 5): a byte inserted at the start is re-sent in under 1 MiB; a push "
           "killed (kill -9) at about half way is finished by a `--partial` run that sends "
           "under 0.6 GiB; set C's big file (100 x 4 KiB rewritten) is pulled from ProFTPD over "
           "its old version with under 8 MiB received.", ""]
    out += render_machine(d.get("machine", {}))
    out += ["| run | wall s | up MB | down MB | exit | status |",
            "|---|---:|---:|---:|---:|---|"]
    for name, label in (("first", "first push"), ("insert", "re-push after a 1-byte insert"),
                        ("killed", "push killed at ~50%"), ("resumed", "resumed with --partial"),
                        ("proftpd_pull", "pull of C's big file from ProFTPD (check-file)"),
                        ("openssh_pull", "the same pull from OpenSSH (no check-file)")):
        r = d.get(name)
        if r:
            out.append(f"| {label} | {fmt_s(r['wall'])} | {fmt_mb(r['up'])} | "
                       f"{fmt_mb(r['down'])} | {r['exit']} | {r.get('status', '')} |")
    out.append("")
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description="sftpsync benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down sets, RTT 0 and 20, 1 run, fewer tools: a few minutes")
    p.add_argument("--million", action="store_true",
                   help="only the bounded-memory scenario: push a 1M-entry tree, then re-sync")
    p.add_argument("--million-entries", type=int, default=1_000_000)
    p.add_argument("--delta-targets", action="store_true",
                   help="only issue 5's single-file scenarios: a 1-byte insert and a killed, "
                        "resumed push of the 1 GiB file, at RTT 20")
    p.add_argument("--set", dest="sets", help="comma-separated subset of A,B,C,D")
    p.add_argument("--tools", help="comma-separated subset of " + ",".join(ALL_TOOLS)
                   + " (or 'all')")
    p.add_argument("--rtt", dest="rtts", help="comma-separated RTTs in ms (default 0,20,100)")
    p.add_argument("--direction", dest="directions", help="push, pull or push,pull")
    p.add_argument("--runs", type=int, help="runs per cell; the median is reported")
    p.add_argument("--timeout", type=float, help="seconds per run (default 1800, quick 300)")
    p.add_argument("--cell-budget", type=float, default=600,
                   help="stop repeating a cell once its runs took this long (default 600 s)")
    p.add_argument("--sftpsync", default=str(REPO / "target/release/sftpsync"),
                   help="the sftpsync binary")
    p.add_argument("--delay-proxy", default=str(REPO / "target/release/delay-proxy"))
    p.add_argument("--sftpsync-args", default="",
                   help="extra sftpsync arguments, e.g. '--channels 8'")
    p.add_argument("--extra-args", action="append", default=[], metavar="TOOL=ARGS",
                   help="extra arguments for one tool (repeatable)")
    p.add_argument("--cipher", help="force this ssh cipher for the OpenSSH-based tools "
                   "(e.g. aes128-gcm@openssh.com); default: each tool's own choice")
    p.add_argument("--render-only", action="store_true",
                   help="only regenerate RESULTS.md from results.json")
    args = p.parse_args(argv)
    scale = QUICK if args.quick else FULL
    args.scale = scale
    args.sets = args.sets.split(",") if args.sets else list(ALL_SETS)
    if args.tools in (None, ""):
        args.tools = list(QUICK_TOOLS if args.quick else ALL_TOOLS)
    elif args.tools == "all":
        args.tools = list(ALL_TOOLS)
    else:
        args.tools = args.tools.split(",")
    args.rtts = [int(x) for x in args.rtts.split(",")] if args.rtts else (
        [0, 20] if args.quick else list(ALL_RTTS))
    if args.directions:
        args.directions = args.directions.split(",")
    else:
        args.directions = ["push", "pull"]
    args.runs = args.runs or (1 if args.quick else 3)
    args.timeout = args.timeout or (300 if args.quick else 1800)
    for name, valid in (("sets", ALL_SETS), ("tools", ALL_TOOLS), ("directions", ["push", "pull"])):
        bad = [x for x in getattr(args, name) if x not in valid]
        if bad:
            p.error(f"unknown {name}: {','.join(bad)} (valid: {','.join(valid)})")
    extra = {"sftpsync": shlex.split(args.sftpsync_args)}
    for item in args.extra_args:
        tool, _, rest = item.partition("=")
        if tool not in ALL_TOOLS:
            p.error(f"--extra-args: unknown tool {tool}")
        extra[tool] = extra.get(tool, []) + shlex.split(rest)
    args.extra = extra
    if args.million:
        args.rtts = [0]
    if args.delta_targets:
        args.rtts = [20]
    return args


def use_tmpfs() -> None:
    """Keeps every tree, local and remote, in a tmpfs at ROOT. On a disk file system each
    run inherits the last one's deletions (ext4 then spends most of the server's CPU looking
    for free inodes), so times drift from run to run and depend on the order tools ran in.
    In RAM every run starts alike; the cost is that fsync is free for every tool."""
    if os.path.ismount(ROOT):
        return
    ROOT.mkdir(parents=True, exist_ok=True)
    if any(ROOT.iterdir()):
        shutil.rmtree(ROOT)
        ROOT.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=16g,mode=0755", "tmpfs", ROOT)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = load_results()
    if args.render_only:
        RESULTS_MD.write_text(render_markdown(results))
        return 0
    if os.geteuid() != 0:
        print("bench.py must run as root (sudo bench/run)", file=sys.stderr)
        return 2
    use_tmpfs()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(RUN_DIR / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another bench.py is running (it holds /srv/sftpsync-bench/run/lock)",
              file=sys.stderr)
        return 2
    set_child_subreaper()
    started = time.monotonic()
    lab = Lab(args.rtts, Path(args.delay_proxy), args.cipher, proftpd=args.delta_targets)
    # Stop servers on Ctrl-C/termination too; results so far are already saved.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        tools = Tools(lab, Path(args.sftpsync), args.extra)
        if args.million:
            run_million(args, lab, tools, results)
        elif args.delta_targets:
            run_delta_targets(args, lab, tools, results)
        else:
            run_matrix(args, lab, tools, args.scale, results)
    finally:
        if os.path.ismount(MOUNT):
            sh("fusermount3", "-u", "-z", MOUNT, check=False)
        lab.stop()
    log(f"done in {time.monotonic() - started:.0f} s; wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

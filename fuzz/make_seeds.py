#!/usr/bin/env python3
"""Writes the hand-made seed corpus: a few valid SFTP replies and typical filter rules."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def string(b):
    return struct.pack(">I", len(b)) + b


def frame(body):
    return struct.pack(">I", len(body)) + body


def attrs(size=None, uidgid=None, perms=None, times=None, ext=()):
    flags, out = 0, b""
    if size is not None:
        flags |= 1
        out += struct.pack(">Q", size)
    if uidgid is not None:
        flags |= 2
        out += struct.pack(">II", *uidgid)
    if perms is not None:
        flags |= 4
        out += struct.pack(">I", perms)
    if times is not None:
        flags |= 8
        out += struct.pack(">II", *times)
    if ext:
        flags |= 0x80000000
        out += struct.pack(">I", len(ext)) + b"".join(string(k) + string(v) for k, v in ext)
    return struct.pack(">I", flags) + out


VERSION = bytes([2]) + struct.pack(">I", 3) + string(b"posix-rename@openssh.com") + string(b"1") \
    + string(b"limits@openssh.com") + string(b"1")
STATUS = bytes([101]) + struct.pack(">II", 7, 2) + string(b"No such file") + string(b"en")
STATUS_SHORT = bytes([101]) + struct.pack(">II", 8, 0)
HANDLE = bytes([102]) + struct.pack(">I", 9) + string(b"\x00\x00\x00\x01")
DATA = bytes([103]) + struct.pack(">I", 10) + string(b"hello world")
NAME = bytes([104]) + struct.pack(">II", 11, 2) \
    + string(b"file.txt") + string(b"-rw-r--r-- 1 u g 5 Jan 1 file.txt") \
    + attrs(5, (1000, 1000), 0o100644, (1, 2)) \
    + string(b"caf\xe9") + string(b"") + attrs(perms=0o40755)
ATTRS = bytes([105]) + struct.pack(">I", 12) \
    + attrs(1 << 40, (0, 0), 0o120777, (3, 4), ((b"acl@x", b"v"),))
LIMITS = bytes([201]) + struct.pack(">I", 13) + struct.pack(">QQQQ", 262144, 261120, 261120, 64)

# Fuzz input: push size, max packet in 16-byte units, then the stream.
MAX = struct.pack(">H", 262144 // 16 + 64)
PACKETS = {
    "version": bytes([0]) + MAX + frame(VERSION),
    "status": bytes([3]) + MAX + frame(STATUS) + frame(STATUS_SHORT),
    "handle-data": bytes([0]) + MAX + frame(HANDLE) + frame(DATA),
    "name": bytes([7]) + MAX + frame(NAME),
    "attrs": bytes([0]) + MAX + frame(ATTRS),
    "limits": bytes([0]) + MAX + frame(LIMITS),
    "too-large": bytes([0]) + struct.pack(">H", 1) + frame(NAME),
    "bare-name": bytes([0]) + MAX + NAME,
}

# First byte picks the entry point (see filter_rules.rs): 0 one rule, 1 filter list,
# 2 exclude list, 3 --exclude/--include.
RULES = {
    "exclude-o": b"\x00- *.o",
    "include-dir": b"\x00+ /dir/***",
    "protect": b"\x00P keep",
    "dir-merge": b"\x00: .rsync-filter",
    "list": b"\x01- *.o\n+ /dir/***\nP keep\n: .rsync-filter\n-! */\n",
    "list0": b"\x05exclude,s *.tmp\x00include,r /a/**/b\x00H,/ x\x00!\x00",
    "modifiers": b"\x09dir-merge,-n /.cvsignore",
    "cvs": b"\x00-C",
    "old-style": b"\x02+ *.c\n- *\n#comment\n;another\n",
    "bare": b"\x03- [a-z]?*\\*.bak",
}

for target, seeds in (("packet_decoder", PACKETS), ("filter_rules", RULES)):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)

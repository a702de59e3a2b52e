"""An SFTP-only server built on asyncssh, for sftpsync's end-to-end tests.

Publickey login with the keys in --authorized-keys, then the SFTP subsystem and nothing else
(no shell, exec, scp or forwarding), confined to --root by asyncssh's own chroot option:
paths are mapped below that directory, and absolute symlink targets are rewritten into it on
the way in and out. Prints one line once it listens, which the test kit waits for.
"""

import argparse
import asyncio
import sys

import asyncssh


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--authorized-keys", required=True)
    parser.add_argument("--root", required=True, help="served directory, / for clients")
    return parser.parse_args()


async def serve(args):
    root = args.root.encode()
    await asyncssh.listen(
        args.host,
        args.port,
        server_host_keys=[args.host_key],
        authorized_client_keys=args.authorized_keys,
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
        allow_scp=False,
    )
    print(
        f"asyncssh {asyncssh.__version__} SFTP server listening on {args.host} port {args.port}",
        flush=True,
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve(parse_args()))
    except OSError as e:
        # A port taken in the meantime: the test kit retries with another.
        print(f"cannot listen: {e}", file=sys.stderr, flush=True)
        sys.exit(1)

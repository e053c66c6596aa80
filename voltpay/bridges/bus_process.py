"""The embedded bus's own process: moto's server behind the bus guard.

``python -m voltpay.bridges.bus_process [PARENT_PID]`` reads one JSON line
from stdin (the credentials it accepts, its region and the log format),
starts moto's server on a free loopback port, prints its URL on one line and
serves until stdin closes: when the daemon stops the bus, or dies, even by
SIGKILL (the kernel closes the daemon's end of the pipe). Given the parent's
pid it also asks the kernel to kill it with that parent. It ignores SIGINT
and SIGTERM: a Ctrl-C or a stop reaches the whole process group, and the
daemon still publishes to and consumes from the bus while it drains.

The credentials arrive on a pipe, never in the command line or the
environment, which other local users may read.

moto keeps in memory every message it ever made, not only those still
queued, and some of its calls take longer the deeper its queue;
``voltpay.bridges.moto_tuning`` mends both here, where moto serves nothing
but the bus.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

from voltpay.bridges.bus_guard import BusCredentials, BusGuard
from voltpay.bridges.moto_server import MotoServer
from voltpay.bridges.moto_tuning import answer_regardless_of_depth, forget_what_moto_keeps
from voltpay.observability.logging import configure_logging, register_secret

_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> None:
    """SIGKILL this process when its parent thread ends (Linux only; the
    closed stdin ends it everywhere else)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request
        os._exit(1)


def main(argv: list[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    if argv:
        _die_with(int(argv[0]))
    config = json.loads(sys.stdin.buffer.readline() or b"null")
    if not isinstance(config, dict):
        sys.exit("voltpay bus: no configuration on stdin")
    credentials = BusCredentials(
        access_key_id=config["access_key_id"],
        secret_access_key=config["secret_access_key"],
        region=config["region"],
    )
    configure_logging(format=config.get("log_format", "json"), level="WARNING")
    del config
    register_secret(credentials.secret_access_key)
    forget_what_moto_keeps()
    answer_regardless_of_depth()
    server = MotoServer(wrap=lambda app: BusGuard(app, credentials))
    print(server.start(), flush=True)
    sys.stdout.close()
    sys.stdin.buffer.read()  # until the daemon closes its end, or dies
    server.stop(grace_seconds=0.5)


if __name__ == "__main__":
    main(sys.argv[1:])

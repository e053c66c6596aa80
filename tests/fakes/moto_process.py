"""moto's server in a process of its own: an SNS/SQS endpoint that outlives
every daemon, as AWS does, and shares no interpreter with them.

``python -m tests.fakes.moto_process`` starts it on a free loopback port,
prints its URL on one line and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from voltpay.bridges.moto_server import MotoServer

_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0


@contextmanager
def moto_process() -> Iterator[str]:
    """Start the server process; yield its URL; stop it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.moto_process"],
        cwd=_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT_SECONDS)
        if not line or not line[0].startswith("http://"):
            raise RuntimeError(f"moto's server process did not start: {line!r}")
        yield line[0].strip()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def main() -> None:
    endpoint = MotoServer()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(endpoint.start(), flush=True)
    stop.wait()
    endpoint.stop(grace_seconds=0.5)


if __name__ == "__main__":
    main()

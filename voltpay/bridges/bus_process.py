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
queued; ``forget_what_moto_keeps`` stops that here, where moto serves
nothing but the bus.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any

from voltpay.bridges.bus_guard import BusCredentials, BusGuard
from voltpay.bridges.moto_server import MotoServer
from voltpay.observability.logging import configure_logging, register_secret

_PR_SET_PDEATHSIG = 1
# Receipt handles of deleted messages that a queue remembers, so that a
# DeleteMessage tried again (its answer lost) succeeds instead of failing:
# the retry comes within seconds, a handful of batches later.
REMEMBERED_DELETIONS = 1000


class RecentSet:
    """A set that keeps only its ``size`` most recently added members."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._members: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: str) -> None:
        self._members[member] = None
        self._members.move_to_end(member)
        while len(self._members) > self._size:
            self._members.popitem(last=False)

    def update(self, members: Iterable[str]) -> None:
        for member in members:
            self.add(member)


def forget_what_moto_keeps() -> None:
    """Make moto keep a message only while it is queued.

    moto remembers every model object it makes in its class's
    ``instances_tracked`` (for its dashboard, which the guard refuses), every
    notification published to a topic (``Topic.sent_notifications``, for its
    own tests) and the receipt handle of every message a queue deleted; all
    three grow by each event for as long as the process lives."""
    from moto.core.common_models import BaseModel
    from moto.core.model_instances import reset_model_data
    from moto.sns.models import Topic
    from moto.sqs.models import Queue

    def untracked_new(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    BaseModel.__new__ = staticmethod(untracked_new)  # type: ignore[method-assign]
    reset_model_data()

    topic_init = Topic.__init__
    queue_init = Queue.__init__

    def forgetful_topic_init(self: Topic, *args: Any, **kwargs: Any) -> None:
        topic_init(self, *args, **kwargs)
        self.sent_notifications = collections.deque(maxlen=0)  # type: ignore[assignment]

    def forgetful_queue_init(self: Queue, *args: Any, **kwargs: Any) -> None:
        queue_init(self, *args, **kwargs)
        self.deleted_messages = RecentSet(REMEMBERED_DELETIONS)  # type: ignore[assignment]

    Topic.__init__ = forgetful_topic_init  # type: ignore[method-assign]
    Queue.__init__ = forgetful_queue_init  # type: ignore[method-assign]


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
    server = MotoServer(wrap=lambda app: BusGuard(app, credentials))
    print(server.start(), flush=True)
    sys.stdout.close()
    sys.stdin.buffer.read()  # until the daemon closes its end, or dies
    server.stop(grace_seconds=0.5)


if __name__ == "__main__":
    main(sys.argv[1:])

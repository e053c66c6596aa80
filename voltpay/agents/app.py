"""The faust app, run in-process with no Kafka (see FAUST.md)."""

from __future__ import annotations

from typing import Any

import faust
from faust.app.base import BootStrategy


class LocalBoot(BootStrategy):
    enable_kafka = False
    enable_web = False


class LocalApp(faust.App):
    """Agents exchange Python objects over in-memory channels."""

    BootStrategy = LocalBoot

    async def on_started(self) -> None:
        # Without a consumer nothing resumes flow control, and channel sends
        # would block forever.
        self.flow_control.resume()
        await super().on_started()

    def _create_directories(self) -> None:
        # Local mode keeps no tables or state on disk: create no data folder.
        return None

    async def on_stop(self) -> None:
        await super().on_stop()
        # The never-started consumer thread still owns an event loop; close it
        # so that stopping leaks nothing.
        consumer: Any = self.__dict__.get("_consumer")
        thread = getattr(consumer, "_thread", None)
        thread_loop = getattr(thread, "thread_loop", None)
        if thread_loop is not None and not thread_loop.is_closed():
            thread_loop.close()


def create_faust_app(name: str = "voltpay") -> LocalApp:
    return LocalApp(
        name,
        autodiscover=False,
        web_enabled=False,
        stream_wait_empty=False,
        producer_max_request_size=1,
    )

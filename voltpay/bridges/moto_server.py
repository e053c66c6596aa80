"""moto's server on 127.0.0.1, in this process.

The embedded bus runs it in a process of its own, behind a check of every
request (``voltpay.bridges.bus_process``); tests and the bench also run it
open, as a stand-in for AWS. moto keeps its state in module-level backends,
so every server started in one process shares the same topics and queues.

moto's own server (werkzeug's development server) closes the connection
after every answer, so each SNS/SQS call paid for a new TCP connection on
both sides and a new thread here, and it waits 10 ms for more of a request
after answering it. moto's application is served by waitress instead: kept-
alive connections, TCP_NODELAY, a fixed pool of threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from waitress.server import BaseWSGIServer, create_server
from waitress.wasyncore import close_all, dispatcher, loop

_log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]

_HOST = "127.0.0.1"
# A request answered by moto itself, without touching any AWS service backend
# or reading its state: /moto-api/data.json dumps the models of every backend,
# which all moto servers in a process share, so it slows with every queue made.
_PROBE_PATH = "/moto-api/config"
# Calls answered at once: a long poll holds its thread for its wait time.
_THREADS = 16
# A proxy from the environment could not reach this process's loopback port.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# waitress warns of every request that waits for a thread, and of a long
# poll still running when a stop gives up on it.
for _name in ("waitress", "waitress.queue"):
    logging.getLogger(_name).setLevel(logging.ERROR)


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend a host names.

    moto looks a request's host up by listing its own package's directory, on
    every request and under one lock: a tenth of the bus's time under load.
    Which backend a host names never changes while the process lives.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        try:
            return self._backends[host]
        except KeyError:
            backend = self._backends[host] = super().get_backend_for_host(host)
            return backend


# How long the serving loop waits for its sockets at most: how soon it sees
# that it is to stop.
_LOOP_TIMEOUT_SECONDS = 0.05


@dataclass
class _Running:
    server: BaseWSGIServer
    loop: threading.Thread
    closing: threading.Event  # stop accepting connections
    stopping: threading.Event  # close every connection and end the loop


def _serve(server: BaseWSGIServer, closing: threading.Event, stopping: threading.Event) -> None:
    """waitress's serving loop (its own run() ends only once every socket it
    watches is closed, and notices that only after a whole second), which
    alone opens and closes the sockets it watches."""
    accepting = True
    while not stopping.is_set():
        if accepting and closing.is_set():
            # The listening socket only. (waitress's own close() would close
            # the loop's trigger too, which requests still answering write to.)
            dispatcher.close(server)
            accepting = False
        loop(timeout=_LOOP_TIMEOUT_SECONDS, map=server._map, use_poll=True, count=1)
    # A long poll abandoned past the grace answers into the void.
    server.pull_trigger = lambda *args: None
    close_all(server._map)


class MotoServer:
    """moto's server on 127.0.0.1 and a free port, started and stopped on demand.

    ``wrap`` puts a WSGI application in front of moto's; a wrapped server is
    not probed over HTTP (its check may refuse the probe): its socket listens
    once start() returns. start()/stop() block briefly; async code uses
    astart()/astop().
    """

    def __init__(
        self,
        *,
        ready_timeout_seconds: float = 10.0,
        wrap: Callable[[WSGIApp], WSGIApp] | None = None,
    ) -> None:
        self._ready_timeout_seconds = ready_timeout_seconds
        self._wrap = wrap
        self._running: _Running | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("moto's server is not running")
        return self._url

    @property
    def running(self) -> bool:
        return self._url is not None

    def start(self) -> str:
        """Start the server and return its URL once it answers HTTP."""
        with self._lock:
            if self._url is not None:
                return self._url
            app: WSGIApp = _Dispatcher(create_backend_app)
            if self._wrap is not None:
                app = self._wrap(app)
            try:
                # Port 0: the kernel picks a free port at bind time, so there
                # is no window in which another process can take it.
                server = create_server(app, host=_HOST, port=0, threads=_THREADS)
            except OSError as exc:
                raise RuntimeError(f"moto's server failed to start: {exc!r}") from exc
            closing, stopping = threading.Event(), threading.Event()
            serving = threading.Thread(
                target=_serve, args=(server, closing, stopping), name="moto-server", daemon=True
            )
            serving.start()
            running = _Running(server, serving, closing, stopping)
            url = f"http://{_HOST}:{server.effective_port}"
            self._running = running
            if self._wrap is None:
                try:
                    self._wait_until_answering(url)
                except BaseException:
                    self._shutdown(running, grace_seconds=1.0)
                    self._running = None
                    raise
            self._url = url
            _log.info("moto's server listening on %s", url)
            return url

    def stop(self, *, grace_seconds: float = 2.0) -> None:
        """Stop accepting connections and wait up to grace_seconds for requests.

        A long poll already inside moto cannot be interrupted (moto sleeps until
        its WaitTimeSeconds ends even when the client went away), so its thread
        may outlive stop() by up to 20 s; it is a daemon thread that ends by
        itself. Close the AWS clients and stop polling before stopping the
        endpoint.
        """
        with self._lock:
            running, self._running, self._url = self._running, None, None
            if running is not None:
                self._shutdown(running, grace_seconds=grace_seconds)

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self, *, grace_seconds: float = 2.0) -> None:
        await asyncio.to_thread(self.stop, grace_seconds=grace_seconds)

    def _wait_until_answering(self, url: str) -> None:
        deadline = time.monotonic() + self._ready_timeout_seconds
        while True:
            try:
                with _DIRECT.open(url + _PROBE_PATH, timeout=1.0) as response:
                    response.read()
                return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"moto's server at {url} did not answer") from exc
                time.sleep(0.05)

    @staticmethod
    def _shutdown(running: _Running, *, grace_seconds: float) -> None:
        server = running.server
        running.closing.set()
        server.task_dispatcher.shutdown(timeout=grace_seconds)
        if server.task_dispatcher.threads:
            _log.info(
                "moto's server stopped with requests in flight "
                "(a long poll ends by itself within its wait time)"
            )
        running.stopping.set()
        running.loop.join(timeout=2.0)

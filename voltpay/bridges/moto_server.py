"""moto's server on 127.0.0.1, in this process.

The embedded bus runs it in a process of its own, behind a check of every
request (``voltpay.bridges.bus_process``); tests and the bench also run it
open, as a stand-in for AWS. moto keeps its state in module-level backends,
so every server started in one process shares the same topics and queues.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import ThreadedWSGIServer

_log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]

_HOST = "127.0.0.1"
# A request answered by moto itself, without touching any AWS service backend
# or reading its state: /moto-api/data.json dumps the models of every backend,
# which all moto servers in a process share, so it slows with every queue made.
_PROBE_PATH = "/moto-api/config"
# socketserver only notices shutdown() between polls; the default 0.5 s would
# make every stop wait that long.
_POLL_INTERVAL_SECONDS = 0.05
# A proxy from the environment could not reach this process's loopback port.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _QuietRequestHandler(MotoRequestHandler):
    """moto's request handler with one Server header and our logging.

    moto's responses carry their own Server header and the standard library adds
    a second one; aiohttp (under aiobotocore) rejects such a response outright
    ("Duplicate 'Server' header found", getmoto/moto#9930). werkzeug would also
    attach its own stderr handler and print one access line per SNS/SQS call,
    bypassing the daemon's log format. Its headers and its body go out in
    separate writes: without TCP_NODELAY the body's waits for the client to
    acknowledge the headers, which a client may delay by up to 40 ms.
    """

    disable_nagle_algorithm = True

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        level = logging.WARNING if type in {"error", "warning"} else logging.DEBUG
        _log.log(level, "moto's server: " + message.rstrip(), *args)


class _TrackingWSGIServer(ThreadedWSGIServer):
    """werkzeug's threaded server, remembering its request threads.

    Its request threads are daemons, which socketserver does not track, so
    without this a stop could not wait for the requests still being answered.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_threads: set[threading.Thread] = set()
        self._request_threads_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="moto-request",
            daemon=True,
        )
        with self._request_threads_lock:
            self._request_threads = {t for t in self._request_threads if t.is_alive()}
            self._request_threads.add(thread)
        thread.start()

    def join_requests(self, deadline: float) -> list[threading.Thread]:
        """Wait for request threads until the monotonic deadline; return the
        ones still running."""
        with self._request_threads_lock:
            threads = list(self._request_threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return [thread for thread in threads if thread.is_alive()]


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


class _MotoServer(ThreadedMotoServer):
    """moto's threaded server with a startup that cannot hang and quiet logs.

    moto's own entry point never sets its ready event when binding fails, which
    would leave start() waiting forever.
    """

    def __init__(self, wrap: Callable[[WSGIApp], WSGIApp] | None) -> None:
        # Port 0: the kernel picks a free port at bind time, so there is no
        # window in which another process can take it.
        super().__init__(ip_address=_HOST, port=0, verbose=False)
        self._wrap = wrap
        self.wsgi_server: _TrackingWSGIServer | None = None
        self.startup_error: BaseException | None = None

    def _server_entry(self) -> None:
        app: WSGIApp = _Dispatcher(create_backend_app)
        if self._wrap is not None:
            app = self._wrap(app)
        try:
            server = _TrackingWSGIServer(
                self._ip_address, self._port, app, handler=_QuietRequestHandler
            )
        except BaseException as exc:  # werkzeug calls sys.exit() when it cannot bind
            self.startup_error = exc
            self._server_ready_event.set()
            return
        self.wsgi_server = server
        self._server = server
        self._server_ready_event.set()
        # werkzeug's serve_forever closes the listening socket when it returns.
        server.serve_forever(poll_interval=_POLL_INTERVAL_SECONDS)


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
        self._server: _MotoServer | None = None
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
            server = _MotoServer(self._wrap)
            server.start()
            if server.startup_error is not None or server.wsgi_server is None:
                raise RuntimeError(f"moto's server failed to start: {server.startup_error!r}")
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            self._server = server
            if self._wrap is None:
                try:
                    self._wait_until_answering(url)
                except BaseException:
                    self._shutdown(server, grace_seconds=1.0)
                    self._server = None
                    raise
            self._url = url
            _log.info("moto's server listening on %s", url)
            return url

    def stop(self, *, grace_seconds: float = 2.0) -> None:
        """Stop accepting connections and wait up to grace_seconds for requests.

        A long poll already inside moto cannot be interrupted (moto sleeps until
        its WaitTimeSeconds ends even when the client went away), so its request
        thread may outlive stop() by up to 20 s; it is a daemon thread that
        closes its own socket and ends by itself. Close the AWS clients and stop
        polling before stopping the endpoint.
        """
        with self._lock:
            server, self._server, self._url = self._server, None, None
            if server is not None:
                self._shutdown(server, grace_seconds=grace_seconds)

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
    def _shutdown(server: _MotoServer, *, grace_seconds: float) -> None:
        deadline = time.monotonic() + grace_seconds
        wsgi_server = server.wsgi_server
        if wsgi_server is None:
            return
        wsgi_server.shutdown()
        serving_thread = server._thread
        if serving_thread is not None:
            serving_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        still_running = wsgi_server.join_requests(deadline)
        if still_running:
            _log.info(
                "moto's server stopped with %d request(s) in flight "
                "(a long poll ends by itself within its wait time)",
                len(still_running),
            )

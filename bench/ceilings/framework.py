"""The framework ceiling: a bare aiohttp app answering a constant JSON body.

``python -m bench.ceilings.framework --port N`` serves ``GET /healthz`` with
the same body as voltpay's, on the same event loop (uvloop), with no
middleware: what aiohttp itself costs per request on this machine.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from bench.procs import use_uvloop

BODY = b'{"status":"ok"}'


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    use_uvloop()
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

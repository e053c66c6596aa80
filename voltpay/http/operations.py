"""Health, readiness, metrics, agents, notifications and the API document."""

from __future__ import annotations

from pathlib import Path

import orjson
import swagger_ui
from aiohttp import web

from voltpay.http.bodies import json_response
from voltpay.http.context import current_user, services
from voltpay.http.openapi import openapi_document
from voltpay.http.paging import page_of
from voltpay.http.views import notification_view
from voltpay.models import notifications as notification_store
from voltpay.models.tables import Notification

routes = web.RouteTableDef()
# What operators watch: on the operations listener when it has a port, else
# on the main one.
ops_routes = web.RouteTableDef()
# Served on both listeners.
health_routes = web.RouteTableDef()
_SWAGGER_STATIC = Path(swagger_ui.__file__).parent / "static"
# The files, named once: a name from the URL is looked up here, never joined
# to the folder unchecked.
_SWAGGER_FILES = {p.name: p for p in _SWAGGER_STATIC.iterdir() if p.is_file()}
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voltpay API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""


_SERVING = orjson.dumps({"status": "ok"})


@health_routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_SERVING, content_type="application/json")


@health_routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    readiness = services(request).readiness
    if readiness.draining:
        return json_response({"status": "draining", "failing": ["shutdown"]}, status=503)
    failing = await readiness.failing()
    if failing:
        return json_response({"status": "unavailable", "failing": failing}, status=503)
    return json_response({"status": "ready", "checks": sorted(readiness.checks)})


@ops_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body, content_type = services(request).metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


@ops_routes.get("/api/agents")
async def agents(request: web.Request) -> web.Response:
    return json_response(
        {"agents": [stats.to_json() for stats in services(request).metrics.agents()]}
    )


@routes.get("/api/notifications")
async def notifications(request: web.Request) -> web.Response:
    query = Notification.filter(user_id=current_user(request).id)
    rows, next_cursor = await page_of(query, request)
    return json_response(
        {
            "items": [notification_view(row) for row in await notification_store.shown(rows)],
            "nextCursor": next_cursor,
        }
    )


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    settings = services(request).settings
    return json_response(
        openapi_document(settings.funding.mode, operators_listener=settings.ops.port is not None)
    )


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_PAGE, content_type="text/html")


@routes.get("/docs/static/{name}")
async def docs_static(request: web.Request) -> web.StreamResponse:
    found = _SWAGGER_FILES.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    return web.FileResponse(found)

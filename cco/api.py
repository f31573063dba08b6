"""The analytics JSON API (SPEC §7), exports, the live feed, logs and /metrics.

Every figure comes from the committed `api_calls` rows (through their rollups), read in the reader thread
(cco.analytics.reader) so that no query ever runs on the event loop. Exports stream as chunked responses, pulled
chunk by chunk from the database as the client reads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, AsyncIterator
from urllib.parse import parse_qsl, unquote

import orjson

from cco import metrics, wire
from cco.analytics import queries
from cco.errors import InvalidRequest, ServiceUnavailable
from cco.logs import recent_logs

if TYPE_CHECKING:
    from cco.analytics.reader import Reader
    from cco.app import App
    from cco.protocol import HttpProtocol, Request

CSV_TYPE = b"content-type: text/csv; charset=utf-8\r\n"
MAX_DAYS = 3650


def _query(request: Request) -> dict[str, str]:
    return dict(parse_qsl(request.query.decode("latin-1")))


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: expected an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _reader(app: App) -> Reader:
    if app.reader is None:
        raise ServiceUnavailable("analytics are not enabled in this process")
    return app.reader


async def _send_json(app: App, request: Request, client: HttpProtocol, query_fn, *args) -> None:
    result = await _reader(app).run(query_fn, *args)
    client.send(request, 200, b"", orjson.dumps(result))


def project_stats(app: App, request: Request, client: HttpProtocol):
    project = _query(request).get("project") or app.default_project
    return _send_json(app, request, client, queries.project_stats, project, time.time())


def projects(app: App, request: Request, client: HttpProtocol):
    return _send_json(app, request, client, queries.projects, time.time())


def machine_stats(app: App, request: Request, client: HttpProtocol):
    return _send_json(app, request, client, queries.machine_stats, time.time())


def overrides_stats(app: App, request: Request, client: HttpProtocol):
    return _send_json(app, request, client, queries.overrides_stats)


async def _send_stream(client: HttpProtocol, request: Request, content_type: bytes, extra: bytes,
                       chunks: AsyncIterator[bytes]) -> None:
    head = client.stream_head(request, 200, content_type + extra)
    sent_head = False
    async for chunk in chunks:
        client.write_stream(b"" if sent_head else head, [chunk])
        sent_head = True
        if client.flow is not None and client.flow.write_paused:
            await client.drain()
    client.write_stream(b"" if sent_head else head, [], end=True)


def _export(app: App, request: Request, client: HttpProtocol, fmt: str, days: int, project: str | None):
    reader = _reader(app)
    now = time.time()
    since = now - days * 86400
    name = f"cco-{project or 'all'}-{days}d.{fmt}".replace('"', "")
    disposition = f'content-disposition: attachment; filename="{name}"\r\n'.encode("latin-1", "replace")
    if fmt == "csv":
        chunks = reader.stream(lambda conn: queries.csv_export(queries.export_rows(conn, since, project)))
        return _send_stream(client, request, CSV_TYPE, disposition, chunks)

    def produce(conn):
        summary = queries.export_summary(conn, since, project)
        head = {"days": days, "generatedAt": queries.iso(now), "summary": summary}
        if project is not None:
            head = {"project": project, **head}
        yield orjson.dumps(head)[:-1] + b',"calls":['
        first = True
        for row in queries.export_rows(conn, since, project):
            yield orjson.dumps(row) if first else b"," + orjson.dumps(row)
            first = False
        yield b"]}"

    return _send_stream(client, request, wire.CONTENT_TYPE_JSON, disposition, reader.stream(produce))


def export_analytics(app: App, request: Request, client: HttpProtocol):
    days = _int_param(_query(request), "days", 7, 1, MAX_DAYS)
    return _export(app, request, client, "json", days, None)


def export_csv(app: App, request: Request, client: HttpProtocol):
    days = _int_param(_query(request), "days", 7, 1, MAX_DAYS)
    return _export(app, request, client, "csv", days, None)


def export_project(app: App, request: Request, client: HttpProtocol):
    name = unquote(request.path[len(b"/api/export/project/"):].decode("utf-8", "replace"))
    query = _query(request)
    fmt = query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest(f"format: expected json or csv, got {fmt[:40]!r}")
    days = _int_param(query, "days", 7, 1, MAX_DAYS)
    return _export(app, request, client, fmt, days, name)


def events(app: App, request: Request, client: HttpProtocol):
    return app.events.serve(client, request)


def logs(app: App, request: Request, client: HttpProtocol) -> None:
    limit = _int_param(_query(request), "limit", 100, 1, 1000)
    client.send(request, 200, b"", orjson.dumps(recent_logs.last(limit)))


def metrics_text(app: App, request: Request, client: HttpProtocol) -> None:
    client.send(request, 200, b"", metrics.render(app.metrics_registry), content_type=metrics.CONTENT_TYPE)

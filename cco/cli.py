"""Command line: `cco-proxy` (the proxy) and `cco` (run, config validate, config show).

Every flag is also an environment variable CCO_<NAME>. Exit codes (SPEC §2): 0 ok, 2 bad usage or invalid
config (the message names the file and the JSON path), 1 runtime failure (e.g. the port is in use).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import orjson

from cco.config import ConfigError, load_config
from cco.settings import Settings, default_data_dir

_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie")


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from cco.app import version_string

        click.echo(version_string())
        ctx.exit(0)


def proxy_options(func):
    options = [
        click.option("--host", envvar="CCO_HOST", default="127.0.0.1", show_default=True, help="Address to bind."),
        click.option("--port", envvar="CCO_PORT", default=8000, show_default=True, type=click.IntRange(0, 65535),
                     help="Port to listen on."),
        click.option("--config-dir", envvar="CCO_CONFIG_DIR", type=click.Path(file_okay=False),
                     help="Directory with model-routing.json, model-pricing.json, model-overrides.toml "
                          "(files missing there come from the bundled defaults)."),
        click.option("--data-dir", envvar="CCO_DATA_DIR", default=default_data_dir, show_default="~/.local/share/cco",
                     type=click.Path(file_okay=False), help="Directory for the analytics database."),
        click.option("--log-level", envvar="CCO_LOG_LEVEL", default="info", show_default=True,
                     type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)),
        click.option("--log-format", envvar="CCO_LOG_FORMAT", default="text", show_default=True,
                     type=click.Choice(["text", "json"])),
        click.option("--access-log/--no-access-log", envvar="CCO_ACCESS_LOG", default=False, show_default=True,
                     help="Log one line per request."),
        click.option("--cache-size", envvar="CCO_CACHE_SIZE", default=500.0, show_default=True,
                     type=click.FloatRange(min=0.01), help="Cache memory bound in MB (entries, keys and overhead)."),
        click.option("--cache-ttl", envvar="CCO_CACHE_TTL", default=3600.0, show_default=True,
                     type=click.FloatRange(min=0), help="Seconds a cached answer stays valid (0: until evicted)."),
        click.option("--no-cache", envvar="CCO_NO_CACHE", is_flag=True, default=False,
                     help="Disable the response cache."),
        click.option("--project", envvar="CCO_PROJECT", default="default", show_default=True,
                     help="Project of requests that name none (no /p/{project} prefix, no x-cco-project)."),
        click.option("--header-timeout", envvar="CCO_HEADER_TIMEOUT", default=10.0, show_default=True,
                     type=click.FloatRange(min=0.1), help="Seconds a client has to send a request head."),
        click.option("--idle-timeout", envvar="CCO_IDLE_TIMEOUT", default=75.0, show_default=True,
                     type=click.FloatRange(min=0.1), help="Seconds an idle keep-alive connection stays open."),
        click.option("--drain-timeout", envvar="CCO_DRAIN_TIMEOUT", default=10.0, show_default=True,
                     type=click.FloatRange(min=0), help="Seconds in-flight requests get to finish on shutdown."),
        click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
                     help="Print the version and the active implementation (compiled or pure), then exit."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_proxy(**kwargs) -> None:
    from cco.logs import setup_logging

    settings = Settings(host=kwargs["host"], port=kwargs["port"], config_dir=kwargs["config_dir"],
                        data_dir=kwargs["data_dir"], log_level=kwargs["log_level"].lower(),
                        log_format=kwargs["log_format"], access_log=kwargs["access_log"],
                        header_timeout=kwargs["header_timeout"], idle_timeout=kwargs["idle_timeout"],
                        drain_timeout=kwargs["drain_timeout"], cache_size_mb=kwargs["cache_size"],
                        cache_ttl=kwargs["cache_ttl"], no_cache=kwargs["no_cache"], project=kwargs["project"])
    try:
        config = load_config(settings.config_dir)
    except ConfigError as exc:
        click.echo(f"cco-proxy: invalid config: {exc}", err=True)
        sys.exit(2)
    try:
        settings.data_path().mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        click.echo(f"cco-proxy: cannot create data directory {settings.data_dir}: {exc.strerror}", err=True)
        sys.exit(1)
    setup_logging(settings.log_level, settings.log_format)
    from cco.server import AnalyticsUnavailable, PortInUse, run

    try:
        run(settings, config)
    except (PortInUse, AnalyticsUnavailable) as exc:
        click.echo(f"cco-proxy: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"cco-proxy: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", err=True)
        sys.exit(1)


@click.command(name="cco-proxy", context_settings={"help_option_names": ["-h", "--help"]})
@proxy_options
def proxy_main(**kwargs) -> None:
    """Run the CCO proxy."""
    _run_proxy(**kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Print the version and exit.")
def cco_main() -> None:
    """CCO management commands."""


@cco_main.command(name="run")
@proxy_options
def run_command(**kwargs) -> None:
    """Run the proxy (same as cco-proxy)."""
    _run_proxy(**kwargs)


@cco_main.group(name="config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command(name="validate")
@click.option("--config-dir", envvar="CCO_CONFIG_DIR", type=click.Path(file_okay=False))
def config_validate(config_dir: str | None) -> None:
    """Validate the config directory; exit 2 with the file and JSON path of the first error."""
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        click.echo(f"invalid config: {exc}", err=True)
        sys.exit(2)
    click.echo(f"config OK ({config.directory}): {len(config.routes)} routes, "
               f"{len(config.fallback_chain)} fallback chains, {len(config.pricing)} price entries")


@config_group.command(name="show")
@click.option("--config-dir", envvar="CCO_CONFIG_DIR", type=click.Path(file_okay=False))
def config_show(config_dir: str | None) -> None:
    """Print the effective configuration as JSON; secrets are masked."""
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        click.echo(f"invalid config: {exc}", err=True)
        sys.exit(2)
    routes = []
    for spec in config.routes:
        route = {f: getattr(spec, f) for f in spec.__struct_fields__}
        route["headers"] = {k: ("***" if any(w in k.lower() for w in _SECRET_HEADER_WORDS) else v)
                            for k, v in spec.headers.items()}
        if spec.api_key_env:
            route["api_key"] = "set (masked)" if os.environ.get(spec.api_key_env) else "not set: client keys forwarded"
        routes.append(route)
    out = {"config_dir": str(Path(config.directory)), "routes": routes, "fallback_chain": config.fallback_chain,
           "pricing": config.pricing.as_dict(), "overrides": config.overrides.raw}
    click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


def _refused(url: str, exc) -> None:
    """A proxy answered with an error: say what it said (its error message), exit 1."""
    body = exc.read()
    try:
        message = orjson.loads(body)["error"]["message"]
    except Exception:
        message = body.decode("utf-8", "replace")[:200]
    click.echo(f"cco: {url} answered {exc.code}: {message}", err=True)
    sys.exit(1)


def _admin_call(url: str, method: str, path: str) -> dict:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        _refused(url, exc)
    except OSError as exc:
        click.echo(f"cco: no proxy reachable at {url} ({getattr(exc, 'reason', exc)})", err=True)
        sys.exit(1)


@cco_main.group(name="cache")
def cache_group() -> None:
    """Inspect or clear the cache of a running proxy."""


URL_OPTION = click.option("--url", envvar="CCO_URL", default="http://127.0.0.1:8000", show_default=True,
                          help="The running proxy.")


@cache_group.command(name="stats")
@URL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def cache_stats(url: str, as_json: bool) -> None:
    """Hits, misses, size and savings of the proxy's cache."""
    stats = _admin_call(url, "GET", "/api/cache/stats")
    if as_json:
        click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"entries     {stats['entries']}")
    click.echo(f"size        {stats['size']:.2f} / {stats['maxSize']:.0f} MB")
    click.echo(f"hits        {stats['hits']}  misses {stats['misses']}  coalesced {stats['coalesced']}  "
               f"bypassed {stats['bypassed']}")
    click.echo(f"hit rate    {stats['hitRate'] * 100:.1f}%")
    click.echo(f"evictions   {stats['evictions']}  expirations {stats['expirations']}")
    click.echo(f"saved       ${stats['savedCost']:.6f}")


@cache_group.command(name="clear")
@URL_OPTION
def cache_clear(url: str) -> None:
    """Empty the proxy's cache."""
    result = _admin_call(url, "POST", "/api/cache/clear")
    click.echo(f"cleared {result['cleared']} entries")


# Analytics: from a running proxy, or straight from its database when none runs.

DATA_DIR_OPTION = click.option("--data-dir", envvar="CCO_DATA_DIR", default=default_data_dir,
                               show_default="~/.local/share/cco", type=click.Path(file_okay=False),
                               help="Where the database is read when no proxy runs.")


def _proxy_get(url: str, path: str):
    """The response of a running proxy (a file-like object), or None when no proxy answers at `url`."""
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(url.rstrip("/") + path, timeout=30)
    except urllib.error.HTTPError as exc:
        _refused(url, exc)
    except OSError:
        return None


def _open_db(data_dir: str):
    from cco.analytics.writer import open_database

    path = Path(data_dir).expanduser() / "analytics.db"
    if not path.exists():
        click.echo(f"cco: no proxy is running and there is no database at {path}", err=True)
        sys.exit(1)
    return open_database(path, readonly=True)


@cco_main.command(name="stats")
@click.option("--project", help="One project's figures (default: the whole machine).")
@URL_OPTION
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def stats_command(project: str | None, url: str, data_dir: str, as_json: bool) -> None:
    """Cost, savings, tokens and calls recorded by the proxy."""
    import time
    from urllib.parse import quote

    from cco.analytics import queries

    path = f"/api/project/stats?project={quote(project)}" if project else "/api/machine/stats"
    response = _proxy_get(url, path)
    if response is not None:
        with response:
            stats = orjson.loads(response.read())
    else:
        conn = _open_db(data_dir)
        stats = (queries.project_stats(conn, project, time.time()) if project
                 else queries.machine_stats(conn, time.time()))
    if as_json:
        click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
    elif project:
        click.echo(f"project     {stats['project']}")
        click.echo(f"calls       {stats['calls']}  (24 h trend {stats['callsTrend']:+d})")
        click.echo(f"tokens      {stats['tokens']}")
        click.echo(f"cost        ${stats['cost']:.6f}  saved ${stats['savings']:.6f}")
        click.echo(f"cache hits  {stats['cacheHitRate'] * 100:.1f}%   avg latency {stats['avgLatencyMs']:.1f} ms")
    else:
        click.echo(f"calls       {stats['totalCalls']}   tokens {stats['totalTokens']}")
        click.echo(f"cost        ${stats['totalCost']:.6f}  saved ${stats['totalSavings']:.6f}")
        click.echo(f"projects    {len(stats['projects'])} ({stats['activeProjects']} active in 7 days)")
        for model in stats["models"][:10]:
            click.echo(f"  {model['model']:<36} {model['calls']:>8} calls  ${model['cost']:.6f}")


@cco_main.command(name="export")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650), help="How far back.")
@click.option("--format", "fmt", default="json", show_default=True, type=click.Choice(["json", "csv"]))
@click.option("--project", help="Only this project's calls.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File to write (default: "
              "standard output).")
@URL_OPTION
@DATA_DIR_OPTION
def export_command(days: int, fmt: str, project: str | None, output: str | None, url: str, data_dir: str) -> None:
    """Every recorded call of the last N days, one row per call (JSON or CSV)."""
    import time
    from urllib.parse import quote

    from cco.analytics import queries

    if project:
        path = f"/api/export/project/{quote(project, safe='')}?format={fmt}&days={days}"
    else:
        path = f"/api/export/{'csv' if fmt == 'csv' else 'analytics'}?days={days}"
    out = open(output, "wb") if output else sys.stdout.buffer
    show_progress = output is not None and sys.stderr.isatty()
    try:
        response = _proxy_get(url, path)
        if response is not None:
            written = 0
            with response:
                while chunk := response.read(64 * 1024):
                    out.write(chunk)
                    written += len(chunk)
                    if show_progress:
                        click.echo(f"\rexported {written / 1e6:.1f} MB", nl=False, err=True)
            if show_progress:
                click.echo("", err=True)
            return
        conn = _open_db(data_dir)
        now = time.time()
        since = now - days * 86400
        (total,) = next(conn.execute("SELECT COUNT(*) FROM api_calls WHERE ts >= ?"
                                     + (" AND project = ?" if project else ""),
                                     (since, project) if project else (since,)))
        with click.progressbar(queries.export_rows(conn, since, project), length=total, label="exporting",
                               file=sys.stderr if show_progress else open(os.devnull, "w")) as rows:
            if fmt == "csv":
                for line in queries.csv_export(rows):
                    out.write(line.encode())
            else:
                head = {"days": days, "generatedAt": queries.iso(now),
                        "summary": queries.export_summary(conn, since, project)}
                if project:
                    head = {"project": project, **head}
                out.write(orjson.dumps(head)[:-1] + b',"calls":[')
                for i, row in enumerate(rows):
                    out.write((b"," if i else b"") + orjson.dumps(row))
                out.write(b"]}")
    finally:
        if output:
            out.close()
        else:
            out.flush()

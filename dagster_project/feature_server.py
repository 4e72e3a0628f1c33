"""Feast's HTTP feature server for other teams, bound to 127.0.0.1 by default.

    python -m dagster_project.feature_server [--host 127.0.0.1] [--port 6566] [--data-dir DIR]

It is Feast's own FastAPI app (`feast.feature_server.get_app`, the app behind `feast serve`)
on the profile chosen by RECSYS_FEAST_CONFIG, with one change: a request Feast cannot
answer because of what it asked for (an unknown feature, no features, ragged entity
columns) gets a 400 with the reason instead of a 500. Unknown entities are answered 200
with null values and status NOT_FOUND per field, as Feast does; unknown feature services
and views are 404s.

Safe by default (`ServingGuard`, and Starlette's `TrustedHostMiddleware`):
- Only reads are served: a POST to anything but `/get-online-features`,
  `/retrieve-online-documents` and the search endpoints (Feast's `/push`,
  `/write-to-online-store`, `/materialize`, `/materialize-incremental`, ...) gets a 403,
  unless the server was started with $RECSYS_FEATURE_SERVER_WRITE_TOKEN set and the request
  carries `Authorization: Bearer <token>`.
- The `Host` header must name this server (127.0.0.1, localhost, ::1, the bound host, or
  `--allowed-hosts` / $RECSYS_FEATURE_SERVER_HOSTS): a browser page cannot reach it through
  DNS rebinding. Others get a 400.
- A body over 1 MiB gets a 413 (without a Content-Length, a 411); a lookup of more than
  10,000 entity rows gets a 413 that says to split it.
- After a lookup of 1,000 entity rows or more, the memory it freed is handed back to the
  operating system (`release_memory`: glibc keeps freed heap in its arenas otherwise, and
  the server's resident size would stay at its largest request's).

Feature services are looked up once per registry refresh (`cache_ttl_seconds` of the
registry config) instead of on every request: Feast rebuilds the service from the registry
proto on each lookup, which took ~3.8 ms of a ~9 ms request.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from feast import FeatureService, FeatureStore
from feast.errors import FeastError
from feast.feature_server import get_app
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dagster_project.resources import FeastResource
from dagster_project.settings import use_private_umask

logger = logging.getLogger(__name__)
CLIENT_ERRORS = (ValueError, KeyError, TypeError)
WRITE_TOKEN_ENV = "RECSYS_FEATURE_SERVER_WRITE_TOKEN"
ALLOWED_HOSTS_ENV = "RECSYS_FEATURE_SERVER_HOSTS"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
READ_POSTS = ("/get-online-features", "/retrieve-online-documents", "/search")
MAX_BODY_BYTES = 1 << 20
MAX_ENTITY_ROWS = 10_000
LARGE_LOOKUP_ROWS = 1_000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, None where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6").malloc_trim
    return None


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the operating system (glibc's
    `malloc_trim`; a no-op elsewhere)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class ServingGuard:
    """ASGI middleware: reads only unless a write token is configured and sent; bounded
    bodies and entity counts (see the module's docstring)."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        write_token: str = "",
        max_body_bytes: int = MAX_BODY_BYTES,
        max_entity_rows: int = MAX_ENTITY_ROWS,
    ) -> None:
        self.app, self.write_token = app, write_token
        self.max_body_bytes, self.max_entity_rows = max_body_bytes, max_entity_rows

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path = scope["path"].rstrip("/") or "/"
        if not _is_read(path):
            refusal = self._write_refusal(headers.get(b"authorization", b"").decode("latin-1"))
            if refusal:
                await refuse(send, 403, refusal)
                return
        too_long = length_refusal(headers, self.max_body_bytes)
        if too_long:
            await refuse(send, *too_long)
            return
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            await refuse(send, 413, f"the body is over {self.max_body_bytes:,} bytes")
            return
        rows = _entity_rows(body) if path == "/get-online-features" else 0
        if rows > self.max_entity_rows:
            await refuse(
                send,
                413,
                f"{rows:,} entity rows in one request; at most {self.max_entity_rows:,}: "
                "split it into several requests",
            )
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
        if rows >= LARGE_LOOKUP_ROWS:
            release_memory()

    def _write_refusal(self, authorization: str) -> str:
        if not self.write_token:
            return (
                "this server only reads: writes are disabled unless it is started with "
                f"${WRITE_TOKEN_ENV} set (then send Authorization: Bearer <token>)"
            )
        if not hmac.compare_digest(authorization.encode(), f"Bearer {self.write_token}".encode()):
            return "a write needs Authorization: Bearer <the server's write token>"
        return ""


def length_refusal(headers: dict[bytes, bytes], limit: int) -> tuple[int, str] | None:
    """(status, reason) for a request whose declared body is missing or over `limit` bytes."""
    length = headers.get(b"content-length")
    if length is None or not length.isdigit():
        return 411, "send the body with a Content-Length header"
    if int(length) > limit:
        return 413, f"the body is over {limit:,} bytes"
    return None


def _is_read(path: str) -> bool:
    return path in READ_POSTS or (
        path.startswith("/v1/vector_stores/") and path.endswith("/search")
    )


async def read_body(receive: Callable, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _entity_rows(body: bytes) -> int:
    """The number of entity rows a lookup asks for (0 where the body is not one)."""
    try:
        entities = json.loads(body).get("entities")
    except (ValueError, AttributeError):
        return 0
    if not isinstance(entities, dict):
        return 0
    return max((len(v) for v in entities.values() if isinstance(v, list)), default=0)


async def refuse(send: Callable, status: int, detail: str) -> None:
    payload = json.dumps({"error": "refused", "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def cache_feature_services(store: FeatureStore) -> None:
    """Make `store.get_feature_service` reuse a lookup for as long as the registry cache does."""
    lookup = store.get_feature_service
    ttl = store.config.registry.cache_ttl_seconds or 0
    looked_up: dict[str, tuple[float, FeatureService]] = {}

    def get_feature_service(name: str, allow_cache: bool = False) -> FeatureService:
        now = time.monotonic()
        hit = looked_up.get(name)
        if hit is None or now - hit[0] >= ttl:
            hit = looked_up[name] = (now, lookup(name, allow_cache=allow_cache))
        return hit[1]

    store.get_feature_service = get_feature_service  # type: ignore[method-assign]


def allowed_hosts(bound_host: str = "127.0.0.1", extra: str = "") -> list[str]:
    """Host header values served: loopback, the bound host (unless it binds every address),
    and the comma-separated `extra` or $RECSYS_FEATURE_SERVER_HOSTS."""
    names = [*LOOPBACK_HOSTS]
    if bound_host not in ("0.0.0.0", "::", ""):
        names.append(bound_host)
    listed = extra or os.environ.get(ALLOWED_HOSTS_ENV, "")
    return names + [h.strip() for h in listed.split(",") if h.strip()]


def create_app(
    data_dir: str = "",
    config_file: str = "",
    hosts: list[str] | None = None,
    write_token: str | None = None,
):
    """Feast's feature-server app for the platform's store, with client errors as 4xx,
    reads only unless `write_token` (default $RECSYS_FEATURE_SERVER_WRITE_TOKEN) is set, and
    only for the `hosts` given (default: `allowed_hosts()`)."""
    store = FeastResource(data_dir=data_dir, config_file=config_file).store()
    cache_feature_services(store)
    app = get_app(store)

    @app.exception_handler(Exception)
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, FeastError):
            return JSONResponse(status_code=exc.http_status_code(), content=exc.to_error_detail())
        if isinstance(exc, CLIENT_ERRORS) or "not found" in str(exc).lower():
            return JSONResponse(
                status_code=400,
                content={"error": "bad request", "detail": str(exc).strip("'\"")},
            )
        logger.exception("feature server error")
        return JSONResponse(status_code=500, content={"error": "internal", "detail": str(exc)})

    token = os.environ.get(WRITE_TOKEN_ENV, "") if write_token is None else write_token
    app.add_middleware(ServingGuard, write_token=token)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts or allowed_hosts())
    return app


def _parser() -> argparse.ArgumentParser:
    """The server's command line (`recsys serve`)."""
    parser = argparse.ArgumentParser(
        prog="recsys serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6566)
    parser.add_argument("--data-dir", default="", help="default: $RECSYS_DATA_DIR or ./data")
    parser.add_argument("--config-file", default="", help="default: $RECSYS_FEAST_CONFIG")
    parser.add_argument(
        "--allowed-hosts",
        default="",
        help="comma-separated Host names served besides loopback and --host "
        f"(default: ${ALLOWED_HOSTS_ENV})",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve Feast's online features over HTTP (`recsys serve`, `make serve`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    use_private_umask()
    import uvicorn

    uvicorn.run(
        create_app(args.data_dir, args.config_file, allowed_hosts(args.host, args.allowed_hosts)),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()

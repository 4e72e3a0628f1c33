"""The real-time service: `POST /events` (intake) and `POST /recommend`, an ASGI app for uvicorn.

    python -m dagster_project.serving [--host 127.0.0.1] [--port 8000] [--workers 1]
                                      [--data-dir DIR] [--feast-config feature_store.yaml]

(`recsys realtime`, `make serve-realtime`). It needs a data directory where the daily run
has been (`make demo`): the trained model, the catalog, the online store.

- `POST /events`: a JSON list of at most `MAX_EVENTS` events in the contract's fields
  (event_id optional). Answer: received, accepted, and each rejected entry's index, reason
  code and detail (the batch's rules and codes); see `serving.intake`. Requests arriving
  together are checked and landed together (one group per `clean_events` call; after a
  request the intake waits `GATHER_S` for others), so many small batches cost about what
  one large one does.
- `POST /recommend`: {"user_id", "item_id", "cart", "query", "k", "categories",
  "min_price", "max_price", "exclude", "diversity"}, all optional; see `serving.recommend`.
- `GET /health`: the model version, the catalog size, and the intake's counts.

Safe by default: it listens on loopback; with $RECSYS_API_TOKEN set, every POST needs
`Authorization: Bearer <token>` (401 without, 403 with another); the Host header must name
this server (as the feature server's); bodies over 1 MiB get a 413, a missing length a 411;
k, list lengths and text lengths are bounded (422 with the field named); a body that is not
JSON gets a 400 from `/events` and a 422 from `/recommend` (FastAPI's validation). No client
mistake gets a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableSequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dagster_project.feature_server import (
    MAX_BODY_BYTES,
    allowed_hosts,
    length_refusal,
    read_body,
    refuse,
)
from dagster_project.resources import FeastResource
from dagster_project.serving.intake import BatchAnswer, EventIntake
from dagster_project.serving.online import RecentActivityStore
from dagster_project.serving.recommend import LiveRecommender, RecommendRequest
from dagster_project.settings import layout
from dagster_project.storage import SharedStorage, shared_storage

logger = logging.getLogger(__name__)
TOKEN_ENV = "RECSYS_API_TOKEN"
MAX_EVENTS = 1_000  # per request
MAX_GROUP_EVENTS = 10_000  # per group of requests checked together
PUBLISH_EVERY_S = 5.0
SHARED_REFRESH_S = 60.0  # with shared storage: how often the catalog and exclusions are re-read
GATHER_S = 0.005  # how long the intake waits after a request for others to check with it


class RequestGuard:
    """ASGI middleware: the token on every POST when one is set; bounded bodies."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str = "") -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token:
            given = headers.get(b"authorization", b"")
            if not given:
                await refuse(send, 401, f"send Authorization: Bearer <token> (${TOKEN_ENV})")
                return
            if not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
                await refuse(send, 403, "the token is not this server's")
                return
        too_long = length_refusal(headers, MAX_BODY_BYTES)
        if too_long:
            await refuse(send, *too_long)
            return
        await self.app(scope, receive, send)


class IntakeQueue:
    """Requests to `POST /events` wait here; one task checks and lands everything waiting
    together, in a worker thread, and answers each request with its part."""

    def __init__(self, intake: EventIntake) -> None:
        self.intake = intake
        self.waiting: asyncio.Queue[tuple[list[Any], asyncio.Future]] = asyncio.Queue()
        self.received = self.accepted = self.rejected = 0

    async def submit(self, events: list[Any]) -> BatchAnswer:
        done = asyncio.get_running_loop().create_future()
        await self.waiting.put((events, done))
        return await done

    async def run(self) -> None:
        while True:
            group = [await self.waiting.get()]
            size = len(group[0][0])
            # clients answered together send again together: wait for them, so that one
            # check covers them all (its fixed cost is most of a small batch's)
            await asyncio.sleep(GATHER_S)
            while not self.waiting.empty() and size < MAX_GROUP_EVENTS:
                group.append(self.waiting.get_nowait())
                size += len(group[-1][0])
            await self._check(group)

    async def _check(self, group: list[tuple[list[Any], asyncio.Future]]) -> None:
        try:
            answers = await asyncio.to_thread(self.intake.receive, [events for events, _ in group])
        except Exception as exc:  # every waiting request hears of it; the loop goes on
            logger.exception("intake failed")
            for _, done in group:
                done.set_exception(exc)
            return
        for (_, done), answer in zip(group, answers, strict=True):
            self.received += answer.received
            self.accepted += answer.accepted
            self.rejected += len(answer.rejected)
            done.set_result(answer)

    async def publish_periodically(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            await asyncio.to_thread(self.intake.publish_due)


class RecommendBatcher:
    """Requests to `POST /recommend` that reach a worker together are answered together:
    their users' vectors come from one pass of the model (`LiveRecommender.recommend_many`).
    Nothing waits for company: the first request schedules the answer for the event loop's
    next turn, and those parsed in the same turn join it. A batch that fails is answered
    request by request, so each gets its own outcome."""

    def __init__(self, recommender: LiveRecommender) -> None:
        self.recommender = recommender
        self.waiting: list[tuple[RecommendRequest, asyncio.Future]] = []

    async def answer(self, request: RecommendRequest) -> dict:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.waiting.append((request, done))
        if len(self.waiting) == 1:
            loop.call_soon(self._answer_waiting)
        return await done

    def _answer_waiting(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            self._answer(batch)
        finally:  # whatever escaped, no request is left waiting
            for _, done in batch:
                if not done.done():
                    done.set_exception(RuntimeError("the recommendation could not be made"))

    def _answer(self, batch: list[tuple[RecommendRequest, asyncio.Future]]) -> None:
        try:
            answers, failure = self.recommender.recommend_many([r for r, _ in batch]), None
        except Exception as exc:  # answered one by one below, each with its own outcome
            answers, failure = None, exc
        for k, (request, done) in enumerate(batch):
            if done.cancelled():  # the client went away
                continue
            try:
                if answers is not None:
                    answer = answers[k]
                elif len(batch) == 1:
                    raise failure  # type: ignore[misc]
                else:
                    answer = self.recommender.recommend(request)
            except Exception as exc:
                done.set_exception(exc)
                continue
            done.set_result(answer)


async def _refresh_periodically(shared: SharedStorage) -> None:
    while True:
        await asyncio.sleep(SHARED_REFRESH_S)
        try:
            await asyncio.to_thread(shared.fetch_all)
        except OSError:  # the store unreachable for now: the service goes on, tries again
            logger.exception("shared storage: refreshing the working copy failed")


def create_app(
    data_dir: str = "",
    feast_config: str = "",
    token: str | None = None,
    hosts: list[str] | None = None,
) -> FastAPI:
    """The service over one data directory (see the module's docstring)."""
    out = layout(data_dir or None)
    shared = shared_storage(out.root)
    if shared:  # the tables the service reads (catalog, events), as the runs published them
        shared.fetch_all()
    activity = RecentActivityStore(
        FeastResource(data_dir=data_dir, config_file=feast_config).store()
    )
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["recommender"] = await asyncio.to_thread(LiveRecommender, out, activity)
        state["batcher"] = RecommendBatcher(state["recommender"])
        intake = EventIntake(out, activity)
        queue = state["queue"] = IntakeQueue(intake)
        tasks = [
            asyncio.create_task(queue.run()),
            asyncio.create_task(queue.publish_periodically()),
        ]
        if shared:  # the daily run's new catalog and bot exclusions, from another machine
            tasks.append(asyncio.create_task(_refresh_periodically(shared)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            intake.flush()

    app = FastAPI(title="recsys real-time service", lifespan=lifespan)
    _routes(app, state)
    app.add_middleware(
        RequestGuard, token=os.environ.get(TOKEN_ENV, "") if token is None else token
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts or allowed_hosts())
    return app


def _routes(app: FastAPI, state: dict[str, Any]) -> None:
    @app.post("/events")
    async def events(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not isinstance(body, list):
            return _bad(400, "send a JSON list of events")
        if len(body) > MAX_EVENTS:
            return _bad(413, f"{len(body):,} events in one request; at most {MAX_EVENTS:,}")
        answer = await state["queue"].submit(body)
        return JSONResponse(answer.as_dict())

    @app.post("/recommend")
    async def recommend(request: RecommendRequest) -> JSONResponse:
        recommender = state["recommender"]
        if request.query:  # a search loads the text model on first use: seconds, in a thread
            return JSONResponse(await asyncio.to_thread(recommender.recommend, request))
        # a few milliseconds of CPU per request, on the event loop (with the requests that
        # arrived with it, `RecommendBatcher`): handed to a thread, it contended for the GIL
        # with the loop (p99 39-48 ms against 31-37 ms, an interleaved A/B under
        # bench.serving's load)
        return JSONResponse(await state["batcher"].answer(request))

    @app.get("/health")
    async def health() -> dict:
        queue, recommender = state["queue"], state["recommender"]
        return {
            "status": "ok",
            "worker": os.getpid(),  # which worker process answered (each counts its own)
            "model_version": recommender.version,
            "items": len(recommender.item_ids),
            "events": {
                "received": queue.received,
                "accepted": queue.accepted,
                "rejected": queue.rejected,
            },
            "intake_seconds": {k: round(v, 3) for k, v in queue.intake.stage_seconds.items()},
        }


async def _json_body(request: Request) -> Any:
    raw = await read_body(request.receive, MAX_BODY_BYTES)
    if raw is None:
        return _bad(413, f"the body is over {MAX_BODY_BYTES:,} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return _bad(400, f"the body is not JSON: {exc}")


def _bad(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": "bad request", "detail": detail})


def app_from_env() -> FastAPI:
    """`create_app` configured by the environment (`serve_one`'s app; also a factory for
    `uvicorn --factory dagster_project.serving.app:app_from_env`)."""
    return create_app(
        os.environ.get("RECSYS_DATA_DIR", ""),
        os.environ.get("RECSYS_FEAST_CONFIG", ""),
        hosts=allowed_hosts(os.environ.get("RECSYS_SERVE_HOST", "127.0.0.1")),
    )


class ConnectionBalancer:
    """ASGI middleware for several worker processes on one port (`serve_one`).

    The kernel hashes each new connection to one worker's socket, so a few keep-alive
    clients (a load balancer's pool, a benchmark's threads) often end up mostly on one
    worker while another idles: 8 connections over 2 workers split 4:4 only about a quarter
    of the time. Each worker counts the connections (peer addresses, before any proxy
    header rewrites them) that sent it a request in the last `LIVE_S` seconds and publishes
    the count in an array the workers share (`WorkerShares`), beside a heartbeat its
    `serve_one` keeps. While a worker holds more than its fair share (the live connections
    of the workers whose heartbeat is recent, divided among them and rounded up), the
    answer to the next request it gets carries `Connection: close`; that client's next
    request opens a new connection, which the kernel hashes again. So connections spread
    out as they arrive and again when a worker starts late. A worker that died or has not
    started counts for nothing, a single client is never turned away, and no request is
    refused: each gets its answer."""

    LIVE_S = 2.0
    # one connection sent away at a time, until the others' counts show where it went
    CLOSE_EVERY_S = 0.1

    def __init__(self, app: Callable[..., Awaitable[None]], shares: WorkerShares) -> None:
        self.app, self.shares = app, shares
        self.seen: dict[tuple, float] = {}  # connection (peer address) -> last request
        self.pruned_at = self.closed_at = 0.0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        connection = tuple(client)
        self.seen[connection] = now
        if now - self.pruned_at > self.LIVE_S / 4:
            self.seen = {c: t for c, t in self.seen.items() if now - t <= self.LIVE_S}
            self.pruned_at = now
        if now - self.closed_at >= self.CLOSE_EVERY_S and self._over_share(now):
            del self.seen[connection]  # this one goes: it closes after its answer
            self.closed_at = now
            send = _closing(send)
        self.shares.connections[self.shares.index] = len(self.seen)
        await self.app(scope, receive, send)

    def _over_share(self, now: float) -> bool:
        shares, mine = self.shares, len(self.seen)
        others = [
            shares.connections[k]
            for k in range(len(shares.connections))
            if k != shares.index and now - shares.heartbeats[k] <= self.LIVE_S
        ]
        total = mine + sum(others)
        return mine > -(-total // (1 + len(others)))


@dataclass
class WorkerShares:
    """What the worker processes on one port share (arrays from `multiprocessing`): each
    one's live connections and the monotonic time of its last heartbeat; `index`: this
    worker's slot."""

    connections: MutableSequence[int]
    heartbeats: MutableSequence[float]
    index: int = 0

    def beat_forever(self, every_s: float = ConnectionBalancer.LIVE_S / 4) -> None:
        """This worker's heartbeat, every `every_s` (run in a daemon thread)."""
        while True:
            self.heartbeats[self.index] = time.monotonic()
            time.sleep(every_s)


def _closing(send: Callable) -> Callable:
    """`send` with `Connection: close` on the response (uvicorn then closes the connection)."""

    async def closing(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), (b"connection", b"close")],
            }
        await send(message)

    return closing


def serve_one(host: str, port: int, shares: WorkerShares | None = None) -> None:
    """One uvicorn server process on its own socket bound with SO_REUSEPORT: with several,
    the kernel spreads the connections over them (uvicorn's own `--workers` share one socket,
    and a few keep-alive clients then often all land on one worker). `shares`: the workers'
    live connections and heartbeats, which `ConnectionBalancer` keeps even."""
    import uvicorn
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    # uvicorn's proxy-header handling, as it adds it by default, inside the balancer: that
    # one counts connections by their real peer address
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    app: Any = ProxyHeadersMiddleware(app_from_env(), trusted_hosts=trusted)
    if shares is not None and len(shares.connections) > 1:
        app = ConnectionBalancer(app, shares)
        threading.Thread(target=shares.beat_forever, daemon=True).start()
    config = uvicorn.Config(app, log_level="warning", proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])

"""Feast's HTTP feature server for other teams, bound to 127.0.0.1 by default.

    python -m dagster_project.feature_server [--host 127.0.0.1] [--port 6566] [--data-dir DIR]

It is Feast's own FastAPI app (`feast.feature_server.get_app`, the app behind `feast serve`)
on the profile chosen by RECSYS_FEAST_CONFIG, with one change: a request Feast cannot
answer because of what it asked for (an unknown feature, no features, ragged entity
columns) gets a 400 with the reason instead of a 500. Unknown entities are answered 200
with null values and status NOT_FOUND per field, as Feast does; unknown feature services
and views are 404s.

Feature services are looked up once per registry refresh (`cache_ttl_seconds` of the
registry config) instead of on every request: Feast rebuilds the service from the registry
proto on each lookup, which took ~3.8 ms of a ~9 ms request.
"""

from __future__ import annotations

import argparse
import logging
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from feast import FeatureService, FeatureStore
from feast.errors import FeastError
from feast.feature_server import get_app

from dagster_project.resources import FeastResource

logger = logging.getLogger(__name__)
CLIENT_ERRORS = (ValueError, KeyError, TypeError)


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


def create_app(data_dir: str = "", config_file: str = ""):
    """Feast's feature-server app for the platform's store, with client errors as 4xx."""
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

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6566)
    parser.add_argument("--data-dir", default="", help="default: $RECSYS_DATA_DIR or ./data")
    parser.add_argument("--config-file", default="", help="default: $RECSYS_FEAST_CONFIG")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        create_app(args.data_dir, args.config_file),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()

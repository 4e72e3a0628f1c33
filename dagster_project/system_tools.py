"""Programs the platform runs beside Python (redis-server, chromium), installed from Debian by
the project's own scripts when they are missing, and free loopback ports to run them on."""

from __future__ import annotations

import shutil
import socket
import subprocess

from dagster_project.settings import PROJECT_ROOT


def ensure_command(command: str, install_script: str) -> str:
    """The path of `command`, running scripts/`install_script` first when it is missing."""
    found = shutil.which(command)
    if found:
        return found
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / install_script)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = shutil.which(command)
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"{command} is not installed and scripts/{install_script} could not install it "
            f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

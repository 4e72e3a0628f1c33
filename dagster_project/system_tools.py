"""Programs the platform runs beside Python (redis-server, chromium), installed from Debian by
the project's own scripts when they are missing, and free loopback ports to run them on."""

from __future__ import annotations

import shutil
import socket

from dagster_project.settings import PROJECT_ROOT


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

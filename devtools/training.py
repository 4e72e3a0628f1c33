"""`models train` under torchrun with N processes, as a person runs it, for the distributed
training test and benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def train_with_processes(
    processes: int,
    interactions: Path,
    protocol: str,
    out: Path,
    epochs: int = 0,
    long_term: str = "auto",
    quiet: bool = False,
    timeout_s: float | None = None,
) -> dict:
    """Run `torchrun --standalone --nproc_per_node N -m models train ...` and return its
    JSON summary (processes, device, sequences/s, validation and test NDCG, history). With
    `quiet`, its output is kept and shown only when it fails."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(processes),
        "-m", "models", "train", "--interactions", str(interactions), "--protocol", protocol,
        "--epochs", str(epochs), "--long-term", long_term, "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        command, env=env, capture_output=quiet, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[1:])} exited with {done.returncode}: {(done.stderr or '')[-3000:]}"
        )
    return json.loads(out.read_text())

"""Data-parallel training (DDP under torchrun): throughput and quality with 1 and 2
processes, on whichever device the machine has (gloo on CPU, NCCL on CUDA).

    python -m bench.distributed [--interactions PATH] [--protocol loo] [--processes 1,2]
        [--epochs 3] [--long-term none]

Each count runs `torchrun --nproc_per_node N -m models train` on the same split (default:
Amazon Sports, `loo`) and the same settings: the global batch and the steps per epoch are
those of one process, each step shared out among the processes (`models.distributed`).
Reports the training throughput (sequences per second, median over the epochs), the best
validation NDCG@10 and the test NDCG@10, and saves bench/results/distributed.json with the
machine. The towers alone by default (`--long-term none`): the memory's solve is run by every
process alike, which DDP does not share out. On CUDA each process takes its own GPU: a count
above the GPUs present is skipped and said so.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.machine import machine_info, save_figures
from bench.recommender import shared_data
from devtools.training import train_with_processes
from models.embedding import LONG_TERMS


def run(processes: int, args: argparse.Namespace, folder: Path) -> dict:
    """One `models train` under torchrun with `processes` processes: its JSON summary."""
    print(f"[distributed] {processes} process(es) ...", flush=True)
    summary = train_with_processes(
        processes,
        args.interactions,
        args.protocol,
        folder / f"train_{processes}.json",
        epochs=args.epochs,
        long_term=args.long_term,
    )
    summary.pop("history")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sports = shared_data() / "amazon_sports" / "Sports_and_Outdoors.txt"
    parser.add_argument("--interactions", type=Path, default=sports)
    parser.add_argument("--protocol", default="loo")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--long-term", choices=LONG_TERMS, default="none")
    args = parser.parse_args()
    gpus = torch.cuda.device_count()
    figures: dict = {
        "interactions": str(args.interactions),
        "protocol": args.protocol,
        "epochs": args.epochs,
        "long_term": args.long_term,
        "backend": "nccl" if gpus else "gloo",
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "runs": {},
        "skipped": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        for processes in map(int, args.processes.split(",")):
            if gpus and processes > gpus:
                figures["skipped"][processes] = f"{gpus} GPU(s): one process per GPU"
                continue
            figures["runs"][processes] = run(processes, args, Path(folder))
    runs = figures["runs"]
    if 1 in runs and 2 in runs and runs[1]["sequences_per_s"]:
        figures["speedup_2_over_1"] = round(
            runs[2]["sequences_per_s"] / runs[1]["sequences_per_s"], 2
        )
    for processes, summary in runs.items():
        print(
            f"{processes} process(es) on {summary['device']}: {summary['sequences_per_s']} "
            f"sequences/s, validation NDCG@10 {summary['best_validation_ndcg@10']:.4f}, "
            f"test NDCG@10 {summary['test']['ndcg@10']:.4f}"
        )
    figures["machine"] = machine_info()
    save_figures("distributed", figures)


if __name__ == "__main__":
    main()

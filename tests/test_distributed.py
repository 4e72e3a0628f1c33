"""Training on several processes (DDP under torchrun, gloo on this machine's CPU): two
processes reach the one-process model's validation NDCG within the noise."""

from pathlib import Path

import numpy as np
import pytest
from test_models import _two_chain_world

from devtools.training import train_with_processes
from models import distributed


def test_each_process_takes_its_part_of_every_batch(monkeypatch):
    batches = [np.arange(10), np.arange(10, 15), np.array([99])]
    assert distributed.shard(batches) == batches  # one process: everything, as given
    parts = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (rank, 2))
        parts.append(distributed.shard(batches))
    for b, whole in enumerate(batches[:2]):  # the two parts make the batch, no user twice
        together = np.concatenate([parts[0][b], parts[1][b]])
        assert sorted(together.tolist()) == whole.tolist()
    assert parts[0][2].tolist() == parts[1][2].tolist() == [99]  # too small: both take it
    assert [len(p) for p in parts] == [3, 3]  # the same steps on every process


def _train(processes: int, data: Path, out: Path) -> dict:
    return train_with_processes(
        processes, data, "loo", out, epochs=3, long_term="none", quiet=True, timeout_s=600
    )


@pytest.mark.distributed
def test_two_processes_reach_the_one_process_validation_ndcg(tmp_path):
    frame, _ = _two_chain_world(users=600)  # order decides the next item: it must be learnt
    frame["timestamp"] = frame.pop("event_time").astype("int64") // 10**9
    data = tmp_path / "chains.csv"
    frame.to_csv(data, index=False)
    one = _train(1, data, tmp_path / "one.json")
    two = _train(2, data, tmp_path / "two.json")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["best_epoch"] > 0 and two["best_epoch"] > 0  # both trained, from random towers
    assert two["best_validation_ndcg@10"] > 0.5  # the random start scores about 0.06
    # Within the noise: 600 validation users, per-user NDCG spread ~0.35, standard error ~0.015
    assert abs(two["best_validation_ndcg@10"] - one["best_validation_ndcg@10"]) < 0.05
    assert abs(two["test"]["ndcg@10"] - one["test"]["ndcg@10"]) < 0.05
    assert two["sequences_per_s"] > 0

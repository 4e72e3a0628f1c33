"""The recommender: interface, torch model, baselines, metrics and protocols (no Dagster,
no Feast).

Importing it makes OpenMP's idle threads sleep rather than spin (before torch loads): when
another process shares the cores, spinning threads take the time the busy ones need. A
training step slowed 2.6x beside one CPU-bound process with spinning threads and 1.6x with
sleeping ones (`python -m bench.recommender --parts contention` measures the model's epochs).
An OMP_WAIT_POLICY already set is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

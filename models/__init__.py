"""The recommender: interface, torch model, baselines, metrics and protocols (no Dagster,
no Feast).

Importing it makes OpenMP's idle threads sleep rather than spin (before torch loads): when
another process shares the cores, spinning threads take the time the busy ones need. Beside
one CPU-bound process a training epoch took 2.2x its idle time with spinning threads and
1.55x with sleeping ones (`python -m bench.recommender --parts contention`, 2026-12-04).
An OMP_WAIT_POLICY already set is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

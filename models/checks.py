"""Checks of a configuration's values when it is created: every problem at once, in one error.

    problems = Problems("EmbeddingConfig")
    problems.within("dropout", 1.5, 0, 1)
    problems.at_least("heads", 0, 1, integer=True)
    problems.raise_any()
    # ValueError: EmbeddingConfig: dropout must be in [0, 1), not 1.5; heads must be at
    # least 1, not 0

Plain Python (no torch): the models' configs and the platform's (the data generator, the
Dagster settings) use it alike.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable
from dataclasses import fields

# What `models.base.resolve_device` accepts: auto (CUDA where present, else the CPU), cpu,
# cuda, cuda:N (the N-th GPU) or mps (Apple silicon).
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = "auto, cpu, cuda, cuda:N or mps"


class Problems:
    """The problems found in the values of the config `owner`, each a short sentence."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.found: list[str] = []

    def add(self, problem: str) -> None:
        """Record a problem that no helper below describes (e.g. between two fields)."""
        self.found.append(problem)

    def _number(self, name: str, value: object, integer: bool) -> bool:
        """Whether `value` is a number (an integer if `integer`); records it when not."""
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, kind) and not isinstance(value, bool):
            return True
        self.add(f"{name} must be {'an integer' if integer else 'a number'}, not {value!r}")
        return False

    def at_least(self, name: str, value: object, low: float, integer: bool = False) -> bool:
        """`value` >= `low` (and an integer if `integer`); whether it is."""
        if not self._number(name, value, integer):
            return False
        if not value >= low:
            self.add(f"{name} must be at least {low}, not {value!r}")
            return False
        return True

    def above(self, name: str, value: object, low: float) -> None:
        """`value` > `low`."""
        if self._number(name, value, False) and not value > low:
            self.add(f"{name} must be above {low}, not {value!r}")

    def within(
        self, name: str, value: object, low: float, high: float, high_included: bool = False
    ) -> None:
        """`low` <= `value` < `high` (<= `high` if `high_included`)."""
        if not self._number(name, value, False):
            return
        below_high = value <= high if high_included else value < high
        if not (low <= value and below_high):
            span = f"[{low}, {high}{']' if high_included else ')'}"
            self.add(f"{name} must be in {span}, not {value!r}")

    def shares(self, config: object) -> None:
        """Every field of the dataclass `config` in [0, 1) (rates and shares of a whole)."""
        for f in fields(config):  # type: ignore[arg-type]
            self.within(f.name, getattr(config, f.name), 0, 1)

    def one_of(self, name: str, value: object, allowed: Iterable[str]) -> None:
        """`value` is one of `allowed`."""
        allowed = tuple(allowed)
        if value not in allowed:
            self.add(f"{name} must be one of {', '.join(allowed)}, not {value!r}")

    def device(self, name: str, value: object) -> None:
        """A torch device name `models.base.resolve_device` accepts (see `DEVICE`)."""
        if not (isinstance(value, str) and DEVICE.fullmatch(value)):
            self.add(f"{name} must be {DEVICES}, not {value!r}")

    def raise_any(self) -> None:
        """Raise every problem found, as one ValueError naming the config; nothing if none."""
        if self.found:
            raise ValueError(f"{self.owner}: {'; '.join(self.found)}")

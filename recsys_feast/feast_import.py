"""Importing feast without its runtime type checks, for the platform's own processes: the
pipeline's steps, the feature server, the serving app, Celery workers (`dagster_project`'s
`__init__` asks for it) and `python -m recsys_feast`. A process that imports only the feature
repo or `recsys_feast`'s other modules keeps Feast's checks."""

from __future__ import annotations

import functools
import sys
from typing import Any


def feast_without_runtime_type_checks() -> bool:
    """Have the process's first `import feast` skip typeguard's `@typechecked` on Feast's own
    classes; True when it will (feast not imported yet, typeguard present).

    Feast decorates its definition classes (data sources, entities, feature views and
    services) with `@typechecked`, which parses and recompiles their source at every import:
    3.3 s of the 4.5 s that `import feast` took in every process on 2 cores. The checks only
    guard the types of arguments to those classes; the platform's processes read the
    definitions from the registry, and the plain `feast` command line, which another team
    runs on the feature repo (and tests/test_readme.py runs), keeps them. Anything else that
    uses `@typechecked` is checked as before."""
    if "feast" in sys.modules:
        return False  # too late: its classes are instrumented already
    try:
        import typeguard
    except ImportError:
        return False
    checked = typeguard.typechecked
    if getattr(checked, "skips_feast", False):
        return True

    @functools.wraps(checked)
    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is None:  # @typechecked(...) with options
            return functools.partial(typechecked, **options)
        module = getattr(target, "__module__", "") or ""
        if module == "feast" or module.startswith("feast."):
            return target
        return checked(target, **options)

    typechecked.skips_feast = True  # type: ignore[attr-defined]
    typeguard.typechecked = typechecked
    return True

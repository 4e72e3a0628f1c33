"""The platform. Importing `models` first sets OpenMP's passive waiting before torch loads;
importing `recsys_feast` before feast spares every process Feast's runtime type checks (their
import cost: `recsys_feast.feast_without_runtime_type_checks`)."""

import models  # noqa: F401
import recsys_feast  # noqa: F401

"""The platform. Importing `models` first sets OpenMP's passive waiting before torch loads;
feast, when a process imports it, comes without its runtime type checks (seconds of every
process's start: `recsys_feast.feast_import`)."""

import models  # noqa: F401
from recsys_feast.feast_import import feast_without_runtime_type_checks

feast_without_runtime_type_checks()

"""The platform. Importing `models` first sets OpenMP's passive waiting before torch loads."""

import models  # noqa: F401

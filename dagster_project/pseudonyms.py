"""User ids are pseudonymised at ingestion: every table after the quarantine holds
`p` + the first 16 hex digits of HMAC-SHA256(key, raw user id), never the raw id.

The key comes from $RECSYS_PSEUDONYM_KEY. Without it the documented development key is
used, which is fine for the generated data and wrong for real customers: set a secret key
(and keep it: a new key gives everyone new pseudonyms, so features and models start over).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

PSEUDONYM_KEY_ENV = "RECSYS_PSEUDONYM_KEY"
DEVELOPMENT_KEY = "recsys-development-key"


def pseudonym_key() -> bytes:
    return os.environ.get(PSEUDONYM_KEY_ENV, DEVELOPMENT_KEY).encode()


def pseudonymise(user_ids: Iterable[str], key: bytes | None = None) -> list[str]:
    """The pseudonym of each raw user id, in order."""
    key = pseudonym_key() if key is None else key
    return ["p" + hmac.new(key, str(u).encode(), hashlib.sha256).hexdigest()[:16] for u in user_ids]

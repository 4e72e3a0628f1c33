"""User ids are pseudonymised at ingestion: every table after the quarantine holds
`p` + the first 16 hex digits of HMAC-SHA256(key, raw user id), never the raw id.

The key comes from $RECSYS_PSEUDONYM_KEY. Without it the documented development key is
used, which is fine for the generated data and wrong for real customers: set a secret key
(and keep it: a new key gives everyone new pseudonyms, so features and models start over).
Cleaning refuses the development key for landing files that are not exactly the built-in
generator's (`check_pseudonym_key`), unless $RECSYS_ALLOW_DEVELOPMENT_KEY=1 says that is
meant, and then it warns in the run's log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

import duckdb
import pyarrow as pa

PSEUDONYM_KEY_ENV = "RECSYS_PSEUDONYM_KEY"
DEVELOPMENT_KEY = "recsys-development-key"
ALLOW_DEVELOPMENT_KEY_ENV = "RECSYS_ALLOW_DEVELOPMENT_KEY"
SHA256_BLOCK = 64  # bytes: HMAC pads the key to one block


class PseudonymKeyError(RuntimeError):
    """Real data and no secret pseudonym key."""


def check_pseudonym_key(generated: bool) -> str | None:
    """Whether the key may pseudonymise this data: a set key always; the public development
    key for the built-in generator's data (`generated`), or where
    $RECSYS_ALLOW_DEVELOPMENT_KEY=1, with a warning to log (returned). Otherwise an error
    that says how to set the key."""
    if os.environ.get(PSEUDONYM_KEY_ENV) or generated:
        return None
    if os.environ.get(ALLOW_DEVELOPMENT_KEY_ENV) == "1":
        return (
            f"pseudonymising with the public development key (${ALLOW_DEVELOPMENT_KEY_ENV}=1): "
            "anyone who reads the README can reverse these pseudonyms"
        )
    raise PseudonymKeyError(
        f"${PSEUDONYM_KEY_ENV} is not set and the landing files are not the built-in "
        "generator's: refusing to pseudonymise real users with the public development key. "
        f"Set a secret key (e.g. export {PSEUDONYM_KEY_ENV}=$(openssl rand -hex 32)) and keep "
        "it, since a new key gives everyone new pseudonyms; or set "
        f"{ALLOW_DEVELOPMENT_KEY_ENV}=1 if you really mean the development key."
    )


def pseudonym_key() -> bytes:
    return os.environ.get(PSEUDONYM_KEY_ENV, DEVELOPMENT_KEY).encode()


def deletion_digest(user_id: str) -> str:
    """How the deletion log names a deleted customer: HMAC-SHA256 under the pseudonym key
    (a bare hash of a short id is reversed by trying every id; this needs the key), with its
    own prefix so that it matches no pseudonym."""
    message = b"deletion-log:" + str(user_id).encode()
    return hmac.new(pseudonym_key(), message, hashlib.sha256).hexdigest()


def pseudonymise(user_ids: Iterable[str], key: bytes | None = None) -> list[str]:
    """The pseudonym of each raw user id, in order."""
    key = pseudonym_key() if key is None else key
    return ["p" + hmac.new(key, str(u).encode(), hashlib.sha256).hexdigest()[:16] for u in user_ids]


def register_pseudonym_key(con: duckdb.DuckDBPyConnection, key: bytes | None = None) -> None:
    """Table `pseudonym_key(inner_pad, outer_pad)` in a DuckDB session: the key's HMAC-SHA256 pads
    (RFC 2104), which `pseudonym_sql` reads, so that the key is never in a query's text."""
    key = pseudonym_key() if key is None else key
    block = hashlib.sha256(key).digest() if len(key) > SHA256_BLOCK else key
    block = block.ljust(SHA256_BLOCK, b"\0")
    con.register(
        "pseudonym_key",
        pa.table(
            {
                "inner_pad": pa.array([bytes(b ^ 0x36 for b in block)], pa.binary()),
                "outer_pad": pa.array([bytes(b ^ 0x5C for b in block)], pa.binary()),
            }
        ),
    )


def pseudonym_sql(column: str) -> str:
    """SQL for the pseudonym of the raw user ids in `column`, the same as `pseudonymise`'s,
    computed by DuckDB's own SHA-256 (vectorised, on every core) with the pads
    `register_pseudonym_key` registered."""
    inner = f"sha256((SELECT inner_pad FROM pseudonym_key) || encode({column}))"
    return f"'p' || substr(sha256((SELECT outer_pad FROM pseudonym_key) || unhex({inner})), 1, 16)"

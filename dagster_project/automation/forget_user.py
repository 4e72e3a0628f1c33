"""The deletion job: one user forgotten everywhere, on request (see `privacy.py`)."""

from pathlib import Path

from dagster import (
    Config,
    DagsterInstance,
    OpExecutionContext,
    job,
    op,
)

from dagster_project.automation.jobs import WRITES_DATA
from dagster_project.privacy import (
    close_deletion_request,
    delete_online_rows,
    forget_user_files,
    read_deletion_request,
    record_deletion,
    redact_user,
    user_views,
)
from dagster_project.pseudonyms import pseudonymise
from dagster_project.resources import FeastResource, PlatformStorage


class ForgetUserConfig(Config):
    # A filed deletion request (`python -m dagster_project.cli deletion-request USER_ID`):
    # the customer's id stays in an owner-only file that the job deletes when done, so it
    # never lands in the run config Dagster stores.
    request_id: str


def _instance_home(instance: DagsterInstance) -> Path | None:
    """The folder a Dagster instance keeps its runs, event logs and captured output in."""
    root = getattr(instance, "root_directory", None)
    return Path(root) if root and Path(root).is_dir() else None


@op(
    description="Remove one user from every file (landing exports, raw, clean and derived "
    "tables, quarantine, features, model outputs) and from the online store; redact their ids "
    "in event logs, captured output and reports; log the deletion by a digest of the id."
)
def forget_user_everywhere(
    context: OpExecutionContext,
    config: ForgetUserConfig,
    storage: PlatformStorage,
    feast: FeastResource,
) -> None:
    out = storage.layout()
    user_id = read_deletion_request(out, config.request_id)
    removed = forget_user_files(out, user_id)
    store = feast.store()
    views = user_views(store)
    online = delete_online_rows(store, views, pseudonymise([user_id]))
    close_deletion_request(out, config.request_id)
    redacted, left = redact_user(out, user_id, _instance_home(context.instance))
    log = record_deletion(out, user_id, removed, online, len(redacted))
    for name, rows in removed.items():
        context.log.info(f"forget_user: {rows:,} row(s) removed from {name}")
    context.log.info(
        f"forget_user: mentions redacted in {len(redacted)} file(s): {', '.join(redacted)}"
    )
    if left:
        context.log.warning(
            "forget_user: still mentioned (not text or SQLite: remove at the next rebuild) in "
            + ", ".join(f"{name} ({count})" for name, count in left.items())
        )
    context.log.info(
        f"forget_user: {sum(removed.values()):,} rows in {len(removed)} file(s); online rows of "
        f"{', '.join(views)}: {'removed' if online else 'none held'}; logged in {log}"
    )
    context.add_output_metadata(
        {
            "rows_removed": sum(removed.values()),
            "files": len(removed),
            "online": online,
            "files_redacted": len(redacted),
            "files_still_mentioning": len(left),
        }
    )


@job(
    tags=WRITES_DATA,
    description="A deletion request: forget one user everywhere (config: request_id, from "
    "`python -m dagster_project.cli deletion-request USER_ID`). The next "
    "training set cannot contain them: their events are gone from the landing exports too.",
)
def forget_user() -> None:
    forget_user_everywhere()

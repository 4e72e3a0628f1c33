"""What runs with no person watching: jobs, schedules, the landing-files sensor, declarative
automation of the downstream assets, and freshness checks.

- `landing_files_sensor` starts `daily_refresh` when files land (or change) in the landing
  folder. Its cursor records each file's size and modification time (on its first tick, the
  files the raw tables already hold count as handled), and each run's key is a digest of
  exactly the files it was started for, so a file is handled once and a repeated evaluation
  starts nothing new.
- `daily_refresh_schedule` runs `daily_refresh` every morning at 06:00 UTC for the previous
  day's partition (event-date partitions, `assets._common.EVENT_DAYS`); a new file for an
  older day makes the sensor's run cover that day through yesterday.
- `weekly_retrain_schedule` retrains, scores, evaluates and pushes the model outputs to
  Feast every Monday at 04:00 UTC; `daily_model_refresh_schedule` warm-starts the model on
  the new data at 07:00 UTC on the other days.
- Between those, the feature and feature-store assets follow their inputs by declarative
  automation (`AutomationCondition.eager()`), evaluated by `platform_automation`.
- Freshness checks warn when the online features are older than 26 hours, or the
  recommendations older than 8 days.
- `failed_runs_report` writes every failed run (job, failed steps, the error) to
  `reports/failed_runs.jsonl` and the log; Feast steps retry on their own first.
- `dead_runs_sensor` marks runs whose process died (`kill -9`, a crash) as failed every
  30 s, so the writing runs queued behind them start (see `run_recovery.py`).
- `forget_user` (run on request, with a filed request's id as config) removes one user from every
  file, landing exports included, and from the online store (see `privacy.py`).
"""

from dagster_project.automation.checks import freshness_checks
from dagster_project.automation.forget_user import forget_user
from dagster_project.automation.jobs import (
    WRITES_DATA,
    daily_model_refresh,
    daily_refresh,
    daily_selection,
    weekly_retrain,
)
from dagster_project.automation.schedules import (
    all_schedules,
    daily_model_refresh_schedule,
    daily_refresh_schedule,
    weekly_retrain_schedule,
)
from dagster_project.automation.sensors import (
    all_sensors,
    dead_runs_sensor,
    failed_runs_report,
    landing_files_sensor,
    with_automation,
)

# Everything `definitions` registers (named all_*: `schedules` and `sensors` are modules here)
all_jobs = [daily_refresh, weekly_retrain, daily_model_refresh, forget_user]

__all__ = [
    "WRITES_DATA",
    "all_jobs",
    "all_schedules",
    "all_sensors",
    "daily_model_refresh",
    "daily_model_refresh_schedule",
    "daily_refresh",
    "daily_refresh_schedule",
    "daily_selection",
    "dead_runs_sensor",
    "failed_runs_report",
    "forget_user",
    "freshness_checks",
    "landing_files_sensor",
    "weekly_retrain",
    "weekly_retrain_schedule",
    "with_automation",
]

"""When the jobs run: the daily refresh at 06:00 UTC for the previous event day, the weekly
retrain on Mondays at 04:00 UTC, the model refresh at 07:00 UTC on the other days."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    schedule,
)

from dagster_project.automation.jobs import daily_model_refresh, daily_refresh, weekly_retrain

daily_refresh_schedule = build_schedule_from_partitioned_job(
    daily_refresh,
    name="daily_refresh_schedule",
    hour_of_day=6,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every morning at 06:00 UTC: the previous event day's partition into features "
    "and Feast.",
)


@schedule(
    job=weekly_retrain,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every Monday at 04:00 UTC: retrain, score, evaluate, push to Feast.",
)
def weekly_retrain_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return RunRequest(run_key=f"retrain-{week}", tags={"recsys/week": week})


@schedule(
    job=daily_model_refresh,
    cron_schedule="0 7 * * 0,2-6",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every morning but Monday's (the weekly retrain) at 07:00 UTC, after the daily "
    "refresh: warm-start the model on the new data and push its outputs to Feast.",
)
def daily_model_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(run_key=f"warm-{context.scheduled_execution_time:%Y-%m-%d}")


all_schedules = [daily_refresh_schedule, weekly_retrain_schedule, daily_model_refresh_schedule]

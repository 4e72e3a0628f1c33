"""The platform's command line, `recsys` (or `python -m dagster_project.cli`): generate, demo,
recommend, serve, realtime, intake-tail, pseudonym, deletion-request, dagster-home,
first-event-day."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance, JobDefinition, JobExecutionResult

from dagster_project.settings import (
    DATA_DIR_ENV,
    FEATURE_REPO_DIR,
    FIRST_EVENT_DAY_ENV,
    DataLayout,
    layout,
    use_private_umask,
)
from dagster_project.sources.synthetic.generator import (
    PRESETS,
    GeneratorConfig,
    dataset_fingerprint,
    generate,
    preset,
)
from dagster_project.storage import shared_storage

# The model's training budget (seconds) of `demo` per preset, where it differs from the
# pipeline's: the tiny shop is a quick look (its model kept the start under any budget).
DEMO_TRAIN_SECONDS = {"tiny": 10.0}


def _generate(
    preset_name: str,
    data_dir: Path,
    seed: int | None,
    force: bool,
    sequential: bool = False,
    end_day: str | None = None,
) -> GeneratorConfig:
    """The preset's data set in the data directory (kept when the same one is there); ending
    on `end_day` (YYYY-MM-DD) when given, else on the preset's fixed dates."""
    out = layout(data_dir)
    overrides: dict = {"sequential": sequential, **({"seed": seed} if seed is not None else {})}
    if end_day is not None:
        overrides["start"] = _days_after(end_day, 1 - PRESETS[preset_name].n_days)
    cfg = preset(preset_name, **overrides)
    if not force and _holds_data_set(data_dir, cfg):
        print(
            f"[generate] {cfg.preset} data set (seed {cfg.seed}) already in {out.landing}; --force to redo"
        )
        return cfg
    for folder in (out.landing, out.ground_truth):
        shutil.rmtree(folder, ignore_errors=True)
    _clear_derived(out)
    generate(cfg, out)
    return cfg


def _holds_data_set(data_dir: Path, cfg: GeneratorConfig) -> bool:
    """Whether `data_dir` holds the data set `cfg` generates (by its manifest's fingerprint)."""
    manifest_path = layout(data_dir).ground_truth / "manifest.json"
    if not manifest_path.exists():
        return False
    return json.loads(manifest_path.read_text()).get("fingerprint") == dataset_fingerprint(cfg)


def _days_after(day: str, days: int) -> str:
    """The day `days` after `day` (before, when negative), YYYY-MM-DD."""
    import pandas as pd

    return f"{pd.Timestamp(day) + pd.Timedelta(days=days):%Y-%m-%d}"


def _yesterday() -> str:
    import pandas as pd

    return f"{pd.Timestamp.now(tz='UTC').normalize() - pd.Timedelta(days=1):%Y-%m-%d}"


def _clear_derived(
    out: DataLayout, said: str = "[generate] new data set: removed what the old one built"
) -> None:
    """Remove what was built from the landing files being replaced (tables, features, the
    online store, models, reports), so that no day of the old data set survives into the new
    one. Kept: the text-vector cache (keyed by text), privacy records and the run history."""
    derived = [out.tables, out.features, out.feast, out.models, out.reports, out.gx]
    removed = [p.name for p in derived if p.exists()]
    for folder in derived:
        shutil.rmtree(folder, ignore_errors=True)
    shared = shared_storage(out.root)
    for folder in (out.tables, out.features, out.models) if shared else ():  # every machine's
        shared.remove(folder)
    out.duckdb_file.unlink(missing_ok=True)
    if removed:
        print(f"{said} ({', '.join(removed)})")


def first_event_day_of(data_dir: Path) -> str:
    """The first day of the data set in `data_dir` (its declared window), else the default
    first partition day: where the daily partitions must start for that data."""
    from dagster_project.settings import DEFAULT_FIRST_EVENT_DAY
    from dagster_project.sources.manifest import source_window
    from dagster_project.sources.records import LandingFileError

    try:
        start, _ = source_window(layout(data_dir).landing)
    except LandingFileError:  # no data set there yet
        return DEFAULT_FIRST_EVENT_DAY
    return f"{start:%Y-%m-%d}"


# Runs that write the data directory queue behind each other (tag recsys/writes, limit 1):
# two runs of the same day can never interleave their writes.
DAGSTER_YAML = """telemetry:
  enabled: false
concurrency:
  runs:
    tag_concurrency_limits:
      - key: "recsys/writes"
        limit: 1
"""


def prepare_dagster_home(data_dir: Path) -> Path:
    """The Dagster instance folder under the data directory: telemetry off (no network here),
    and one writing run at a time."""
    home = layout(data_dir).dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or "recsys/writes" not in config.read_text():
        config.write_text(DAGSTER_YAML)
    return home


def platform_job(job_name: str, data_dir: str, settings: dict[str, float | str]) -> JobDefinition:
    """The platform's job `job_name` with its resources bound to `data_dir` and the recommender
    `settings`, on the in-process executor: what `materialize_all` runs, rebuilt from these
    arguments (`execute_job` takes a job it can reconstruct)."""
    from dagster import in_process_executor

    from dagster_project.definitions import platform_definitions

    definitions = platform_definitions(data_dir, in_process_executor, **settings)
    return definitions.resolve_job_def(job_name)


def materialize_all(
    data_dir: Path, instance: DagsterInstance | None = None, **settings: float | str
) -> list[JobExecutionResult]:
    """Build everything as operations would, in three runs of the platform's own jobs,
    recorded in `instance` (default: the one under the data directory, which the UI shows):
    `daily_refresh` backfilling every event day but the last in one run, `daily_refresh` for
    the last day (the incremental run), and `weekly_retrain`. Prints every check's result;
    stops after a failed run. Returns the runs' results.

    The runs go through `execute_job`, not `execute_in_process`, which keeps every step's
    output in memory until the run's result is dropped: on the default shop the frames the
    daily runs returned (0.7 GB) were still held when training started, and the demo's peak
    memory was 3.4 GB instead of 2.7 GB."""
    from dagster import build_reconstructable_job, execute_job

    from dagster_project.definitions import INFO_LOGGING, every_event_day
    from models.base import release_unused_memory

    days = every_event_day(data_dir)
    first = days["dagster/asset_partition_range_start"]
    last = days["dagster/asset_partition_range_end"]
    runs = [
        (
            "daily_refresh",
            f"backfill of the event days {first}..{_days_after(last, -1)}",
            first,
            _days_after(last, -1),
        ),
        ("daily_refresh", f"the day {last}, incrementally", last, last),
        ("weekly_retrain", "training, scoring, evaluation, model outputs to Feast", None, None),
    ]
    if first == last:
        runs = runs[1:]
    results = []
    with _instance(data_dir, instance) as instance:
        for job_name, what, start, end in runs:
            print(f"[demo] {job_name}: {what}", flush=True)
            tags = {"recsys/trigger": "make demo"}
            if start is not None:
                tags |= {
                    "dagster/asset_partition_range_start": start,
                    "dagster/asset_partition_range_end": end,
                }
            job = build_reconstructable_job(
                "dagster_project.cli",  # not __name__: `python -m` runs this module as __main__
                platform_job.__name__,
                reconstructable_kwargs={
                    "job_name": job_name,
                    "data_dir": str(data_dir),
                    "settings": settings,
                },
            )
            result = execute_job(
                job, instance=instance, tags=tags, run_config=INFO_LOGGING, raise_on_error=False
            )
            for check in result.get_asset_check_evaluations():
                status = "passed" if check.passed else f"FAILED ({check.severity.value})"
                print(f"[check] {check.asset_key.to_user_string()}:{check.check_name} {status}")
                summary = check.metadata.get("summary")
                if not check.passed and summary is not None:
                    print("        " + str(summary.value).replace("\n", "\n        "))
            results.append(result)
            if not result.success:
                break
            release_unused_memory()  # the next run starts from what this one still holds
    return results


@contextmanager
def _instance(data_dir: Path, given: DagsterInstance | None) -> Iterator[DagsterInstance]:
    """`given`, or the persistent instance under the data directory (closed afterwards)."""
    from dagster import DagsterInstance

    if given is not None:
        yield given
        return
    from dagster_project.run_recovery import fail_dead_runs

    with DagsterInstance.from_config(str(prepare_dagster_home(data_dir))) as instance:
        for run_id in fail_dead_runs(instance):
            print(f"[runs] {run_id}: its process is gone (killed?); marked failed")
        yield instance


def _kept_end_day(args: argparse.Namespace, data_dir: Path) -> str | None:
    """The last day of the data set already in `data_dir` when it is this preset, seed and
    knob (a re-run on a later day keeps it, and any files added to its landing), else None."""
    manifest_path = layout(data_dir).ground_truth / "manifest.json"
    if args.force or not manifest_path.exists():
        return None
    existing = json.loads(manifest_path.read_text())
    start = existing.get("config", {}).get("start")
    if start is None:
        return None
    overrides = {"sequential": args.sequential, "start": start}
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = preset(args.preset, **overrides)
    return _days_after(start, cfg.n_days - 1) if _holds_data_set(data_dir, cfg) else None


def _demo(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    started = time.perf_counter()
    yesterday = _yesterday()
    end_day = args.end_day or _kept_end_day(args, data_dir) or yesterday
    if not args.end_day and end_day != yesterday:
        print(
            f"[demo] keeping the data set in {data_dir} (it ends {end_day}); --force or "
            "--end-day for a new one"
        )
    cfg = _generate(args.preset, data_dir, args.seed, args.force, args.sequential, end_day)
    if layout(data_dir).tables.exists():
        # A kept data set that was built before: build it again from its landing files, as
        # a new one is. A backfill over days already built would otherwise leave the online
        # store holding the later days' rows that the backfill's offline features dropped.
        _clear_derived(layout(data_dir), "[demo] the data set was built before: removed")
    # The daily partitions start on the data's first day (read when the definitions load).
    os.environ[FIRST_EVENT_DAY_ENV] = cfg.start
    print(f"[demo] the shop's {cfg.n_days} days: {cfg.start} .. {end_day}")
    generated = time.perf_counter()
    settings: dict[str, int | float] = {"test_days": args.test_days}
    budget = args.train_seconds
    if budget is None:
        budget = DEMO_TRAIN_SECONDS.get(args.preset)
    if budget is not None:
        settings["train_seconds"] = budget
    ok = all(r.success for r in materialize_all(data_dir, **settings))
    done = time.perf_counter()
    out = layout(data_dir)
    print()
    if not ok:
        print("The run failed: open the Dagster UI (make ui) to see which step and why.")
        return 1
    print(
        f"Evaluation (temporal hold-out, last {args.test_days} days; {out.reports / 'evaluation.json'}):"
    )
    print((out.reports / "evaluation.md").read_text())
    print(f"generate {generated - started:.1f} s, materialize {done - generated:.1f} s")
    print("Where things are:")
    for what, path in [
        ("landing files", out.landing),
        ("tables (Parquet)", out.tables),
        ("features per event day", out.features / "daily"),
        ("quarantine", out.table("quarantine")),
        ("data-quality report (analysts)", out.reports / "quality_report.html"),
        ("evaluation report", out.reports / "evaluation.html"),
        ("GX Data Docs", out.gx / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"),
        ("DuckDB (views over the tables)", out.duckdb_file),
        ("Feast repo", FEATURE_REPO_DIR),
        ("Feast registry and online store", out.feast),
        ("model", out.models / "embedding"),
        ("Dagster runs (make ui)", out.dagster_home),
    ]:
        print(f"  {what:34s} {path}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    """Every scenario from the trained model's vectors, printed with the items' titles."""
    import pandas as pd

    from dagster_project.features.text import PRECISION_FILE, load_encoder
    from dagster_project.pseudonyms import pseudonymise
    from dagster_project.recommender.inputs import stored_model_items, trained_model
    from models.base import resolve_device

    out = layout(Path(args.data_dir).resolve())
    try:
        model = trained_model(out, args.device)
    except FileNotFoundError as missing:
        print(missing)
        return 2
    # The tables hold pseudonyms; a customer's own id is pseudonymised here.
    user = args.user
    if user and user not in model.user_index:
        user = pseudonymise([user])[0]
    catalog = pd.read_parquet(
        out.table("items"), columns=["item_id", "title", "category", "price", "available"]
    )
    unavailable = catalog.loc[~catalog["available"].fillna(False).astype(bool), "item_id"]
    if args.query:
        items = stored_model_items(out)
        items = items[items["text_embedding"].notna() & ~items["item_id"].isin(unavailable)]
        text = items[["item_id"]].assign(embedding=items["text_embedding"])
        encode = load_encoder(str(resolve_device(args.device)), decided=out.cache / PRECISION_FILE)
        query = encode([args.query])[0]
        shown = model.search(query, text, user_id=user, k=args.k)
        title = f"search {args.query!r}" + (f" for {args.user}" if args.user else "")
    elif args.similar_to:
        shown = model.similar_items(args.similar_to, args.k)
        title = f"items like {args.similar_to}"
    elif args.history:
        history = pd.DataFrame({"item_id": args.history.split(",")})
        shown = model.recommend_for_history(history, args.k)
        title = f"a new visitor who looked at {args.history}"
    else:
        shown = model.recommend([user], args.k, unavailable=unavailable)
        title = f"for {args.user}"
        if shown.empty:
            print(f"user {args.user!r} is not in the model's training data; try --history")
            return 2
    print(f"[{model.version}] {title}:")
    print(shown.merge(catalog, on="item_id", how="left").to_string(index=False))
    return 0


def _command(sub: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line summary is also what its own --help opens with."""
    return sub.add_parser(name, help=summary, description=summary)


def _add_data_dir(command: argparse.ArgumentParser, default_dir: str) -> None:
    """The --data-dir option: which data directory a command works on."""
    command.add_argument(
        "--data-dir",
        default=default_dir,
        help=f"data directory (default ${DATA_DIR_ENV} or ./data)",
    )


def _parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per task."""
    default_dir = os.environ.get(DATA_DIR_ENV) or str(layout().root)
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # Listed for --help; main hands everything after `serve` to the feature server.
    _command(sub, "serve", "the HTTP feature server on loopback (its options: recsys serve --help)")
    _command(
        sub,
        "realtime",
        "POST /events and POST /recommend on loopback (options: recsys realtime --help)",
    )
    _command(
        sub,
        "intake-tail",
        "feed a JSON-lines file of events to the intake (options: recsys intake-tail --help)",
    )
    _add_data_set_commands(sub, default_dir)
    _add_data_dir_commands(sub, default_dir)
    _add_recommend_command(sub, default_dir)
    _add_scale_out_commands(sub, default_dir)
    return parser


def _add_scale_out_commands(sub: argparse._SubParsersAction, default_dir: str) -> None:
    """`backfill` (a job over a range of event days on the configured executor) and
    `celery-workers` (the workers of the celery executor)."""
    backfill = _command(
        sub,
        "backfill",
        "run a job over a range of event days in one run, on the executor "
        "$RECSYS_EXECUTOR names (multiprocess, in_process or celery), recorded in the data "
        "directory's Dagster instance",
    )
    backfill.add_argument(
        "--job", default="daily_refresh", help="a job of dagster_project.definitions"
    )
    backfill.add_argument("--from", dest="first", type=_day, help="default: the first event day")
    backfill.add_argument("--to", dest="last", type=_day, help="default: the last event day")
    workers = _command(
        sub,
        "celery-workers",
        "start Celery workers for RECSYS_EXECUTOR=celery (broker: $RECSYS_CELERY_BROKER) "
        "until Ctrl-C",
    )
    workers.add_argument("--count", type=int, default=2, help="how many workers")
    workers.add_argument("--concurrency", type=int, default=1, help="steps at once per worker")
    for p in (backfill, workers):
        _add_data_dir(p, default_dir)


def _use_data_dir(data_dir: Path) -> None:
    """Point this process and its children (workers, step processes) at `data_dir`: its
    files, its Dagster instance and its first event day."""
    os.environ[DATA_DIR_ENV] = str(data_dir)
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(data_dir))
    os.environ[FIRST_EVENT_DAY_ENV] = first_event_day_of(data_dir)


def _backfill(args: argparse.Namespace) -> int:
    """`recsys backfill`: one run of `args.job` over the days asked, on the configured
    executor (the job is loaded from `dagster_project.definitions`, as workers load it)."""
    data_dir = Path(args.data_dir).resolve()
    _use_data_dir(data_dir)
    from dagster import DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from dagster_project.executors import EXECUTOR_ENV, platform_executor

    try:
        platform_executor()  # what the definitions will pick: a clear error here if unusable
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from dagster_project.definitions import INFO_LOGGING, every_event_day

    start, end = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
    tags = {**every_event_day(data_dir), "recsys/trigger": "recsys backfill"}
    tags[start], tags[end] = args.first or tags[start], args.last or tags[end]
    first, last = tags[start], tags[end]
    repository = ReconstructableRepository.for_module("dagster_project.definitions", "defs")
    executor = os.environ.get(EXECUTOR_ENV) or "multiprocess"
    print(f"[backfill] {args.job} for {first}..{last} on the {executor} executor", flush=True)
    if executor == "celery":
        print("[backfill] its steps wait for Celery workers: `recsys celery-workers`", flush=True)
    with DagsterInstance.get() as instance:
        result = execute_job(
            repository.get_reconstructable_job(args.job),
            instance=instance,
            tags=tags,
            run_config=INFO_LOGGING,
            raise_on_error=False,
        )
    print(f"[backfill] run {result.run_id}: {'success' if result.success else 'FAILED'}")
    return 0 if result.success else 1


def _celery_workers(args: argparse.Namespace) -> int:
    """`recsys celery-workers`: start the workers, wait for Ctrl-C, stop them by PID."""
    from dagster_project.executors import start_workers, stop_workers

    data_dir = Path(args.data_dir).resolve()
    _use_data_dir(data_dir)
    folder = layout(data_dir).root / "celery"
    workers: list = []
    try:
        workers = start_workers(args.count, folder, args.concurrency)
        print(f"[celery] {args.count} worker(s) started, logs in {folder}; Ctrl-C stops them")
        while all(worker.poll() is None for worker in workers):
            time.sleep(1)
        print("[celery] a worker stopped: see its log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except ValueError as error:  # no broker, or a broker URL Celery cannot use
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        stop_workers(workers)


def _add_data_set_commands(sub: argparse._SubParsersAction, default_dir: str) -> None:
    """`generate` and `demo`: the synthetic shop, and everything built from it."""
    gen = _command(sub, "generate", "write the synthetic shop's landing files and ground truth")
    demo = _command(sub, "demo", "generate data, materialize every asset, print the evaluation")
    for p in (gen, demo):
        p.add_argument(
            "--preset",
            choices=sorted(PRESETS),
            default="default",
            help="the shop's size: "
            + "; ".join(
                f"{name} ({cfg.n_users:,} users, {cfg.n_items:,} items, {cfg.n_events:,} "
                f"events, {cfg.n_days} days)"
                for name, cfg in PRESETS.items()
            ),
        )
        _add_data_dir(p, default_dir)
        p.add_argument(
            "--seed", type=int, default=None, help="the generator's seed (default: the preset's)"
        )
        p.add_argument(
            "--force", action="store_true", help="regenerate even if the same data set exists"
        )
        p.add_argument(
            "--sequential",
            action="store_true",
            help="shoppers whose next step depends on their last: accessories after a device, "
            "repeat purchases of consumables, sessions that continue and drift",
        )
    demo.add_argument(
        "--test-days", type=int, default=3, help="days held out at the end for evaluation"
    )
    demo.add_argument(
        "--train-seconds",
        type=float,
        default=None,
        help="the model's training budget in seconds, 0 for none (default: "
        f"{DEMO_TRAIN_SECONDS['tiny']:g} s on the tiny preset, a quick look; else the "
        "pipeline's, RecommenderSettings.train_seconds)",
    )
    demo.add_argument(
        "--end-day",
        type=_day,
        default=None,
        help="the shop's last day, YYYY-MM-DD (default: the data set already in the data "
        "directory, else yesterday, UTC)",
    )
    gen.add_argument(
        "--end-day",
        type=_day,
        default=None,
        help="the shop's last day, YYYY-MM-DD (default: the preset's fixed dates, which tests "
        "and benchmarks use: 2026-09-01 on)",
    )


def _add_data_dir_commands(sub: argparse._SubParsersAction, default_dir: str) -> None:
    """The small commands about one data directory: its Dagster home, first event day,
    pseudonyms and deletion requests."""
    home = _command(sub, "dagster-home", "create the Dagster instance folder and print its path")
    _add_data_dir(home, default_dir)
    first = _command(
        sub,
        "first-event-day",
        "print the first day of the data set in the data directory (where the daily "
        "partitions start; `make ui` passes it as $RECSYS_FIRST_EVENT_DAY)",
    )
    _add_data_dir(first, default_dir)
    pseudo = _command(
        sub,
        "pseudonym",
        "the pseudonym the tables and Feast use for each user id (key: "
        "$RECSYS_PSEUDONYM_KEY, else the development key)",
    )
    pseudo.add_argument("user_ids", nargs="+", help="user ids as the landing files write them")
    request = _command(
        sub,
        "deletion-request",
        "file a request to forget a customer; prints the request id to give the "
        "forget_user job (the customer's id never enters Dagster's run config)",
    )
    request.add_argument("user_id", help="the customer's id as the landing files write it")
    _add_data_dir(request, default_dir)


def _add_recommend_command(sub: argparse._SubParsersAction, default_dir: str) -> None:
    rec = _command(
        sub,
        "recommend",
        "recommendations from the trained model: for a user, like an item, a search, "
        "or a new visitor's few items",
    )
    _add_data_dir(rec, default_dir)
    rec.add_argument("--user", help="a user id: their top-k, or whose taste re-ranks --query")
    rec.add_argument("--query", help="search text (MiniLM), personalised when --user is given")
    rec.add_argument("--similar-to", metavar="ITEM", help="items to show on ITEM's page")
    rec.add_argument("--history", metavar="ITEMS", help="comma-separated items of a new visitor")
    rec.add_argument("--k", type=int, default=10, help="how many items to show")
    rec.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _day(text: str) -> str:
    import pandas as pd

    try:
        return f"{pd.Timestamp(text):%Y-%m-%d}"
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a day written YYYY-MM-DD: {text!r}") from error


def main(argv: list[str] | None = None) -> int:
    use_private_umask()
    # Dagster's notes on the beta and superseded APIs the definitions use (`backfill_policy`,
    # the last-update freshness checks) are for the platform's developers, not its users.
    for note in (r".* is currently in beta", r".* is superseded and its usage is discouraged"):
        warnings.filterwarnings("ignore", message=note, module="dagster")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from dagster_project.feature_server import main as serve

        serve(argv[1:])
        return 0
    if argv[:1] == ["realtime"]:
        from dagster_project.serving.__main__ import main as realtime

        realtime(argv[1:])
        return 0
    if argv[:1] == ["intake-tail"]:
        from dagster_project.serving.tail import main as intake_tail

        intake_tail(argv[1:])
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "dagster-home":
        print(prepare_dagster_home(Path(args.data_dir).resolve()))
        return 0
    if args.command == "first-event-day":
        print(first_event_day_of(Path(args.data_dir).resolve()))
        return 0
    if args.command == "pseudonym":
        from dagster_project.pseudonyms import pseudonymise

        for raw, pseudonym in zip(args.user_ids, pseudonymise(args.user_ids), strict=True):
            print(f"{raw}\t{pseudonym}")
        return 0
    if args.command == "deletion-request":
        from dagster_project.privacy import file_deletion_request

        request_id = file_deletion_request(layout(Path(args.data_dir).resolve()), args.user_id)
        config = {"ops": {"forget_user_everywhere": {"config": {"request_id": request_id}}}}
        print(request_id)
        print(f"run it with the forget_user job, config: {json.dumps(config)}", file=sys.stderr)
        return 0
    if args.command == "recommend":
        if not (args.user or args.query or args.similar_to or args.history):
            parser.error("recommend needs --user, --query, --similar-to or --history")
        return _recommend(args)
    if args.command == "backfill":
        return _backfill(args)
    if args.command == "celery-workers":
        return _celery_workers(args)
    if args.command == "generate":
        data_dir = Path(args.data_dir).resolve()
        _generate(args.preset, data_dir, args.seed, args.force, args.sequential, args.end_day)
        return 0
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())

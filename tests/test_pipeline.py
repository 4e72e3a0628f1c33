"""The whole asset graph on the tiny preset: row accounting, planted problems, Feast, the model."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dagster_project.pseudonyms import pseudonymise
from dagster_project.resources import FeastResource
from dagster_project.settings import PROJECT_ROOT
from dagster_project.sources.raw_table import read_landing, read_raw
from tests.conftest import PIPELINE_SETTINGS


@pytest.fixture(scope="module")
def run(pipeline_run):
    result, out = pipeline_run
    assert result.success, "the tiny pipeline run failed"
    return out


def test_every_check_passed(pipeline_run):
    result, _ = pipeline_run
    evaluations = result.get_asset_check_evaluations()
    drift = [c for c in evaluations if c.check_name == "events_clean_drift"]
    failed = [
        f"{c.asset_key.to_user_string()}:{c.check_name}"
        for c in evaluations
        if not c.passed and c not in drift
    ]
    assert not failed
    # The statistical check (WARN) judges the latest day: the shop's last day shows no drift.
    # The backfill's last day (2026-09-20) comes after a day of cart hoarders re-adding the
    # same items (bots are still in events_clean), whose prices it does not share: that warns.
    assert len(drift) == 2 and drift[-1].passed
    names = {f"{c.asset_key.to_user_string()}:{c.check_name}" for c in evaluations}
    # 9 quality and serving checks, and 5 freshness checks (features and model outputs); the
    # daily ones ran in both daily runs.
    assert len(names) == 14 and len(evaluations) == 24
    assert sum(name.endswith("freshness_check") for name in names) == 5


def test_the_events_suite_validates_the_days_its_run_cleaned(pipeline_run):
    """The backfill's suite read every day but the last; the last day's run read that day."""
    result, out = pipeline_run
    suites = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "events_clean_suite"
    ]
    days = sorted(path.stem for path in out.table("events_clean").glob("*.parquet"))
    assert [c.metadata["event_days"].value for c in suites] == [
        f"{days[0]}..{days[-2]} ({len(days) - 1} days)",
        days[-1],
    ]
    assert not any("event_ids_on_later_days" in c.metadata for c in suites)
    last_day = pd.read_parquet(out.day_file("events_clean", days[-1]))
    assert suites[-1].metadata["rows"].value == len(last_day)


def test_every_raw_row_is_clean_or_quarantined_with_a_reason(run):
    raw_events = read_raw(run.raw_table("raw_events")).to_pandas()
    raw_items = read_raw(run.raw_table("raw_items")).to_pandas()
    clean_events = pd.read_parquet(run.table("events_clean"))
    clean_items = pd.read_parquet(run.table("items_clean"))
    quarantine = pd.read_parquet(run.table("quarantine"))
    assert len(raw_events) + len(raw_items) == len(clean_events) + len(clean_items) + len(
        quarantine
    )
    for table, raw, clean in [
        ("behaviour_events", raw_events, clean_events),
        ("items", raw_items, clean_items),
    ]:
        per_file = raw.groupby("source_file").size()
        accounted = (
            clean.groupby("source_file")
            .size()
            .add(
                quarantine[quarantine["table"] == table].groupby("source_file").size(), fill_value=0
            )
        )
        pd.testing.assert_series_equal(
            per_file, accounted.reindex(per_file.index).astype(per_file.dtype), check_names=False
        )
    assert quarantine["reason"].notna().all() and quarantine["detail"].notna().all()
    # Each row names the run that cleaned it: the backfill's days, then the last day's run.
    assert quarantine["raw"].notna().all() and quarantine["run_id"].nunique() == 2


def test_the_row_accounting_holds_under_a_quoted_data_directory(run, tmp_path):
    """A `'` in the data directory's path is quoted, not pasted, into the SQL."""
    import shutil

    from dagster_project.quality.accounting import accounting_by_table
    from dagster_project.settings import layout

    quoted = layout(tmp_path / "shop's data")
    shutil.copytree(run.tables, quoted.tables)
    accounting = accounting_by_table(quoted)
    assert accounting["balanced"].all()
    assert accounting.equals(accounting_by_table(run))


def test_planted_problems_are_caught_with_the_expected_reason(run):
    truth = pd.read_parquet(run.ground_truth / "planted_problems.parquet")
    # The paths are where the shop was generated (this run is a copy): what follows landing/.
    truth["source_file"] = truth["path"].str.split("landing/").str[-1]
    quarantine = pd.read_parquet(run.table("quarantine"))
    found = truth.merge(
        quarantine,
        left_on=["source_file", "line"],
        right_on=["source_file", "source_line"],
        how="left",
    )
    missed = found[found["reason"] != found["expected_reason"]]
    assert missed.empty, missed[["source_file", "line", "problem", "reason"]].head()
    # Nothing else was quarantined: every quarantined row is a planted problem.
    assert len(quarantine) == len(truth)


def test_planted_bots_are_flagged_and_excluded_hard_negatives_kept(run):
    labels = pd.read_parquet(run.ground_truth / "traffic_labels.parquet")
    labels["user_id"] = pseudonymise(labels["user_id"])  # the tables hold pseudonyms
    bots = labels[labels["traffic_class"] == "bot"]
    keep = labels[labels["traffic_class"] == "hard_negative"]
    scores = pd.read_parquet(run.table("user_traffic_scores")).set_index("user_id")
    assert scores.loc[bots["user_id"], "is_bot"].all()
    assert not scores.loc[keep["user_id"], "is_bot"].any()
    humans = scores[~scores.index.isin(labels["user_id"])]
    assert humans["is_bot"].mean() <= 0.01
    assert scores.loc[bots["user_id"], "reasons"].str.len().min() > 0
    behaviour = pd.read_parquet(run.table("behaviour_events"), columns=["user_id"])
    assert not behaviour["user_id"].isin(bots["user_id"]).any()
    assert behaviour["user_id"].isin(keep["user_id"]).any()
    audit = pd.read_parquet(run.table("behaviour_exclusions"))
    assert set(audit["user_id"]) == set(scores.index[scores["is_bot"]])
    sessions = pd.read_parquet(run.table("session_traffic_scores"))
    assert sessions["events"].sum() == scores["events"].sum()  # every event in one session
    assert sessions[sessions["user_id"].isin(bots["user_id"])]["is_bot_session"].all()


def test_flash_sale_items_are_popularity_spikes_not_bot_driven(run):
    manifest = json.loads((run.ground_truth / "manifest.json").read_text())
    outliers = pd.read_parquet(run.table("item_outliers")).set_index("item_id")
    items = pd.read_parquet(run.table("items_clean"), columns=["item_id"])
    assert set(outliers.index) == set(items["item_id"])  # one row per catalog item
    deals = outliers.loc[manifest["flash_sale"]["items"]]
    spiked = deals[deals["popularity_spike"]]
    assert len(spiked) and not deals["bot_driven"].any()  # the tiny shop: not every deal spikes
    sale_day = pd.Timestamp(manifest["flash_sale"]["start"]).date()
    assert (spiked["peak_date"].dt.date == sale_day).all()
    assert spiked["reasons"].str.contains("usual share").all()


def test_quality_report_shows_bot_scores_and_the_confusion_matrix(run):
    page = (run.reports / "quality_report.html").read_text()
    for text in ["Bot score distribution", "Confusion matrix", "Item outliers", "reasons"]:
        assert text in page
    assert "click_farm" in page and "scheduled_automation" in page


def test_feast_serves_online_features_for_a_known_user(run):
    features = pd.read_parquet(run.feature_table("user_features"))
    latest = features.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    user = latest["views_7d"].idxmax()
    store = FeastResource(data_dir=str(run.root)).store()
    online = store.get_online_features(
        features=store.get_feature_service("online_ranking"),
        entity_rows=[{"user_id": user, "item_id": "i0000001"}],
        full_feature_names=True,
    ).to_dict()
    assert online["user_behaviour__views_7d"][0] == latest.loc[user, "views_7d"]
    assert online["item_stats__category"][0]
    assert "user_behaviour__views" not in online  # the ranking service carries recent activity


def test_training_set_is_point_in_time_and_model_beats_popularity(run):
    training = pd.read_parquet(run.table("training_set"))
    behaviour = pd.read_parquet(
        run.table("behaviour_events"), columns=["user_id", "event_type", "event_time"]
    )
    views = behaviour[behaviour["event_type"] == "view"]
    # No leakage: each joined views count equals the user's views strictly before the day of
    # the interaction, counted from the raw behaviour table (not from the snapshots).
    for _, row in training.sample(300, random_state=0).iterrows():
        before = views[
            (views["user_id"] == row["user_id"])
            & (views["event_time"] < row["event_time"].floor("D"))
        ]
        joined = row["user_behaviour__views"]
        assert (0 if pd.isna(joined) else joined) == len(before), row[
            ["user_id", "event_time"]
        ].to_dict()
    results = json.loads((run.reports / "evaluation.json").read_text())["models"]
    assert set(results) == {
        "embedding",
        "popularity",
        "popularity_recent",
        "item_knn",
        "ease",
        "als",
    }
    assert results["embedding"]["ndcg@10"] > results["popularity"]["ndcg@10"]
    assert set(results["embedding"]["segments"]) <= {"cold", "warm"}
    fit = results["embedding"]["fit"]  # what early stopping chose, beside the figures
    assert fit["best_epoch"] >= 0 and 0 < fit["trained_share"] <= 1 and "fit" not in results["ease"]
    assert fit["memory_form"] in ("ridge", "ease")  # the pipeline's model has a memory
    recs = pd.read_parquet(run.table("recommendations"))
    assert recs.groupby("user_id").size().max() == 20 and recs["model_version"].notna().all()
    assert (
        run.duckdb_file.exists()
        and (run.gx / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    )


def test_definitions_validate():
    """What `dagster definitions validate` checks (keys, jobs, resources, partition
    mappings), in this process: the UI test loads the code location in a fresh one."""
    from dagster import Definitions

    from dagster_project.definitions import defs

    Definitions.validate_loadable(defs)


def test_feature_repo_works_with_the_plain_feast_cli(run):
    env = {**os.environ, "RECSYS_DATA_DIR": str(run.root)}
    feast = str(Path(sys.executable).with_name("feast"))
    done = subprocess.run(
        [feast, "-c", str(PROJECT_ROOT / "feature_repo"), "feature-views", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "user_behaviour" in done.stdout and "item_stats" in done.stdout


def test_drift_figures_are_measured(run):
    """Every drift check gets a real number on the tiny data (none silently NaN)."""
    from dagster_project.quality.drift import drift_figures

    days, verdicts = drift_figures(run)
    assert len(days) >= 10
    assert days[["event_type_mix_psi", "price_psi", "events_per_user_psi"]].notna().all().all()
    assert verdicts["observed"].notna().all(), verdicts


def test_training_features_see_only_events_before_the_label_day(run):
    """No leakage through Feast: a feature joined onto an interaction at time t counts exactly
    the user's events before the start of t's day, over all time and over the last 7 days."""
    train = pd.read_parquet(run.table("training_set"))
    behaviour = pd.read_parquet(
        run.table("behaviour_events"), columns=["user_id", "event_type", "event_time"]
    )
    views = behaviour[behaviour["event_type"] == "view"]
    sample = train.sample(300, random_state=1)
    for row in sample.itertuples():
        day = row.event_time.floor("D")
        mine = views.loc[views["user_id"] == row.user_id, "event_time"]
        expected_all = int((mine < day).sum())
        expected_7d = int(((mine < day) & (mine >= day - pd.Timedelta(days=7))).sum())
        got_all = 0 if pd.isna(row.user_behaviour__views) else int(row.user_behaviour__views)
        got_7d = 0 if pd.isna(row.user_behaviour__views_7d) else int(row.user_behaviour__views_7d)
        assert (got_all, got_7d) == (expected_all, expected_7d), (row.user_id, row.event_time)


def test_item_text_embedding_is_cached_by_text(run):
    """Every item has a 384-d unit vector; a re-run embeds only items whose text changed."""
    import numpy as np

    from dagster_project.features.text import (
        PRECISION_FILE,
        embed_items,
        encoder_precision,
        load_encoder,
    )
    from models.base import resolve_device

    table = pd.read_parquet(run.feature_table("item_text_embedding"))
    items = pd.read_parquet(run.table("items"))
    assert set(table["item_id"]) == set(items["item_id"])
    vectors = np.stack(table["embedding"].to_numpy())
    assert vectors.shape == (len(items), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

    def no_model():
        raise AssertionError("nothing is new: the model must not be loaded")

    cache = run.cache / "text_embeddings.parquet"
    # the asset's: on a CPU, the answer it kept for this machine in the run's cache
    device = str(resolve_device("auto"))
    decided = run.cache / PRECISION_FILE
    assert decided.exists() or device != "cpu"
    precision = encoder_precision(device, decided=decided)
    again, unchanged = embed_items(items, cache, no_model, precision=precision)
    assert unchanged.embedded == 0 and unchanged.reused == len(items)
    edited = items.copy()
    edited.loc[0, "title"] = "A completely different title"
    after, changed = embed_items(
        edited, cache, lambda: load_encoder(precision=precision), precision=precision
    )
    assert changed.embedded == 1 and changed.reused == len(items) - 1
    first = after.set_index("item_id").loc[items.loc[0, "item_id"], "embedding"]
    before = again.set_index("item_id").loc[items.loc[0, "item_id"], "embedding"]
    assert not np.allclose(first, before)


def test_an_edited_item_text_reaches_the_online_store(run, tmp_path):
    """A catalog edit changes an item's vector: it is stamped when it was computed (other
    items keep their stamps), after every event day's window, and the daily run pushes it to
    the online store, here a re-run of an earlier day (with first_seen kept, the old vector
    stayed online and the blocking consistency check failed)."""
    import shutil

    import numpy as np
    from dagster import DagsterInstance, materialize

    from dagster_project.definitions import all_assets, all_checks, platform_resources
    from dagster_project.settings import layout

    copy = layout(tmp_path / "data")
    shutil.copytree(run.root, copy.root, ignore=shutil.ignore_patterns("dagster_home"))
    items = pd.read_parquet(copy.table("items"))
    edited = items["item_id"].iloc[0]
    items.loc[0, "title"] = "A completely different title"
    items.to_parquet(copy.table("items"))
    before = pd.read_parquet(copy.feature_table("item_text_embedding")).set_index("item_id")
    days = sorted(p.stem for p in copy.table("events_clean").glob("*.parquet"))
    day = days[-2]  # an earlier day, whose window ends long before the new stamp
    started = pd.Timestamp.now(tz="UTC")
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [*all_assets, *all_checks],  # with feast_online's blocking consistency check
            selection=["item_text_embedding", "feast_registry", "feast_online"],
            instance=instance,
            resources=platform_resources(str(copy.root)),
            partition_key=day,
        )
    assert result.success
    after = pd.read_parquet(copy.feature_table("item_text_embedding")).set_index("item_id")
    assert started <= after.loc[edited, "event_timestamp"] <= pd.Timestamp.now(tz="UTC")
    others = after.index != edited
    assert after["event_timestamp"][others].equals(before["event_timestamp"][others])
    assert not np.allclose(after.loc[edited, "embedding"], before.loc[edited, "embedding"])
    online = (
        FeastResource(data_dir=str(copy.root))
        .store()
        .get_online_features(
            features=["item_text_embedding:embedding"], entity_rows=[{"item_id": edited}]
        )
        .to_dict()
    )
    assert np.allclose(online["embedding"][0], after.loc[edited, "embedding"], atol=1e-6)


def test_an_event_id_a_later_day_holds_too_fails_the_events_suite(run, tmp_path):
    """An earlier day cleaned again keeps an id that a later day (not cleaned again) holds:
    the suite of that day's run fails and names the days to re-run."""
    import shutil

    import polars as pl
    from dagster import AssetSelection, DagsterInstance, materialize

    from dagster_project.assets.quality import events_clean_suite
    from dagster_project.definitions import all_assets, all_checks, platform_resources
    from dagster_project.settings import layout

    copy = layout(tmp_path / "data")
    shutil.copytree(run.root, copy.root, ignore=shutil.ignore_patterns("dagster_home"))
    days = sorted(p.stem for p in copy.table("events_clean").glob("*.parquet"))
    day, last = days[-3], copy.day_file("events_clean", days[-1])

    def check_the_day() -> object:  # the check alone: the day's run re-checked
        with DagsterInstance.ephemeral() as instance:
            result = materialize(
                [*all_assets, *all_checks],
                selection=AssetSelection.checks(events_clean_suite),
                instance=instance,
                resources=platform_resources(str(copy.root)),
                tags={"dagster/partition": day},
                raise_on_error=False,
            )
        (suite,) = result.get_asset_check_evaluations()
        return suite

    untouched = check_the_day()  # the days after it hold none of its ids
    assert untouched.passed and "event_ids_on_later_days" not in untouched.metadata
    taken = pl.read_parquet(copy.day_file("events_clean", day))["event_id"][0]
    frame = pl.read_parquet(last)
    frame.with_columns(event_id=pl.Series([taken, *frame["event_id"][1:]])).write_parquet(last)
    suite = check_the_day()
    assert not suite.passed and suite.metadata["event_days"].value == day
    assert suite.metadata["event_ids_on_later_days"].value == 1
    assert suite.metadata["sample"].value == taken
    rerun = f"recsys backfill --from {days[-2]} --to {days[-1]}"
    assert suite.metadata["remedy"].value == rerun and rerun in suite.metadata["summary"].value
    # A day without clean events (its export not landed yet) has nothing to validate.
    path = copy.day_file("events_clean", day)
    pl.read_parquet(path).head(0).write_parquet(path)
    empty = check_the_day()
    assert empty.passed and empty.metadata["rows"].value == 0
    assert empty.metadata["summary"].value == f"no clean events on {day}: nothing to validate"


def test_recommend_command_serves_every_scenario_from_the_trained_model(run, capsys):
    from dagster_project.cli import main

    recs = pd.read_parquet(run.table("recommendations"))
    items = pd.read_parquet(run.table("items"))
    user, item = recs["user_id"].iloc[0], recs["item_id"].iloc[0]
    data_dir = ["--data-dir", str(run.root), "--k", "5"]
    assert main(["recommend", "--user", user, *data_dir]) == 0
    printed = capsys.readouterr().out
    assert f"for {user}" in printed and printed.count("\n") == 7  # title, header, 5 rows
    # Search by the words of one item's title: that item comes first for anyone.
    title = items.loc[items["available"].astype(bool), "title"].iloc[0]
    assert main(["recommend", "--query", title, *data_dir]) == 0
    first = capsys.readouterr().out.splitlines()[2]
    assert title in first
    assert main(["recommend", "--query", title, "--user", user, *data_dir]) == 0
    assert "search" in capsys.readouterr().out
    assert main(["recommend", "--similar-to", item, *data_dir]) == 0
    assert f"items like {item}" in capsys.readouterr().out
    assert main(["recommend", "--history", f"{item},nope", *data_dir]) == 0
    assert "new visitor" in capsys.readouterr().out
    assert main(["recommend", "--user", "nobody", *data_dir]) == 2
    assert "not in the model's training data" in capsys.readouterr().out


def test_every_table_asset_records_rows_a_preview_and_its_column_schema(pipeline_run):
    result, _ = pipeline_run
    tables = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if "dagster/row_count" in materialization.metadata:
            tables[materialization.asset_key.to_user_string()] = materialization.metadata
    assert {"raw_events", "events_clean", "quarantine", "user_features", "training_set"} <= set(
        tables
    )
    for name, metadata in tables.items():
        assert "dagster/column_schema" in metadata, name
        assert metadata["dagster/column_schema"].value.columns, name
    # Plots as images, where people would rather look than read.
    for name, key in [("quarantine", "by_reason_plot"), ("behaviour_events", "events_per_day")]:
        assert "data:image/png;base64," in tables[name][key].value, name


def test_opted_out_users_get_no_recommendations_anywhere(run, tmp_path):
    import shutil

    from dagster_project.privacy import delete_online_rows, opt_out_file, opted_out_users

    (user,) = opted_out_users(run)
    assert "asked on" in opt_out_file(run).read_text()  # comments are allowed
    features = pd.read_parquet(run.feature_table("user_features"), columns=["user_id"])
    assert user in set(features["user_id"])  # opting out is not a deletion: features stay
    assert user not in set(pd.read_parquet(run.table("recommendations"))["user_id"])
    lists = pd.read_parquet(run.feature_table("user_recommendations"))
    assert user not in set(lists["user_id"]) and len(lists)
    store = FeastResource(data_dir=str(run.root)).store()
    online = store.get_online_features(
        features=["user_recommendations:item_ids"],
        entity_rows=[{"user_id": user}, {"user_id": lists["user_id"].iloc[0]}],
    ).to_dict()
    assert online["item_ids"][0] is None and online["item_ids"][1]
    # Rows an earlier run served are deleted when a user opts out later (on a copy of the
    # store, so other tests keep theirs).
    copy = tmp_path / "data"
    shutil.copytree(run.feast, copy / "feast")
    later = FeastResource(data_dir=str(copy)).store()
    served = lists["user_id"].iloc[:3].tolist()
    assert delete_online_rows(later, ["user_recommendations"], [*served, "nobody"]) == 3
    after = later.get_online_features(
        features=["user_recommendations:item_ids", "user_behaviour:views"],
        entity_rows=[{"user_id": u} for u in served],
    ).to_dict()
    assert after["item_ids"] == [None, None, None]
    assert all(v is not None for v in after["views"])  # other views of the user stay


def _mentioned_in_logs_and_reports(root: Path, raw_ids: set[str]) -> str:
    """The raw id of a user the Dagster event log and the quality report both name."""
    by_pseudonym = dict(zip(pseudonymise(sorted(raw_ids)), sorted(raw_ids), strict=True))
    pseudonym = re.compile(r"p[0-9a-f]{16}")
    report = set(pseudonym.findall((root / "reports" / "quality_report.html").read_text()))
    index = (root / "dagster_home" / "history" / "runs" / "index.db").read_bytes().decode("latin-1")
    logged = set(pseudonym.findall(index))
    return by_pseudonym[sorted(report & logged & by_pseudonym.keys())[0]]


def test_a_forgotten_user_is_gone_everywhere_and_stays_gone(run, tmp_path):
    """The forget_user job on a copy of the tiny run (its Dagster home included), then a
    byte search of everything, then a rerun of everything the checked tables are built from."""
    import shutil

    from dagster import AssetSelection, DagsterInstance, materialize

    from dagster_project.automation import forget_user
    from dagster_project.definitions import all_assets, every_event_day, platform_resources
    from dagster_project.privacy import file_deletion_request, forget_in_file, opted_out_users
    from dagster_project.redaction import files_mentioning, mention_pattern
    from dagster_project.settings import layout

    copy = layout(tmp_path / "data")
    shutil.copytree(run.root, copy.root)
    # A busy human user who has not opted out, by the id the customer knows, and a user the
    # run's event logs and reports name.
    events = read_landing(run.landing, "events").to_pandas()
    humans = set(pd.read_parquet(run.table("behaviour_events"))["user_id"]) - opted_out_users(run)
    raw_id = next(
        u for u in events["user_id"].value_counts().index if pseudonymise([u])[0] in humans
    )
    (user,) = pseudonymise([raw_id])
    logged_id = _mentioned_in_logs_and_reports(copy.root, set(events["user_id"].dropna()))
    resources = platform_resources(str(copy.root))
    with DagsterInstance.from_config(str(copy.dagster_home)) as instance:
        for customer in (raw_id, logged_id):
            request_id = file_deletion_request(copy, customer)
            done = forget_user.execute_in_process(
                run_config={
                    "ops": {"forget_user_everywhere": {"config": {"request_id": request_id}}}
                },
                resources={"storage": resources["storage"], "feast": resources["feast"]},
                instance=instance,
            )
            assert done.success
            assert customer not in json.dumps(done.dagster_run.run_config)  # the request id only
    assert not list((copy.root / "privacy" / "requests").iterdir())  # the requests are closed
    # Every byte under the data directory and the Dagster home, Parquet uncompressed and
    # SQLite free pages included: neither id anywhere but in the saved model.
    for customer in (raw_id, logged_id):
        mentions = files_mentioning(
            copy.root, mention_pattern([customer, *pseudonymise([customer])])
        )
        assert {p.relative_to(copy.root).parts[0] for p in mentions} <= {"models"}, mentions
    # Nothing left in any file: checking again finds nothing to remove (on scratch copies).
    files = [p for p in copy.root.rglob("*") if p.suffix in (".csv", ".parquet") and p.is_file()]
    assert any(p.suffix == ".csv" for p in files) and len(files) > 20
    for path in files:
        scratch = tmp_path / "scratch" / path.name
        scratch.parent.mkdir(exist_ok=True)
        shutil.copy(path, scratch)
        assert forget_in_file(scratch, raw_id, user) == 0, path
    store = FeastResource(data_dir=str(copy.root)).store()
    online = store.get_online_features(
        features=["user_behaviour:views", "user_embedding:embedding"],
        entity_rows=[{"user_id": user}],
    ).to_dict()
    assert online["views"] == [None] and online["embedding"] == [None]
    log = (copy.root / "privacy" / "deletions.jsonl").read_text()
    assert (
        raw_id not in log
        and user not in log
        and json.loads(log.splitlines()[0])["rows_removed"] > 0
    )
    # Keyed: not the bare SHA-256 that trying every short id reverses.
    from dagster_project.pseudonyms import deletion_digest

    assert hashlib.sha256(raw_id.encode()).hexdigest() not in log
    entries = [json.loads(line) for line in log.splitlines()]
    assert [e["user_hmac"] for e in entries] == [
        deletion_digest(raw_id),
        deletion_digest(logged_id),
    ]
    # The next run (ingest to training set and recommendations, everything they are built
    # from) cannot bring them back.
    checked = ("events_clean", "behaviour_events", "training_set", "recommendations")
    upstream = AssetSelection.assets(*checked).upstream().resolve(all_assets)
    # a multi-asset runs whole (its side tables too)
    selection = [key for a in all_assets if set(a.keys) & upstream for key in a.keys]
    with DagsterInstance.ephemeral() as instance:
        rerun = materialize(
            all_assets,
            selection=selection,
            instance=instance,
            # no training epochs: the model's rows are its training set's users either way
            resources=platform_resources(str(copy.root), epochs=0),
            tags=every_event_day(copy.root),
        )
    assert rerun.success
    for table in checked:
        assert user not in set(pd.read_parquet(copy.table(table))["user_id"]), table


def test_user_ids_are_pseudonymised_from_the_clean_tables_on(run, monkeypatch):
    raw_ids = set(read_landing(run.landing, "events").to_pandas()["user_id"].dropna())
    for table in ("events_clean", "behaviour_events", "training_set", "recommendations"):
        users = pd.read_parquet(run.table(table), columns=["user_id"])["user_id"]
        assert users.str.fullmatch(r"p[0-9a-f]{16}").all(), table
        assert not set(users) & raw_ids, table
    features = pd.read_parquet(run.feature_table("user_features"), columns=["user_id"])
    assert not set(features["user_id"]) & raw_ids
    # The same id always gets the same pseudonym; another key gives others.
    some = sorted(raw_ids)[:3]
    assert set(pseudonymise(some)) <= set(pd.read_parquet(run.table("events_clean"))["user_id"])
    monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", "another secret")
    assert not set(pseudonymise(some)) & set(pseudonymise(some, b"recsys-development-key"))


DAILY_ASSETS = ("user_daily_features", "item_daily_features", "user_features", "item_features")
DAILY_INPUTS = (
    "behaviour_events",
    "behaviour_exclusions",
    "items",
    "user_traffic_scores",
    "bot_score_history",
    "item_outliers",
)


def _daily_copy(run, tmp_path: Path):
    """The inputs and outputs of the daily feature assets, copied from the tiny run."""
    import shutil

    from dagster_project.settings import layout

    copy = layout(tmp_path / "data")
    copy.tables.mkdir(parents=True)
    for table in DAILY_INPUTS:
        shutil.copy(run.table(table), copy.table(table))
    shutil.copytree(run.features / "daily", copy.features / "daily")
    for table in ("user_features", "item_features"):
        shutil.copy(run.feature_table(table), copy.feature_table(table))
    return copy


def _digests(out) -> dict[str, str]:
    """sha256 of every file the daily feature assets write."""
    files = [*out.features.rglob("*.parquet")]
    return {str(p.relative_to(out.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _rewritten_since(out, started_ns: int) -> set[str]:
    """The daily feature files written after `started_ns` (an atomic write is a new file):
    a re-run that wrote nothing must not pass as one that wrote the same bytes."""
    files = [*out.features.rglob("*.parquet")]
    return {str(p.relative_to(out.root)) for p in files if p.stat().st_mtime_ns >= started_ns}


_MATERIALIZE_DAYS = """
import sys
from dagster import DagsterInstance, materialize
from dagster_project.definitions import all_assets, platform_resources
root, first, last = sys.argv[1:]
selection = sorted({names!r})  # their inputs are read from root (the IO manager)
tags = {{"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}}
with DagsterInstance.ephemeral() as instance:
    ok = materialize(
        all_assets,
        selection=selection,
        instance=instance,
        resources=platform_resources(root),
        tags=tags,
    )
sys.exit(0 if ok.success else 1)
"""


def _materialize_days(root: Path, first: str, last: str) -> subprocess.Popen:
    code = _MATERIALIZE_DAYS.format(names=set(DAILY_ASSETS))
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root), first, last],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_rerunning_a_partition_gives_byte_identical_outputs(run, tmp_path):
    copy = _daily_copy(run, tmp_path)
    before = _digests(copy)
    assert any("user_totals/2026-09-10" in f for f in before)
    started = time.time_ns()
    rerun = _materialize_days(copy.root, "2026-09-10", "2026-09-10")
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()
    # The day's totals and snapshots, and the Feast tables over every day, byte for byte.
    assert _digests(copy) == before
    rewritten = _rewritten_since(copy, started)
    assert any("user_totals/2026-09-10" in f for f in rewritten), sorted(rewritten)
    assert {"features/user_features.parquet", "features/item_features.parquet"} <= rewritten


def test_two_runs_of_the_same_days_at_once_cannot_corrupt_each_other(run, tmp_path):
    copy = _daily_copy(run, tmp_path)
    before = _digests(copy)
    # Both runs rewrite the same ten days (and the Feast tables) at the same time, each
    # reading totals the other is rewriting.
    started = time.time_ns()
    runs = [_materialize_days(copy.root, "2026-09-05", "2026-09-14") for _ in range(2)]
    for process in runs:
        assert process.wait(timeout=600) == 0, process.stderr.read()
    assert _digests(copy) == before
    rewritten = _rewritten_since(copy, started)
    assert all(any(f"/2026-09-{d:02d}" in f for f in rewritten) for d in range(5, 15)), rewritten
    leftovers = [p for p in copy.root.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert not leftovers


def test_the_daily_model_refresh_warm_starts_from_the_saved_model(run, tmp_path):
    import shutil

    from dagster import DagsterInstance, materialize

    from dagster_project.definitions import all_assets, platform_resources
    from dagster_project.settings import layout

    copy = layout(tmp_path / "data")
    copy.tables.mkdir(parents=True)
    for table in ("training_set", "items"):
        shutil.copy(run.table(table), copy.table(table))
    copy.features.mkdir(parents=True)
    shutil.copy(run.feature_table("item_text_embedding"), copy.feature_table("item_text_embedding"))
    shutil.copytree(run.models, copy.models)
    saved = json.loads((run.models / "embedding" / "config.json").read_text())
    assert saved["warm_start_from"] is None  # the pipeline's run is a full retrain
    warm_start = {"ops": {"embedding_model": {"config": {"warm_start": True}}}}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            all_assets,  # the inputs are read from the copy (the IO manager)
            selection=["embedding_model"],
            instance=instance,
            resources=platform_resources(str(copy.root), **PIPELINE_SETTINGS),
            run_config=warm_start,
        )
    assert result.success
    refreshed = json.loads((copy.models / "embedding" / "config.json").read_text())
    assert refreshed["warm_start_from"] == saved["version"]
    (event,) = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["start"].value == f"warm start from {saved['version']}"


def test_the_tiny_run_writes_what_it_wrote_before(run):
    """Refactors keep behaviour: every table and feature file of the tiny run has the content
    recorded in tests/snapshots/tiny_outputs.json (taken with the code before issue 17's
    restructuring), lineage and the not repeatable outputs aside (devtools.outputs)."""
    from devtools.outputs import output_digests

    snapshot = json.loads((Path(__file__).parent / "snapshots" / "tiny_outputs.json").read_text())
    digests = output_digests(run.root)
    assert len(snapshot) > 100 and set(digests) == set(snapshot), set(digests) ^ set(snapshot)
    changed = sorted(name for name in snapshot if digests[name] != snapshot[name])
    assert not changed, (
        f"{len(changed)} output(s) differ from the snapshot: {changed[:10]}. If the change is "
        "intended, rewrite it: python -m devtools.outputs --data-dir DIR --write "
        "tests/snapshots/tiny_outputs.json (DIR: a tiny run's data directory)"
    )

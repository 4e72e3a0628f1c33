import argparse
import hashlib
import json
import re

import pandas as pd
import pytest

from dagster_project.settings import layout
from dagster_project.sources.synthetic.generator import (
    PRESETS,
    ProblemRates,
    clean_interactions,
    dataset_fingerprint,
    generate,
    item_sequels,
    preset,
)
from dagster_project.sources.synthetic.traffic import BOT_TYPES, HARD_NEGATIVES, TrafficMix


def test_presets_have_the_promised_sizes():
    assert PRESETS["default"].n_users == 50_000 and PRESETS["default"].n_items == 10_000
    assert PRESETS["default"].n_events == 1_000_000
    large = PRESETS["large"]
    assert large.n_events >= 10_000_000 and large.n_users >= 1_000_000 and large.n_items >= 100_000
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="event_format"):
        preset("tiny", event_format="xml")


def test_same_seed_same_files(tmp_path):
    cfg = preset("tiny", n_users=300, n_items=120, n_events=6_000, n_days=5)
    a, b = layout(tmp_path / "a"), layout(tmp_path / "b")
    generate(cfg, a, progress=False)
    generate(cfg, b, progress=False)
    files_a = sorted(p.relative_to(a.landing) for p in a.landing.rglob("*.*"))
    files_b = sorted(p.relative_to(b.landing) for p in b.landing.rglob("*.*"))
    assert files_a == files_b
    for rel in files_a:
        assert (a.landing / rel).read_bytes() == (b.landing / rel).read_bytes(), rel


def test_landing_looks_like_a_shop_export(tiny_layout):
    days = sorted(p.name for p in tiny_layout.landing_events.iterdir())
    assert days[0] == "date=2026-09-01" and len(days) == PRESETS["tiny"].n_days
    suffixes = {p.suffix for p in tiny_layout.landing_events.rglob("part-*")}
    assert suffixes == {".csv", ".parquet"}  # the tiny preset mixes both formats
    catalog = pd.read_csv(tiny_layout.landing_items / "catalog.csv")
    assert {"title", "description", "category", "brand", "price"} <= set(catalog.columns)
    assert catalog["category"].str.count("/").min() == 2  # a category path
    source = json.loads((tiny_layout.landing / "source.json").read_text())
    assert source["window_start"].startswith("2026-09-01")


def test_ground_truth_names_every_planted_problem_and_bot(tiny_layout):
    truth = pd.read_parquet(tiny_layout.ground_truth / "planted_problems.parquet")
    planted = set(truth["problem"])
    for problem in [
        "missing_user_id",
        "missing_item_id",
        "exact_duplicate",
        "near_duplicate",
        "unparseable_row",
        "non_positive_price",
        "future_timestamp",
        "unknown_item",
        "catalog_duplicate",
    ]:
        assert problem in planted, problem
    labels = pd.read_parquet(tiny_layout.ground_truth / "traffic_labels.parquet")
    assert labels["user_id"].is_unique
    kinds = labels.groupby("traffic_class")["kind"].unique().map(set).to_dict()
    assert kinds == {"bot": set(BOT_TYPES), "hard_negative": set(HARD_NEGATIVES)}


def test_bot_rates_are_configurable():
    mix = TrafficMix().with_bot_rate(0.10)
    assert abs(mix.bot_rate - 0.10) < 1e-12
    assert mix.click_farm / mix.crawler == pytest.approx(
        TrafficMix().click_farm / TrafficMix().crawler
    )
    assert mix.power_user == TrafficMix().power_user  # hard negatives keep their share
    counts = mix.counts(20_000)
    assert sum(counts[k] for k in BOT_TYPES) == 2_000
    with pytest.raises(ValueError, match="bot rate"):
        TrafficMix().with_bot_rate(0.7)


def test_wrong_sizes_shares_and_rates_are_refused_at_once_naming_each():
    with pytest.raises(ValueError) as error:
        preset("tiny", n_users=0, n_days=1, start="2026-02-30", new_user_share=1.0, seed=-1)
    assert str(error.value) == (
        "GeneratorConfig: n_users must be at least 1, not 0; n_days must be at least 2, not 1; "
        "start must be a date written YYYY-MM-DD, not '2026-02-30'; seed must be at least 0, "
        "not -1; new_user_share must be in [0, 1), not 1.0"
    )
    wrong = {
        "n_items": (90, "n_items must be at least the 96 leaf categories, not 90"),
        "n_events": (2.5, "n_events must be an integer, not 2.5"),
        "n_users": (10, "n_users must be at least the 18 users the traffic mix plants"),
        "start": ("yesterday", "start must be a date written YYYY-MM-DD, not 'yesterday'"),
        "leaves_per_subcategory": (0, "leaves_per_subcategory must be at least 1, not 0"),
        "new_item_share": (-0.1, "new_item_share must be in [0, 1), not -0.1"),
        "event_format": ("xml", "event_format must be one of csv, parquet, mixed, not 'xml'"),
        "users_per_chunk": (0, "users_per_chunk must be at least 1, not 0"),
        "traffic": ({"crawler": 0.1}, "traffic must be a TrafficMix"),
    }
    for name, (value, message) in wrong.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            preset("tiny", **{name: value})
    with pytest.raises(ValueError) as error:
        ProblemRates(missing_user_id=1.0, bad_timestamp=-0.001, unknown_item=float("nan"))
    assert str(error.value) == (
        "ProblemRates: missing_user_id must be in [0, 1), not 1.0; bad_timestamp must be in "
        "[0, 1), not -0.001; unknown_item must be in [0, 1), not nan"
    )
    with pytest.raises(ValueError, match=re.escape("TrafficMix: crawler must be in [0, 1)")):
        TrafficMix(crawler=1.5)
    with pytest.raises(ValueError, match=r"bot shares .* must sum below 0.5, not 0.604"):
        TrafficMix(crawler=0.3, click_farm=0.3)
    with pytest.raises(ValueError, match=re.escape("the shares must sum below 1, not 1.01")):
        TrafficMix(flash_sale=0.99)
    quiet = preset("tiny", problems=ProblemRates(unknown_item=0.0), traffic=TrafficMix(crawler=0))
    assert quiet.problems.unknown_item == 0.0 and quiet.traffic.crawler == 0


def test_planted_traffic_shows_its_signature(tiny_layout):
    """Each planted kind does what its docstring says, seen in the exported events."""
    from dagster_project.sources.raw_table import read_landing

    events = read_landing(tiny_layout.landing, "events").to_pandas()
    labels = pd.read_parquet(tiny_layout.ground_truth / "traffic_labels.parquet")
    ev = events.merge(labels, on="user_id", how="left").fillna({"kind": "human"})
    by_kind = ev.groupby("kind")
    share = by_kind["event_type"].value_counts(normalize=True).unstack(fill_value=0)
    assert share.loc["crawler", "view"] == 1.0 and share.loc["price_scraper", "view"] == 1.0
    assert share.loc["cart_stuffer", "add_to_cart"] > 0.5
    assert share.loc["cart_stuffer", "purchase"] == share.loc["click_farm", "purchase"] == 0
    assert share.loc["bulk_buyer", "purchase"] > 0.3
    searched = ev["query"].fillna("") != ""
    per_user = ev.assign(searched=searched).groupby(["kind", "user_id"])["searched"].sum()
    assert per_user["price_scraper"].min() >= 15 > per_user["human"].median()
    manifest = json.loads((tiny_layout.ground_truth / "manifest.json").read_text())
    deals = ev[ev["kind"] == "flash_sale"]["item_id"].value_counts()
    assert set(deals.index[:3]) == set(manifest["flash_sale"]["items"])


def test_structure_a_recommender_can_learn(tiny_layout):
    from dagster_project.sources.raw_table import read_landing

    events = (
        read_landing(tiny_layout.landing, "events")
        .to_pandas()
        .dropna(subset=["user_id", "item_id", "event_type"])
    )
    types = events["event_type"].value_counts()
    # Funnel: views >> carts > purchases.
    assert types["view"] > 5 * types["add_to_cart"]
    assert types["add_to_cart"] > types["purchase"] > 0
    # Zipf-like popularity: the top 10% of items take well over 10% of the views.
    views = events[events["event_type"] == "view"]["item_id"].value_counts()
    assert views.head(len(views) // 10).sum() / views.sum() > 0.2
    # Daily cycle: evening hours busier than the small hours.
    hours = (
        pd.to_datetime(events["event_time"], errors="coerce", format="ISO8601")
        .dt.hour.value_counts()
        .sort_index()
    )
    assert hours.loc[19:22].sum() > 3 * hours.loc[2:5].sum()


def test_large_preset_is_generated_in_chunks(tmp_path):
    cfg = preset(
        "tiny",
        n_users=400,
        n_items=100,
        n_events=4_000,
        n_days=3,
        users_per_chunk=150,
        event_format="parquet",
    )
    out = layout(tmp_path)
    generate(cfg, out, progress=False)
    parts = {p.name for p in out.landing_events.rglob("*.parquet")}
    assert parts == {"part-00000.parquet", "part-00001.parquet", "part-00002.parquet"}


def test_cli_generates_once_and_says_so(tmp_path, capsys):
    from dagster_project.cli import main

    assert main(["generate", "--preset", "tiny", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "ground_truth" / "manifest.json").exists()
    capsys.readouterr()
    assert main(["generate", "--preset", "tiny", "--data-dir", str(tmp_path)]) == 0
    assert "already in" in capsys.readouterr().out
    # The knob makes another data set: generated anew, with its structure as ground truth.
    assert main(["generate", "--preset", "tiny", "--sequential", "--data-dir", str(tmp_path)]) == 0
    assert "already in" not in capsys.readouterr().out
    manifest = json.loads((tmp_path / "ground_truth" / "manifest.json").read_text())
    assert manifest["config"]["sequential"] and manifest["sequential"]["devices"] > 0
    sequels = pd.read_parquet(tmp_path / "ground_truth" / "item_sequels.parquet")
    expected = item_sequels(preset("tiny"))
    assert sequels["item_id"].tolist() == expected["item_id"].tolist()


def test_every_recsys_command_says_what_it_and_its_options_do():
    import argparse

    from dagster_project.cli import _parser

    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"demo", "generate", "recommend", "backfill"} <= set(commands.choices)
    for name, command in commands.choices.items():
        assert command.description, name
        assert all(action.help for action in command._actions), name
    (preset,) = [a for a in commands.choices["demo"]._actions if a.dest == "preset"]
    assert "tiny (2,000 users, 600 items, 60,000 events, 21 days)" in preset.help


def test_a_data_set_can_end_on_any_day_and_replaces_what_the_old_one_built(tmp_path, capsys):
    """`make demo`'s shop ends yesterday (`--end-day`); a new data set removes the tables,
    features and stores built from the old one, and the partitions start on its first day."""
    from dagster_project.cli import _kept_end_day, first_event_day_of, main
    from dagster_project.sources.manifest import source_window

    root = str(tmp_path)
    assert first_event_day_of(tmp_path) == "2026-09-01"  # nothing there: the fixed default
    assert (
        main(["generate", "--preset", "tiny", "--data-dir", root, "--end-day", "2026-11-30"]) == 0
    )
    start, end = source_window(tmp_path / "landing")
    days = preset("tiny").n_days
    assert end == pd.Timestamp("2026-12-01", tz="UTC") and (end - start).days == days
    assert first_event_day_of(tmp_path) == f"{start:%Y-%m-%d}"
    for built in ("tables/events_clean.parquet", "features/daily/x.parquet", "cache/text.parquet"):
        (tmp_path / built).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / built).write_bytes(b"x")
    capsys.readouterr()
    assert (
        main(["generate", "--preset", "tiny", "--data-dir", root, "--end-day", "2026-12-03"]) == 0
    )
    assert "removed what the old one built (tables, features)" in capsys.readouterr().out
    assert not (tmp_path / "tables").exists() and not (tmp_path / "features").exists()
    assert (tmp_path / "cache" / "text.parquet").exists()  # text vectors are keyed by text
    assert first_event_day_of(tmp_path) == "2026-11-13"
    # `make demo` on a later day keeps a data set of the same preset, seed and knob.
    same = argparse.Namespace(preset="tiny", seed=None, sequential=False, force=False)
    assert _kept_end_day(same, tmp_path) == "2026-12-03"
    for other in ({"force": True}, {"seed": 3}, {"sequential": True}, {"preset": "default"}):
        assert _kept_end_day(argparse.Namespace(**{**vars(same), **other}), tmp_path) is None
    with pytest.raises(SystemExit):
        main(["generate", "--preset", "tiny", "--data-dir", root, "--end-day", "2026-13-01"])


def _content_digest(out) -> str:
    """Landing files (Parquet as decoded rows) and ground truth, less the absolute paths."""
    h = hashlib.sha256()
    for path in sorted(out.landing.rglob("*.*")):
        h.update(str(path.relative_to(out.landing)).encode())
        if path.suffix == ".parquet":
            h.update(pd.read_parquet(path).to_csv(index=False).encode())
        else:
            h.update(path.read_bytes())
    truth = pd.read_parquet(out.ground_truth / "planted_problems.parquet").drop(columns="path")
    h.update(truth.to_csv(index=False).encode())
    labels = pd.read_parquet(out.ground_truth / "traffic_labels.parquet")
    h.update(labels.to_csv(index=False).encode())
    manifest = json.loads((out.ground_truth / "manifest.json").read_text())
    for added in ("landing_files", "source"):  # recorded for the development-key check
        manifest.pop(added, None)
    h.update(json.dumps(manifest, indent=2, default=str).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def tiny_off(tmp_path_factory):
    out = layout(tmp_path_factory.mktemp("tiny_off"))
    generate(preset("tiny"), out, progress=False)
    return out


def test_without_the_sequential_knob_the_data_is_what_it_was(tiny_off):
    """The figures are those of the generator before the knob existed. If a change of the
    generator meant to alter them, bump GENERATOR_VERSION and update them here."""
    assert dataset_fingerprint(PRESETS["tiny"]) == "c5af53dbbfdfadb8"
    assert dataset_fingerprint(PRESETS["default"]) == "60c67fdf50f00b58"
    assert dataset_fingerprint(preset("tiny", sequential=True)) != "c5af53dbbfdfadb8"
    assert _content_digest(tiny_off) == "99b0205199a2f2fb"
    assert not (tiny_off.ground_truth / "item_sequels.parquet").exists()


def test_clean_interactions_are_the_generated_human_events(tiny_off):
    """The landing rows of non-bot users that carry no planted problem are all in
    `clean_interactions`; what it has beyond them are the rows problems were planted on."""
    from dagster_project.sources.raw_table import read_landing

    rows = read_landing(tiny_off.landing, "events").to_pandas()
    truth = pd.read_parquet(tiny_off.ground_truth / "planted_problems.parquet")
    truth["source_file"] = truth["path"].str.split("landing/").str[-1]
    planted = rows.merge(
        truth, left_on=["source_file", "source_line"], right_on=["source_file", "line"]
    )
    labels = pd.read_parquet(tiny_off.ground_truth / "traffic_labels.parquet")
    bots = labels.loc[labels["traffic_class"] == "bot", "user_id"]
    rows = rows[~rows["event_id"].isin(planted["event_id"]) & ~rows["user_id"].isin(bots)]
    interactions, catalog = clean_interactions(preset("tiny"))
    assert set(interactions.columns) == {"user_id", "item_id", "event_type", "event_time"}
    assert str(interactions["event_time"].dtype) == "datetime64[ns, UTC]"
    assert interactions["event_time"].is_monotonic_increasing
    key = ["user_id", "item_id", "event_type", "event_time"]
    landed = rows.assign(event_time=pd.to_datetime(rows["event_time"], utc=True))[key]
    extra = interactions.merge(landed.drop_duplicates(), how="left", indicator=True)
    assert len(landed) == (extra["_merge"] == "both").sum()
    assert 0 < (extra["_merge"] == "left_only").sum() <= len(truth)
    assert not interactions["user_id"].isin(bots).any()
    assert catalog["item_id"].is_unique and interactions["item_id"].isin(catalog["item_id"]).all()
    assert catalog["category"].dtype.kind == "i" and catalog["price_bucket"].between(0, 6).all()


@pytest.fixture(scope="module")
def shops():
    """Clean interactions of the tiny shop without and with the knob, and its sequels."""
    cfg = preset("tiny")
    events = {}
    for on in (False, True):
        interactions, catalog = clean_interactions(preset("tiny", sequential=on))
        events[on] = interactions.merge(catalog[["item_id", "category"]], on="item_id")
    return events, item_sequels(cfg)


def _around_purchases(events, pairs, kind: str, days: float = 4) -> tuple[int, int]:
    """(`kind` events on a pair's second item within `days` after, before) a purchase of its first."""
    bought = events[events["event_type"] == "purchase"].merge(
        pairs, left_on="item_id", right_on="first"
    )
    later = events[events["event_type"] == kind].rename(columns={"item_id": "second"})
    both = bought.merge(later, on=["user_id", "second"], suffixes=("", "_2"))
    gap = both["event_time_2"] - both["event_time"]
    window, tick = pd.Timedelta(days=days), pd.Timedelta(1)
    after, before = gap.between(tick, window).sum(), gap.between(-window, -tick).sum()
    return int(after), int(before)


def test_sequential_accessories_follow_their_device(shops):
    events, sequels = shops
    pairs = sequels.explode("accessories").dropna(subset=["accessories"])
    pairs = pairs.rename(columns={"item_id": "first", "accessories": "second"})[["first", "second"]]
    assert len(pairs) > 100
    for kind in ("view", "purchase"):
        after, before = _around_purchases(events[True], pairs, kind)
        assert after > 50 and after > 5 * before, (kind, after, before)
        assert after > 10 * max(_around_purchases(events[False], pairs, kind)[0], 1)


def test_sequential_consumables_are_bought_again_at_their_interval(shops):
    events, sequels = shops
    interval = sequels.dropna(subset=["repurchase_days"]).set_index("item_id")["repurchase_days"]
    assert interval.between(5, 15).all()
    repeats = {}
    for on in (False, True):
        bought = events[on][events[on]["event_type"] == "purchase"]
        bought = bought[bought["item_id"].isin(interval.index)].sort_values(
            ["user_id", "item_id", "event_time"]
        )
        again = bought.duplicated(["user_id", "item_id"])
        gap = bought["event_time"].diff().dt.total_seconds() / 86_400
        repeats[on] = (gap / bought["item_id"].map(interval))[again]
    assert len(repeats[True]) > 5 * max(len(repeats[False]), 1)
    assert 0.85 < repeats[True].median() < 1.15
    assert ((repeats[True] - 1).abs() < 0.3).mean() > 0.7


def _sessions(events) -> pd.DataFrame:
    """Views in sessions (a new one after 30 idle minutes), with their session number."""
    ev = events.sort_values(["user_id", "event_time"], kind="stable")
    idle = ev["event_time"].diff() > pd.Timedelta(minutes=30)
    ev = ev.assign(session=((ev["user_id"] != ev["user_id"].shift()) | idle).cumsum())
    return ev[ev["event_type"] == "view"]


def test_sequential_sessions_continue_and_drift(shops):
    """The category of the next view depends on the last one, not only on the session's or
    the user's taste: the previous view predicts it better than the one before it, and a
    session tends to start where the user's previous session ended."""
    events, _ = shops
    figures = {}
    for on in (False, True):
        views = _sessions(events[on])
        same = {
            k: views["category"]
            .eq(views["category"].shift(k))[views["session"].eq(views["session"].shift(k))]
            .mean()
            for k in (1, 2)
        }
        first, last = views.groupby("session").head(1), views.groupby("session").tail(1)
        last = last.assign(session=last["session"] + 1)[["session", "user_id", "category"]]
        starts = first.merge(last, on=["session", "user_id"], suffixes=("", "_before"))
        continued = (starts["category"] == starts["category_before"]).mean()
        figures[on] = {"same": same[1], "order": same[1] - same[2], "continued": continued}
    off, on = figures[False], figures[True]
    assert on["same"] > 0.55  # mostly the same category as the view before
    assert on["order"] > off["order"] + 0.08  # the previous view tells more than the one before
    assert on["continued"] > off["continued"] + 0.1, figures


def test_the_development_key_is_refused_for_landing_files_the_generator_did_not_write(
    tiny_layout, tmp_path, monkeypatch
):
    import shutil

    from dagster_project.pseudonyms import (
        ALLOW_DEVELOPMENT_KEY_ENV,
        PSEUDONYM_KEY_ENV,
        PseudonymKeyError,
        check_pseudonym_key,
    )
    from dagster_project.sources.synthetic.generator import generated_landing

    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    monkeypatch.delenv(ALLOW_DEVELOPMENT_KEY_ENV, raising=False)
    assert generated_landing(tiny_layout) and check_pseudonym_key(True) is None
    copy = layout(tmp_path)
    for folder in ("landing", "ground_truth"):
        shutil.copytree(tiny_layout.root / folder, copy.root / folder)
    assert generated_landing(copy)
    # The days landed so far (the last one held back) are still the generator's files.
    last_day = sorted(copy.landing_events.glob("date=*"))[-1]
    shutil.move(last_day, tmp_path / "held_back")
    assert generated_landing(copy)
    shutil.move(tmp_path / "held_back", last_day)
    # One more export beside the generator's: real customers, maybe.
    extra = copy.landing_events / "date=2026-09-03" / "crm-export.csv"
    extra.write_text("event_id,user_id\n1,jane.doe@example.com\n")
    assert not generated_landing(copy)
    extra.unlink()
    (copy.landing / "source.json").write_text(json.dumps({"source": "prod_shop"}))
    assert not generated_landing(copy)
    with pytest.raises(PseudonymKeyError, match=f"{PSEUDONYM_KEY_ENV}.*not set"):
        check_pseudonym_key(False)
    monkeypatch.setenv(ALLOW_DEVELOPMENT_KEY_ENV, "1")  # the explicit override: a warning
    assert "public development key" in check_pseudonym_key(False)
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "a secret")
    assert check_pseudonym_key(False) is None


def test_the_platform_writes_private_files(tmp_path):
    """What the platform writes is its owner's alone (the entry points set a private umask)."""
    import os
    import stat

    import dagster_project.definitions  # noqa: F401  (what the code server and daemon load)
    from dagster_project.settings import PRIVATE_UMASK, use_private_umask
    from dagster_project.storage import write_parquet_atomic

    before = os.umask(0o022)
    assert before == PRIVATE_UMASK
    try:
        use_private_umask()
        path = write_parquet_atomic(pd.DataFrame({"a": [1]}), tmp_path / "private" / "t.parquet")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(before)

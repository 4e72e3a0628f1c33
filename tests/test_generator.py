import json

import pandas as pd
import pytest

from dagster_project.settings import layout
from dagster_project.sources.generator import PRESETS, generate, preset
from dagster_project.sources.traffic import BOT_TYPES, HARD_NEGATIVES, TrafficMix


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


def test_planted_traffic_shows_its_signature(tiny_layout):
    """Each planted kind does what its docstring says, seen in the exported events."""
    from dagster_project.sources.landing import read_landing

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
    from dagster_project.sources.landing import read_landing

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

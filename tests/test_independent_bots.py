"""devtools.independent_bots: the shape, types, labels and determinism of its output (on a small
made-up shop, in well under a second)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devtools.independent_bots import DESIGNS, independent_bot_events

CLASSES = {"lockstep", "scalper", "crawler", "copy"}
EVENT_TYPES = {"view", "favorite", "add_to_cart", "purchase"}


def _shop(time_unit: str = "ms") -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    n_items, n_events, n_users = 120, 900, 40
    catalog = pd.DataFrame(
        {
            "item_id": [str(1000 + i) for i in range(n_items)],
            "category": [f"c{i % 5}" for i in range(n_items)],
            "price": np.where(rng.random(n_items) < 0.2, np.nan, rng.uniform(1, 90, n_items)),
        }
    )
    start = pd.Timestamp("2024-05-01", tz="UTC")
    seconds = np.sort(rng.integers(0, 3 * 86_400, n_events))
    real = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, n_users, n_events)],
            "item_id": rng.choice(catalog["item_id"], n_events),
            "event_type": rng.choice(
                ["view"] * 8 + ["favorite", "add_to_cart", "purchase"], n_events
            ),
            "event_time": (start + pd.to_timedelta(seconds, unit="s")).astype(
                f"datetime64[{time_unit}, UTC]"
            ),
            "query": None,
        }
    )
    return real, catalog


@pytest.mark.parametrize("time_unit", ["ms", "ns"])
def test_shape_types_and_labels(time_unit: str) -> None:
    real, catalog = _shop(time_unit)
    events, labels = independent_bot_events(real, catalog, bot_share=0.04, seed=5)

    assert list(events.columns) == list(real.columns)
    assert events["event_time"].dtype == real["event_time"].dtype
    assert len(events) > 0
    for col in ("user_id", "item_id", "event_type"):
        assert events[col].map(type).eq(str).all(), col
    assert set(events["event_type"]) <= EVENT_TYPES
    queries = events["query"].dropna()
    assert queries.map(lambda q: isinstance(q, str) and 0 < len(q) <= 40).all()
    assert set(events["item_id"]) <= set(catalog["item_id"])
    assert events["event_time"].min() >= real["event_time"].min()
    assert events["event_time"].max() <= real["event_time"].max()

    assert list(labels.columns) == ["user_id", "design", "bot_class"]
    assert labels["user_id"].is_unique
    assert set(labels["user_id"]) == set(events["user_id"])
    assert not set(labels["user_id"]) & set(real["user_id"])
    assert set(labels["design"]) == set(DESIGNS)
    assert set(DESIGNS.values()) == CLASSES
    assert (labels["bot_class"] == labels["design"].map(DESIGNS)).all()
    assert labels.groupby("design").size().min() >= 3


def test_deterministic_by_seed_and_design_subset() -> None:
    real, catalog = _shop()
    a_events, a_labels = independent_bot_events(real, catalog, 0.04, seed=1)
    b_events, b_labels = independent_bot_events(real, catalog, 0.04, seed=1)
    pd.testing.assert_frame_equal(a_events, b_events)
    pd.testing.assert_frame_equal(a_labels, b_labels)

    c_events, _ = independent_bot_events(real, catalog, 0.04, seed=2)
    assert not a_events.equals(c_events)

    some = ["favour_ring", "drop_sniper"]
    s_events, s_labels = independent_bot_events(real, catalog, 0.04, seed=1, designs=some)
    assert set(s_labels["design"]) == set(some)
    assert set(s_events["user_id"]) == set(s_labels["user_id"])


def test_unknown_design_is_refused() -> None:
    real, catalog = _shop()
    with pytest.raises(ValueError, match="unknown designs"):
        independent_bot_events(real, catalog, 0.04, seed=0, designs=["nope"])

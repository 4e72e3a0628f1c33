"""Feature views: typed, described, owned, with a TTL."""

from datetime import timedelta

from data_sources import (
    item_embedding_source,
    item_features_source,
    item_text_embedding_source,
    user_embedding_source,
    user_features_source,
    user_recent_activity_push,
    user_recommendations_source,
)
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Bool, Float32, Int64, String

OWNER_TAGS = {"owner": "recsys-data-platform", "team": "data-platform"}

COUNTS = {
    "views": "item views",
    "favorites": "favorites",
    "carts": "add-to-cart events",
    "purchases": "purchase events",
}
WINDOWS = (1, 7, 30)


def _windowed(counts: dict[str, str], name: str = "{c}_{w}d") -> list[Field]:
    return [
        Field(
            name=name.format(c=c, w=w),
            dtype=Int64,
            description=f"{what.capitalize()} in the {w} day(s) up to the snapshot.",
        )
        for c, what in counts.items()
        for w in WINDOWS
    ]


user_behaviour = FeatureView(
    name="user_behaviour",
    entities=[user],
    ttl=timedelta(days=90),
    schema=[
        *[
            Field(name=c, dtype=Int64, description=f"{what.capitalize()} up to the snapshot.")
            for c, what in COUNTS.items()
        ],
        *_windowed(COUNTS),
        Field(name="cart_rate", dtype=Float32, description="Carts per view, capped at 1."),
        Field(name="purchase_rate", dtype=Float32, description="Purchases per view, capped at 1."),
        Field(
            name="cart_rate_30d",
            dtype=Float32,
            description="Carts per view over 30 days, capped at 1.",
        ),
        Field(
            name="purchase_rate_30d",
            dtype=Float32,
            description="Purchases per view over 30 days, capped at 1.",
        ),
        Field(
            name="spend",
            dtype=Float32,
            description="Money spent up to the snapshot (price x quantity).",
        ),
        Field(name="spend_30d", dtype=Float32, description="Money spent in the last 30 days."),
        Field(
            name="recency_days",
            dtype=Float32,
            description="Days from the user's last event to the snapshot time.",
        ),
        Field(name="tenure_days", dtype=Int64, description="Days since the user's first event."),
        Field(
            name="distinct_categories",
            dtype=Int64,
            description="Distinct leaf categories the user interacted with up to the snapshot.",
        ),
        Field(
            name="top_category",
            dtype=String,
            description="The category with most of the user's events up to the snapshot.",
        ),
        Field(
            name="bot_score",
            dtype=Float32,
            description="Bot score in [0, 1] from the detection group. Not point-in-time: every "
            "snapshot carries the score over the whole window, so do not train on it.",
        ),
    ],
    source=user_features_source,
    online=True,
    description="What a shopper has done so far and lately: counts over all time and 1, 7, 30 "
    "days, conversion, recency, spend, tenure, categories and bot score.",
    tags=OWNER_TAGS,
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=90),
    schema=[
        *[
            Field(name=c, dtype=Int64, description=f"{what.capitalize()} up to the snapshot.")
            for c, what in COUNTS.items()
        ],
        *_windowed({"popularity": "events of every type"}, "{c}_{w}d"),
        Field(name="view_to_cart_rate", dtype=Float32, description="Carts per view, capped at 1."),
        Field(
            name="view_to_purchase_rate",
            dtype=Float32,
            description="Purchases per view, capped at 1.",
        ),
        Field(
            name="view_to_cart_rate_30d",
            dtype=Float32,
            description="Carts per view over 30 days, capped at 1.",
        ),
        Field(
            name="view_to_purchase_rate_30d",
            dtype=Float32,
            description="Purchases per view over 30 days, capped at 1.",
        ),
        Field(name="price", dtype=Float32, description="Catalog price."),
        Field(
            name="price_bucket",
            dtype=Int64,
            description="Price bucket 0..6 (edges 5, 10, 20, 40, 80, 160).",
        ),
        Field(
            name="price_outlier",
            dtype=Bool,
            description="Price far from its category's (robust z of log price >= 4; asset "
            "item_outliers).",
        ),
        Field(name="category", dtype=String, description="Category path, e.g. Home/Kitchen/Mug."),
        Field(name="available", dtype=Bool, description="Whether the item can be bought."),
    ],
    source=item_features_source,
    online=True,
    description="How an item performs and what it is: popularity over all time and 1, 7, 30 "
    "days, funnel rates, price, price-outlier flag and category.",
    tags=OWNER_TAGS,
)

item_text_embedding = FeatureView(
    name="item_text_embedding",
    entities=[item],
    ttl=timedelta(days=3650),  # an item's text vector holds until its text changes
    schema=[
        Field(
            name="embedding",
            dtype=Array(Float32),
            description="384-d all-MiniLM-L6-v2 vector of title + description, L2-normalised.",
        ),
        Field(
            name="text_hash",
            dtype=String,
            description="Hash of the embedded text and model: the cache key.",
        ),
    ],
    source=item_text_embedding_source,
    online=True,
    description="What an item's text means, as a vector: for content-based retrieval and new items.",
    tags={**OWNER_TAGS, "model": "all-MiniLM-L6-v2"},
)

# -- Model outputs: written after training, stamped with the time the model's data ends -------
MODEL_TAGS = {**OWNER_TAGS, "team": "recommender", "produced_by": "recommender asset group"}
MODEL_OUTPUT_TTL = timedelta(days=30)  # a model older than a month should not be served
MODEL_VERSION = Field(
    name="model_version",
    dtype=String,
    description="The model that produced the row: embedding-<digest of its weights>.",
)

user_embedding = FeatureView(
    name="user_embedding",
    entities=[user],
    ttl=MODEL_OUTPUT_TTL,
    schema=[
        Field(
            name="embedding",
            dtype=Array(Float32),
            description="User vector e_u of the recommender: the interest in item i is "
            "e_u . e_i + b_i (item_embedding).",
        ),
        MODEL_VERSION,
    ],
    source=user_embedding_source,
    online=True,
    description="The trained recommender's user vectors, for scoring candidates or "
    "nearest-neighbour retrieval in another team's index.",
    tags=MODEL_TAGS,
)

item_embedding = FeatureView(
    name="item_embedding",
    entities=[item],
    ttl=MODEL_OUTPUT_TTL,
    schema=[
        Field(
            name="embedding",
            dtype=Array(Float32),
            description="Item vector e_i of the recommender (same space as user_embedding).",
        ),
        Field(name="bias", dtype=Float32, description="Item bias b_i, added to e_u . e_i."),
        MODEL_VERSION,
    ],
    source=item_embedding_source,
    online=True,
    description="The trained recommender's item vectors and biases.",
    tags=MODEL_TAGS,
)

user_recommendations = FeatureView(
    name="user_recommendations",
    entities=[user],
    ttl=MODEL_OUTPUT_TTL,
    schema=[
        Field(
            name="item_ids",
            dtype=Array(String),
            description="Top-K items for the user, best first; items the user already "
            "interacted with are left out.",
        ),
        Field(
            name="scores",
            dtype=Array(Float32),
            description="The model's score of each item in item_ids (e_u . e_i + b_i).",
        ),
        MODEL_VERSION,
    ],
    source=user_recommendations_source,
    online=True,
    description="Personal top-K recommendations precomputed by the trained recommender.",
    tags=MODEL_TAGS,
)


def _today(what: str) -> Field:
    return Field(
        name=f"{what}_today",
        dtype=Int64,
        description=f"{COUNTS[what].capitalize()} on activity_day.",
    )


user_recent_activity = FeatureView(
    name="user_recent_activity",
    entities=[user],
    ttl=timedelta(days=90),
    schema=[
        Field(
            name="recent_items",
            dtype=Array(String),
            description="The user's newest events' items (up to 50), oldest first: the history "
            "the recommender reads to compute e_u at request time.",
        ),
        Field(
            name="recent_event_types",
            dtype=Array(String),
            description="The event type of each item in recent_items.",
        ),
        Field(
            name="recent_event_times",
            dtype=Array(Int64),
            description="The time of each item in recent_items, epoch milliseconds UTC.",
        ),
        Field(
            name="activity_day",
            dtype=String,
            description="The UTC day (YYYY-MM-DD) of the user's newest event.",
        ),
        *[_today(what) for what in COUNTS],
    ],
    source=user_recent_activity_push,
    online=True,
    description="What a shopper did last, updated as events arrive: the newest events in "
    "order and today's counts. The daily batch writes it whole; the real-time intake pushes "
    "each user's advanced row between runs (dagster_project/features/recent.py).",
    tags=OWNER_TAGS,
)

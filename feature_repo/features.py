"""Feature views: typed, described, owned, with a TTL."""

from datetime import timedelta

from data_sources import item_features_source, user_features_source
from entities import item, user
from feast import FeatureView, Field
from feast.types import Bool, Float32, Int64, String

OWNER_TAGS = {"owner": "recsys-data-platform", "team": "data-platform"}

user_behaviour = FeatureView(
    name="user_behaviour",
    entities=[user],
    ttl=timedelta(days=90),
    schema=[
        Field(name="views", dtype=Int64, description="Item views up to the snapshot."),
        Field(name="favorites", dtype=Int64, description="Favorites up to the snapshot."),
        Field(name="carts", dtype=Int64, description="Add-to-cart events up to the snapshot."),
        Field(name="purchases", dtype=Int64, description="Purchase events up to the snapshot."),
        Field(name="cart_rate", dtype=Float32, description="Carts per view, capped at 1."),
        Field(name="purchase_rate", dtype=Float32, description="Purchases per view, capped at 1."),
        Field(
            name="spend",
            dtype=Float32,
            description="Money spent up to the snapshot (price x quantity).",
        ),
        Field(name="tenure_days", dtype=Int64, description="Days since the user's first event."),
        Field(
            name="bot_score",
            dtype=Float32,
            description="Bot score in [0, 1] from the detection group. Not point-in-time: every "
            "snapshot carries the score over the whole window, so do not train on it.",
        ),
    ],
    source=user_features_source,
    online=True,
    description="What a shopper has done so far: counts, conversion, spend, tenure and bot score.",
    tags=OWNER_TAGS,
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=90),
    schema=[
        Field(name="views", dtype=Int64, description="Views up to the snapshot."),
        Field(name="favorites", dtype=Int64, description="Favorites up to the snapshot."),
        Field(name="carts", dtype=Int64, description="Add-to-cart events up to the snapshot."),
        Field(name="purchases", dtype=Int64, description="Purchases up to the snapshot."),
        Field(name="view_to_cart_rate", dtype=Float32, description="Carts per view, capped at 1."),
        Field(
            name="view_to_purchase_rate",
            dtype=Float32,
            description="Purchases per view, capped at 1.",
        ),
        Field(name="price", dtype=Float32, description="Catalog price."),
        Field(
            name="price_bucket",
            dtype=Int64,
            description="Price bucket 0..6 (edges 5, 10, 20, 40, 80, 160).",
        ),
        Field(name="category", dtype=String, description="Category path, e.g. Home/Kitchen/Mug."),
        Field(name="available", dtype=Bool, description="Whether the item can be bought."),
    ],
    source=item_features_source,
    online=True,
    description="How an item performs and what it is: popularity, funnel rates, price and category.",
    tags=OWNER_TAGS,
)

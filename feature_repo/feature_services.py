"""Feature services: what each consumer retrieves, by name."""

from feast import FeatureService
from features import item_stats, user_behaviour, user_recommendations

recommender_training = FeatureService(
    name="recommender_training",
    features=[user_behaviour, item_stats],
    description="Point-in-time features joined onto interactions to train the recommender.",
    tags={"owner": "recsys-data-platform", "consumer": "recommender"},
)

# Ranking reads (user, candidate item) pairs at request time, so it carries only what a ranker
# uses: recent activity and conversion of the user, recent popularity and funnel of the item.
online_ranking = FeatureService(
    name="online_ranking",
    features=[
        user_behaviour[
            [
                "views_7d",
                "carts_7d",
                "purchases_30d",
                "cart_rate_30d",
                "purchase_rate_30d",
                "spend_30d",
                "recency_days",
                "top_category",
            ]
        ],
        item_stats[
            [
                "popularity_1d",
                "popularity_7d",
                "popularity_30d",
                "view_to_cart_rate_30d",
                "view_to_purchase_rate_30d",
                "price",
                "category",
                "available",
            ]
        ],
    ],
    description="Online features for ranking candidate items for a user at request time.",
    tags={"owner": "recsys-data-platform", "consumer": "ranking"},
)

recommendations = FeatureService(
    name="recommendations",
    features=[user_recommendations],
    description="Precomputed top-K items per user, with scores and the model version.",
    tags={"owner": "recsys-data-platform", "consumer": "storefront"},
)

"""Feature services: what each consumer retrieves, by name."""

from feast import FeatureService
from features import item_stats, user_behaviour

recommender_training = FeatureService(
    name="recommender_training",
    features=[user_behaviour, item_stats],
    description="Point-in-time features joined onto interactions to train the recommender.",
    tags={"owner": "recsys-data-platform", "consumer": "recommender"},
)

online_ranking = FeatureService(
    name="online_ranking",
    features=[user_behaviour, item_stats],
    description="Online features for ranking candidates at request time.",
    tags={"owner": "recsys-data-platform", "consumer": "ranking"},
)

"""Baselines that every model is shown beside."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.base import Recommender, interaction_weights


class PopularityRecommender(Recommender):
    """Recent popularity: interaction strength per item with an exponential time decay."""

    name = "popularity"

    def __init__(self, half_life_days: float = 7.0) -> None:
        super().__init__()
        self.half_life_days = half_life_days

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> PopularityRecommender:
        _, i = self._index(interactions, items)
        age_days = (
            interactions["event_time"].max() - interactions["event_time"]
        ).dt.total_seconds() / 86_400
        weight = interaction_weights(interactions["event_type"]) * np.power(
            0.5, age_days.to_numpy() / self.half_life_days
        )
        self.popularity = torch.as_tensor(
            np.bincount(i, weights=weight, minlength=len(self.item_ids)), dtype=torch.float32
        )
        return self

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self.popularity.expand(len(users), -1).clone()

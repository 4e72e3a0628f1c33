"""The torch embedding recommender: interest I(u, i) = e_u . e_i + b_i.

e_u = user id embedding + a projection of the user's features; e_i = item id embedding +
category embedding + price-bucket embedding + a projection of the item's features; b_i an
item bias. Features are the latest point-in-time snapshot per user / item in the training
set (as of the hold-out cutoff), the same values used when scoring, so training and serving
see one feature clock. Trained with a sampled softmax over uniformly drawn negatives shared
by the batch, one row per (user, item) weighted by its strongest event; early stopping on
validation NDCG@10 picks the number of epochs, then the model is refit on all data.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.base import Recommender, interaction_strength
from models.metrics import ndcg_at_k
from models.split import temporal_holdout


@dataclass(frozen=True)
class EmbeddingConfig:
    """Typed configuration, written beside every trained model."""

    dim: int = 64
    epochs: int = 15
    batch_size: int = 4096
    negatives: int = 512
    learning_rate: float = 0.01
    weight_decay: float = 1e-6
    validation_days: int = 2
    patience: int = 2
    seed: int = 42
    device: str = "auto"  # auto = CUDA where present, else CPU
    user_feature_columns: tuple[str, ...] = field(default_factory=tuple)
    item_feature_columns: tuple[str, ...] = field(default_factory=tuple)


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Standardiser:
    """log1p for counts, then zero mean / unit variance, fitted on training rows."""

    def __init__(self, frame: pd.DataFrame) -> None:
        x = self._raw(frame)
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-6

    @staticmethod
    def _raw(frame: pd.DataFrame) -> np.ndarray:
        x = frame.astype(float).fillna(0.0).to_numpy(np.float32)
        return np.sign(x) * np.log1p(np.abs(x))

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return ((self._raw(frame) - self.mean) / self.std).astype(np.float32)


class TwoTower(nn.Module):
    """User and item towers whose dot product (plus item bias) is the interest score."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_categories: int,
        n_price_buckets: int,
        n_user_features: int,
        n_item_features: int,
        dim: int,
    ) -> None:
        super().__init__()
        # The large id tables get sparse gradients: each step touches only the batch's rows.
        self.user_id = nn.Embedding(n_users, dim, sparse=True)
        self.item_id = nn.Embedding(n_items, dim, sparse=True)
        self.category = nn.Embedding(n_categories, dim)
        self.price_bucket = nn.Embedding(n_price_buckets, dim)
        self.user_features = nn.Linear(max(n_user_features, 1), dim, bias=False)
        self.item_features = nn.Linear(max(n_item_features, 1), dim, bias=False)
        self.item_bias = nn.Embedding(n_items, 1, sparse=True)
        for emb in (self.user_id, self.item_id, self.category, self.price_bucket):
            nn.init.normal_(emb.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)
        # Start as plain matrix factorisation; feature projections grow only where they help.
        nn.init.zeros_(self.user_features.weight)
        nn.init.zeros_(self.item_features.weight)

    def user_vector(self, users: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.user_id(users) + self.user_features(features)

    def item_vector(
        self,
        items: torch.Tensor,
        category: torch.Tensor,
        price_bucket: torch.Tensor,
        features: torch.Tensor,
    ) -> torch.Tensor:
        return (
            self.item_id(items)
            + self.category(category)
            + self.price_bucket(price_bucket)
            + self.item_features(features)
        )


class EmbeddingRecommender(Recommender):
    """Two-tower embedding model behind the shared recommender interface."""

    name = "embedding"

    def __init__(self, config: EmbeddingConfig | None = None, progress: bool = True) -> None:
        super().__init__()
        self.config = config or EmbeddingConfig()
        self.progress = progress
        self.device = resolve_device(self.config.device)
        self.history: list[dict] = []

    def _say(self, message: str) -> None:
        if self.progress:
            print(f"[embedding] {message}", flush=True)

    # -- data ---------------------------------------------------------------------------
    def _prepare(self, interactions: pd.DataFrame, items: pd.DataFrame) -> dict[str, torch.Tensor]:
        cfg = self.config
        interactions = interactions.sort_values("event_time", kind="stable")
        self._index(interactions, items)
        # One training row per (user, item), weighted by its strongest event.
        rows = (
            interactions.assign(_w=interaction_strength(interactions))
            .groupby(["user_id", "item_id"], sort=False)["_w"]
            .max()
            .reset_index()
        )
        u = self.user_index.get_indexer(rows["user_id"])
        i = self.item_index.get_indexer(rows["item_id"])
        # Catalogs without categories or prices (public benchmarks) get one of each.
        category = (
            items["category"].fillna("") if "category" in items else pd.Series("", items.index)
        )
        self.categories = pd.Index(category.unique())
        self.item_category = torch.as_tensor(
            self.categories.get_indexer(category), dtype=torch.long
        )
        bucket = items["price_bucket"] if "price_bucket" in items else pd.Series(0, items.index)
        self.item_price_bucket = torch.as_tensor(
            bucket.fillna(0).astype(int).to_numpy(), dtype=torch.long
        )
        self.user_scaler = (
            _Standardiser(interactions[list(cfg.user_feature_columns)])
            if cfg.user_feature_columns
            else None
        )
        self.item_scaler = (
            _Standardiser(interactions[list(cfg.item_feature_columns)])
            if cfg.item_feature_columns
            else None
        )
        # Latest features per user / item, for scoring after training.
        latest = interactions.groupby("user_id").tail(1).set_index("user_id")
        self.user_latest = torch.as_tensor(self._user_x(latest.reindex(self.user_index)))
        item_latest = interactions.groupby("item_id").tail(1).set_index("item_id")
        self.item_latest = torch.as_tensor(self._item_x(item_latest.reindex(self.item_ids)))
        return {
            "user": torch.as_tensor(u, dtype=torch.long),
            "item": torch.as_tensor(i, dtype=torch.long),
            "weight": torch.as_tensor(rows["_w"].to_numpy(np.float32)),
        }

    def _user_x(self, frame: pd.DataFrame) -> np.ndarray:
        if self.user_scaler is None:
            return np.zeros((len(frame), 1), np.float32)
        return np.nan_to_num(self.user_scaler(frame[list(self.config.user_feature_columns)]))

    def _item_x(self, frame: pd.DataFrame) -> np.ndarray:
        if self.item_scaler is None:
            return np.zeros((len(frame), 1), np.float32)
        return np.nan_to_num(self.item_scaler(frame[list(self.config.item_feature_columns)]))

    # -- training -----------------------------------------------------------------------
    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> EmbeddingRecommender:
        """Pick the epoch count on a temporal validation slice, then refit on everything."""
        cfg = self.config
        epochs = cfg.epochs
        if cfg.validation_days > 0:
            split = temporal_holdout(interactions, cfg.validation_days)
            if len(split.truth) and len(split.train):
                self._say(
                    f"choosing epochs on a {cfg.validation_days}-day validation slice "
                    f"({len(split.train):,} rows, {split.truth['user_id'].nunique():,} validation users)"
                )
                epochs = self._train(split.train, items, cfg.epochs, validation=split.truth)
        self._say(f"refit on all {len(interactions):,} rows for {epochs} epoch(s) on {self.device}")
        self._train(interactions, items, epochs, validation=None)
        return self

    def _train(
        self,
        interactions: pd.DataFrame,
        items: pd.DataFrame,
        epochs: int,
        validation: pd.DataFrame | None,
    ) -> int:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        data = self._prepare(interactions, items)
        dev = self.device
        self.model = TwoTower(
            len(self.user_index),
            len(self.item_ids),
            len(self.categories),
            int(self.item_price_bucket.max()) + 1,
            self.user_latest.shape[1],
            self.item_latest.shape[1],
            cfg.dim,
        ).to(dev)
        sparse = [self.model.user_id.weight, self.model.item_id.weight, self.model.item_bias.weight]
        dense = [p for p in self.model.parameters() if all(p is not q for q in sparse)]
        optimisers = [
            torch.optim.SparseAdam(sparse, lr=cfg.learning_rate),
            torch.optim.Adam(dense, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
        ]
        category, price_bucket = self.item_category.to(dev), self.item_price_bucket.to(dev)
        item_latest, user_latest = self.item_latest.to(dev), self.user_latest.to(dev)
        n_items = len(self.item_ids)
        n = len(data["user"])
        best, best_epoch, stale = -1.0, epochs, 0
        for epoch in range(1, epochs + 1):
            self.model.train()
            started, total = time.perf_counter(), 0.0
            for batch in torch.randperm(n, generator=generator).split(cfg.batch_size):
                u, i = data["user"][batch].to(dev), data["item"][batch].to(dev)
                ue = self.model.user_vector(u, user_latest[u])
                # Positives and negatives see the same (latest) item features, as scoring does:
                # mixing point-in-time positives with latest negatives would teach the model the
                # feature clock instead of the user's taste.
                ie = self.model.item_vector(i, category[i], price_bucket[i], item_latest[i])
                positive = (ue * ie).sum(1) + self.model.item_bias(i).squeeze(1)
                # Negatives shared by the batch, drawn uniformly: a sampled softmax whose
                # proposal is uniform, so no popularity correction is needed.
                neg = torch.randint(0, n_items, (cfg.negatives,), generator=generator).to(dev)
                ne = self.model.item_vector(neg, category[neg], price_bucket[neg], item_latest[neg])
                negative = ue @ ne.T + self.model.item_bias(neg).squeeze(1)
                negative = negative.masked_fill(neg[None, :] == i[:, None], -1e9)
                logits = torch.cat([positive[:, None], negative], dim=1)
                target = torch.zeros(len(i), dtype=torch.long, device=dev)
                w = data["weight"][batch].to(dev)
                loss = (
                    nn.functional.cross_entropy(logits, target, reduction="none") * w
                ).sum() / w.sum()
                for optimiser in optimisers:
                    optimiser.zero_grad()
                loss.backward()
                for optimiser in optimisers:
                    optimiser.step()
                total += float(loss.detach()) * len(batch)
            record = {
                "phase": "select epochs" if validation is not None else "refit",
                "epoch": epoch,
                "loss": total / n,
                "seconds": round(time.perf_counter() - started, 2),
            }
            if validation is not None:
                record["val_ndcg@10"] = ndcg_at_k(
                    validation, self.recommend(validation["user_id"].unique(), 10), 10
                )
            self.history.append(record)
            self._say(
                " ".join(
                    f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items()
                )
            )
            if validation is not None:
                if record["val_ndcg@10"] > best:
                    best, best_epoch, stale = record["val_ndcg@10"], epoch, 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        self._say(f"early stop: best val NDCG@10 {best:.4f} at epoch {best_epoch}")
                        break
        return best_epoch

    # -- scoring ------------------------------------------------------------------------
    def _item_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        items = torch.arange(len(self.item_ids), device=dev)
        self.model.eval()
        vectors = self.model.item_vector(
            items,
            self.item_category.to(dev),
            self.item_price_bucket.to(dev),
            self.item_latest.to(dev),
        )
        return vectors, self.model.item_bias(items).squeeze(1)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        dev = self.device
        u = torch.as_tensor(users, dtype=torch.long, device=dev)
        self.model.eval()
        ue = self.model.user_vector(u, self.user_latest[users].to(dev))
        vectors, bias = self._item_matrix()
        return ue @ vectors.T + bias

    @property
    def version(self) -> str:
        """`embedding-<12 hex>`: a digest of the weights, so equal models share a version."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"{self.name}-{digest.hexdigest()[:12]}"

    def user_vectors(self) -> pd.DataFrame:
        """user_id, embedding (float32 e_u) for every known user: score items as e_u . e_i + b_i."""
        with torch.no_grad():
            self.model.eval()
            users = torch.arange(len(self.user_index), device=self.device)
            vectors = self.model.user_vector(users, self.user_latest.to(self.device))
        return pd.DataFrame(
            {"user_id": self.user_index.to_numpy(), "embedding": list(vectors.cpu().numpy())}
        )

    def item_vectors(self) -> pd.DataFrame:
        """item_id, embedding (float32 e_i) and bias (b_i) for every catalog item."""
        with torch.no_grad():
            vectors, bias = self._item_matrix()
        return pd.DataFrame(
            {
                "item_id": self.item_ids,
                "embedding": list(vectors.cpu().numpy()),
                "bias": bias.cpu().numpy(),
            }
        )

    def _item_similarity(self, item: int) -> torch.Tensor:
        """Cosine similarity of item vectors."""
        vectors = nn.functional.normalize(self._item_matrix()[0], dim=1)
        return vectors @ vectors[item]

    def save(self, folder: Path) -> Path:
        """The whole fitted recommender (weights, vocabularies, scalers) and its config + history."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.pt"
        tmp = folder / ".model.pt.tmp"
        torch.save(self, tmp)
        tmp.replace(path)
        (folder / "config.json").write_text(
            json.dumps(
                {
                    "config": asdict(self.config),
                    "history": self.history,
                    "version": self.version,
                    "users": len(self.user_index),
                    "items": len(self.item_ids),
                },
                indent=2,
                default=str,
            )
        )
        return path

    @staticmethod
    def load(path: Path, device: str = "auto") -> EmbeddingRecommender:
        """A recommender saved by `save` (our own artifact, so full unpickling is safe)."""
        model: EmbeddingRecommender = torch.load(
            path, weights_only=False, map_location=resolve_device(device)
        )
        model.device = resolve_device(device)
        model.model.to(model.device)
        return model

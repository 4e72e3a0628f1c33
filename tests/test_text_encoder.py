"""The catalog text encoder: MiniLM in bfloat16 on CPU against float32."""

import numpy as np
import pandas as pd
import pytest
import torch

from dagster_project.features.text import (
    encoder_precision,
    item_text,
    load_encoder,
    text_hash,
)
from dagster_project.sources.synthetic.generator import build_catalog, preset

# texts unlike the generator's too: long, short, empty, other scripts and symbols
OTHER_TEXTS = [
    "",
    "USB-C charger",
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "Organic Hass Avocado, 4 count",
    "Wireless noise-cancelling over-ear headphones with 30 h battery and a carry case. " * 12,
    "Küchenmesser aus Edelstahl, 20 cm — spülmaschinenfest",
    "运动水壶 750ml 不含双酚A",
    "!!! 50% OFF ??? $$$",
]


def test_bfloat16_vectors_stay_within_cosine_0_999_of_float32_whatever_the_batch():
    catalog = build_catalog(preset("tiny"), np.random.default_rng(0)).items
    texts = OTHER_TEXTS + item_text(catalog.head(40)).tolist()  # 40: the fast tier's minute
    fast = load_encoder("cpu", precision="bfloat16")
    exact = load_encoder("cpu", precision="float32")
    ours, theirs = fast(texts), exact(texts)
    assert ours.shape == theirs.shape == (len(texts), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - theirs).max() > 1e-4  # bfloat16 was used
    cosine = (ours * theirs).sum(axis=1)  # measured: 0.9999 at worst
    assert cosine.min() >= 0.999, f"cosine {cosine.min():.5f}: {texts[cosine.argmin()]!r}"
    # a text alone gets the vector it gets among others
    alone = np.stack([fast([text])[0] for text in texts[:8]])
    assert (alone * ours[:8]).sum(axis=1).min() >= 0.999


def test_the_cache_key_names_the_precision_and_auto_picks_by_machine():
    texts = pd.Series(["a", "b"])
    assert (text_hash(texts, "bfloat16") != text_hash(texts, "float32")).all()
    bfloat16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert encoder_precision("cpu") == ("bfloat16" if bfloat16 else "float32")
    assert encoder_precision("cuda") == encoder_precision("cpu", "float32") == "float32"
    with pytest.raises(ValueError, match="choose one of auto, bfloat16, float32"):
        encoder_precision("cpu", "int4")

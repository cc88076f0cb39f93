"""The text encoder: the packaged all-MiniLM-L6-v2 loads offline and its embeddings carry real semantics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aion_assets.encoders.text import (
    PACKAGED_MINILM_NAME,
    TextEncoder,
    TextEncoderNotFound,
    load_text_encoder,
    packaged_minilm_path,
    resolve_text_encoder_spec,
)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    torch.set_num_threads(2)
    return load_text_encoder("minilm", device="cpu")


def test_packaged_minilm_loads_offline_without_torchvision(minilm: TextEncoder) -> None:
    assert isinstance(minilm, TextEncoder)
    assert minilm.name == PACKAGED_MINILM_NAME == "all-MiniLM-L6-v2"
    assert minilm.dim == 384
    assert "torchvision" not in sys.modules
    # Every spelling of the packaged model is the same cached instance: one load per process.
    assert load_text_encoder("all-MiniLM-L6-v2", device="cpu") is minilm
    assert load_text_encoder(str(packaged_minilm_path()), device="cpu") is minilm


def test_embeddings_are_unit_float32_rows(minilm: TextEncoder) -> None:
    texts = ["a barred spiral galaxy", "a gravitational lens arc", "", "two merging galaxies"]
    vectors = minilm.encode(texts, batch_size=3)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batching does not change a text's vector.
    np.testing.assert_allclose(minilm.encode(texts[1:2])[0], vectors[1], atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("not a list")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("anchor", "closer", "farther"),
    [
        ("a spiral galaxy with arms", "a galaxy with spiral arms winding out from the centre",
         "a smooth red elliptical galaxy"),
        ("spiral arms winding out", "a galaxy with well defined spiral arms", "a smooth round red galaxy"),
        ("two galaxies merging with tidal tails", "an interacting pair of galaxies with tidal debris",
         "a smooth round elliptical galaxy"),
        ("an edge-on disk galaxy", "a thin disk seen edge on with a dust lane", "a round fuzzy elliptical"),
    ],
)
def test_model_semantics(minilm: TextEncoder, anchor: str, closer: str, farther: str) -> None:
    a, b, c = minilm.encode([anchor, closer, farther])
    assert float(a @ b) > float(a @ c) + 0.1


def test_any_model_directory_is_configurable(minilm: TextEncoder, tmp_path: Path) -> None:
    # A sentence-transformers directory elsewhere on disk (links to the packaged files, to stay small).
    copy = tmp_path / "my-minilm"
    source = packaged_minilm_path()
    for item in source.rglob("*"):
        if item.is_file():
            target = copy / item.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(item)
    encoder = load_text_encoder(str(copy), device="cpu")
    assert encoder is not minilm and encoder.name == "my-minilm" and encoder.dim == 384
    text = ["an edge-on disk galaxy with a dust lane"]
    np.testing.assert_allclose(encoder.encode(text), minilm.encode(text), atol=1e-5)


def test_missing_or_wrong_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(TextEncoderNotFound, match="no-such-model.*not found.*'minilm'"):
        load_text_encoder(str(missing))
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(TextEncoderNotFound, match="neither modules.json"):
        resolve_text_encoder_spec(str(empty))
    with pytest.raises(TextEncoderNotFound, match="not in the local Hugging Face cache"):
        resolve_text_encoder_spec("some-org/not-a-cached-model-xyz")

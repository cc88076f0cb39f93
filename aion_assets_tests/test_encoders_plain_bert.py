"""The query path's plain-torch MiniLM gives sentence-transformers' embeddings, without importing it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from aion_assets.encoders.plain_bert import plain_bert_supported
from aion_assets.encoders.text import load_query_text_encoder, load_text_encoder, packaged_minilm_path

TEXTS = ["a ring galaxy", "merging galaxies with tidal tails " * 40, "x", "Spiral arms! ÉÀ", ""]


def test_the_packaged_minilm_takes_the_plain_path() -> None:
    assert plain_bert_supported(packaged_minilm_path())


def test_plain_bert_embeddings_match_sentence_transformers() -> None:
    reference = load_text_encoder("minilm", device="cpu").encode(TEXTS)
    plain = load_query_text_encoder("minilm")
    assert plain.name == "all-MiniLM-L6-v2" and plain.dim == reference.shape[1]
    vectors = plain.encode(TEXTS, batch_size=2)  # batches padded differently: same vectors
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    assert np.argsort(vectors @ vectors[0]).tolist() == np.argsort(reference @ reference[0]).tolist()


def test_a_query_encoder_loads_without_sentence_transformers_or_dagster() -> None:
    probe = ("import sys; from aion_assets.encoders.text import load_query_text_encoder\n"
             "load_query_text_encoder('minilm').encode(['a lens'])\n"
             "print([m for m in ('sentence_transformers', 'transformers', 'dagster', 'mlflow') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

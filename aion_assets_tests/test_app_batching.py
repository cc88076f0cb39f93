"""The server's text encoder: concurrent callers share forward passes and each gets exactly its own vectors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aion_assets.encoders.batching import BatchingTextEncoder


class SlowEncoder:
    """A deterministic encoder whose pass takes a while (so callers pile up), counting the texts per pass."""

    name, dim = "slow", 4

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        time.sleep(0.05)
        self.batches.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("the model failed")
        return np.array([[len(t), sum(map(ord, t)), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_concurrent_callers_share_passes_and_get_their_own_rows() -> None:
    inner = SlowEncoder()
    encoder = BatchingTextEncoder(inner, max_batch=16)
    texts = [f"query number {i}" * (i % 3 + 1) for i in range(12)]
    start = threading.Barrier(len(texts))

    def call(text: str) -> np.ndarray:
        start.wait()
        return encoder.encode([text])[0]

    with ThreadPoolExecutor(len(texts)) as pool:
        got = list(pool.map(call, texts))
    for text, vector in zip(texts, got):
        assert np.array_equal(vector, inner.encode([text])[0])
    assert encoder.passes < len(texts) and max(inner.batches[:encoder.passes]) > 1
    assert max(inner.batches) <= 16


def test_a_failed_pass_fails_its_callers_and_the_encoder_goes_on() -> None:
    encoder = BatchingTextEncoder(SlowEncoder())
    with pytest.raises(RuntimeError, match="the model failed"):
        encoder.encode(["boom"])
    assert encoder.encode(["fine", "also fine"]).shape == (2, 4)


def test_batched_minilm_vectors_equal_one_at_a_time() -> None:
    from aion_assets.encoders.text import load_query_text_encoder

    inner = load_query_text_encoder("all-MiniLM-L6-v2")
    encoder = BatchingTextEncoder(inner, workers=2)
    texts = ["a ring galaxy", "an edge-on disk galaxy with a dust lane", "two merging galaxies with long tidal tails"]
    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(lambda t: encoder.encode([t])[0], texts))
    for text, vector in zip(texts, together):
        assert np.allclose(vector, inner.encode([text])[0], atol=1e-5)  # padding a batch changes nothing

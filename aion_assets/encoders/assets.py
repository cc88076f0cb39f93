"""Embedding assets: a frozen image model over every cutout, a text model over every description."""


import itertools
import time
from collections.abc import Iterator, Sequence

import dagster as dg
import numpy as np

from aion_assets.encoders.image import embed_shards, iter_lake_cutouts
from aion_assets.encoders.resources import (
    ImageEncoderResource,
    TextEncoderResource,
    image_encoder_version,
    text_encoder_version,
)
from aion_assets.encoders.text import sentence_embeddings
from aion_assets.platform.k8s import GPU_OP_TAGS, GPU_POOL
from aion_assets.platform.layout import (
    CURRENT_DESCRIPTIONS,
    ShardKey,
    array_fingerprint,
    image_base_embeddings_dir,
    image_base_embeddings_path,
    shard_objects_path,
    text_embeddings_dir,
)
from aion_assets.platform.partitions import release_shards, shard_backfill_policy
from aion_assets.platform.resources import LakeResource

CODE_REVISION = "2"


def _embed_partitions(store, encoder, partitions: Sequence[str],
                      batch_size: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """(partition, embeddings) for each partition in order: one embed_shards stream per release, so reading the
    next shard overlaps the forward pass of this one; a flux model is first told which band each channel is
    (each release publishes its own)."""
    for _, group in itertools.groupby(partitions, key=lambda partition: ShardKey.parse(partition).release):
        keys = list(group)
        release_encoder = encoder
        if encoder.input_kind == "flux" and hasattr(encoder, "with_bands"):
            bands = store.read_parquet(*shard_objects_path(keys[0]))["bands"]
            release_encoder = encoder.with_bands(bands[0]) if len(bands) else encoder
        cutouts = iter_lake_cutouts(store, keys, release_encoder.input_kind)
        yield from zip(keys, embed_shards(release_encoder, cutouts, batch_size), strict=True)


def build_embedding_assets() -> list[dg.AssetsDefinition]:
    # Code versions carry the configured model's artifact id (model and precision), read when the definitions
    # load: switching models marks these assets, and everything downstream, as changed in the UI. The same id
    # names the lake folder the embeddings are written to.
    image_version = f"{CODE_REVISION}-{image_encoder_version()}"
    text_version = f"{CODE_REVISION}-{text_encoder_version()}"

    @dg.asset(
        partitions_def=release_shards,
        group_name="embeddings",
        pool=GPU_POOL, op_tags=GPU_OP_TAGS,
        backfill_policy=shard_backfill_policy,
        deps=["raw_cutouts"],
        code_version=image_version,
        kinds={"pytorch"},
        # A new or re-ingested shard is embedded as soon as its cutouts land, when the daemon runs.
        automation_condition=dg.AutomationCondition.eager(),
    )
    def image_base_embeddings(
        context: dg.AssetExecutionContext, lake: LakeResource, image_encoder: ImageEncoderResource
    ) -> dg.MaterializeResult:
        """Frozen image-model embeddings of every cutout in a shard, row-aligned with the shard's arrays."""
        store = lake.get()
        encoder = image_encoder.load(store)
        started = time.perf_counter()
        # a backfill run (the daemon's, when shards land together) covers up to shard_backfill_policy's
        # partitions; a run of its own, one
        arrays, written = [], []
        for partition, vectors in _embed_partitions(store, encoder, context.partition_keys, image_encoder.batch_size):
            arrays.append(vectors)
            written.append(store.write_array(vectors, *image_base_embeddings_path(image_encoder.artifact_id,
                                                                                  partition)))
        seconds = time.perf_counter() - started
        n = sum(len(a) for a in arrays)
        path = written[0] if len(written) == 1 else store.url(*image_base_embeddings_dir(image_encoder.artifact_id))
        return dg.MaterializeResult(
            metadata={
                "encoder": encoder.name,
                "artifact_id": image_encoder.artifact_id,
                "vectors": n,
                "dim": int(arrays[0].shape[1]) if arrays[0].ndim == 2 else 0,
                "partitions": len(arrays),
                "seconds": round(seconds, 2),
                "cutouts_per_s": round(n / seconds, 1) if seconds > 0 else 0.0,
                "path": dg.MetadataValue.path(path),
            },
            data_version=dg.DataVersion(array_fingerprint(*arrays)),
        )

    @dg.asset(group_name="embeddings", deps=["vlm_descriptions"], code_version=text_version,
              kinds={"pytorch"})
    def text_embeddings(lake: LakeResource, text_encoder: TextEncoderResource) -> dg.MaterializeResult:
        """Text-model embeddings of each description, of each of its sentences and of its one-sentence summary
        (the positives an image is trained with)."""
        store = lake.get()
        if not store.exists(*CURRENT_DESCRIPTIONS):
            raise dg.Failure("no descriptions yet: materialize vlm_descriptions first")
        rows = store.read_parquet(*CURRENT_DESCRIPTIONS).select("release", "object_id", "description", "summary")
        encoder = text_encoder.load()
        started = time.perf_counter()
        descriptions = encoder.encode(rows["description"].to_list())
        summaries = encoder.encode(rows["summary"].fill_null("").to_list())
        sentences = sentence_embeddings(rows["description"].to_list(), encoder.encode)
        seconds = time.perf_counter() - started
        folder = text_embeddings_dir(text_encoder.artifact_id)
        store.write_array(descriptions, *folder, "description.npy")
        store.write_array(summaries, *folder, "summary.npy")
        store.write_array(sentences, *folder, "sentences.npy")
        store.write_parquet(rows.select("release", "object_id"), *folder, "ids.parquet")
        return dg.MaterializeResult(
            metadata={"encoder": encoder.name, "artifact_id": text_encoder.artifact_id, "descriptions": len(rows),
                      "sentences": int(np.isfinite(sentences[:, :, 0]).sum()) if sentences.size else 0,
                      "dim": encoder.dim, "seconds": round(seconds, 2)},
            data_version=dg.DataVersion(array_fingerprint(descriptions, summaries, sentences)),
        )

    return [image_base_embeddings, text_embeddings]

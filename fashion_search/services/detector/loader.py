"""The in-process detector that FS_DETECTOR_MODEL names: the service, embedded mode and the trainers load this one."""

from __future__ import annotations

from fashion_search.core.domain import Detector
from fashion_search.core.settings import Settings


def local_detector(settings: Settings, backbone: object | None = None) -> Detector:
    """The in-process detector chosen by FS_DETECTOR_MODEL (the detector service serves this one)."""
    if settings.detector_model.startswith("centernet"):
        from fashion_search.services.detector.centernet import SceneDetector

        return SceneDetector(settings, settings.detector_model)
    from fashion_search.services.detector.model import GarmentDetector

    return GarmentDetector(settings, backbone)  # type: ignore[arg-type]

"""The v0 detector: pose landmarks for worn garments, a background-colour box for product photos,
and the linear garment head on EfficientNet-Lite0 features to name each region."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fashion_search.core.domain import Box, Detection
from fashion_search.core.model_base import InferenceModel, file_digest
from fashion_search.core.settings import DEFAULT_DETECTOR_MIN_SCORE, Settings
from fashion_search.services.detector.head import DEFAULT_HEAD_PATH, GarmentHead
from fashion_search.services.embedder.backbone import EfficientNetBackbone
from fashion_search.services.segmenter.model import (
    colour_foreground,
    fit_background,
    main_components,
    resize_to_max_side,
    to_lab,
)

# --- Product photos: a box around the foreground ---------------------------------------------------------
# The colour model works on a small copy: the box only needs a few pixels of precision.
FOREGROUND_MAX_SIDE = 200
# Below this foreground fraction the colour threshold found nothing real (or a speck): use the whole image.
MIN_FOREGROUND_FRACTION = 0.02
# A garment split by the threshold (a print, a belt, a gap) leaves several large parts: keep parts down
# to this fraction of the largest. A box too loose costs little; one too tight loses the garment.
BOX_COMPONENT_FRACTION = 0.05
# A product photo frames its garment: a box under this fraction of the image is a detail (a print,
# a label) that the colour threshold singled out, so the whole image is the safer answer.
MIN_BOX_AREA_FRACTION = 0.08
# An image whose channels all vary less than this (std, 0-255 scale) is blank: a garment filling the frame
# still has folds, seams and shading well above it, so "no garment" is the honest answer.
BLANK_IMAGE_STD = 3.0
# Padding added around the foreground box, as a fraction of its size (antialiased edges, soft shadows).
BOX_PADDING = 0.03

# --- Worn garments: regions from pose landmarks ----------------------------------------------------------
# Which categories a region of the body can hold; the head is restricted to these for that region.
REGION_CATEGORIES: dict[str, tuple[str, ...]] = {
    "top": ("t-shirt", "shirt", "longsleeve", "outwear", "dress"),
    "bottom": ("pants", "shorts", "skirt", "dress"),
    "feet": ("shoes",),
    "head": ("hat",),
}
# MediaPipe Pose landmark indices.
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR = 0, 2, 5, 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW = 11, 12, 13, 14
LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE = 23, 24, 25, 26, 27, 28
LEFT_HEEL, RIGHT_HEEL, LEFT_FOOT, RIGHT_FOOT = 29, 30, 31, 32
# A region is emitted only when the landmarks that define it are this visible (mean).
MIN_REGION_VISIBILITY = 0.5
# Regions smaller than this (pixels per side, in the input image) are too small to classify.
MIN_REGION_SIDE = 16
# The pose model also "finds" people in flat-laid garments (11 of the 341 validation photos, with high
# landmark visibility); a real person also has a face that the face detector confirms, at the nose
# landmark, of a size consistent with the shoulders. With this gate 1 of 1137 photos passes (a t-shirt
# printed with a face).
MIN_FACE_SCORE = 0.5
FACE_TO_SHOULDER_RANGE = (0.15, 1.0)
MIN_SHOULDER_VISIBILITY = 0.7
# Region geometry, in units of the relevant body measure (why: garments extend past the joints).
TOP_SIDE_MARGIN = 0.35  # × shoulder width: sleeves and loose fits reach past the shoulder joints
TOP_COLLAR = 0.25  # × torso height above the shoulders: collars, hoods
TOP_HEM = 0.15  # × torso height below the hips: shirts and jackets cover the hips
BOTTOM_SIDE_MARGIN = 0.45  # × hip width
BOTTOM_WAIST = 0.12  # × leg length above the hips: the waistband sits above the hip joints
BOTTOM_HEM = 0.05  # × leg length below the ankles
FEET_MARGIN = 0.5  # × foot length around ankles, heels and toes
HEAD_WIDTH = 1.5  # × ear-to-ear distance: a hat is wider than the head
HEAD_ABOVE = 1.6  # × ear-to-ear distance above the eyes: the crown and the hat on it
HEAD_BELOW = 0.3  # × ear-to-ear distance below the nose
PROFILE_HEAD_FACTOR = 1.2  # head width ≈ this × nose-to-ear distance when seen from the side
# Context kept around a region when it is cropped for the head (the head was trained on whole photos).
CROP_CONTEXT = 0.05


@dataclass(frozen=True)
class Region:
    """A candidate garment region: a body part (a REGION_CATEGORIES key), its box in input pixels and
    the mean visibility of the landmarks that define it."""

    name: str
    box: Box
    visibility: float


def foreground_box(rgb: np.ndarray) -> Box:
    """Box (input pixels) around the main non-background object; the whole image if none stands out."""
    h, w = rgb.shape[:2]
    small, scale = resize_to_max_side(rgb, FOREGROUND_MAX_SIDE)
    lab = to_lab(small)
    whole = Box(0.0, 0.0, float(w), float(h))
    mask = main_components(colour_foreground(lab, fit_background(lab)), BOX_COMPONENT_FRACTION)
    if mask.mean() < MIN_FOREGROUND_FRACTION:
        return whole
    ys, xs = np.nonzero(mask)
    x0, x1 = xs.min() / scale, (xs.max() + 1) / scale
    y0, y1 = ys.min() / scale, (ys.max() + 1) / scale
    if (x1 - x0) * (y1 - y0) < MIN_BOX_AREA_FRACTION * w * h:
        return whole
    pad_x, pad_y = (x1 - x0) * BOX_PADDING, (y1 - y0) * BOX_PADDING
    return Box(x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y).clip(w, h)


def is_blank(rgb: np.ndarray) -> bool:
    """Whether the image is (nearly) one flat colour, so there is no garment to report."""
    small, _ = resize_to_max_side(rgb, FOREGROUND_MAX_SIDE)
    return float(small.reshape(-1, 3).std(axis=0).max()) < BLANK_IMAGE_STD


def _float32_detection(d: Detection) -> Detection:
    """The detection with float32-exact numbers, so the gRPC service (float fields) returns identical ones."""
    b = [float(np.float32(v)) for v in (d.box.x0, d.box.y0, d.box.x1, d.box.y1)]
    return Detection(Box(*b), d.category, float(np.float32(d.score)))


def crop_for_head(image: Image.Image, box: Box) -> Image.Image:
    """The box with a little context, as the head sees it."""
    pad_x, pad_y = box.width * CROP_CONTEXT, box.height * CROP_CONTEXT
    grown = Box(box.x0 - pad_x, box.y0 - pad_y, box.x1 + pad_x, box.y1 + pad_y).clip(image.width, image.height)
    return image.crop(grown.as_int())


def _span(points: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box of landmark points (N×2)."""
    return float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())


def body_regions(xy: np.ndarray, visibility: np.ndarray, width: int, height: int) -> list[Region]:
    """Garment regions from 33 pose landmarks (xy in input pixels, N×2; visibility N)."""
    def vis(*idx: int) -> float:
        return float(np.mean(visibility[list(idx)]))

    shoulders, hips = xy[[LEFT_SHOULDER, RIGHT_SHOULDER]], xy[[LEFT_HIP, RIGHT_HIP]]
    shoulder_w = float(np.linalg.norm(shoulders[0] - shoulders[1]))
    hip_w = float(np.linalg.norm(hips[0] - hips[1]))
    torso_h = max(1.0, float(hips[:, 1].mean() - shoulders[:, 1].mean()))
    regions: list[Region] = []

    x0, y0, x1, y1 = _span(np.concatenate([shoulders, hips, xy[[LEFT_ELBOW, RIGHT_ELBOW]]]))
    regions.append(Region("top", Box(
        x0 - TOP_SIDE_MARGIN * shoulder_w, y0 - TOP_COLLAR * torso_h,
        x1 + TOP_SIDE_MARGIN * shoulder_w, hips[:, 1].max() + TOP_HEM * torso_h,
    ), vis(LEFT_SHOULDER, RIGHT_SHOULDER)))

    legs = xy[[LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE]]
    leg_h = max(1.0, float(legs[4:, 1].max() - hips[:, 1].min()))
    x0, y0, x1, y1 = _span(legs)
    regions.append(Region("bottom", Box(
        x0 - BOTTOM_SIDE_MARGIN * hip_w, y0 - BOTTOM_WAIST * leg_h,
        x1 + BOTTOM_SIDE_MARGIN * hip_w, y1 + BOTTOM_HEM * leg_h,
    ), vis(LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE)))

    feet = xy[[LEFT_ANKLE, RIGHT_ANKLE, LEFT_HEEL, RIGHT_HEEL, LEFT_FOOT, RIGHT_FOOT]]
    foot_len = max(1.0, float(np.linalg.norm(xy[LEFT_HEEL] - xy[LEFT_FOOT]) + np.linalg.norm(
        xy[RIGHT_HEEL] - xy[RIGHT_FOOT])) / 2)
    x0, y0, x1, y1 = _span(feet)
    m = FEET_MARGIN * foot_len
    regions.append(Region("feet", Box(x0 - m, y0 - m, x1 + m, y1 + m),
                          vis(LEFT_ANKLE, RIGHT_ANKLE, LEFT_HEEL, RIGHT_HEEL, LEFT_FOOT, RIGHT_FOOT)))

    ears = xy[[LEFT_EAR, RIGHT_EAR]]
    # Seen in profile the ears overlap; the nose-to-ear distance then gives the head's size.
    nose_to_ear = float(np.linalg.norm(ears - xy[NOSE], axis=1).max())
    ear_w = max(1.0, float(np.linalg.norm(ears[0] - ears[1])), PROFILE_HEAD_FACTOR * nose_to_ear)
    centre_x = float(ears[:, 0].mean())
    eye_y = float(xy[[LEFT_EYE, RIGHT_EYE], 1].mean())
    regions.append(Region("head", Box(
        centre_x - HEAD_WIDTH * ear_w / 2, eye_y - HEAD_ABOVE * ear_w,
        centre_x + HEAD_WIDTH * ear_w / 2, float(xy[NOSE, 1]) + HEAD_BELOW * ear_w,
    ), vis(NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR)))

    clipped = [Region(r.name, r.box.clip(width, height), r.visibility) for r in regions]
    return [r for r in clipped if r.box.width >= MIN_REGION_SIDE and r.box.height >= MIN_REGION_SIDE]


class GarmentDetector(InferenceModel):
    """Detector protocol: garment boxes with a category and a score, sorted by score."""

    name = "pose-regions+colour-box+linear-head-v0"

    def __init__(
        self, settings: Settings | None = None, backbone: EfficientNetBackbone | None = None,
        head_path: Path | str = DEFAULT_HEAD_PATH,
    ) -> None:
        super().__init__(settings)
        self.backbone = backbone or EfficientNetBackbone(self.settings)
        self.head_path = Path(head_path)
        # MediaPipe graphs keep per-call state and must not be entered from two threads at once.
        self._mediapipe_lock = threading.Lock()

    @cached_property
    def model_name(self) -> str:
        """Name and the linear head's weights digest."""
        return f"{self.name}.{file_digest(self.head_path)}"

    def _load(self) -> None:
        import mediapipe as mp

        self.head = GarmentHead.load(self.head_path)
        self.backbone.load()
        # Complexity 1 is the only pose model shipped in the wheel (0 and 2 are downloaded on first use).
        self._pose: Any = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
        # Full-range face model: people in fashion photos stand 1-5 m from the camera.
        self._faces: Any = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=MIN_FACE_SCORE
        )

    def detect(self, image: Image.Image, min_score: float | None = None) -> list[Detection]:
        """Garments in the image, best first, boxes in the image's pixel coordinates."""
        self.load()
        threshold = min_score if min_score is not None else self.settings.detector_min_score
        if threshold is None:
            threshold = DEFAULT_DETECTOR_MIN_SCORE
        rgb = np.asarray(image.convert("RGB"))
        if is_blank(rgb):
            return []
        image = Image.fromarray(rgb)
        detections = [d for d in self._detect_worn(image, rgb) if d.score >= threshold]
        if not detections:
            # No person, or no region of one sure enough: treat it as a product photo.
            box = foreground_box(rgb)
            category, score = self.classify(image, [box])[0]
            detections = [Detection(box, category, score)] if score >= threshold else []
        return sorted((_float32_detection(d) for d in detections), key=lambda d: d.score, reverse=True)

    def classify(self, image: Image.Image, boxes: Sequence[Box]) -> list[tuple[str, float]]:
        """(category, probability) for each box's crop, over all categories."""
        self.load()
        features = self.backbone.forward([crop_for_head(image, box) for box in boxes]).pooled
        return self.head.predict(features)

    def _detect_worn(self, image: Image.Image, rgb: np.ndarray) -> list[Detection]:
        """Regions of a person's body classified as garments; empty when no person is confirmed."""
        landmarks = self._person_landmarks(rgb)
        if landmarks is None:
            return []
        xy, visibility = landmarks
        regions = [r for r in body_regions(xy, visibility, image.width, image.height)
                   if r.visibility >= MIN_REGION_VISIBILITY]
        if not regions:
            return []
        features = self.backbone.forward([crop_for_head(image, r.box) for r in regions]).pooled
        detections = []
        for region, feature in zip(regions, features, strict=True):
            allowed = REGION_CATEGORIES[region.name]
            restricted = self.head.probabilities(feature[None], allowed)[0]
            unrestricted = self.head.probabilities(feature[None])[0]
            best = int(restricted.argmax())
            # The unrestricted probability of the chosen class also says whether the region holds such
            # a garment at all (a bare head is not a hat), so it, not the restricted one, is the score.
            score = float(unrestricted[best]) * region.visibility
            detections.append(Detection(region.box, self.head.classes[best], score))
        return detections

    def _person_landmarks(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Pose landmarks (input pixels, visibility) of a person confirmed by a face; None otherwise."""
        h, w = rgb.shape[:2]
        small, _ = resize_to_max_side(rgb, self.settings.detector_max_side)
        small = np.ascontiguousarray(small)
        with self._mediapipe_lock:
            pose = self._pose.process(small)
            if pose.pose_landmarks is None:
                return None
            faces = self._faces.process(small)
        marks = pose.pose_landmarks.landmark
        xy = np.array([[m.x * w, m.y * h] for m in marks], dtype=np.float64)
        visibility = np.array([m.visibility for m in marks], dtype=np.float64)
        if visibility[[LEFT_SHOULDER, RIGHT_SHOULDER]].min() < MIN_SHOULDER_VISIBILITY:
            return None
        if not self._face_confirms(faces, xy, w, h):
            return None
        return xy, visibility

    @staticmethod
    def _face_confirms(faces: Any, xy: np.ndarray, width: int, height: int) -> bool:
        """Whether a detected face contains the pose's nose and is sized like a head on those shoulders."""
        if not faces.detections:
            return False
        shoulder_w = float(np.linalg.norm(xy[LEFT_SHOULDER] - xy[RIGHT_SHOULDER]))
        nose_x, nose_y = xy[NOSE]
        low, high = FACE_TO_SHOULDER_RANGE
        for face in faces.detections:
            rel = face.location_data.relative_bounding_box
            fx0, fy0 = rel.xmin * width, rel.ymin * height
            fw, fh = rel.width * width, rel.height * height
            inside = fx0 <= nose_x <= fx0 + fw and fy0 <= nose_y <= fy0 + fh
            if inside and shoulder_w > 0 and low <= fw / shoulder_w <= high:
                return True
        return False

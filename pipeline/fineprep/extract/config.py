"""Every `fineprep extract` setting in one object, built once by the command and passed down whole.

`ExtractConfig` goes from the command through `app`, `runner` and `batch` to `clip` (each Dask batch
carries it). Part of it shapes the stored data: those fields (`RECORDED`, plus `batch_size`, which fixes
the done markers) are written into the store's attributes and compared when a run resumes, under the
same keys and plain values as stores written before the object existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..choices import FaceChoice, LandmarkMode, ParserKind, Source
from . import media, shots

DEFAULT_MEMORY_LIMIT = "3GiB"


@dataclass
class ExtractConfig:
    """One extract job's settings; the defaults are the command's."""

    # What shapes the stored data (recorded in the store, see RECORDED).
    frames: int = 16
    size: int = 224
    margin: float = 0.6        # crop side = (1 + margin) * detector box side
    smooth_sigma: float = 1.0  # Gaussian over kept frames, for the crop box
    parser: ParserKind = ParserKind.MESH
    parser_weights: str | None = None  # a learned parser's checkpoint; the store keeps its sha256, not the path
    landmark_mode: LandmarkMode = LandmarkMode.IMAGE
    crop_frame_sources: bool = False   # frame folders are face crops already: resize, do not re-crop
    face: FaceChoice = FaceChoice.PRIMARY
    min_face: float = 40.0             # smallest face (px high) the tiled detector looks for
    cut_change: float = shots.CUT_CHANGE  # picture change between neighbouring frames that starts a shot
    min_found_ratio: float = 0.25      # below this share of found frames a clip is few_faces, not ok
    min_landmark_score: float = 0.5    # the mesh's face-presence score at which a tracked face is found
    second_detector: bool = True       # CenterFace on frames where BlazeFace found only weak faces or none
    batch_size: int = 16               # clips per Dask task and per done marker
    # How the job runs (not recorded: they change which clips are refused or how fast, not what is stored).
    max_pixels: int = media.DEFAULT_MAX_PIXELS  # larger frames are refused before decoding
    source: Source | None = None       # None: the dataset's first source
    labels: Path | None = None         # folder datasets: an optional labels CSV
    limit: int | None = None           # only the first N clips by id
    workers: int | None = None         # local Dask worker processes (None: one per core)
    scheduler: str | None = None       # an existing Dask cluster instead of a local one
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    overwrite: bool = False
    strict: bool = False
    landmarker: Path | None = None     # face_landmarker.task (None: $FINEPREP_LANDMARKER, then the default)

    RECORDED = ("frames", "size", "margin", "smooth_sigma", "parser", "parser_weights", "landmark_mode",
                "crop_frame_sources", "face", "min_face", "cut_change", "min_found_ratio", "min_landmark_score",
                "second_detector")

    def __post_init__(self) -> None:
        """Plain strings (from Python callers) become the enums, so a bad choice fails here, by name."""
        self.parser = ParserKind(self.parser)
        self.landmark_mode = LandmarkMode(self.landmark_mode)
        self.face = FaceChoice(self.face)
        if self.source is not None:
            self.source = Source(self.source)
        if self.parser_weights is not None:
            self.parser_weights = str(Path(self.parser_weights).resolve())

    def as_attrs(self) -> dict:
        """What the store records about the data's shape: the RECORDED fields as plain JSON values."""
        plain = {name: getattr(self, name) for name in self.RECORDED}
        return {k: v.value if isinstance(v, StrEnum) else v for k, v in plain.items()}

    def store_settings(self) -> dict:
        """The store's `settings` attribute (before the plan's count and digest are added)."""
        return {**self.as_attrs(), "batch_size": self.batch_size}

"""The extraction settings that shaped a store's arrays, as one typed record.

`fineprep extract` writes them into the store's attributes; `finetrain` reads them back with
`ExtractSettings.from_attrs`, keeps them in every checkpoint, and `finetrain predict` extracts a new video
with exactly these settings, so a model never sees inputs made another way than its training data.
The store keeps hashes, not paths: a parser's weights or a detector are named by what they are, and
`predict` refuses in one line when the weights at hand are not the ones the store was made with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import SchemaError
from .limits import check_frames, check_margin, check_size


class SettingsError(SchemaError, ValueError):
    """Attributes or a record that do not make an ExtractSettings; the message names the key."""


@dataclass(frozen=True)
class ExtractSettings:
    frames: int
    size: int
    margin: float
    smooth_sigma: float
    face: str                       # which face track per shot: primary | largest | center
    min_face: float
    cut_change: float
    min_found_ratio: float
    crop_frame_sources: bool
    landmark_mode: str              # image | video
    parser: str                     # mesh | facexformer
    parser_weights_sha256: str | None
    landmark_sha256: str | None     # face_landmarker.task
    detector_sha256: str | None     # the face detector run over tiles
    min_landmark_score: float       # the mesh's face-presence score at which a tracked face counts as found
    second_detector: bool           # CenterFace asked where BlazeFace found only weak faces or none
    detectors: tuple = ()           # ({name, sha256}, ...) of every detector the job may run, in order
    source: str | None = None       # which copy of the dataset was read (clip_224x224, original, ...)

    @classmethod
    def from_attrs(cls, attrs: dict) -> ExtractSettings:
        """The record from a store's arrays.zarr attributes (`fineprep.extract.store.store_attrs`)."""
        settings = attrs.get("settings") or {}
        parser = attrs.get("parser") or {}
        plain = {**settings, "frames": attrs.get("frames"), "size": attrs.get("size"),
                 "parser": parser.get("name", settings.get("parser")),
                 "parser_weights_sha256": parser.get("weights_sha256"),
                 "landmark_sha256": attrs.get("landmark_model_sha256"),
                 "detector_sha256": attrs.get("detector_model_sha256"), "source": attrs.get("source"),
                 "detectors": attrs.get("detectors") or []}
        return cls.from_dict(plain, "store attributes")

    @classmethod
    def from_dict(cls, data: dict, where: str = "settings") -> ExtractSettings:
        """The record from `to_dict()`'s keys (extra keys are ignored, a missing one is refused)."""
        optional = {"parser_weights_sha256", "landmark_sha256", "detector_sha256", "source", "detectors"}
        values = {}
        for f in fields(cls):
            if data.get(f.name) is None and f.name not in optional:
                raise SettingsError(f"{where}: extraction setting {f.name!r} is missing")
            values[f.name] = data.get(f.name)
        try:
            for name, kind in (("frames", int), ("size", int)):
                values[name] = kind(values[name])
            for name in ("margin", "smooth_sigma", "min_face", "cut_change", "min_found_ratio", "min_landmark_score"):
                values[name] = float(values[name])
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: extraction settings hold a value that is not a number") from None
        check_frames(values["frames"], where)  # sizes every allocation: bounded before use (fineschema.limits)
        check_size(values["size"], where)
        check_margin(values["margin"], where)
        values["crop_frame_sources"] = bool(values["crop_frame_sources"])
        values["second_detector"] = bool(values["second_detector"])
        values["detectors"] = tuple({"name": str(d.get("name")), "sha256": d.get("sha256")}
                                    for d in (values["detectors"] or []) if isinstance(d, dict))
        return cls(**values)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["detectors"] = [dict(d) for d in self.detectors]
        return out

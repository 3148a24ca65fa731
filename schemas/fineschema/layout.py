"""The store's on-disk layout: file names, Zarr arrays, their shapes, dtypes, chunks and attributes.

STORE/
  manifest.parquet     one row per clip (tables.MANIFEST); compacted from parts/
  parts/               per-batch manifest parts: a part is the done marker of its batch
  arrays.zarr/         Zarr v3 group with the arrays below, one chunk per clip
  descriptions/        part-*.parquet rows of tables.DESCRIPTION
"""

from __future__ import annotations

from dataclasses import dataclass

MANIFEST_FILE = "manifest.parquet"
PARTS_DIR = "parts"
ARRAYS_DIR = "arrays.zarr"
DESCRIPTIONS_DIR = "descriptions"

NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 52

# Face-parsing classes, derived from the face mesh by the default parser. Index = value in `parsing`.
PARSING_CLASSES: tuple[str, ...] = ("background", "skin", "brows", "eyes", "nose", "lips", "inner_mouth")
# Every parser's class list, by parser name (store attribute `parser.name`); a store's `parsing_classes`
# is one of these. FaceXFormer's 11 output classes follow the label order of LaPa, its parsing data set.
PARSING_CLASS_SETS: dict[str, tuple[str, ...]] = {
    "mesh": PARSING_CLASSES,
    "facexformer": ("background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose",
                    "upper_lip", "inner_mouth", "lower_lip", "hair"),
}

# Attributes every arrays.zarr group must carry.
REQUIRED_ATTRS: tuple[str, ...] = (
    "schema_version", "dataset", "frames", "size", "parsing_classes", "landmark_model_sha256",
    "label_set", "source",
)


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    # Shape after the clip axis N, with symbolic T (frames) and S (crop size).
    shape: tuple[str | int, ...]
    doc: str
    # Names of the axes after `clip` (Zarr v3 dimension_names, what xarray and other readers label them by).
    dims: tuple[str, ...] = ()

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return ("clip", *self.dims)

    def concrete_shape(self, n: int, frames: int, size: int) -> tuple[int, ...]:
        sub = {"T": frames, "S": size}
        return (n, *[sub.get(d, d) if isinstance(d, str) else d for d in self.shape])

    def chunk_shape(self, frames: int, size: int) -> tuple[int, ...]:
        """One clip per chunk, so no two writers ever touch the same chunk."""
        return self.concrete_shape(1, frames, size)


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("frames", "uint8", ("T", "S", "S", 3), "RGB face crops", ("frame", "y", "x", "channel")),
    ArraySpec("parsing", "uint8", ("T", "S", "S"), "class map, values index the store's parsing_classes",
              ("frame", "y", "x")),
    ArraySpec("landmarks", "float32", ("T", NUM_LANDMARKS, 3), "x, y in [0, 1] of the crop; z relative depth",
              ("frame", "point", "coord")),
    ArraySpec("blendshapes", "float32", ("T", NUM_BLENDSHAPES), "mediapipe blendshape coefficients",
              ("frame", "blendshape")),
    ArraySpec("face_found", "bool", ("T",), "false where no tracked face reached the store's min_landmark_score: "
              "landmarks, blendshapes and parsing of that frame are zeros, not measurements", ("frame",)),
    ArraySpec("landmark_score", "float32", ("T",), "the mesh network's face-presence score in [0, 1] on the "
              "frame's window (kept where face_found is false; 0 where no tracked face was in the window)",
              ("frame",)),
    ArraySpec("boxes", "float32", ("T", 4), "the crop window in source pixels: x0, y0, x1, y1 (may reach outside "
              "the frame, which is padded black); the whole image for frame-folder sources that are only resized",
              ("frame", "corner")),
    ArraySpec("shot", "int16", ("T",), "shot index inside the clip (0 first, +1 after each detected cut)", ("frame",)),
    ArraySpec("track_score", "float32", ("T",), "score of the face track that placed the window "
              "(tracks.score under the store's settings.face rule); NaN where no track did", ("frame",)),
)
ARRAY_SPECS = {spec.name: spec for spec in ARRAYS}

# mediapipe's FaceLandmarker blendshape names, in output order.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
assert len(BLENDSHAPE_NAMES) == NUM_BLENDSHAPES


def array_attrs(spec: ArraySpec, parsing_classes: tuple[str, ...] = PARSING_CLASSES) -> dict:
    """Attributes written on each array, so a reader needs nothing but the array: what it holds, and the
    names along its labelled axes (blendshape names in mediapipe's order, parsing classes by value,
    landmark coordinates and their convention, box corners)."""
    attrs = {"description": spec.doc}
    if spec.name == "blendshapes":
        attrs["blendshape_names"] = list(BLENDSHAPE_NAMES)
    elif spec.name == "parsing":
        attrs["parsing_classes"] = list(parsing_classes)
    elif spec.name == "landmarks":
        attrs.update(coord_names=["x", "y", "z"], landmark_layout="mediapipe face mesh, 478 points",
                     convention="x, y in [0, 1] of the crop (origin top left); z relative depth, same scale as x")
    elif spec.name == "boxes":
        attrs.update(corner_names=["x0", "y0", "x1", "y1"], units="source pixels")
    return attrs

"""The closed sets of words the fineprep commands accept, as enums (typer turns them into choices).

Kept free of heavy imports: the CLI declares its options with these before any command runs. Each is a
`StrEnum`, so a member equals, hashes and formats as its word, and the code below the commands (and
the stores it writes) keeps seeing plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class Dataset(StrEnum):
    """A dataset's official layout (`datasets.SOURCES`, `synth.layouts.DATASETS`)."""

    DFEW = "dfew"
    FERV39K = "ferv39k"
    MAFW = "mafw"
    FOLDER = "folder"   # any folder of videos and frame folders, with an optional labels CSV


class Source(StrEnum):
    """Which copy of a dataset's clips to read; each dataset accepts its own (`datasets.SOURCES`)."""

    CLIP_224 = "clip_224x224"              # DFEW aligned face-crop frames (its default)
    CLIP_224_16F = "clip_224x224_16f"      # DFEW, 16 frames per clip
    ORIGINAL = "original"                  # DFEW raw videos
    FACE_CROP = "2_ClipsforFaceCrop"       # FERV39k face-crop frames (its default)
    LABEL_CLIPS = "0_7_LabelClips"         # FERV39k raw videos
    CLIPS = "clips"                        # MAFW raw videos
    ALL = "all"                            # folder: videos and frame folders (its default)
    VIDEOS = "videos"
    FRAMES = "frames"


class FaceChoice(StrEnum):
    """Which face track per shot is cropped (`extract.tracks.RULES`)."""

    PRIMARY = "primary"   # long, large, central, confident
    LARGEST = "largest"
    CENTER = "center"


class ParserKind(StrEnum):
    """What draws the parsing maps (`extract.parsing.PARSERS`)."""

    MESH = "mesh"                # polygons of the landmark mesh, no weights
    FACEXFORMER = "facexformer"  # the learned 11-class parser; needs weights


class LandmarkMode(StrEnum):
    """image: each kept frame alone; video: mediapipe VIDEO mode, tracking across the kept frames."""

    IMAGE = "image"
    VIDEO = "video"


class Scene(StrEnum):
    """What `fineprep synth` renders (`synth.SCENES`)."""

    FACE = "face"   # one face fills the frame
    WILD = "wild"   # small faces in wide, cut, degraded footage, with ground truth


class ExportFormat(StrEnum):
    """Annotation formats `fineprep export` writes (`inspect.export.export_annotations`)."""

    DFER_CLIP = "dfer-clip"   # `path num_frames label` lines, one file per fold and split
    MAE_DFER = "mae-dfer"     # `frame_dir label` CSVs in MAE-DFER's split folders (the VideoMAE lineage)

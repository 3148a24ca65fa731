"""Canonical label sets, keyed by name, and converters to the numberings used elsewhere.

Every artifact stores label *names*; indices are derived from the canonical order here and
converted at the I/O boundary, because DFEW, FERV39k, MAFW and the public DFER repos all
number their classes differently.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import SchemaError

# Canonical order: DFEW's official order for the seven basic classes, then MAFW's extra four
# (the order DFER-CLIP uses), so the seven shared classes carry the same index in every dataset.
BASIC7: tuple[str, ...] = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")
MAFW11: tuple[str, ...] = BASIC7 + ("contempt", "anxiety", "helplessness", "disappointment")

# MAFW's official single-label numbering (Labels/single-set.xlsx, 1..11).
MAFW_OFFICIAL: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)

# The 32 multi-emotion labels of MAFW's compound split (strings as in the split files).
MAFW_COMBOS: tuple[str, ...] = (
    "anger_anxiety", "anger_disgust", "anger_disgust_anxiety", "anger_disgust_contempt",
    "anger_helplessness", "anger_sadness", "anger_surprise", "anxiety_helplessness",
    "anxiety_helplessness_disappointment", "disgust_anxiety", "disgust_anxiety_helplessness",
    "disgust_contempt", "disgust_disappointment", "disgust_helplessness",
    "disgust_helplessness_disappointment", "disgust_sadness", "disgust_surprise", "fear_anxiety",
    "fear_sadness", "fear_sadness_anxiety", "fear_surprise", "fear_surprise_anxiety",
    "happiness_contempt", "happiness_surprise", "helplessness_disappointment", "sadness_anxiety",
    "sadness_anxiety_helplessness", "sadness_disappointment", "sadness_helplessness",
    "sadness_helplessness_disappointment", "sadness_surprise", "surprise_anxiety",
)
MAFW43: tuple[str, ...] = MAFW_OFFICIAL + MAFW_COMBOS

# DFEW CSV labels are 1-based in this order; FERV39k uses these strings as folder names and labels.
DFEW_OFFICIAL_NAMES: tuple[str, ...] = ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")
_SHORT_TO_CANON = dict(zip(DFEW_OFFICIAL_NAMES, BASIC7, strict=True))
_CANON_TO_SHORT = {v: k for k, v in _SHORT_TO_CANON.items()}

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "dfew": BASIC7,
    "ferv39k": BASIC7,
    "mafw": MAFW11,
    "mafw-compound": MAFW43,
}

# Orders used by public code, 0-based, as lists of canonical names (see reference notes).
PUBLIC_ORDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "dfer-clip": {"dfew": BASIC7, "ferv39k": BASIC7, "mafw": MAFW11},
    "mae-dfer": {"dfew": BASIC7, "ferv39k": BASIC7, "mafw": MAFW_OFFICIAL},
    "emoclip": {"dfew": BASIC7, "ferv39k": BASIC7, "mafw": MAFW_OFFICIAL},
    "s2d": {
        "dfew": BASIC7,
        "ferv39k": ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
        "mafw": tuple(sorted(MAFW11)),
    },
}


class LabelError(SchemaError):
    """A label that does not belong to the label set it was read against."""


def label_set(name: str) -> tuple[str, ...]:
    """Canonical class names of a label set (`dfew`, `ferv39k`, `mafw`, `mafw-compound`)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise LabelError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


def index_of(name: str, labels: Sequence[str]) -> int:
    try:
        return list(labels).index(name)
    except ValueError:
        raise LabelError(f"label {name!r} is not one of {', '.join(labels)}") from None


def canonical_name(raw: str, dataset: str) -> str:
    """Map a label as written in a dataset's files (`Happy`, `anger`, `anger_disgust`) to its canonical name."""
    text = raw.strip()
    if text in _SHORT_TO_CANON:
        return _SHORT_TO_CANON[text]
    lower = text.lower()
    if lower in LABEL_SETS["mafw-compound"] or lower in BASIC7:
        if dataset in ("dfew", "ferv39k") and lower not in BASIC7:
            raise LabelError(f"label {raw!r} is not a {dataset} class")
        return lower
    raise LabelError(f"label {raw!r} is not a {dataset} class")


def official_name(name: str, dataset: str) -> str:
    """The label string a dataset's own files use for a canonical name."""
    if dataset in ("dfew", "ferv39k"):
        return _CANON_TO_SHORT[name]
    return name


def from_dfew_official(number: int) -> str:
    """DFEW split CSVs: 1 Happy .. 7 Fear."""
    if not 1 <= int(number) <= 7:
        raise LabelError(f"DFEW label {number} is outside 1..7")
    return BASIC7[int(number) - 1]


def to_dfew_official(name: str) -> int:
    return index_of(name, BASIC7) + 1


def from_mafw_official(number: int) -> str:
    """MAFW single-set.xlsx `single_label`: 1 anger .. 11 disappointment."""
    if not 1 <= int(number) <= 11:
        raise LabelError(f"MAFW label {number} is outside 1..11")
    return MAFW_OFFICIAL[int(number) - 1]


def to_mafw_official(name: str) -> int:
    return index_of(name, MAFW_OFFICIAL) + 1


def public_order(repo: str, dataset: str) -> tuple[str, ...]:
    try:
        return PUBLIC_ORDERS[repo][dataset]
    except KeyError:
        raise LabelError(
            f"no label order for repo {repo!r} and dataset {dataset!r}; repos: {', '.join(PUBLIC_ORDERS)}"
        ) from None


def to_public_index(name: str, repo: str, dataset: str) -> int:
    """Index a public repo (`dfer-clip`, `mae-dfer`, `emoclip`, `s2d`) uses for a canonical name."""
    return index_of(name, public_order(repo, dataset))


def from_public_index(index: int, repo: str, dataset: str) -> str:
    order = public_order(repo, dataset)
    if not 0 <= int(index) < len(order):
        raise LabelError(f"{repo} {dataset} index {index} is outside 0..{len(order) - 1}")
    return order[int(index)]


def remap_indices(indices: Sequence[int], src: Sequence[str], dst: Sequence[str]) -> list[int]:
    """Convert class indices between two orders by name (e.g. S2D predictions into canonical order)."""
    return [index_of(src[int(i)], dst) for i in indices]

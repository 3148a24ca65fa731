"""fineprompts: prompts as versioned data (YAML files beside this module), loaded by id and hashed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources

import yaml


def _read_yaml(name: str) -> dict:
    return yaml.safe_load(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@cache
def _instructions() -> dict:
    return _read_yaml("instructions.yaml")


def instruction_ids(kind: str | None = None) -> list[str]:
    """Ids in `instructions.yaml`, optionally only those of one kind (`describe`, `refine`)."""
    items = _instructions()["instructions"]
    return [k for k, v in items.items() if kind is None or v.get("kind") == kind]


def default_instruction_id() -> str:
    return _instructions()["default"]


def load_instruction(instruction_id: str | None = None) -> tuple[str, str]:
    """(text, sha256 of the text) of an MLLM instruction; the default one when `instruction_id` is None."""
    items = _instructions()["instructions"]
    key = instruction_id or default_instruction_id()
    if key not in items:
        raise KeyError(f"unknown prompt id {key!r}; known: {', '.join(items)} (prompts/instructions.yaml)")
    text = " ".join(items[key]["text"].split())
    return text, sha256_text(text)


@dataclass(frozen=True)
class Lexicon:
    """Words that name (`names`) or imply (`implies`) each class, for the classes of one dataset."""

    dataset: str | None
    label_terms: dict[str, tuple[str, ...]]
    generic: tuple[str, ...] = ()
    sha256: str = ""

    @property
    def terms(self) -> tuple[str, ...]:
        out = [t for words in self.label_terms.values() for t in words]
        return tuple(dict.fromkeys([*out, *self.generic]))

    @cached_property
    def pattern(self) -> re.Pattern:
        """One case-insensitive whole-word regex over every term, longest first."""
        words = sorted(self.terms, key=len, reverse=True)
        body = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
        return re.compile(rf"\b(?:{body})\b", re.IGNORECASE)

    def find(self, text: str) -> list[str]:
        return [m.group(0) for m in self.pattern.finditer(text or "")]


def load_lexicon(dataset: str | None = None) -> Lexicon:
    """The refinement lexicon for a dataset's classes (`dfew`, `ferv39k`, `mafw`); all classes when None
    or when the dataset is not listed (a folder of your own clips)."""
    data = _read_yaml("lexicon.yaml")
    labels = data["labels"]
    wanted = data["datasets"].get(dataset, list(labels)) if dataset else list(labels)
    terms = {
        name: tuple(labels[name].get("names", []) or []) + tuple(labels[name].get("implies", []) or [])
        for name in wanted
    }
    raw = resources.files(__name__).joinpath("lexicon.yaml").read_text(encoding="utf-8")
    return Lexicon(dataset=dataset, label_terms=terms, generic=tuple(data.get("generic", [])),
                   sha256=sha256_text(raw))


def load_descriptors(labels, path: str | None = None) -> dict[str, dict[str, list[str]]]:
    """Positive and negative texts per class, in the order of `labels` (canonical names; MAFW
    compound names like `anger_disgust` join their parts). `path` replaces `descriptors.yaml`.
    Raises KeyError naming every class the descriptors do not cover."""
    if path is None:
        data = _read_yaml("descriptors.yaml")
    else:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    classes = data.get("classes") or {}
    out, missing = {}, []
    for name in labels:
        parts = name.split("_")
        if any(p not in classes for p in parts):
            missing.append(name)
            continue
        spoken = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        details = [d for p in parts for d in classes[p]][: 2 * len(parts)]
        out[name] = {
            "positive": [data["positive"].format(label=spoken), *details],
            "negative": [data["negative"].format(label=spoken)],
        }
    if missing:
        raise KeyError(f"label descriptors ({path or 'prompts/descriptors.yaml'}) have no entry for "
                       f"{', '.join(missing)}; add them under `classes:`")
    return out

"""The frozen CLIP backbone: one factory over open_clip.

Any open_clip model name works, plus the JSON configs in `finetrain/model_configs/` (a tiny CLIP for
tests and smoke runs). `pretrained` is an open_clip tag (`openai`, `laion2b_s34b_b88k`, ...), a local
checkpoint file (safetensors preferred; open_clip reads `.pt` with `weights_only=True`), or None for
random weights.

Activation. OpenAI's CLIP weights were trained with QuickGELU (x * sigmoid(1.702 x)); open_clip builds
`ViT-B-16` and `ViT-L-14` with plain GELU and at most warns. A frozen tower run with the other activation
is silently a different network, so the activation follows the weights' origin (`model.weights_origin`):
`openai` forces QuickGELU in both towers, `other` keeps the model config's activation, `auto` reads it
from the open_clip tag, and for a local file treats it as OpenAI's only when its path says so (contains
`openai`, or is OpenAI's own file name for that model); a local file of a model OpenAI published weights
for, whose origin cannot be told, is refused with a line asking for `model.weights_origin`.
"""

from __future__ import annotations

import contextlib
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath

from ..errors import FinetrainError

WEIGHTS_ORIGINS = ("auto", "openai", "other")


class BackboneError(FinetrainError, ValueError):
    """A backbone that cannot be built; the message says what to change."""


@cache
def register_model_configs() -> tuple[str, ...]:
    """Make our JSON model configs known to open_clip (idempotent)."""
    import open_clip

    folder = resources.files("finetrain").joinpath("model_configs")
    names = []
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            with resources.as_file(entry) as path:
                open_clip.add_model_config(path)
            names.append(entry.name[:-5])
    return tuple(sorted(names))


def _is_path(pretrained: str) -> bool:
    return bool(Path(pretrained).suffix) or "/" in pretrained


def _openai_file_name(name: str) -> str | None:
    """The file name OpenAI's release of `name` downloads as (e.g. ViT-B-16.pt), or None."""
    from open_clip.pretrained import get_pretrained_cfg

    url = get_pretrained_cfg(name, "openai").get("url", "")
    return PurePosixPath(url).name or None


def weights_need_quick_gelu(name: str, pretrained: str | None, origin: str = "auto") -> bool | None:
    """Whether the weights were trained with QuickGELU; None when nothing is known (random weights).

    Raises BackboneError for a contradiction (origin `openai` with another tag, `other` with `openai`) and
    for a local checkpoint whose origin `auto` cannot tell."""
    from open_clip.pretrained import get_pretrained_cfg

    if origin not in WEIGHTS_ORIGINS:
        raise BackboneError(f"model.weights_origin must be one of {', '.join(WEIGHTS_ORIGINS)}, got {origin!r}")
    tag = pretrained if pretrained and not _is_path(pretrained) else None
    if tag is not None:
        tag_cfg = get_pretrained_cfg(name, tag)
        tag_quick = bool(tag_cfg.get("quick_gelu", False)) if tag_cfg else None
        if origin == "openai" and tag != "openai":
            raise BackboneError(f"model.weights_origin=openai contradicts model.pretrained={tag!r}; "
                                "use model.pretrained=openai or model.weights_origin=auto")
        if origin == "other" and tag == "openai":
            raise BackboneError("model.weights_origin=other contradicts model.pretrained=openai; "
                                "use model.weights_origin=auto")
        return tag_quick
    if origin == "openai":
        return True
    if origin == "other":
        return False
    if not pretrained:
        return None
    low = pretrained.lower()
    if "openai" in low or PurePosixPath(pretrained).name == _openai_file_name(name):
        return True
    if get_pretrained_cfg(name, "openai"):
        raise BackboneError(
            f"cannot tell whether {pretrained} holds OpenAI's {name} weights (trained with QuickGELU) or others "
            "(GELU); set model.weights_origin=openai or model.weights_origin=other")
    return False


def create_clip(name: str, pretrained: str | None, weights_origin: str = "auto"):
    """An open_clip CLIP model in eval mode with every parameter frozen, and its tokenizer."""
    import open_clip
    import torch

    register_model_configs()
    if name not in open_clip.list_models():
        raise BackboneError(f"unknown open_clip model {name!r}; see open_clip.list_models() or add a JSON config")
    if pretrained and _is_path(pretrained) and not Path(pretrained).is_file():
        raise BackboneError(f"pretrained checkpoint {pretrained} does not exist")
    need_quick = weights_need_quick_gelu(name, pretrained, weights_origin)
    model_quick = bool(open_clip.get_model_config(name).get("quick_gelu", False))
    if need_quick is False and model_quick:
        raise BackboneError(f"model.backbone {name} uses QuickGELU, but weights {pretrained!r} were trained with "
                            f"GELU; use {name.removesuffix('-quickgelu')} or set model.weights_origin")
    try:
        with _quiet_random_weights_warning(pretrained):
            model = open_clip.create_model(name, pretrained=pretrained or None, force_quick_gelu=bool(need_quick),
                                           device=torch.get_default_device())  # "meta" to count parameters
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BackboneError(
            f"cannot load {name} weights {pretrained!r} ({first}); give a local checkpoint path with "
            "model.pretrained=PATH, or model.pretrained=null for random weights"
        ) from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer


@contextlib.contextmanager
def _quiet_random_weights_warning(pretrained: str | None):
    """open_clip warns on the root logger ("No pretrained weights loaded") for every random-weight model;
    the run says it once in its own words (`streams.RANDOM_WEIGHTS_LINE`), so that line is held back
    for a deliberate `model.pretrained: null` only."""
    import logging

    if pretrained:
        yield
        return

    class NoRandomWeightsLine(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    root, quiet = logging.getLogger(), NoRandomWeightsLine()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def uses_quick_gelu(tower) -> bool:
    """True when every transformer block MLP of an open_clip tower uses QuickGELU."""
    from open_clip.transformer import QuickGELU

    acts = [m.gelu for m in tower.modules() if hasattr(m, "c_fc") and hasattr(m, "gelu")]
    return bool(acts) and all(isinstance(a, QuickGELU) for a in acts)

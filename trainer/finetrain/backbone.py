"""The frozen CLIP backbone: one factory over open_clip.

Any open_clip model name works, plus the JSON configs in `finetrain/model_configs/` (a tiny CLIP for
tests and smoke runs). `pretrained` is an open_clip tag (`openai`, `laion2b_s34b_b88k`, ...), a local
checkpoint file (safetensors preferred; open_clip reads `.pt` with `weights_only=True`), or None for
random weights.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path


class BackboneError(ValueError):
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


def create_clip(name: str, pretrained: str | None):
    """An open_clip CLIP model in eval mode with every parameter frozen, and its tokenizer."""
    import open_clip

    register_model_configs()
    if name not in open_clip.list_models():
        raise BackboneError(f"unknown open_clip model {name!r}; see open_clip.list_models() or add a JSON config")
    if pretrained and (Path(pretrained).suffix or "/" in pretrained) and not Path(pretrained).is_file():
        raise BackboneError(f"pretrained checkpoint {pretrained} does not exist")
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None)
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

"""Model aliases: which checkpoint, how its frames go in, and the fallback prompt template.

`--model` takes an alias below, or any HF id / local directory (then `--template` and
`--frames-as` say how to prompt it). The processor's own chat template is preferred wherever the
checkpoint ships one; `template` is used only when it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..errors import FineprepError

FramesAs = Literal["video", "images", "grid"]


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    model_id: str                 # HF id or local directory
    frames_as: FramesAs           # one video / several images / one grid image
    template: str                 # fallback: `{media}` (placeholders) and `{prompt}` are filled in
    media_token: str              # the placeholder the template expects per media item
    max_images: int = 1           # images per prompt the model takes (images mode)
    max_model_len: int = 4096
    random_weights: bool = False
    # Extra keyword arguments for `vllm.LLM` (kept apart so the HF path never sees them).
    vllm_kwargs: dict = field(default_factory=dict)

    @property
    def record_name(self) -> str:
        """The `model` column of description rows (resume is keyed by it)."""
        return "fineclip/tiny-random-llava" if self.random_weights else self.model_id


_VICUNA = "USER: {media}\n{prompt} ASSISTANT:"
_QWEN = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
         "{media}{prompt}<|im_end|>\n<|im_start|>assistant\n")

REGISTRY: dict[str, ModelSpec] = {
    # LLaVA-NeXT-Video: vLLM serves it (Video-LLaVA, the paper's generator, it does not); 144 tokens a frame.
    "llava": ModelSpec("llava", "llava-hf/LLaVA-NeXT-Video-7B-hf", "video", _VICUNA, "<video>",
                       max_model_len=8192, vllm_kwargs={"limit_mm_per_prompt": {"image": 0, "video": 1}}),
    # Qwen2.5-VL: pixels pinned so a 224-px frame pair costs 64 tokens.
    "qwen2.5-vl": ModelSpec(
        "qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "video", _QWEN,
        "<|vision_start|><|video_pad|><|vision_end|>", max_model_len=8192,
        vllm_kwargs={"limit_mm_per_prompt": {"image": 0, "video": 1},
                     "mm_processor_kwargs": {"min_pixels": 224 * 224, "max_pixels": 224 * 224}}),
    # LLaVA-1.5: image only, 576 tokens per image, 4k context: the frames go in as one grid image.
    "llava-1.5": ModelSpec("llava-1.5", "llava-hf/llava-1.5-7b-hf", "grid", _VICUNA, "<image>\n",
                           max_images=4, max_model_len=4096,
                           vllm_kwargs={"limit_mm_per_prompt": {"image": 4, "video": 0}}),
    # Built locally (tiny_model.py); random weights, meaningless text.
    "tiny-random": ModelSpec("tiny-random", "", "images", _VICUNA, "<image>", max_images=4,
                             max_model_len=512, random_weights=True,
                             vllm_kwargs={"limit_mm_per_prompt": {"image": 4}, "dtype": "float32"}),
}


class ModelError(FineprepError, ValueError):
    """An unknown model or an unusable template."""


def resolve(model: str, template: str | None = None, frames_as: FramesAs | None = None) -> ModelSpec:
    """The spec for an alias, HF id or local directory. `tiny-random` is built (once) here."""
    if model in REGISTRY:
        spec = REGISTRY[model]
        if spec.random_weights:
            from .tiny_model import tiny_llava_dir

            spec = replace(spec, model_id=str(tiny_llava_dir()))
    else:
        path = Path(model).expanduser()
        model_id = str(path.resolve()) if path.exists() else model
        if "/" not in model and not path.exists():
            raise ModelError(
                f"unknown model {model!r}: use an alias ({', '.join(REGISTRY)}), an HF id (org/name) "
                "or a local directory")
        spec = ModelSpec(model, model_id, frames_as or "images", template or _VICUNA, "<image>",
                         max_images=16)
    if template is not None:
        if "{prompt}" not in template or "{media}" not in template:
            raise ModelError("--template must contain {media} and {prompt}, e.g. 'USER: {media}\\n{prompt} ASSISTANT:'")
        spec = replace(spec, template=template)
    if frames_as is not None:
        spec = replace(spec, frames_as=frames_as)
    return spec

"""One prompt builder for every engine: frames -> media items, and instruction -> messages -> prompt.

All engines start from the same OpenAI-style messages. Local engines (transformers, vLLM) render them
with the processor's chat template when the checkpoint ships one, else with the registry's fallback
template; the OpenAI engine sends them as they are, with the media as base64 data URLs.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np

from .registry import ModelSpec


@dataclass
class Media:
    """What goes into the model for one clip: several images, one grid image, or one video array."""

    kind: str                      # "images" | "video"
    images: list                   # PIL images (images / grid)
    video: np.ndarray | None = None  # (F, H, W, 3) uint8

    @property
    def count(self) -> int:
        return 1 if self.kind == "video" else len(self.images)


def sample_indices(total: int, n: int) -> np.ndarray:
    """`n` evenly spaced frame indices out of `total` (all of them when `n >= total`)."""
    if total <= 0:
        raise ValueError("clip has no frames")
    if n >= total:
        return np.arange(total)
    return np.linspace(0, total - 1, n).round().astype(int)


def grid_image(frames: np.ndarray) -> np.ndarray:
    """Tile (F, H, W, 3) frames row-major into one near-square image, black where the grid is not full."""
    f, h, w, c = frames.shape
    cols = math.ceil(math.sqrt(f))
    rows = math.ceil(f / cols)
    out = np.zeros((rows * h, cols * w, c), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        r, q = divmod(i, cols)
        out[r * h:(r + 1) * h, q * w:(q + 1) * w] = frame
    return out


def clip_media(frames: np.ndarray, spec: ModelSpec, num_frames: int) -> Media:
    """Select `num_frames` frames of a (T, H, W, 3) clip and shape them the way `spec` takes them."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    n = num_frames if spec.frames_as != "images" else min(num_frames, spec.max_images)
    chosen = np.ascontiguousarray(frames[sample_indices(frames.shape[0], n)], dtype=np.uint8)
    if spec.frames_as == "video":
        return Media("video", [], chosen)
    if spec.frames_as == "grid":
        return Media("images", [Image.fromarray(grid_image(chosen))])
    return Media("images", [Image.fromarray(f) for f in chosen])


def frame_order_note(media: Media) -> str:
    """Images carry no notion of time, so the text says how they are ordered."""
    if media.kind == "video":
        return ""
    if len(media.images) == 1:
        return "The frames are tiled left to right, top to bottom, in temporal order. "
    return f"The {len(media.images)} images are frames of one clip in temporal order. "


def build_messages(instruction: str, media: Media) -> list[dict]:
    """OpenAI-style messages with placeholder media parts (`{"type": "image"}` / `{"type": "video"}`)."""
    parts = [{"type": "video"}] if media.kind == "video" else [{"type": "image"} for _ in media.images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": frame_order_note(media) + instruction}]}]


def render_prompt(spec: ModelSpec, messages: list[dict], processor=None) -> str:
    """The prompt string for local engines: the processor's chat template when it has one."""
    if processor is not None and getattr(processor, "chat_template", None):
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    content = messages[-1]["content"]
    n = sum(1 for p in content if p["type"] in ("image", "video"))
    text = " ".join(p["text"] for p in content if p["type"] == "text")
    return spec.template.format(media=spec.media_token * n, prompt=text)


def _jpeg_b64(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(messages: list[dict], media: Media) -> list[dict]:
    """Fill the placeholder parts with data URLs; the server's chat template places the tokens."""
    from PIL import Image

    images = iter(media.images)
    out = []
    for message in messages:
        content = []
        for part in message["content"]:
            if part["type"] == "image":
                content.append({"type": "image_url",
                                "image_url": {"url": f"data:image/jpeg;base64,{_jpeg_b64(next(images))}"}})
            elif part["type"] == "video":
                # Pre-extracted frames: comma-joined base64 JPEGs (vLLM's video/jpeg data URL).
                frames = ",".join(_jpeg_b64(Image.fromarray(f)) for f in media.video)
                content.append({"type": "video_url", "video_url": {"url": f"data:video/jpeg;base64,{frames}"}})
            else:
                content.append(part)
        out.append({"role": message["role"], "content": content})
    return out

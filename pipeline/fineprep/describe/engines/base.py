"""The engine interface: a chunk of clip requests in, one result per request out, in order.

An engine never raises for one bad clip: it returns that clip's result with `error` set, so one
failure costs one row, never the chunk.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..config import DescribeError
from ..prompting import Media
from ..registry import ModelSpec


@dataclass
class ClipRequest:
    clip_id: str
    media: Media
    messages: list[dict]           # OpenAI-style, placeholder media parts (prompting.build_messages)


@dataclass
class Result:
    clip_id: str
    text: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 160
    temperature: float = 0.0
    seed: int = 0
    # Engine-specific settings (endpoint, concurrency, retries, memory), read by the engine that knows them.
    options: dict = field(default_factory=dict)


class Engine:
    """Base class. Subclasses set `name` and implement `describe` (and `complete` for text-only passes)."""

    name = "base"

    def __init__(self, spec: ModelSpec, settings: GenerationSettings):
        self.spec = spec
        self.settings = settings

    def describe(self, requests: list[ClipRequest]) -> list[Result]:
        raise NotImplementedError

    def complete(self, prompts: list[str], max_tokens: int) -> list[Result]:
        """Text-only generation (the optional LLM refinement pass); `clip_id` is the prompt's index."""
        raise NotImplementedError(f"the {self.name} engine has no text-only pass")

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ENGINES = {
    "hf": "fineprep.describe.engines.hf:HFEngine",
    "vllm": "fineprep.describe.engines.vllm_engine:VLLMEngine",
    "openai": "fineprep.describe.engines.openai_engine:OpenAIEngine",
}


def make_engine(name: str, spec: ModelSpec, settings: GenerationSettings) -> Engine:
    if name not in ENGINES:
        raise DescribeError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)(spec, settings)
    except ImportError as exc:
        hint = {"vllm": "install vLLM (`pip install vllm`, GPU) or use --engine hf / --engine openai --endpoint URL",
                "openai": "install the describe extra: pip install -e '.[describe]'",
                "hf": "install the describe extra: pip install -e '.[describe]'"}[name]
        raise DescribeError(f"the {name} engine cannot load ({exc}); {hint}") from exc


def error_text(exc: BaseException) -> str:
    """One line: exception type and message."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}"[:500]

"""The describe job's settings as one object, handed as-is to every executor and worker process.

A new option is added here (and to the command that fills it in), nowhere else: the process pool
and Dask workers receive this object, not a command line rebuilt from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FineprepError
from .registry import FramesAs


class DescribeError(FineprepError, RuntimeError):
    """A problem with the job as a whole (store, model, engine, shard), as one line."""


@dataclass
class DescribeConfig:
    store: Path
    model: str = "llava"
    engine: str = "vllm"
    frames: int = 8
    chunk: int = 512
    max_tokens: int = 160
    prompt_id: str | None = None
    refine: bool = True
    refine_llm: bool = False
    shard: tuple[int, int] = (0, 1)
    template: str | None = None
    frames_as: FramesAs | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)   # engine options: endpoint, concurrency, device, ...

    def output_settings(self) -> tuple:
        """The settings that change what a chunk's part holds (engine options such as the endpoint or
        the concurrency do not): they go into the part's content-derived name."""
        return (self.engine, self.frames, self.max_tokens, self.refine, self.refine_llm, self.template,
                self.frames_as, self.seed)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DescribeError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise DescribeError(f"--shard {text}: need 0 <= i < N")
    return i, n

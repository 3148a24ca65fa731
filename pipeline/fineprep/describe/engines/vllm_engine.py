"""In-process `vllm.LLM`: one engine per process (one per GPU), `generate` on one chunk at a time.

A chunk goes in as one `generate` call (continuous batching does the rest). If that call raises,
the chunk is retried one clip at a time so the bad clip gets its error and the others their text.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

from ..prompting import render_prompt
from ..registry import ModelSpec
from .base import ClipRequest, Engine, GenerationSettings, Result, error_text

log = logging.getLogger(__name__)


def engine_arg_names() -> set[str]:
    from vllm.engine.arg_utils import EngineArgs

    if dataclasses.is_dataclass(EngineArgs):
        return {f.name for f in dataclasses.fields(EngineArgs)}
    return set(inspect.signature(EngineArgs.__init__).parameters)


def mm_cache_off(names: set[str]) -> dict:
    """Every clip is unique, so the multimodal processor cache never hits; the flag that turns it off
    was renamed (`disable_mm_preprocessor_cache` up to ~0.12, `mm_processor_cache_gb` from 0.10/0.13)."""
    if "mm_processor_cache_gb" in names:
        return {"mm_processor_cache_gb": 0}
    if "disable_mm_preprocessor_cache" in names:
        return {"disable_mm_preprocessor_cache": True}
    return {}


def llm_kwargs(spec: ModelSpec, settings: GenerationSettings, names: set[str]) -> dict:
    """Keyword arguments for `vllm.LLM`, keeping only those the installed version takes."""
    kwargs = {"model": spec.model_id, "max_model_len": spec.max_model_len, "seed": settings.seed,
              "gpu_memory_utilization": settings.options.get("gpu_memory_utilization", 0.90),
              "max_num_seqs": settings.options.get("max_num_seqs", 256)}
    kwargs.update(spec.vllm_kwargs)
    kwargs.update(mm_cache_off(names))
    kwargs.update(settings.options.get("vllm_kwargs", {}))
    dropped = sorted(k for k in kwargs if k not in names)
    if dropped:
        log.warning("this vLLM version does not take %s; left out", ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in names}


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, spec: ModelSpec, settings: GenerationSettings):
        super().__init__(spec, settings)
        from vllm import LLM, SamplingParams

        self.llm = LLM(**llm_kwargs(spec, settings, engine_arg_names()))
        # ignore_eos: benchmarks force the output length (random weights stop anywhere).
        self.sampling = SamplingParams(temperature=settings.temperature, max_tokens=settings.max_tokens,
                                       seed=settings.seed, ignore_eos=bool(settings.options.get("ignore_eos")))
        self.processor = None
        try:  # the checkpoint's own chat template, when it ships a processor with one
            from transformers import AutoProcessor

            self.processor = AutoProcessor.from_pretrained(spec.model_id)
        except Exception as exc:
            log.info("no processor for %s (%s); using the registry template", spec.model_id, exc)

    def _request(self, req: ClipRequest) -> dict:
        data = {"video": req.media.video} if req.media.kind == "video" else {"image": req.media.images}
        return {"prompt": render_prompt(self.spec, req.messages, self.processor), "multi_modal_data": data}

    @staticmethod
    def _result(clip_id: str, out) -> Result:
        completion = out.outputs[0]
        return Result(clip_id, completion.text.strip(), len(out.prompt_token_ids or []), len(completion.token_ids))

    def _run(self, items: list[tuple[str, object]], sampling) -> list[Result]:
        ready, results = [], {}
        for key, build in items:
            try:
                ready.append((key, build()))
            except Exception as exc:
                results[key] = Result(key, error=error_text(exc))
        try:
            outs = self.llm.generate([p for _, p in ready], sampling, use_tqdm=False) if ready else []
            results.update({key: self._result(key, o) for (key, _), o in zip(ready, outs, strict=True)})
        except Exception:
            for key, prompt in ready:  # isolate the failure to its clip
                try:
                    results[key] = self._result(key, self.llm.generate([prompt], sampling, use_tqdm=False)[0])
                except Exception as exc:
                    results[key] = Result(key, error=error_text(exc))
        return [results[key] for key, _ in items]

    def describe(self, requests: list[ClipRequest]) -> list[Result]:
        return self._run([(r.clip_id, lambda r=r: self._request(r)) for r in requests], self.sampling)

    def complete(self, prompts: list[str], max_tokens: int) -> list[Result]:
        from vllm import SamplingParams

        sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=self.settings.seed)
        return self._run([(str(i), lambda p=p: {"prompt": p}) for i, p in enumerate(prompts)], sampling)

    def close(self) -> None:
        self.llm = None

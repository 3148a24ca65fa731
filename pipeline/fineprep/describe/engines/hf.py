"""Hugging Face transformers engine: CPU or one GPU, for small models and machines without vLLM."""

from __future__ import annotations

from ..prompting import render_prompt
from ..registry import ModelSpec
from .base import ClipRequest, Engine, GenerationSettings, Result, error_text


class HFEngine(Engine):
    name = "hf"

    def __init__(self, spec: ModelSpec, settings: GenerationSettings):
        super().__init__(spec, settings)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bar is the one to watch

        self.torch = torch
        torch.manual_seed(settings.seed)
        self.device = settings.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = AutoProcessor.from_pretrained(spec.model_id)
        self.model = AutoModelForImageTextToText.from_pretrained(spec.model_id, dtype=dtype).to(self.device).eval()
        tok = self.processor.tokenizer
        # Placeholder and padding tokens are never part of a description; an untrained model emits them.
        banned = {t for t in (tok.pad_token_id, tok.bos_token_id, tok.unk_token_id,
                              getattr(self.processor, "image_token_id", None),
                              getattr(self.processor, "video_token_id", None)) if t is not None}
        self.bad_words_ids = [[t] for t in sorted(banned)] or None

    def _generate(self, inputs, max_tokens: int) -> tuple[str, int, int]:
        inputs = inputs.to(self.device)
        n_prompt = int(inputs["input_ids"].shape[1])
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                      bad_words_ids=self.bad_words_ids)
        new = out[0, n_prompt:]
        tok = self.processor.tokenizer
        n_out = int((new != tok.pad_token_id).sum()) if tok.pad_token_id is not None else int(new.numel())
        return tok.decode(new, skip_special_tokens=True).strip(), n_prompt, n_out

    def describe(self, requests: list[ClipRequest]) -> list[Result]:
        results = []
        for req in requests:
            try:
                prompt = render_prompt(self.spec, req.messages, self.processor)
                if req.media.kind == "video":
                    inputs = self.processor(videos=[req.media.video], text=prompt, return_tensors="pt")
                else:
                    inputs = self.processor(images=req.media.images, text=prompt, return_tensors="pt")
                text, n_prompt, n_out = self._generate(inputs, self.settings.max_tokens)
                results.append(Result(req.clip_id, text, n_prompt, n_out))
            except Exception as exc:  # one clip's failure is its own row, never the chunk's
                results.append(Result(req.clip_id, error=error_text(exc)))
        return results

    def complete(self, prompts: list[str], max_tokens: int) -> list[Result]:
        results = []
        for i, prompt in enumerate(prompts):
            try:
                inputs = self.processor.tokenizer(prompt, return_tensors="pt")
                text, n_prompt, n_out = self._generate(inputs, max_tokens)
                results.append(Result(str(i), text, n_prompt, n_out))
            except Exception as exc:
                results.append(Result(str(i), error=error_text(exc)))
        return results

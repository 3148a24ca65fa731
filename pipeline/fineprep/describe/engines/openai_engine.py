"""An OpenAI-compatible endpoint (`vllm serve`, shared by many workers): async requests with bounded
concurrency, retries with exponential backoff (the SDK's, for connection errors, 408/409/429/5xx),
and each request's failure kept to its own clip."""

from __future__ import annotations

import asyncio

from ..config import DescribeError
from ..prompting import openai_messages
from ..registry import ModelSpec
from .base import ClipRequest, Engine, GenerationSettings, Result, error_text

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, spec: ModelSpec, settings: GenerationSettings):
        super().__init__(spec, settings)
        opts = settings.options
        self.endpoint = opts.get("endpoint") or DEFAULT_ENDPOINT
        self.api_key = opts.get("api_key") or "EMPTY"
        self.concurrency = int(opts.get("concurrency", 16))
        self.retries = int(opts.get("retries", 4))
        self.timeout = float(opts.get("timeout", 120.0))
        self.served_model = opts.get("served_model") or self._pick_model()

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.endpoint, api_key=self.api_key, max_retries=self.retries,
                           timeout=self.timeout)

    def _pick_model(self) -> str:
        """The served model: ours by id when the server lists it, else the only one it serves."""
        from openai import OpenAI

        try:
            with OpenAI(base_url=self.endpoint, api_key=self.api_key, max_retries=self.retries,
                        timeout=self.timeout) as client:
                served = [m.id for m in client.models.list()]
        except Exception as exc:
            raise DescribeError(f"cannot list models at {self.endpoint}: {error_text(exc)}; "
                               "is the server up? (pass --endpoint URL)") from exc
        if self.spec.model_id in served:
            return self.spec.model_id
        if len(served) == 1:
            return served[0]
        raise DescribeError(f"{self.endpoint} serves {served}; name one with --served-model")

    async def _one(self, client, sem, key: str, messages: list[dict], max_tokens: int) -> Result:
        async with sem:
            try:
                resp = await client.chat.completions.create(
                    model=self.served_model, messages=messages, max_tokens=max_tokens,
                    temperature=self.settings.temperature, seed=self.settings.seed)
                usage = resp.usage
                return Result(key, (resp.choices[0].message.content or "").strip(),
                              usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None)
            except Exception as exc:
                return Result(key, error=error_text(exc))

    async def _gather(self, jobs: list[tuple[str, object]], max_tokens: int) -> list[Result]:
        sem = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
            tasks = []
            for key, build in jobs:
                try:
                    messages = build()
                except Exception as exc:
                    tasks.append(asyncio.sleep(0, result=Result(key, error=error_text(exc))))
                    continue
                tasks.append(self._one(client, sem, key, messages, max_tokens))
            return list(await asyncio.gather(*tasks))

    def describe(self, requests: list[ClipRequest]) -> list[Result]:
        jobs = [(r.clip_id, lambda r=r: openai_messages(r.messages, r.media)) for r in requests]
        return asyncio.run(self._gather(jobs, self.settings.max_tokens))

    def complete(self, prompts: list[str], max_tokens: int) -> list[Result]:
        jobs = [(str(i), lambda p=p: [{"role": "user", "content": p}]) for i, p in enumerate(prompts)]
        return asyncio.run(self._gather(jobs, max_tokens))

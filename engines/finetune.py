"""OpenAI's fine-tuning API: upload a chat-format JSONL file, create a job, read its status."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from bot.errors import EngineUnavailable
from engines.base import EngineRequest
from engines.llm import provider_error


@dataclass(frozen=True)
class FineTuneStart:
    training_jsonl: bytes
    model: str
    suffix: str | None = None


@dataclass(frozen=True)
class FineTuneStatus:
    job_id: str


@dataclass(frozen=True)
class FineTuneJob:
    id: str
    status: str
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str | None = None


class FineTuneEngine:
    """Needs `OPENAI_API_KEY` (or the variable `api_key_env` names); `base_url` for other hosts."""

    name = "finetune"
    memory_mb = 0

    def __init__(self, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_retries: int = 3) -> None:
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client: Any = None

    def load(self) -> None:
        from openai import AsyncOpenAI

        key = os.environ.get(self.api_key_env)
        if not key:
            raise EngineUnavailable(f"fine-tuning needs {self.api_key_env} in the environment")
        self._client = AsyncOpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s,
                                   max_retries=self.max_retries)

    def unload(self) -> None:
        self._client = None

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        return list(await asyncio.gather(*(self._one(r.payload) for r in batch), return_exceptions=True))

    async def _one(self, payload: Any) -> FineTuneJob:
        try:
            if isinstance(payload, FineTuneStart):
                uploaded = await self._client.files.create(
                    file=("training.jsonl", payload.training_jsonl, "application/jsonl"), purpose="fine-tune"
                )
                job = await self._client.fine_tuning.jobs.create(
                    training_file=uploaded.id, model=payload.model, suffix=payload.suffix
                )
            elif isinstance(payload, FineTuneStatus):
                job = await self._client.fine_tuning.jobs.retrieve(payload.job_id)
            else:
                raise TypeError(f"finetune engine takes FineTuneStart or FineTuneStatus, not {type(payload).__name__}")
        except TypeError:
            raise
        except Exception as e:
            raise provider_error(e) from e
        error = getattr(job, "error", None)
        message = getattr(error, "message", None) if error else None
        return FineTuneJob(id=job.id, status=job.status, model=job.model, fine_tuned_model=job.fine_tuned_model,
                           trained_tokens=job.trained_tokens, error=message)

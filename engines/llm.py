"""Chat completions over the OpenAI protocol, for every provider and the bundled local model.

One code path serves OpenAI, Azure OpenAI and any OpenAI-compatible server (vLLM, Ollama,
llama.cpp). With `provider = "local"` the engine starts the bundled model in llama.cpp's server on
loopback when it loads and talks to it the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.errors import EngineUnavailable, UserFacingError
from engines.base import EngineRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    """One completion. `logit_bias` maps token ids to a bias in [-100, 100]."""

    messages: list[dict[str, Any]]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    json_mode: bool = False
    logit_bias: dict[int, int] | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class TokenizeRequest:
    """Token ids of `text` in the serving model's own tokenizer."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text the model wrote

    def parsed(self) -> dict[str, Any]:
        """The arguments as a dict; raises `UserFacingError("tool_args_invalid")` when they are not JSON."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            raise UserFacingError("tool_args_invalid", tool=self.name) from None
        if not isinstance(value, dict):
            raise UserFacingError("tool_args_invalid", tool=self.name)
        return value


@dataclass
class ChatResult:
    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


FENCED_JSON = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.S)


def tool_calls_from_text(text: str, known: set[str]) -> list[ToolCall]:
    """Tool calls that a small local model wrote as JSON in its text (often in a ```json fence).

    Accepts {"name": ..., "arguments": {...}} and the common variants ("tool"/"function" for the
    name, "parameters"/"args" for the arguments). Only names in `known` count.
    """
    candidates = FENCED_JSON.findall(text) or _bare_objects(text)
    calls = []
    for n, raw in enumerate(candidates):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
            obj = obj["function"]
        name = obj.get("name") or obj.get("tool") or obj.get("function")
        args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
        if isinstance(name, str) and name in known:
            arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            calls.append(ToolCall(id=f"text_{n}", name=name, arguments=arguments))
    return calls


def _bare_objects(text: str) -> list[str]:
    start = text.find("{")
    end = text.rfind("}")
    return [text[start:end + 1]] if 0 <= start < end else []


class ChatEngine:
    """The `llm` engine: `run` answers `ChatRequest`s and `TokenizeRequest`s; `stream` yields
    text deltas and finally the `ChatResult`."""

    name = "llm"

    def __init__(
        self,
        provider: str = "local",
        base_url: str | None = None,
        model: str = "qwen2.5-coder-0.5b-instruct",
        api_key_env: str = "OPENAI_API_KEY",
        azure_api_version: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        model_path: str | None = None,
        cache_dir: str = ".data/models",
        ctx_size: int = 8192,
        threads: int | None = None,
        parallel: int = 1,
        gpu_layers: int = 0,
        memory_mb: int = 0,
    ) -> None:
        if provider not in ("local", "openai", "azure"):
            raise ValueError(f"llm provider must be local, openai or azure, not {provider!r}")
        self.provider = provider
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.azure_api_version = azure_api_version
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.model_path = model_path
        self.cache_dir = Path(cache_dir)
        self.ctx_size, self.threads, self.parallel, self.gpu_layers = ctx_size, threads, parallel, gpu_layers
        self.memory_mb = memory_mb or (900 if provider == "local" else 0)
        self._server: Any = None
        self._client: Any = None
        self._tokenize_url: str | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def load(self) -> None:
        from openai import AsyncAzureOpenAI, AsyncOpenAI

        if self.provider == "local":
            from engines.llama_local import OPENAI_CLIENT_HEADERS, LlamaServer, bundled_model_path

            path = Path(self.model_path) if self.model_path else bundled_model_path(self.cache_dir)
            extra = {"n_gpu_layers": self.gpu_layers} if self.gpu_layers else None
            self._server = LlamaServer(path, ctx_size=self.ctx_size, threads=self.threads,
                                       parallel=self.parallel, extra=extra)
            base_url = self._server.start()
            self._tokenize_url = f"{self._server.url}/tokenize"
            # llama.cpp closes each connection after a stream: never reuse one.
            self._client = AsyncOpenAI(base_url=base_url, api_key="local", timeout=self.timeout_s,
                                       max_retries=max(1, self.max_retries), default_headers=OPENAI_CLIENT_HEADERS)
            return
        key = os.environ.get(self.api_key_env)
        if not key and self.base_url is None:
            raise EngineUnavailable(f"set {self.api_key_env} in the environment to use the {self.provider} provider")
        if self.provider == "azure":
            self._client = AsyncAzureOpenAI(azure_endpoint=self.base_url or "", api_key=key,
                                            api_version=self.azure_api_version or "2024-10-21",
                                            timeout=self.timeout_s, max_retries=self.max_retries)
        else:
            self._client = AsyncOpenAI(base_url=self.base_url, api_key=key or "none", timeout=self.timeout_s,
                                       max_retries=self.max_retries)
            if self.base_url:
                # llama.cpp and vLLM serve /tokenize beside /v1; OpenAI itself does not.
                self._tokenize_url = re.sub(r"/v1/?$", "", self.base_url.rstrip("/")) + "/tokenize"

    def unload(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._client = None

    # -- work -------------------------------------------------------------------------------
    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        return list(await asyncio.gather(*(self._one(r.payload) for r in batch), return_exceptions=True))

    async def _one(self, payload: Any) -> Any:
        if isinstance(payload, TokenizeRequest):
            return await self.tokenize(payload.text)
        if not isinstance(payload, ChatRequest):
            raise TypeError(f"llm engine takes ChatRequest or TokenizeRequest, not {type(payload).__name__}")
        known = {t["function"]["name"] for t in payload.tools or []}
        try:
            response = await self._client.chat.completions.create(**self._params(payload), stream=False)
        except Exception as e:
            raise provider_error(e) from e
        choice = response.choices[0]
        text = choice.message.content or ""
        calls = [ToolCall(c.id, c.function.name, c.function.arguments or "{}") for c in choice.message.tool_calls or []]
        if not calls and known:
            calls = tool_calls_from_text(text, known)
        usage = response.usage
        return ChatResult(text=text, model=response.model or payload.model or self.model,
                          tokens_in=usage.prompt_tokens if usage else 0,
                          tokens_out=usage.completion_tokens if usage else 0,
                          finish_reason=choice.finish_reason, tool_calls=calls)

    async def stream(self, request: EngineRequest) -> AsyncIterator[Any]:
        payload = request.payload
        if not isinstance(payload, ChatRequest):
            raise TypeError("llm streaming takes a ChatRequest")
        known = {t["function"]["name"] for t in payload.tools or []}
        try:
            response = await self._client.chat.completions.create(
                **self._params(payload), stream=True, stream_options={"include_usage": True}
            )
        except Exception as e:
            raise provider_error(e) from e
        text: list[str] = []
        partial: dict[int, dict[str, str]] = {}
        usage = None
        finish = None
        model = payload.model or self.model
        try:
            async for chunk in response:
                if request.cancelled():
                    await response.close()
                    break
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        yield delta.content
                    for call in delta.tool_calls or []:
                        slot = partial.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        slot["id"] = call.id or slot["id"]
                        if call.function is not None:
                            slot["name"] += call.function.name or ""
                            slot["arguments"] += call.function.arguments or ""
        except Exception as e:
            raise provider_error(e) from e
        whole = "".join(text)
        calls = [ToolCall(v["id"] or f"call_{i}", v["name"], v["arguments"] or "{}")
                 for i, v in sorted(partial.items())]
        if not calls and known:
            calls = tool_calls_from_text(whole, known)
        yield ChatResult(text=whole, model=model, tokens_in=usage.prompt_tokens if usage else 0,
                         tokens_out=usage.completion_tokens if usage else 0, finish_reason=finish, tool_calls=calls)

    def _params(self, r: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"model": r.model or self.model, "messages": r.messages}
        if r.temperature is not None:
            params["temperature"] = r.temperature
        if r.max_tokens is not None:
            params["max_tokens"] = r.max_tokens
        if r.seed is not None:
            params["seed"] = r.seed
        if r.json_mode:
            params["response_format"] = {"type": "json_object"}
        if r.logit_bias:
            params["logit_bias"] = {str(k): v for k, v in r.logit_bias.items()}
        if r.tools:
            params["tools"] = r.tools
        return params

    async def tokenize(self, text: str) -> list[int] | None:
        """Token ids from the serving model, or None when the provider has no tokenizer endpoint."""
        if self._tokenize_url is None:
            return None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(self._tokenize_url, json={"content": text, "add_special": False}) as resp:
                    resp.raise_for_status()
                    tokens = (await resp.json()).get("tokens")
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.info("tokenizer endpoint unavailable: %s", type(e).__name__)
            return None
        return [t if isinstance(t, int) else int(t["id"]) for t in tokens or []]


def openai_client(base_url: str | None, api_key_env: str, timeout_s: float, max_retries: int, purpose: str) -> Any:
    """An `AsyncOpenAI` client for `base_url` (OpenAI itself when None, which needs the key in `api_key_env`)."""
    from openai import AsyncOpenAI

    key = os.environ.get(api_key_env)
    if not key and base_url is None:
        raise EngineUnavailable(f"set {api_key_env} in the environment to use OpenAI {purpose}")
    return AsyncOpenAI(base_url=base_url, api_key=key or "none", timeout=timeout_s, max_retries=max_retries)


def provider_error(e: Exception, service: str = "llm") -> Exception:
    """An OpenAI-SDK failure (after the SDK's own retries) as a message the user can act on.

    `service` picks the message family: "llm" (chat) or "stt" (transcription).
    """
    import openai

    if isinstance(e, UserFacingError):
        return e
    if isinstance(e, openai.RateLimitError):
        return UserFacingError(f"{service}_rate_limited")
    if isinstance(e, openai.APITimeoutError):
        return UserFacingError(f"{service}_timeout")
    if isinstance(e, openai.APIConnectionError):
        return UserFacingError(f"{service}_unreachable")
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        return UserFacingError(f"{service}_auth")
    if isinstance(e, openai.APIStatusError):
        if e.status_code >= 500:
            return UserFacingError(f"{service}_provider_error", status=e.status_code)
        return UserFacingError(f"{service}_bad_request", status=e.status_code, detail=_short(e.message))
    return e


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""A loopback stand-in for the OpenAI HTTP API (plus llama.cpp's `/tokenize`), spoken to by the real `openai` SDK.

    async with OpenAIStub() as stub:
        client = AsyncOpenAI(base_url=stub.url + "/v1", api_key="test")
        stub.script(Reply(text="hi there"), Reply(status=429, retry_after=0.2))
        ...
        assert stub.chat_requests()[0]["seed"] == 7

Chat completions answer from the scripted queue, then from `responder`, then by echoing the last user
message. Every request is recorded in `stub.requests`. Errors use OpenAI's `{"error": {...}}` shape.
"""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import inspect
import json
import math
import re
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackServer

JSON = dict[str, Any]
DEFAULT_MODEL = "gpt-4o-mini"
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
HYPER_DEFAULTS = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}  # what "auto" resolves to
SECRET_HEADERS = frozenset({"authorization", "api-key"})  # OpenAI's bearer key, Azure's key header
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {  # status: (message, type, code)
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to do this.", "invalid_request_error", None),
    404: ("Not found.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", "service_unavailable"),
}


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def word_count(text: str) -> int:
    return len(text.split())


def message_text(content: Any) -> str:
    """The text of a chat message's `content`: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass
class Reply:
    """One scripted chat-completion answer: text and/or tool calls, or an injected provider error."""

    text: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments": JSON string or dict, "id"?}]
    status: int = 200
    retry_after: float | None = None  # seconds; sent as `Retry-After` on error replies
    delay_s: float = 0.0  # before answering at all
    chunk_delay_s: float = 0.0  # between SSE chunks
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # default "tool_calls" when there are tool calls, else "stop"
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, e.g. x-should-retry


@dataclass
class Recorded:
    """One request as the stand-in saw it (API key header values are never kept)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, multipart fields ({"file": {"filename", "content_type", "bytes"}, ...}), text or None
    headers: dict[str, str]  # lower-case names, without Authorization (or Azure's api-key)
    authorized: bool  # whether one of those key headers was present


class ApiError(Exception):
    """An OpenAI-shaped error answer; raise it from a handler."""

    def __init__(
        self, status: int, message: str | None = None, *, type: str | None = None, param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        d_message, d_type, d_code = _ERROR_DEFAULTS.get(status, _ERROR_DEFAULTS[500 if status >= 500 else 400])
        super().__init__(message or d_message)
        self.status = status
        self.body = {"error": {"message": message or d_message, "type": type or d_type, "param": param,
                               "code": code if code is not None else d_code}}
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


class Tokenizer:
    """Deterministic word-level tokenizer: words and single punctuation marks, id = crc32 % 150000 + 1000."""

    BOS = 1
    _PIECE = re.compile(r"\w+|[^\w\s]")

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}

    def pieces(self, text: str) -> list[str]:
        return self._PIECE.findall(text)

    def piece_id(self, piece: str) -> int:
        token = zlib.crc32(piece.encode()) % 150000 + 1000
        self._seen[token] = piece
        return token

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        return [self.BOS] * add_special + [self.piece_id(p) for p in self.pieces(text)]

    def decode(self, tokens: list[int]) -> str:
        out = ""
        for piece in (self._seen.get(t, "") for t in tokens if t != self.BOS):
            out += piece if not out or not re.match(r"\w", piece) else " " + piece
        return out


class Embedder:
    """Bag-of-words hashed embeddings: deterministic, L2-normalised, and texts sharing words point alike."""

    def embed(self, text: str, dimensions: int) -> list[float]:
        words = re.findall(r"\w+", text.lower()) or [text]
        vector = [0.0] * dimensions
        for word in words:
            for i, value in enumerate(self._word_vector(word, dimensions)):
                vector[i] += value
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return array.array("f", [v / norm for v in vector]).tolist()  # float32, as base64 would carry

    @staticmethod
    def _word_vector(word: str, dimensions: int) -> list[float]:
        raw = b"".join(hashlib.sha256(f"{word}:{i}".encode()).digest() for i in range(dimensions // 32 + 1))
        return [b / 127.5 - 1.0 for b in raw[:dimensions]]

    def response(self, body: JSON) -> JSON:
        """A `/v1/embeddings` answer: one vector per input (16 floats unless `dimensions`), base64 when asked."""
        raw = body.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            raw = [raw]
        if not isinstance(raw, list) or not raw or any(x in ("", []) for x in raw):
            raise ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
        vectors = [self.embed(text, int(body.get("dimensions") or 16)) for text in texts]
        encode = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(array.array("f", v).tobytes()).decode() if encode else v}
                for i, v in enumerate(vectors)]
        tokens = sum(word_count(t) for t in texts)
        return {"object": "list", "data": data, "model": body.get("model", ""),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


class Moderator:
    """Flags texts containing any of `flagged_words` (whole words, any case) in `category`."""

    def __init__(self) -> None:
        self.flagged_words: set[str] = set()
        self.category = "harassment"

    def result(self, text: str) -> JSON:
        words = {w.lower() for w in re.findall(r"\w+", text)}
        flagged = bool(words & {w.lower() for w in self.flagged_words})
        scores = {c: (0.97 if flagged and c == self.category else 1e-5) for c in MODERATION_CATEGORIES}
        return {
            "flagged": flagged,
            "categories": {c: s > 0.5 for c, s in scores.items()},
            "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        }

    def response(self, body: JSON) -> JSON:
        """A `/v1/moderations` answer: one result per input string (one for a list of multimodal parts)."""
        raw = body.get("input")
        if isinstance(raw, list) and raw and isinstance(raw[0], dict):
            texts = [message_text(raw)]
        else:
            texts = [raw] if isinstance(raw, str) else [str(x) for x in raw or []]
        return {"id": _new_id("modr-"), "model": body.get("model", "omni-moderation-latest"),
                "results": [self.result(t) for t in texts]}


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> JSON:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": None, "status_details": None}


class FileStore:
    """Uploaded files by id."""

    def __init__(self) -> None:
        self.by_id: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: Any, data: bytes) -> StoredFile:
        if not isinstance(purpose, str) or purpose not in FILE_PURPOSES:
            raise ApiError(400, f"{purpose!r} is not one of {sorted(FILE_PURPOSES)} - 'purpose'", param="purpose")
        stored = StoredFile(_new_id("file-"), filename, purpose, data)
        self.by_id[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        if file_id not in self.by_id:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return self.by_id[file_id]

    def listing(self) -> JSON:
        return {"object": "list", "data": [f.to_json() for f in self.by_id.values()], "has_more": False}


def chat_jsonl_problem(data: bytes) -> str | None:
    """Why `data` is not chat-format fine-tuning JSONL, or None when it is."""
    try:
        lines = [line for line in data.decode().splitlines() if line.strip()]
    except UnicodeDecodeError:
        return "file is not UTF-8 text"
    if not lines:
        return "file has no examples"
    for n, line in enumerate(lines, 1):
        try:
            example = json.loads(line)
        except ValueError:
            return f"line {n} is not valid JSON"
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not messages:
            return f"line {n} has no `messages` list"
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
                return f"line {n}: each message needs a `role` and `content`"
    return None


@dataclass
class FineTuneJob:
    """One fine-tuning job; each poll moves it one step: validating_files -> running -> succeeded/failed."""

    number: int
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: JSON
    trained_tokens: int
    seed: int
    metadata: Any = None
    id: str = field(default_factory=lambda: _new_id("ftjob-"))
    status: str = "validating_files"
    created_at: int = field(default_factory=lambda: int(time.time()))
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    error: JSON | None = None
    events: list[JSON] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.event(f"Validating training file: {self.training_file}")

    def event(self, message: str, level: str = "info") -> None:
        self.events.append({"id": _new_id("ftevent-"), "object": "fine_tuning.job.event",
                            "created_at": int(time.time()), "level": level, "message": message,
                            "data": {}, "type": "message"})

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    def advance(self, fail: bool) -> None:
        if self.status == "validating_files":
            self.status = "running"
            self.event("Fine-tuning job started")
        elif self.status == "running":
            self.finished_at = int(time.time())
            if fail:
                self.status = "failed"
                self.error = {"code": "training_failed", "message": "Fine-tuning failed (stub).", "param": None}
                self.event("Fine-tuning job failed", level="error")
            else:
                self.status = "succeeded"
                self.fine_tuned_model = f"ft:{self.model}:stub:{self.number}"
                self.event(f"New fine-tuned model created: {self.fine_tuned_model}")
                self.event("The job has successfully completed")

    def cancel(self) -> None:
        if self.done:
            raise ApiError(400, f"Job {self.id} has already {self.status}.", param="fine_tuning_job_id")
        self.status, self.finished_at = "cancelled", int(time.time())
        self.event("Fine-tuning job cancelled")

    def to_json(self) -> JSON:
        return {
            "id": self.id, "object": "fine_tuning.job", "created_at": self.created_at, "error": self.error,
            "fine_tuned_model": self.fine_tuned_model, "finished_at": self.finished_at,
            "hyperparameters": self.hyperparameters, "model": self.model, "organization_id": "org-stub",
            "result_files": [], "seed": self.seed, "status": self.status,
            "trained_tokens": self.trained_tokens if self.status == "succeeded" else None,
            "training_file": self.training_file, "validation_file": self.validation_file,
            "estimated_finish": None, "integrations": [], "metadata": self.metadata,
            "method": {"type": "supervised", "supervised": {"hyperparameters": self.hyperparameters}},
        }


class FineTuning:
    """Fine-tuning jobs by id; creation checks the training file is chat-format JSONL."""

    def __init__(self, files: FileStore) -> None:
        self.files = files
        self.jobs: dict[str, FineTuneJob] = {}

    def _training_data(self, file_id: Any, param: str) -> bytes:
        if not isinstance(file_id, str) or file_id not in self.files.by_id:
            raise ApiError(400, f"invalid {param}: {file_id}", param=param, code="invalid_file")
        data = self.files.by_id[file_id].data
        if problem := chat_jsonl_problem(data):
            raise ApiError(400, f"Invalid file format for {param} {file_id}: {problem}.", param=param,
                           code="invalid_training_file")
        return data

    def create(self, body: JSON) -> FineTuneJob:
        if not body.get("model"):
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        data = self._training_data(body.get("training_file"), "training_file")
        if body.get("validation_file") is not None:
            self._training_data(body["validation_file"], "validation_file")
        supervised = (body.get("method") or {}).get("supervised") or {}
        given = {**(body.get("hyperparameters") or {}), **(supervised.get("hyperparameters") or {})}
        hyper = {k: v if (v := given.get(k, "auto")) != "auto" else d for k, d in HYPER_DEFAULTS.items()}
        words = sum(word_count(message_text(m.get("content")))
                    for line in data.decode().splitlines() if line.strip() for m in json.loads(line)["messages"])
        job = FineTuneJob(len(self.jobs) + 1, body["model"], body["training_file"], body.get("validation_file"),
                          hyper, words * int(hyper["n_epochs"]), int(body.get("seed") or 42), body.get("metadata"))
        self.jobs[job.id] = job
        return job

    def get(self, job_id: str) -> FineTuneJob:
        if job_id not in self.jobs:
            raise ApiError(404, f"Could not find fine tune job: {job_id}", param="fine_tuning_job_id")
        return self.jobs[job_id]

    def events(self, job_id: str, after: str | None, limit: int) -> JSON:
        events = list(reversed(self.get(job_id).events))  # newest first, as the API lists them
        if after:
            ids = [e["id"] for e in events]
            events = events[ids.index(after) + 1 :] if after in ids else []
        return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}

    def listing(self) -> JSON:
        return {"object": "list", "data": [j.to_json() for j in reversed(self.jobs.values())], "has_more": False}

    def models(self) -> list[str]:
        return [j.fine_tuned_model for j in self.jobs.values() if j.fine_tuned_model]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as the API sends it

    def to_json(self) -> JSON:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ChatRender:
    """Turns one `Reply` to one request into a `chat.completion` object or `chat.completion.chunk` events."""

    def __init__(self, body: JSON, reply: Reply, call_ids: list[str]) -> None:
        self.model = str(body.get("model", DEFAULT_MODEL))
        self.reply = reply
        self.id = _new_id("chatcmpl-")
        self.created = int(time.time())
        self.calls: list[ToolCall] = []
        for call, call_id in zip(reply.tool_calls or [], call_ids, strict=True):
            args = call.get("arguments", "{}")
            self.calls.append(ToolCall(call.get("id") or call_id, call["name"],
                                       args if isinstance(args, str) else json.dumps(args)))
        self.finish_reason = reply.finish_reason or ("tool_calls" if self.calls else "stop")
        prompt = sum(word_count(message_text(m.get("content"))) for m in body.get("messages", []))
        completion = word_count(reply.text) + sum(word_count(c.name + " " + c.arguments.replace(",", " "))
                                                  for c in self.calls)
        p = prompt if reply.prompt_tokens is None else reply.prompt_tokens
        c = completion if reply.completion_tokens is None else reply.completion_tokens
        self.usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}}
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def _envelope(self, object_: str) -> JSON:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model,
                "service_tier": "default", "system_fingerprint": "fp_stub"}

    def completion(self) -> JSON:
        message: JSON = {"role": "assistant", "content": self.reply.text if self.reply.text or not self.calls else None,
                         "refusal": None, "annotations": []}
        if self.calls:
            message["tool_calls"] = [c.to_json() for c in self.calls]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage}

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        chunk = {**self._envelope("chat.completion.chunk"),
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        return {**chunk, "usage": None} if self.include_usage else chunk

    def chunks(self) -> list[JSON]:
        """Role first, then word chunks, then per tool call a head (index, id, name) and argument fragments."""
        text = self.reply.text
        out = [self._chunk({"role": "assistant", "content": "" if text or not self.calls else None, "refusal": None})]
        out += [self._chunk({"content": piece}) for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]
        for index, call in enumerate(self.calls):
            head = {**call.to_json(), "index": index, "function": {"name": call.name, "arguments": ""}}
            out.append(self._chunk({"tool_calls": [head]}))
            args = call.arguments
            out += [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": args[i : i + 8]}}]})
                    for i in range(0, len(args), 8)]
        out.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            out.append({**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage})
        return out


def echo_reply(body: JSON) -> Reply:
    users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    return Reply(text="echo: " + (message_text(users[-1].get("content")) if users else ""))


RECORDED = web.RequestKey("recorded", Recorded)
Responder = Callable[[JSON], Reply | Awaitable[Reply]]


class OpenAIStub(LoopbackServer):
    """The server: records every request, answers the OpenAI routes from the helpers above."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Recorded] = []
        self.responder: Responder | None = None
        self.api_key: str | None = None  # when set, API requests carrying another key get a 401
        self.fail_finetune = False
        self.tokenizer = Tokenizer()
        self.embedder = Embedder()
        self.moderator = Moderator()
        self.files = FileStore()
        self.fine_tuning = FineTuning(self.files)
        self._script: deque[Reply] = deque()
        self._models: dict[str, None] = {DEFAULT_MODEL: None}
        self._call_count = 0
        self._runner: web.AppRunner | None = None

    @property
    def flagged_words(self) -> set[str]:
        return self.moderator.flagged_words

    @flagged_words.setter
    def flagged_words(self, words: set[str]) -> None:
        self.moderator.flagged_words = set(words)

    def script(self, *replies: Reply | str) -> None:
        self._script.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    def chat_requests(self) -> list[JSON]:
        return [r.body for r in self.requests if r.path.endswith("/chat/completions") and isinstance(r.body, dict)]

    def reset(self) -> None:
        """Forget requests, the script, files, jobs and settings; keep serving on the same URL."""
        self.requests.clear()
        self._script.clear()
        self.files = FileStore()
        self.fine_tuning = FineTuning(self.files)
        self._models = {DEFAULT_MODEL: None}
        self.responder, self.api_key, self.fail_finetune = None, None, False
        self.moderator = Moderator()

    async def start(self) -> OpenAIStub:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        post, get = web.post, web.get
        app.add_routes([
            post("/v1/chat/completions", self._chat), get("/v1/models", self._models_list),
            post("/openai/deployments/{deployment}/chat/completions", self._chat),  # Azure OpenAI
            post("/openai/deployments/{deployment}/embeddings", self._embeddings),
            get("/v1/models/{id}", self._model), post("/v1/embeddings", self._embeddings),
            post("/v1/moderations", self._moderations), post("/v1/files", self._file_upload),
            get("/v1/files", self._files_list), get("/v1/files/{id}", self._file),
            web.delete("/v1/files/{id}", self._file), get("/v1/files/{id}/content", self._file_content),
            post("/v1/fine_tuning/jobs", self._job_create), get("/v1/fine_tuning/jobs", self._jobs_list),
            get("/v1/fine_tuning/jobs/{id}", self._job), get("/v1/fine_tuning/jobs/{id}/events", self._job_events),
            post("/v1/fine_tuning/jobs/{id}/cancel", self._job),
            post("/tokenize", self._tokenize), post("/detokenize", self._detokenize), get("/health", self._health),
        ])
        return await self._serve(app, handler_cancellation=True)

    # -- plumbing --------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[RECORDED] = await self._record(request)
        try:
            key = request.headers.get("api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.api_key is not None and request.path.startswith(("/v1/", "/openai/")) and key != self.api_key:
                raise ApiError(401, code="invalid_api_key")
            response = await handler(request)
        except ApiError as err:
            response = err.response()
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as err:
            response = ApiError(err.status, f"Invalid URL ({request.method} {request.path})").response()
        if not response.prepared:
            response.headers.setdefault("x-request-id", _new_id("req_"))
        return response

    async def _record(self, request: web.Request) -> Recorded:
        body: Any = None
        if request.content_type.startswith("multipart/"):
            body = {}
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    size = len(value.file.read())
                    value.file.seek(0)
                    body[name] = {"filename": value.filename, "content_type": value.content_type, "bytes": size}
                else:
                    body[name] = value
        elif raw := await request.read():
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS}
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and request.path.startswith(("/v1/", "/openai/")):
            self._models.setdefault(model, None)
        authorized = any(k.lower() in SECRET_HEADERS for k in request.headers)
        recorded = Recorded(request.method, request.path, dict(request.query), body, headers, authorized)
        self.requests.append(recorded)
        return recorded

    @staticmethod
    def _body(request: web.Request) -> JSON:
        body = request[RECORDED].body
        if not isinstance(body, dict):
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                                "aren't using your HTTP library correctly.)")
        return body

    # -- chat -----------------------------------------------------------------------------------------------

    async def _next_reply(self, body: JSON) -> Reply:
        if self._script:
            return self._script.popleft()
        reply = (self.responder or echo_reply)(body)
        return await reply if inspect.isawaitable(reply) else reply

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request)
        if not body.get("model"):
            raise ApiError(400, "you must provide a model parameter", param="model")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise ApiError(400, "[] is too short - 'messages'", param="messages", code="empty_array")
        reply = await self._next_reply(body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            headers = dict(reply.headers)
            if reply.retry_after is not None:
                headers["Retry-After"] = f"{reply.retry_after:g}"
            raise ApiError(reply.status, reply.text or None, headers=headers)
        ids = []
        for _ in reply.tool_calls or []:
            self._call_count += 1
            ids.append(f"call_{self._call_count}")
        render = ChatRender(body, reply, ids)
        if not body.get("stream"):
            return web.json_response(render.completion(), headers=reply.headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", "x-request-id": _new_id("req_"),
                                               **reply.headers})
        await response.prepare(request)
        try:
            for i, chunk in enumerate(render.chunks()):
                if i and reply.chunk_delay_s:
                    await asyncio.sleep(reply.chunk_delay_s)
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away mid-stream
        return response

    # -- models, embeddings, moderations, files, fine-tuning ------------------------------------------------

    def _model_json(self, model: str) -> JSON:
        return {"id": model, "object": "model", "created": 1700000000,
                "owned_by": "user-stub" if model.startswith("ft:") else "openai"}

    async def _models_list(self, request: web.Request) -> web.Response:
        models = [*self._models, *self.fine_tuning.models()]
        return web.json_response({"object": "list", "data": [self._model_json(m) for m in models]})

    async def _model(self, request: web.Request) -> web.Response:
        model = request.match_info["id"]
        if model not in [*self._models, *self.fine_tuning.models()]:
            raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        return web.json_response(self._model_json(model))

    async def _embeddings(self, request: web.Request) -> web.Response:
        return web.json_response(self.embedder.response(self._body(request)))

    async def _moderations(self, request: web.Request) -> web.Response:
        return web.json_response(self.moderator.response(self._body(request)))

    async def _file_upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        return web.json_response(self.files.add(upload.filename, form.get("purpose"), upload.file.read()).to_json())

    async def _files_list(self, request: web.Request) -> web.Response:
        return web.json_response(self.files.listing())

    async def _file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        if request.method == "DELETE":
            del self.files.by_id[stored.id]
            return web.json_response({"id": stored.id, "object": "file", "deleted": True})
        return web.json_response(stored.to_json())

    async def _file_content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"]).data
        return web.Response(body=data, content_type="application/octet-stream")

    async def _job_create(self, request: web.Request) -> web.Response:
        return web.json_response(self.fine_tuning.create(self._body(request)).to_json())

    async def _jobs_list(self, request: web.Request) -> web.Response:
        return web.json_response(self.fine_tuning.listing())

    async def _job(self, request: web.Request) -> web.Response:
        job = self.fine_tuning.get(request.match_info["id"])
        if request.method == "POST":  # .../cancel
            job.cancel()
        else:  # each poll moves the job on
            job.advance(self.fail_finetune)
        return web.json_response(job.to_json())

    async def _job_events(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 20))
        return web.json_response(self.fine_tuning.events(request.match_info["id"], request.query.get("after"), limit))

    # -- llama.cpp ------------------------------------------------------------------------------------------

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = self._body(request)
        text = str(body.get("content", ""))
        tokens = self.tokenizer.encode(text, bool(body.get("add_special", False)))
        if body.get("with_pieces"):  # llama.cpp's [{"id", "piece"}] form
            pieces = [""] * (len(tokens) - len(self.tokenizer.pieces(text))) + self.tokenizer.pieces(text)
            return web.json_response({"tokens": [{"id": t, "piece": p} for t, p in zip(tokens, pieces, strict=True)]})
        return web.json_response({"tokens": tokens})

    async def _detokenize(self, request: web.Request) -> web.Response:
        tokens = self._body(request).get("tokens") or []
        return web.json_response({"content": self.tokenizer.decode([int(t) for t in tokens])})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

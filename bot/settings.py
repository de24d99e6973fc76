"""One validated `Settings` object, read from an optional `bot.toml` and the environment.

Secrets come only from the environment: a secret key found in the file stops start-up.
Environment variables use the `BOT_` prefix and `__` for nesting (`BOT_POOL__MEMORY_BUDGET_MB=4096`);
secrets use their conventional names (`DATABASE_URL`, `OPENAI_API_KEY`, `SLACK_BOT_TOKEN`, ...).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(Exception):
    """Start-up configuration is wrong; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None  # how users reach the server (links to files, Slack request URLs)


class LimitSettings(Section):
    max_upload_mb: float = Field(25.0, gt=0)
    max_message_chars: int = Field(100_000, gt=0)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class AccessSettings(Section):
    allow_users: list[str] = []
    deny_users: list[str] = []
    allow_channels: list[str] = []
    deny_channels: list[str] = []
    admins: list[str] = []  # user ids (platform:user) with the admin role


class RateLimitSettings(Section):
    per_user_per_minute: float = Field(30.0, gt=0)
    burst: int = Field(10, ge=1)


class ResponderSettings(Section):
    stream_interval_s: float = Field(1.0, ge=0.0)
    progress_interval_s: float = Field(2.0, ge=0.0)


class EngineSettings(Section):
    """One engine in the pool: which class, how it is placed and batched."""

    impl: str  # "package.module:Class"
    options: dict[str, Any] = {}
    worker: Literal["thread", "process"] = "thread"
    device: str = "cpu"
    max_batch: int = Field(1, ge=1)
    concurrency: int = Field(1, ge=1)  # batches in flight at once (HTTP APIs, servers with parallel slots)
    batch_wait_ms: float = Field(0.0, ge=0)
    queue_size: int = Field(64, ge=1)
    timeout_s: float = Field(300.0, gt=0)
    memory_mb: int = Field(0, ge=0)


class Price(Section):
    """US dollars per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


MemoryStrategy = Literal["buffer_window", "summary", "summary_buffer", "entity"]


class ChatSettings(Section):
    """Defaults for conversations; channels and workspaces override some of them with commands."""

    engine: str = "llm"
    system_prompt: str = (
        "You are a helpful assistant in a team chat. Answer concisely and in the language the user writes in."
    )
    memory: MemoryStrategy = "summary_buffer"
    window_turns: int = Field(6, ge=1)  # buffer window and entity memory keep this many recent turns
    buffer_tokens: int = Field(1200, ge=10)  # summary buffer keeps recent turns under this many tokens
    summary_tokens: int = Field(400, ge=20)  # a longer summary is condensed by the model
    entity_scope: Literal["conversation", "workspace"] = "conversation"
    model: str | None = None  # None: the engine's own default model
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    max_input_chars: int = Field(12_000, ge=100)  # longer messages are cut, with a notice
    cheap_model: str | None = None  # routing: short, simple messages go to this model
    cheap_max_chars: int = Field(80, ge=1)
    prices: dict[str, Price] = {}
    budget_period_days: int = Field(30, ge=1)
    budget_user_usd: float = Field(0.0, ge=0)  # 0: no budget
    budget_channel_usd: float = Field(0.0, ge=0)
    budget_workspace_usd: float = Field(0.0, ge=0)
    budget_warn_fraction: float = Field(0.8, gt=0, le=1)
    finetune_engine: str = "finetune"
    finetune_model: str = "gpt-4o-mini-2024-07-18"
    finetune_poll_s: float = Field(30.0, gt=0)  # how often /finetune checks the job while it runs


class SpeechSettings(Section):
    """Voice in and voice out."""

    stt_engine: str = "stt"
    tts_engine: str = "tts"
    max_audio_seconds: float = Field(3600.0, gt=0)  # longer recordings are refused with a message
    voice_mode: Literal["transcribe", "converse", "off"] = "transcribe"  # what a voice clip does by default
    answer_with_voice: bool = False  # also speak chat answers (per channel with /voice)
    transcript_prompt: str | None = None  # a prompt that keeps punctuation and mixed Chinese and English
    summary_chunk_chars: int = Field(6000, ge=500)  # map-reduce chunk size for /summarize-audio


class DocsSettings(Section):
    """Document question answering and text analytics."""

    embed_engine: str = "embeddings"
    reader_engine: str = "docreader"
    chunk_size: int = Field(256, ge=32)  # tokens per passage
    chunk_overlap: int = Field(32, ge=0)
    max_unpacked_mb: int = Field(50, ge=1)  # a DOCX/PPTX that unpacks to more is refused (zip bombs)
    max_pages: int = Field(2000, ge=1)
    embed_batch: int = Field(32, ge=1)  # passages per embeddings request while adding a document
    top_k: int = Field(5, ge=1, le=20)  # passages an answer is grounded on
    candidates: int = Field(20, ge=1)  # per retriever (vectors, words) before fusion
    # Is anything relevant? A passage this similar (cosine) to the question is enough on its own; a less
    # similar one down to `min_similarity_with_words` is enough when it also shares `min_shared_words` words.
    # Tuned for the bundled model (language-neutral E5) on tests/data/rag_corpus; other models need their own.
    min_similarity: float = Field(0.805, ge=-1, le=1)
    min_similarity_with_words: float = Field(0.775, ge=-1, le=1)
    min_shared_words: int = Field(1, ge=1)
    # A full-text hit joins the vector hits only if it has at least this share of the question's words:
    # weaker keyword hits crowd out the right passage in the other language.
    word_coverage: float = Field(0.5, ge=0, le=1)
    answer_max_tokens: int = Field(600, ge=16)
    docs_mode: bool = False  # answer plain messages from documents (per channel with /docs mode)
    summary_chunk_chars: int = Field(4000, ge=500)  # /summarize: tree summary of pieces this size
    topics_messages: int = Field(200, ge=10)  # /topics clusters this many recent messages
    similar_k: int = Field(5, ge=1, le=20)
    # /sentiment asks the chat model when the embedding classifier is unsure (below its calibrated threshold)
    # or less confident than `sentiment_min_confidence`; never when `sentiment_fallback` is off.
    sentiment_fallback: bool = True
    sentiment_min_confidence: float = Field(0.6, ge=0, le=1.01)


MODERATION_CATEGORIES = ("harassment", "hate", "sexual", "violence", "self_harm", "illicit")
ModerationAction = Literal["allow", "warn", "block", "report"]


class CategoryRule(Section):
    """What happens when a category's score reaches `threshold`: allow, warn the user (and go on),
    block, or report (block and tell the moderators' channel)."""

    threshold: float = Field(0.5, ge=0, le=1)
    action: ModerationAction = "block"


def default_rules() -> dict[str, CategoryRule]:
    return {c: CategoryRule(action="report" if c in ("self_harm", "illicit") else "block")
            for c in MODERATION_CATEGORIES}


class ModerationSettings(Section):
    """Checks of what people send and what the bot answers; per workspace/channel overrides with /mod policy."""

    enabled: bool = True
    engine: str = "moderation"  # the local default; "engines.moderation:OpenAIModerationEngine" for OpenAI's
    fallback_engine: str = "moderation_local"  # used (and logged) when `engine` fails
    check_replies: bool = True  # the bot's own replies, streamed ones as they grow
    check_every_chars: int = Field(160, ge=20)  # a growing streamed reply is checked each time it gains this much
    judge_borderline: bool = False  # ask the chat model about scores just under a threshold
    judge_margin: float = Field(0.15, ge=0, le=1)
    bypass_roles: list[str] = ["admin"]
    rules: dict[str, CategoryRule] = Field(default_factory=default_rules)
    report_channels: dict[str, str] = {}  # "platform:workspace" -> channel id; /mod policy report_channel sets it too
    flag_injection: bool = True  # log and audit messages that look like prompt injection


class PrivacySettings(Section):
    """PII masked before text leaves for an external model provider."""

    redact_pii: bool = False
    kinds: list[Literal["email", "phone", "id", "card", "key"]] = ["email", "phone", "id", "card", "key"]
    restore_kinds: list[Literal["email", "phone", "id", "card", "key"]] = ["email", "phone"]  # put back in replies
    local_too: bool = False  # also mask for the bundled local model (it never leaves the machine)


class QuotaSettings(Section):
    """Per-day limits per role: units messages, audio_minutes, images, video_seconds (absent or 0: none)."""

    roles: dict[str, dict[Literal["messages", "audio_minutes", "images", "video_seconds"], float]] = {}


class PresenterSettings(Section):
    """Talking-head video answers (/present)."""

    engine: str = "presenter"  # see [engines.presenter]: local renderer, or D-ID
    answer_with_video: bool = False  # also answer chat in video (per channel with /presenter video)
    max_chars: int = Field(600, ge=20)  # longer texts are cut (with a notice) before they are spoken
    answer_words: int = Field(80, ge=10)  # /present asks the chat model for an answer about this long
    size: int = Field(512, ge=128, le=1080)  # video height in pixels
    fps: int = Field(25, ge=10, le=60)
    max_video_mb: dict[str, float] = {"discord": 10.0, "slack": 50.0, "web": 20.0}  # upload limits per platform


class ImageSettings(Section):
    """Drawing, editing and finding images (/imagine, /edit, /inpaint, /upscale, /control, /classify, /find,
    /detect)."""

    engine: str = "diffusion"  # Stable Diffusion pipelines: see [engines.diffusion]
    clip_engine: str = "clip"  # embeddings for /find and /classify: see [engines.clip]
    detect_engine: str = "detect"  # OWL-ViT for /detect: see [engines.detect]
    width: int = Field(512, ge=64, le=2048)
    height: int = Field(512, ge=64, le=2048)
    max_side: int = Field(1024, ge=64, le=4096)  # the largest width or height /imagine accepts
    steps: int = Field(25, ge=1, le=200)
    max_steps: int = Field(60, ge=1, le=500)
    guidance: float = Field(7.5, ge=0, le=30)
    max_count: int = Field(4, ge=1, le=16)  # images per request
    strength: float = Field(0.75, gt=0, le=1)  # /edit's default: how much of the input is redrawn
    variation_strength: float = Field(0.55, gt=0, le=1)  # the Variations button
    max_pixels: int = Field(1024 * 1024, ge=4096)  # larger attachments are scaled down, with a notice
    max_decode_pixels: int = Field(50_000_000, ge=4096)  # larger ones are refused before decoding
    max_upscale_side: int = Field(512, ge=32)  # the x4 upscaler's input is scaled to this first
    preview_every: int = Field(5, ge=0)  # steps between previews (0: none)
    preview_interval_s: float = Field(4.0, ge=0)  # at most one preview per job this often
    queue_poll_s: float = Field(2.0, gt=0)  # how often a queued job's position is refreshed in its status line
    index_images: bool = True  # embed every uploaded and generated image for /find (when [engines.clip] has a model)
    find_results: int = Field(4, ge=1, le=20)
    detect_threshold: float = Field(0.1, ge=0, le=1)


class AgentSettings(Section):
    """The agent (/agent, and channels in agent mode): the chat model calling the bot's tools."""

    engine: str | None = None  # None: the channel's chat engine
    agent_mode: bool = False  # every message goes to the agent (per channel with /agent on)
    max_steps: int = Field(6, ge=1, le=30)  # model calls per request
    history_messages: int = Field(6, ge=0, le=100)  # earlier requests and answers sent along
    max_seconds: float = Field(600.0, gt=0)
    max_tokens: int = Field(400, ge=16)
    temperature: float | None = Field(0.0, ge=0, le=2)  # plans should not vary from run to run
    max_invalid_retries: int = Field(1, ge=0)  # calls of one tool with bad arguments the model may retry
    max_failures: int = Field(2, ge=0)  # failed tool runs before the agent gives up
    timezone: str = "UTC"  # the time tool's default
    clip_match: float = Field(0.2, ge=-1, le=1)  # least CLIP similarity for "the cat picture" to name an image


class UnitTestSettings(Section):
    """/unittest: the prompt chain that writes pytest files for an attached module."""

    max_chars: int = Field(20_000, ge=100)  # longer modules are refused: the chain re-sends the code at every step
    max_retries: int = Field(2, ge=0, le=10)  # corrections asked for after the first written file
    explain_tokens: int = Field(400, ge=32)
    plan_tokens: int = Field(500, ge=32)
    write_tokens: int = Field(1500, ge=64)


class SlackSettings(Section):
    """Slack: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode on this server."""

    enabled: bool = True  # starts when SLACK_BOT_TOKEN (or OAuth client settings) are present
    api_url: str | None = None  # Web API base, default https://slack.com/api/ (tests point it at a stand-in)
    events_path: str = "/slack/events"  # HTTP mode: events, slash commands and interactivity
    app_name: str = "Team Bot"
    min_post_interval_s: float = Field(1.0, ge=0)  # pacing of new messages per channel
    retry_max: int = Field(3, ge=0)  # 429s are retried after Retry-After this many times
    max_concurrent_events: int = Field(8, ge=1)  # events handled at once; more wait (acks never do)
    file_hosts: list[str] = ["files.slack.com"]  # the bot token is only ever sent to these hosts
    client_id: str | None = None  # OAuth install flow (many workspaces); SLACK_CLIENT_SECRET in the env
    scopes: list[str] = [
        "app_mentions:read", "channels:history", "chat:write", "commands", "files:read", "files:write",
        "groups:history", "im:history", "im:read", "im:write", "mpim:history", "users:read",
    ]


class DiscordSettings(Section):
    """Discord: starts when DISCORD_BOT_TOKEN is set."""

    enabled: bool = True
    application_id: int | None = None  # for `python -m bot discord-invite` (else read from Discord at start)
    message_content: bool = True  # the privileged intent; without it the bot answers mentions and DMs only
    sharded: bool = False  # AutoShardedClient, for large bots
    dev_guilds: list[int] = []  # sync commands to these guilds (instant) instead of globally
    answer_channels: list[int] = []  # channels where every message is answered
    max_concurrent_events: int = Field(8, ge=1)
    guild_ready_timeout_s: float = Field(2.0, ge=0)
    permissions: int = 274878024768  # the invite's permission bits: view, send, threads, embed, attach, history


class PoolSettings(Section):
    placement: Literal["local"] = "local"
    memory_budget_mb: int = Field(8192, ge=0)
    device_concurrency: dict[str, int] = {"cpu": 2}


def default_engines() -> dict[str, EngineSettings]:
    local_moderation = EngineSettings(impl="engines.moderation:LocalModerationEngine", max_batch=32, batch_wait_ms=2,
                                      queue_size=1024, timeout_s=30, memory_mb=60)
    return {
        "noop": EngineSettings(impl="engines.noop:NoopEngine", max_batch=64, queue_size=4096),
        # The bundled model in llama.cpp's server; set options.provider = "openai" (with base_url)
        # or "azure" for a hosted or self-hosted OpenAI-compatible endpoint.
        "llm": EngineSettings(impl="engines.llm:ChatEngine", device="remote", max_batch=8, queue_size=64,
                              timeout_s=180, options={"provider": "local"}),
        "finetune": EngineSettings(impl="engines.finetune:FineTuneEngine", device="remote", queue_size=8,
                                   timeout_s=120),
        # Whisper base (bundled) on the CPU; options.model = "large-v3" with device "cuda" on a GPU host,
        # or impl = "engines.stt:OpenAITranscriptionEngine" for OpenAI's API.
        "stt": EngineSettings(impl="engines.stt:WhisperEngine", max_batch=4, batch_wait_ms=50, queue_size=32,
                              timeout_s=1800, memory_mb=400),
        # multilingual-e5-small (bundled, 4-bit); impl = "engines.embeddings:OpenAIEmbeddingEngine" for OpenAI's API
        # or "engines.embeddings:SentenceTransformerEngine" with options.model_path for any local model.
        "embeddings": EngineSettings(impl="engines.embeddings:E5Engine", max_batch=16, batch_wait_ms=20,
                                     queue_size=256, timeout_s=600, memory_mb=150),
        # Local moderation: a bilingual term and pattern policy plus alt-profanity-check for English.
        # impl = "engines.moderation:OpenAIModerationEngine" (device "remote") for OpenAI's endpoint; the
        # local one stays as [moderation] fallback_engine.
        "moderation": local_moderation,
        "moderation_local": local_moderation.model_copy(),
        # The local talking-head renderer (OpenCV face finding, ffmpeg); impl =
        # "engines.presenter_did:DIDPresenterEngine" (device "remote", DID_API_KEY) for D-ID.
        "presenter": EngineSettings(impl="engines.presenter:LocalPresenterEngine", max_batch=1, queue_size=16,
                                    timeout_s=900, memory_mb=300),
        # Stable Diffusion (diffusers). No weights ship with the service: set options.models (hub ids or folders),
        # and upscaler, controlnets, detectors, loras as needed, with device "cuda" on a GPU host (see README).
        "diffusion": EngineSettings(impl="engines.diffusion:DiffusionEngine", max_batch=4, batch_wait_ms=200,
                                    queue_size=64, timeout_s=900, memory_mb=4500),
        # CLIP (transformers) for /find and /classify: options.model = "openai/clip-vit-base-patch32" or a folder.
        "clip": EngineSettings(impl="engines.vision:ClipEngine", max_batch=16, batch_wait_ms=20, queue_size=256,
                               timeout_s=300, memory_mb=600),
        # OWL-ViT (transformers) for /detect: options.model = "google/owlvit-base-patch32" or a folder.
        "detect": EngineSettings(impl="engines.vision:DetectEngine", max_batch=1, queue_size=32, timeout_s=300,
                                 memory_mb=700),
        # Reads and splits uploaded documents (llama-index readers); CPU only.
        "docreader": EngineSettings(impl="engines.documents:DocumentReader", max_batch=1, queue_size=16,
                                    timeout_s=600),
        # Piper (English) and espeak-ng (other languages); impl = "engines.tts:AzureSpeechEngine" for Azure.
        "tts": EngineSettings(impl="engines.tts:LocalSpeechEngine", max_batch=1, queue_size=32, timeout_s=300,
                              memory_mb=250),
    }


class Secrets(BaseModel):
    """Read from the environment only; never logged, never stored."""

    database_url: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_client_secret: SecretStr | None = None
    discord_bot_token: SecretStr | None = None
    azure_speech_key: SecretStr | None = None
    did_api_key: SecretStr | None = None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Secrets:
        values = {name: env[name.upper()] for name in cls.model_fields if env.get(name.upper())}
        return cls.model_validate(values)


class Settings(BaseSettings):
    """Everything the service is configured with. See deploy/bot.example.toml for each key."""

    model_config = SettingsConfigDict(env_prefix="BOT_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path(".data")
    default_locale: Literal["en", "zh"] = "en"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    suggested_prompts: list[str] = ["/help", "/ping", "/whoami"]
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    access: AccessSettings = AccessSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    responder: ResponderSettings = ResponderSettings()
    chat: ChatSettings = ChatSettings()
    speech: SpeechSettings = SpeechSettings()
    docs: DocsSettings = DocsSettings()
    moderation: ModerationSettings = ModerationSettings()
    privacy: PrivacySettings = PrivacySettings()
    quota: QuotaSettings = QuotaSettings()
    presenter: PresenterSettings = PresenterSettings()
    images: ImageSettings = ImageSettings()
    agent: AgentSettings = AgentSettings()
    unittest: UnitTestSettings = UnitTestSettings()
    slack: SlackSettings = SlackSettings()
    discord: DiscordSettings = DiscordSettings()
    pool: PoolSettings = PoolSettings()
    engines: dict[str, EngineSettings] = Field(default_factory=default_engines)
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges file, environment and overrides itself, in that order of precedence.
        return (init_settings,)


SECRET_NAMES = set(Secrets.model_fields)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown setting '{key}'")
        else:
            lines.append(f"setting '{key}': {item['msg']}")
    return "; ".join(lines)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read `path` (default: $BOT_CONFIG, else ./bot.toml if present) and the environment.

    Raises `ConfigError` naming the first wrong key.
    """
    env = dict(os.environ)
    if path is None:
        named = env.get("BOT_CONFIG")
        path = Path(named) if named else (Path("bot.toml") if Path("bot.toml").exists() else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    leaked = sorted(k for k in file_values if k.lower() in SECRET_NAMES or k == "secrets")
    if leaked:
        raise ConfigError(
            f"'{leaked[0]}' is a secret: set it in the environment ({leaked[0].upper()}), not in {path}"
        )
    unknown_env = _unknown_env(env)
    if unknown_env:
        raise ConfigError(f"unknown setting '{unknown_env}' in the environment")
    try:
        settings = Settings(**_merge(_merge(file_values, _env_values(env)), overrides))
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    settings.secrets = Secrets.from_env(env)
    return settings


def _env_values(env: dict[str, str]) -> dict[str, Any]:
    """`BOT_POOL__MEMORY_BUDGET_MB=4096` -> {"pool": {"memory_budget_mb": "4096"}}; JSON values parsed."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith("BOT_") or name == "BOT_CONFIG":
            continue
        path = name[4:].lower().split("__")
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _unknown_env(env: dict[str, str]) -> str | None:
    top = set(Settings.model_fields) - {"secrets"}
    for name in env:
        if not name.startswith("BOT_") or name == "BOT_CONFIG":
            continue
        head = name[4:].split("__", 1)[0].lower()
        if head not in top:
            return name
    return None

"""`AzureSpeechEngine` against the loopback stand-in of Azure's text-to-speech REST endpoint."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bot.errors import EngineUnavailable, UnsupportedInput
from engines.base import EngineRequest
from engines.tts import AZURE_FORMATS, AzureSpeechEngine, SpeakRequest, Speech, SpeechServiceError, build_ssml
from tests.support.azure_speech_stub import SSML_NS, XML_LANG, AzureSpeechStub

KEY_ENV = "TEST_AZURE_SPEECH_KEY"
MAGIC = {"ogg": (0, b"OggS"), "wav": (0, b"RIFF"), "m4a": (4, b"ftyp")}


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[AzureSpeechStub]:
    async with AzureSpeechStub(key="secret-key") as server:
        yield server


def make_engine(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch, key: str = "secret-key",
                **options: Any) -> AzureSpeechEngine:
    monkeypatch.setenv(KEY_ENV, key)
    engine = AzureSpeechEngine(endpoint=stub.url, api_key_env=KEY_ENV, backoff_s=0.01, timeout_s=10, **options)
    engine.load()
    return engine


async def speak(engine: AzureSpeechEngine, **request: Any) -> Speech:
    [result] = await engine.run([EngineRequest(SpeakRequest(**request))])
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, Speech)
    return result


async def test_ssml_carries_voice_style_and_role(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    speech = await speak(engine, text="今天天气很好", voice="zh-CN-XiaoxiaoNeural", style="cheerful", role="Girl",
                         rate=1.2)
    call = stub.calls[-1]
    assert (call.voice, call.style, call.role) == ("zh-CN-XiaoxiaoNeural", "cheerful", "Girl")
    assert call.text == "今天天气很好"
    assert call.lang == "zh-CN" and call.rate == "+20%"
    assert call.content_type == "application/ssml+xml" and call.user_agent
    assert 'xmlns:mstts="https://www.w3.org/2001/mstts"' in call.ssml
    assert (speech.engine, speech.voice, speech.fallback_note, speech.phonemes) == (
        "azure", "zh-CN-XiaoxiaoNeural", None, None)


async def test_no_style_means_no_express_as(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    await speak(engine, text="Plain words.")
    call = stub.calls[-1]
    assert "express-as" not in call.ssml and "prosody" not in call.ssml
    assert (call.style, call.role, call.rate) == (None, None, None)


async def test_default_voice_follows_the_language(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    assert (await speak(engine, text="你好，世界")).voice == "zh-CN-XiaoxiaoNeural"
    assert (await speak(engine, text="Hello, world")).voice == "en-US-JennyNeural"
    assert (await speak(engine, text="Hello", language="zh-CN")).voice == "zh-CN-XiaoxiaoNeural"
    assert stub.calls[-1].lang == "zh-CN"
    custom = make_engine(stub, monkeypatch, voices={"fr": "fr-FR-DeniseNeural"})
    assert (await speak(custom, text="Bonjour", language="fr")).voice == "fr-FR-DeniseNeural"


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "wav", "m4a"])
async def test_output_format_header_matches_the_request(
    stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    engine = make_engine(stub, monkeypatch)
    text = "A sentence of about forty-five characters long"
    speech = await speak(engine, text=text, format=fmt)
    assert stub.calls[-1].output_format == AZURE_FORMATS[fmt]
    assert speech.format == fmt
    assert speech.mime == {"ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "m4a": "audio/mp4"}[fmt]
    if fmt == "mp3":
        assert speech.audio[:3] == b"ID3" or speech.audio[0] == 0xFF
    else:
        at, magic = MAGIC[fmt]
        assert speech.audio[at:at + len(magic)] == magic
    expected = stub.tone_seconds(text)
    assert speech.duration_s == pytest.approx(expected, abs=0.1 if fmt != "mp3" else 0.3)


async def test_xml_special_characters_are_escaped(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    text = """Tom & Jerry say <b>"hi"</b> & 'bye' ]]> </voice>"""
    await speak(engine, text=text, style='a"b', role="<x>")
    call = stub.calls[-1]
    assert call.text == text and call.style == 'a"b' and call.role == "<x>"
    assert "&amp;" in call.ssml and "&lt;b&gt;" in call.ssml and "<b>" not in call.ssml


def test_build_ssml_is_well_formed_for_odd_voices() -> None:
    root = ET.fromstring(build_ssml("x", voice="""bad"voice's"""))
    assert root.get(XML_LANG) == "en-US"
    assert root.find(f"{SSML_NS}voice").get("name") == """bad"voice's"""  # type: ignore[union-attr]


async def test_429_is_retried_then_succeeds(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch, max_retries=3)
    stub.fail(429, retry_after=0.2, times=2)
    before, started = stub.attempts, time.monotonic()
    speech = await speak(engine, text="Retry me", format="wav")
    assert stub.attempts - before == 3
    assert time.monotonic() - started >= 0.4  # Retry-After was honoured, not the 10 ms backoff
    assert speech.audio[:4] == b"RIFF"


async def test_500_is_retried_then_gives_up(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch, max_retries=2)
    stub.fail(500, times=3)
    before = stub.attempts
    with pytest.raises(SpeechServiceError) as caught:
        await speak(engine, text="Never")
    assert (caught.value.key, caught.value.status, caught.value.params) == ("tts_provider_error", 500, {"status": 500})
    assert stub.attempts - before == 3


async def test_401_gives_a_clear_error_without_retrying(
    stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(stub, monkeypatch, key="wrong-key")
    before = stub.attempts
    with pytest.raises(SpeechServiceError) as caught:
        await speak(engine, text="Hello")
    assert caught.value.key == "tts_auth" and caught.value.status == 401
    assert stub.attempts - before == 1


async def test_bad_voice_gives_a_bad_request_error(stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(stub, monkeypatch)
    stub.fail(400)
    with pytest.raises(SpeechServiceError) as caught:
        await speak(engine, text="Hello", voice="xx-XX-NobodyNeural")
    assert caught.value.key == "tts_bad_request" and caught.value.params["detail"] == "injected 400"


async def test_unreachable_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    engine = AzureSpeechEngine(endpoint="http://127.0.0.1:9/cognitiveservices/v1", api_key_env=KEY_ENV,
                               max_retries=1, backoff_s=0.01, timeout_s=5)
    engine.load()
    with pytest.raises(SpeechServiceError) as caught:
        await speak(engine, text="Hello")
    assert caught.value.key == "tts_unreachable"


async def test_empty_text_and_bad_format_fail_before_any_request(
    stub: AzureSpeechStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(stub, monkeypatch)
    before = stub.attempts
    with pytest.raises(UnsupportedInput) as empty:
        await speak(engine, text="  \n ")
    with pytest.raises(UnsupportedInput) as bad:
        await speak(engine, text="Hi", format="flac")
    assert (empty.value.key, bad.value.key) == ("tts_empty_text", "tts_bad_format")
    assert stub.attempts == before


def test_missing_key_makes_the_engine_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EngineUnavailable):
        AzureSpeechEngine(region="westeurope", api_key_env=KEY_ENV).load()
    assert AzureSpeechEngine(region="westeurope").url == (
        "https://westeurope.tts.speech.microsoft.com/cognitiveservices/v1")

"""Settings: file and environment, unknown keys named, secrets only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "bot.example.toml"


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.server.port == 8080 and s.server.host == "127.0.0.1"
    assert s.secrets.database_url is None


def test_example_file_is_valid_and_documents_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(EXAMPLE)
    text = EXAMPLE.read_text()
    for name in type(s).model_fields:
        if name == "secrets":
            continue
        assert name in text, f"{name} is not documented in bot.example.toml"
        sub = getattr(s, name)
        if hasattr(type(sub), "model_fields"):
            for key in type(sub).model_fields:
                assert key in text, f"{name}.{key} is not documented"


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[server]\nprot = 9000\n")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(path)


def test_invalid_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[server]\nport = 'eighty'\n")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings(path)


def test_secret_in_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("openai_api_key = 'sk-test-123456'\n")
    with pytest.raises(ConfigError, match="environment") as info:
        load_settings(path)
    assert "sk-test-123456" not in str(info.value)


def test_environment_overrides_and_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[server]\nport = 9000\n")
    monkeypatch.setenv("BOT_SERVER__PORT", "9100")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abcdef")
    s = load_settings(path)
    assert s.server.port == 9100
    assert s.secrets.openai_api_key is not None
    assert "sk-abcdef" not in repr(s) and "sk-abcdef" not in s.model_dump_json()


def test_unknown_environment_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_SERVR__PORT", "1")
    with pytest.raises(ConfigError, match="BOT_SERVR__PORT"):
        load_settings()

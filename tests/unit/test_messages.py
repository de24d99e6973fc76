"""Every user-facing string exists in English and Chinese with the same placeholders."""

from __future__ import annotations

import string

from bot.messages import MESSAGES, Msg, normalize_locale, t


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_has_both_languages_with_same_placeholders() -> None:
    for key, entry in MESSAGES.items():
        assert set(entry) == {"en", "zh"}, key
        assert placeholders(entry["en"]) == placeholders(entry["zh"]), key
        assert entry["en"].strip() and entry["zh"].strip(), key


def test_locale_normalization() -> None:
    assert normalize_locale("zh-CN") == "zh"
    assert normalize_locale("zh_TW") == "zh"
    assert normalize_locale("en-GB") == "en"
    assert normalize_locale("fr-FR") is None
    assert normalize_locale(None) is None


def test_nested_message_keys_are_translated() -> None:
    zh = t("bad_option", "zh", command="x", option="steps", expected=Msg("type_integer"), value="a")
    assert "整数" in zh
    assert "a whole number" in t("bad_option", "en", command="x", option="steps", expected=Msg("type_integer"),
                                 value="a")

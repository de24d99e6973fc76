"""handlers.pii: what is redacted (and what is not), stable placeholders across calls, and what restore gives back."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from handlers.pii import ALL_KINDS, Redaction, luhn_ok, redact, redact_messages, restore, valid_cn_id

VALID_CN_ID = "11010519491231002X"  # the GB 11643 example: check character X
VALID_CN_ID_2 = "440306199003071232"
WRONG_CHECKSUM_ID = "110105194912310021"  # VALID_CN_ID with the wrong check character
WRONG_CHECKSUM_ID_LUHN = "440306199003071239"  # wrong check character, yet passes Luhn: still neither ID nor card
OPENAI_KEY = "sk-proj-AbCdEf1234567890GhIjKlMnOpQrStUvWx"
SLACK_KEY = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA4111111111111111abcdEFGH13812345678\n"
    "Zm9vYmFyYmF6cXV4==\n"
    "-----END RSA PRIVATE KEY-----"
)


def placeholders(text: str) -> list[str]:
    return re.findall(r"\[[A-Z]+_\d+\]", text)


# --- detection, per kind, in English and Chinese ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "value"), [
    ("Write to li.wei@example.cn please", "email", "li.wei@example.cn"),
    ("Mail jane.doe+billing@mail.corp.example.com today", "email", "jane.doe+billing@mail.corp.example.com"),
    ("邮箱li.wei@example.cn，谢谢", "email", "li.wei@example.cn"),
    ("Call me on 13812345678 tomorrow", "phone", "13812345678"),
    ("电话138-1234-5678谢谢", "phone", "138-1234-5678"),
    ("手机：+86 138 1234 5678。", "phone", "+86 138 1234 5678"),
    ("Our office is (415) 555-0132, ask for Sam", "phone", "(415) 555-0132"),
    ("London desk: +44 20 7946 0958.", "phone", "+44 20 7946 0958"),
    ("座机010-12345678，分机8", "phone", "010-12345678"),
    (f"My ID number is {VALID_CN_ID}.", "id", VALID_CN_ID),
    (f"身份证号{VALID_CN_ID_2}，请核对", "id", VALID_CN_ID_2),
    ("SSN 123-45-6789 on file", "id", "123-45-6789"),
    ("Charge 4111 1111 1111 1111 please", "card", "4111 1111 1111 1111"),
    ("卡号5555-5555-5555-4444。", "card", "5555-5555-5555-4444"),
    ("Amex 3782 822463 10005 expires soon", "card", "3782 822463 10005"),
    ("银联卡6212345678901265到期了", "card", "6212345678901265"),
    (f"use {OPENAI_KEY} for now", "key", OPENAI_KEY),
    (f"密钥是{OPENAI_KEY}，别外传", "key", OPENAI_KEY),
    (f"bot token {SLACK_KEY}", "key", SLACK_KEY),
    ("app token xapp-1-A0123456789-1234567890123-abcdef0123456789", "key",
     "xapp-1-A0123456789-1234567890123-abcdef0123456789"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok", "key", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", "key",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"),
    ("AWS 访问密钥AKIAIOSFODNN7EXAMPLE已泄露", "key", "AKIAIOSFODNN7EXAMPLE"),
    ("maps key AIzaSyA1234567890abcdefghijklmnopqrstuv", "key", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
])
def test_each_kind_is_detected_and_the_text_around_it_is_kept(text: str, kind: str, value: str) -> None:
    result = redact(text)
    tag = {"email": "EMAIL", "phone": "PHONE", "id": "ID", "card": "CARD", "key": "KEY"}[kind]
    assert result.text == text.replace(value, f"[{tag}_1]")  # nothing added or removed around it (no spaces)
    assert result.mapping == {f"[{tag}_1]": value}
    assert result.counts[kind] == 1
    assert sum(result.counts.values()) == 1


def test_chinese_sentence_with_several_kinds() -> None:
    text = f"我的手机号是13812345678，邮箱 li.wei@example.cn，身份证{VALID_CN_ID}，卡号6212345678901265。"
    result = redact(text)
    assert result.text == "我的手机号是[PHONE_1]，邮箱 [EMAIL_1]，身份证[ID_1]，卡号[CARD_1]。"
    assert result.counts == {"email": 1, "phone": 1, "id": 1, "card": 1, "key": 0}
    assert isinstance(result, Redaction)


def test_counts_count_occurrences_and_only_requested_kinds() -> None:
    text = "a@x.io, b@x.io, a@x.io, 13812345678"
    result = redact(text, kinds=["email"])
    assert result.text == "[EMAIL_1], [EMAIL_2], [EMAIL_1], 13812345678"
    assert result.counts == {"email": 3}
    with pytest.raises(ValueError, match="unknown PII kinds"):
        redact(text, kinds=["address"])


def test_bearer_token_keeps_the_scheme() -> None:
    text = "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.Zm9vYmFy'"
    result = redact(text)
    assert result.text == "curl -H 'Authorization: Bearer [KEY_1]'"
    assert redact("Bearer authentication is a scheme; see Bearer tokens").text.count("[KEY") == 0


def test_private_key_block_is_one_key_and_hides_the_digits_inside() -> None:
    text = f"部署用的私钥：\n{PRIVATE_KEY}\n别发群里"
    result = redact(text)
    assert result.text == "部署用的私钥：\n[KEY_1]\n别发群里"
    assert result.mapping == {"[KEY_1]": PRIVATE_KEY}
    assert result.counts == {"email": 0, "phone": 0, "id": 0, "card": 0, "key": 1}
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA==\n\nthat's all"
    assert redact(truncated).text == "[KEY_1]\n\nthat's all"


def test_keys_in_code_blocks() -> None:
    text = f"配置如下：\n```env\nOPENAI_API_KEY={OPENAI_KEY}\nSLACK_BOT_TOKEN=\"{SLACK_KEY}\"\n```\n"
    result = redact(text)
    assert result.text == "配置如下：\n```env\nOPENAI_API_KEY=[KEY_1]\nSLACK_BOT_TOKEN=\"[KEY_2]\"\n```\n"
    assert result.counts["key"] == 2 and result.counts["card"] == 0 and result.counts["phone"] == 0


# --- overlaps -------------------------------------------------------------------------------------------------------

def test_overlaps_longest_and_most_specific_wins() -> None:
    key_with_card = "sk-4111111111111111AbCdEfGhIjKlMnOp13812345678"
    assert redact(f"k={key_with_card}").text == "k=[KEY_1]"
    assert redact(f"id {VALID_CN_ID_2}").mapping == {"[ID_1]": VALID_CN_ID_2}  # not a phone or a card inside it
    assert redact("mail 13812345678@163.com").text == "mail [EMAIL_1]"
    assert redact("+86 138 1234 5678").text == "[PHONE_1]"  # 13 digits, but not grouped like a card


@pytest.mark.parametrize(("text", "expected"), [
    ("order 48213 13812345678", "order 48213 [PHONE_1]"),
    ("单号12345 13912345678", "单号12345 [PHONE_1]"),  # not read as a carrier prefix plus a mobile
    ("1 415 555 0132", "[PHONE_1]"),  # the country code without + stays with the number
    ("4111111111111111 / 13912345678", "[CARD_1] / [PHONE_1]"),
])
def test_phone_spans_are_tight(text: str, expected: str) -> None:
    assert redact(text).text == expected


# --- no false positives ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "released v2.10.3 last week",
    "版本v2.10.3已发布",
    "due on 2026-11-29, or 2026/11/29, 29.11.2026, 11/29/2026, 20261129, 2026年11月29日",
    "meet at 10:30 or 10:30:15",
    "在2026-11-29 10:30之前",
    "order #48213 and order #4821345 shipped",
    "订单号48213已发货",
    f"身份证{WRONG_CHECKSUM_ID}",
    f"id {WRONG_CHECKSUM_ID_LUHN}",
    "card 4111111111111112 fails Luhn",
    "1234 5678 9012 3456",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 and short 3f2a9c1",
    "sha a1b2c3d4e5f60718293a4b5c6d7e8f9013812345",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "trace 550e8400-e29b-41d4-a716-446655440000",
    "ip 192.168.100.200, port 8080, pid 1234567",
    "price 1,234,567.89 and pi 3.14159265358979",
    "invoice INV-13812345678 and ref_13812345678",
    "ISBN 978-3-16-148410-0",
    "epoch ms 1732867200000",
    "<@123456789012345678> see https://discord.com/channels/123456789012345678/4111111111111111",
    "bad SSNs 000-12-3456, 666-12-3456, 900-12-3456",
    "价格是13800元，QQ群 123456789",
])
def test_no_false_positives(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert result.mapping == {}
    assert sum(result.counts.values()) == 0


def test_checksums() -> None:
    assert valid_cn_id(VALID_CN_ID) and valid_cn_id(VALID_CN_ID.lower()) and valid_cn_id(VALID_CN_ID_2)
    assert not valid_cn_id(WRONG_CHECKSUM_ID) and not valid_cn_id(WRONG_CHECKSUM_ID_LUHN)
    assert not valid_cn_id("110105194913310024")  # month 13
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok(WRONG_CHECKSUM_ID_LUHN)


@pytest.mark.parametrize(("text", "expected"), [
    ("card 4111 1111 1111 1111 12/28 cvv 123", "card [CARD_1] 12/28 cvv 123"),
    ("卡号 4111 1111 1111 1111 2028 到期", "卡号 [CARD_1] 2028 到期"),
    ("orders 12 4111-1111-1111-1111", "orders 12 [CARD_1]"),
    ("two: 4111111111111111 5555555555554444", "two: [CARD_1] [CARD_2]"),
])
def test_card_next_to_other_numbers(text: str, expected: str) -> None:
    assert redact(text).text == expected


def test_card_inside_a_longer_digit_run_is_not_a_card() -> None:
    assert redact("ref 94111111111111111").mapping == {}
    assert redact("ref 41111111111111110000").mapping == {}
    assert redact("x4111111111111111").mapping == {}


# --- stable placeholders ------------------------------------------------------------------------------------------

def test_same_value_same_placeholder_within_a_call_even_when_spelled_differently() -> None:
    text = "Call 13812345678 or +86 138 1234 5678; mail Li.Wei@Example.cn or li.wei@example.cn; 4111 1111 1111 1111"
    result = redact(f"{text} / 4111111111111111 / 13912345678")
    assert result.text == (
        "Call [PHONE_1] or [PHONE_1]; mail [EMAIL_1] or [EMAIL_1]; [CARD_1] / [CARD_1] / [PHONE_2]")
    assert result.mapping["[PHONE_1]"] == "13812345678"  # the first spelling seen
    assert result.mapping["[EMAIL_1]"] == "Li.Wei@Example.cn"
    assert result.counts == {"email": 2, "phone": 3, "id": 0, "card": 2, "key": 0}


def test_numbering_is_stable_across_calls_and_the_given_mapping_is_not_changed() -> None:
    first = redact("me: a@x.io, 13812345678")
    before = dict(first.mapping)
    second = redact("again a@x.io, new b@y.io and 138-1234-5678, 13912345678", mapping=first.mapping)
    assert second.text == "again [EMAIL_1], new [EMAIL_2] and [PHONE_1], [PHONE_2]"
    assert first.mapping == before
    assert second.mapping == {**before, "[EMAIL_2]": "b@y.io", "[PHONE_2]": "13912345678"}
    assert second.counts["email"] == 2 and second.counts["phone"] == 2
    third = redact("c@z.io", mapping=second.mapping)
    assert third.text == "[EMAIL_3]"


def test_idempotent() -> None:
    text = f"我的手机号是13812345678，邮箱 li.wei@example.cn，key {OPENAI_KEY}，卡 4111 1111 1111 1111，{VALID_CN_ID}"
    once = redact(text)
    assert redact(once.text).text == once.text
    assert redact(once.text).mapping == {}
    again = redact(once.text, mapping=once.mapping)
    assert again.text == once.text and again.mapping == once.mapping
    assert sum(again.counts.values()) == 0


def test_placeholders_already_in_the_text_are_not_reused_for_new_values() -> None:
    result = redact("earlier [EMAIL_1] and [EMAIL_2]; now c@z.io")
    assert result.text == "earlier [EMAIL_1] and [EMAIL_2]; now [EMAIL_3]"


# --- restore ------------------------------------------------------------------------------------------------------

def test_restore_puts_back_safe_kinds_only() -> None:
    text = f"email li.wei@example.cn, phone 13812345678, card 4111 1111 1111 1111, id {VALID_CN_ID}, key {OPENAI_KEY}"
    r = redact(text)
    reply = "Sent to [EMAIL_1] and texted [PHONE_1]; card [CARD_1], id [ID_1], key [KEY_1] stay private."
    restored = restore(reply, r.mapping)
    assert restored == ("Sent to li.wei@example.cn and texted 13812345678; card [CARD_1], id [ID_1], key [KEY_1] "
                        "stay private.")
    for secret in ("4111", VALID_CN_ID, OPENAI_KEY):
        assert secret not in restored
    assert restore(r.text, r.mapping, kinds_safe=ALL_KINDS) == text
    assert restore("[EMAIL_1] [PHONE_1]", r.mapping, kinds_safe=()) == "[EMAIL_1] [PHONE_1]"


@pytest.mark.parametrize("written", ["[EMAIL_1]", "[ email_1 ]", "[Email_1]", "[EMAIL 1]", "[email-1]", "【EMAIL_1】"])
def test_restore_tolerates_how_the_model_writes_a_placeholder(written: str) -> None:
    mapping = redact("邮箱li.wei@example.cn").mapping
    assert restore(f"已发给{written}。", mapping) == "已发给li.wei@example.cn。"


def test_restore_normalises_masked_and_leaves_unknown_placeholders() -> None:
    mapping = redact("card 4111 1111 1111 1111").mapping
    assert restore("card [ card_1 ] and [CARD_2] and [EMAIL_1]", mapping) == "card [CARD_1] and [CARD_2] and [EMAIL_1]"


# --- redact_messages ----------------------------------------------------------------------------------------------

def test_redact_messages_shares_one_mapping_and_keeps_other_parts() -> None:
    image: dict[str, Any] = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA13812345678"}}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "我的邮箱 li.wei@example.cn，手机13812345678"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Again: li.wei@example.cn, and my card 4111 1111 1111 1111"},
            image,
            {"type": "text", "text": "backup b@y.io"},
        ]},
    ]
    original = copy.deepcopy(messages)
    out, mapping = redact_messages(messages)
    assert messages == original  # input untouched
    assert out[0] == messages[0]
    assert out[1] == {"role": "user", "content": "我的邮箱 [EMAIL_1]，手机[PHONE_1]"}
    assert out[2] == messages[2]
    assert out[3]["content"] == [
        {"type": "text", "text": "Again: [EMAIL_1], and my card [CARD_1]"},
        image,
        {"type": "text", "text": "backup [EMAIL_2]"},
    ]
    assert mapping == {"[EMAIL_1]": "li.wei@example.cn", "[PHONE_1]": "13812345678",
                       "[CARD_1]": "4111 1111 1111 1111", "[EMAIL_2]": "b@y.io"}


def test_redact_messages_continues_a_previous_mapping() -> None:
    first, mapping = redact_messages([{"role": "user", "content": "a@x.io"}])
    second, mapping2 = redact_messages([{"role": "user", "content": "b@y.io and a@x.io"}], mapping=mapping)
    assert first[0]["content"] == "[EMAIL_1]"
    assert second[0]["content"] == "[EMAIL_2] and [EMAIL_1]"
    assert mapping == {"[EMAIL_1]": "a@x.io"}
    assert mapping2 == {"[EMAIL_1]": "a@x.io", "[EMAIL_2]": "b@y.io"}
    assert redact_messages([{"role": "user", "content": "13812345678"}], kinds=["email"])[0][0]["content"] == (
        "13812345678")

"""PII redaction before text leaves for an external model provider, and restoring it in the reply. Pure: no I/O.

`redact(text)` replaces each detected item with a numbered placeholder (`[EMAIL_1]`, `[PHONE_2]`, `[ID_1]`,
`[CARD_1]`, `[KEY_1]`) and returns the text, the mapping placeholder -> original, and counts per kind. Passing the
previous mapping back (`redact(msg, mapping=prev.mapping)`) reuses its placeholders for values already seen and
continues its numbering, so a whole conversation redacts consistently; `redact_messages` does that over the
`content` of chat-completion messages. The same value in another spelling (`138-1234-5678` / `+86 138 1234 5678`,
`A@X.com` / `a@x.com`, a card with or without spaces) gets the same placeholder; the mapping keeps the first
spelling seen.

`restore(reply, mapping)` puts back the originals of the "safe" kinds only (by default email and phone: what the
user wrote and may want in a draft) and leaves cards, ID numbers and keys masked, so a secret is never echoed. It
tolerates the model's spelling of a placeholder (`[ email_1 ]`, `[Email_1]`, `[EMAIL 1]`, `【EMAIL_1】`).

Kinds
    email  ASCII addresses (`+` tags, subdomains); internationalised domains and local parts are not detected.
    phone  `phonenumbers.PhoneNumberMatcher` at leniency VALID for regions CN and US; numbers written with
           `+<country code>` are found for any country. Spans glued to letters, digits, `/`, `#`, `@`, `_` or a
           `-`/`.`-joined token (UUIDs, paths, order ids), and date-shaped spans, are rejected.
    id     Chinese resident ID numbers (18 characters, GB 11643 checksum, birth date valid and 1900..today) and US
           SSNs written `AAA-GG-SSSS` (area not 000, 666 or 9xx; group not 00; serial not 0000).
    card   13-19 digits, unseparated or in groups of four (Amex 4-6-5, Diners 4-6-4) split by one kind of separator
           (space or dash), passing Luhn, starting with 2-6 (13 digits: Visa's 4 only; a leading 1 only for 15-digit
           UATP), not part of a longer digit/letter token, a URL path or a Discord mention (`<@...>`, `<#...>`,
           `<:emoji:...>`), and not shaped like a Chinese ID number (18 digits with a plausible birth date). Next to
           other numbers (`4111 1111 1111 1111 12/28`) the card's own groups are taken; a group is never split.
    key    OpenAI/Anthropic `sk-...` (incl. `sk-proj-`), Slack `xox[abprs]-...` and `xapp-...`, GitHub `ghp_`
           (and `gho_`/`ghu_`/`ghs_`/`ghr_`) and `github_pat_`, AWS `AKIA`/`ASIA` key ids, Google `AIza...`, the
           token after `Bearer ` (20+ characters, not all lowercase letters), and PEM/PGP private key blocks (to
           the END line, or through the base64 lines when it is missing).

Overlaps: the longer span wins, and on equal length the more specific kind (key > id > card > email > phone), so a
key with digits is not also a card and an ID number is not also a phone. Existing placeholders in the text are
never redacted again, and their numbers are not reused, so redacting redacted text changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import phonenumbers

ALL_KINDS: tuple[str, ...] = ("email", "phone", "id", "card", "key")
SAFE_KINDS: tuple[str, ...] = ("email", "phone")

_TAGS = {"email": "EMAIL", "phone": "PHONE", "id": "ID", "card": "CARD", "key": "KEY"}
_KIND_OF_TAG = {tag: kind for kind, tag in _TAGS.items()}
_PRIORITY = {"key": 0, "id": 1, "card": 2, "email": 3, "phone": 4}
_PHONE_REGIONS = ("CN", "US")

# A placeholder as we write it, and as a model may echo it back.
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|ID|CARD|KEY)_([1-9][0-9]*)\]")
_LOOSE_PLACEHOLDER = re.compile(
    r"[\[【]\s*(email|phone|id|card|key)\s*[_\-\s]?\s*([0-9]+)\s*[\]】]", re.IGNORECASE)


@dataclass(frozen=True)
class Redaction:
    """`text` with every detected item replaced; `mapping` is placeholder -> original (including any mapping that
    was passed in); `counts` is, per requested kind, how many items this call replaced."""

    text: str
    mapping: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    kind: str


# --- email -------------------------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9_%+\-](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9\-])")


def _emails(text: str) -> Iterator[_Found]:
    for m in _EMAIL.finditer(text):
        yield _Found(m.start(), m.end(), "email")


# --- phone -------------------------------------------------------------------------------------------------------

_DATE_LIKE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,2}:\d{2}(?::\d{2})?")
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")


def _glued(text: str, start: int, end: int) -> bool:
    """Whether the span continues a longer token: an identifier, a path, a UUID, an order id, a decimal."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if before and (_ASCII_ALNUM.match(before) or before in "/#@_\\"):
        return True
    if before in ("-", ".") and start > 1 and _ASCII_ALNUM.match(text[start - 2]):
        return True
    if after and (_ASCII_ALNUM.match(after) or after in "/@_\\"):
        return True
    return after in ("-", ".") and end + 1 < len(text) and bool(_ASCII_ALNUM.match(text[end + 1]))


def _phones(text: str) -> Iterator[_Found]:
    seen: set[tuple[int, int]] = set()
    for region in _PHONE_REGIONS:
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            start, end = _phone_span(text, m.start, m.end, region, m.number)
            if (start, end) in seen:
                continue
            seen.add((start, end))
            raw = text[start:end]
            if sum(c.isdigit() for c in raw) < 7 or _DATE_LIKE.fullmatch(raw) or _glued(text, start, end):
                continue
            yield _Found(start, end, "phone")


def _phone_span(text: str, start: int, end: int, region: str, number: phonenumbers.PhoneNumber) -> tuple[int, int]:
    """The matcher's span without surrounding blanks, and without a leading group of digits (other than a trunk
    prefix or the country code) that the number does not need: the matcher reads `12345 13912345678` as a carrier
    prefix and a mobile, but the `12345` is most likely something else, such as an order number."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    head = re.match(r"([0-9]+)[ \t]+", text[start:end])
    if head and head.group(1) not in ("0", str(number.country_code), f"00{number.country_code}"):
        try:
            rest = phonenumbers.parse(text[start + head.end():end], region)
        except phonenumbers.NumberParseException:
            return start, end
        if phonenumbers.is_valid_number(rest) and rest.national_number == number.national_number:
            start += head.end()
    return start, end


# --- id ----------------------------------------------------------------------------------------------------------

_CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
_SSN = re.compile(r"(?<![0-9A-Za-z\-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9A-Za-z\-])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _plausible_birth(digits: str) -> bool:
    """Whether characters 7-14 of an 18-character Chinese ID number are a birth date from 1900 to today."""
    try:
        born = date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def valid_cn_id(number: str) -> bool:
    """GB 11643: 17 digits and a check character (0-9 or X) matching their weighted sum mod 11; plausible birth date."""
    number = number.upper()
    if not re.fullmatch(r"[1-9][0-9]{16}[0-9X]", number) or not _plausible_birth(number):
        return False
    total = sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17]


def _ids(text: str) -> Iterator[_Found]:
    for m in _CN_ID.finditer(text):
        if valid_cn_id(m.group()):
            yield _Found(m.start(), m.end(), "id")
    for m in _SSN.finditer(text):
        yield _Found(m.start(), m.end(), "id")


# --- card --------------------------------------------------------------------------------------------------------

# A run of digit groups split by single spaces or dashes, not glued to a longer token, a path or a decimal.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z+/.\-_])[0-9]+(?:[ \-][0-9]+)*(?![0-9A-Za-z/_]|[\-.][0-9])")
_DIGITS = re.compile(r"[0-9]+")
_DISCORD_MARKUP = re.compile(r"<(?:[@#][!&]?|a?:\w+:|t:)[0-9]+(?::[A-Za-z])?>")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of digits."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_grouping_ok(raw: str) -> bool:
    separators = set(re.findall(r"[ \-]", raw))
    if not separators:
        return True
    if len(separators) > 1:
        return False
    sizes = [len(g) for g in re.split(r"[ \-]", raw)]
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _card_number_ok(digits: str) -> bool:
    first, n = digits[0], len(digits)
    if not 13 <= n <= 19:
        return False
    if first == "1":
        allowed = n == 15  # UATP
    elif first == "4":
        allowed = True
    else:
        allowed = first in "23456" and n >= 14
    if not allowed or not luhn_ok(digits):
        return False
    # An 18-digit number shaped like a Chinese ID (birth date inside) is an ID, maybe mistyped: never a card.
    return not (n == 18 and _plausible_birth(digits))


def _cards(text: str) -> Iterator[_Found]:
    """Within each run of digit groups, the longest valid card starting at each group (a card may follow or precede
    other numbers, like an expiry date, separated by a space); a group is never split."""
    markup = [(m.start(), m.end()) for m in _DISCORD_MARKUP.finditer(text)]
    for run in _DIGIT_RUN.finditer(text):
        if any(s <= run.start() < e for s, e in markup):
            continue
        groups = [(run.start() + g.start(), run.start() + g.end()) for g in _DIGITS.finditer(run.group())]
        i = 0
        while i < len(groups):
            for j in range(min(len(groups), i + 5), i, -1):  # at most five groups: 4-4-4-4-3
                start, end = groups[i][0], groups[j - 1][1]
                raw = text[start:end]
                if _card_grouping_ok(raw) and _card_number_ok(re.sub(r"[ \-]", "", raw)):
                    yield _Found(start, end, "card")
                    i = j
                    break
            else:
                i += 1


# --- key ---------------------------------------------------------------------------------------------------------

_TOKEN_START = r"(?<![A-Za-z0-9_\-])"
_TOKEN_END = r"(?![A-Za-z0-9_\-])"
_KEYS = re.compile(
    "|".join((
        _TOKEN_START + r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_\-]{20,}" + _TOKEN_END,
        _TOKEN_START + r"xox[abprs]-[A-Za-z0-9\-]{10,}" + _TOKEN_END,
        _TOKEN_START + r"xapp-[0-9]-[A-Za-z0-9\-]{10,}" + _TOKEN_END,
        _TOKEN_START + r"gh[pousr]_[A-Za-z0-9]{36,}" + _TOKEN_END,
        _TOKEN_START + r"github_pat_[A-Za-z0-9_]{22,}" + _TOKEN_END,
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])",
        _TOKEN_START + r"AIza[0-9A-Za-z_\-]{35}" + _TOKEN_END,
    )))
_BEARER = re.compile(r"\b[Bb]earer[ \t]+([A-Za-z0-9._~+/\-]{20,}=*)(?![A-Za-z0-9._~+/=\-])")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    r"|(?:[ \t]*(?:\r?\n)?[ \t]*(?:[A-Za-z0-9+/=]+|(?:Proc-Type|DEK-Info|Comment|Version):[^\n]*))*)")


def _keys(text: str) -> Iterator[_Found]:
    for m in _PRIVATE_KEY.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1].isspace():  # the fallback branch may swallow trailing blanks
            end -= 1
        yield _Found(m.start(), end, "key")
    for m in _KEYS.finditer(text):
        yield _Found(m.start(), m.end(), "key")
    for m in _BEARER.finditer(text):
        token = m.group(1)
        if not re.fullmatch(r"[a-z]+", token):
            yield _Found(m.start(1), m.end(1), "key")


_DETECTORS: dict[str, Callable[[str], Iterator[_Found]]] = {
    "email": _emails, "phone": _phones, "id": _ids, "card": _cards, "key": _keys}


# --- value identity ----------------------------------------------------------------------------------------------

def _phone_key(raw: str) -> str:
    """The national significant number: the same for `13812345678`, `138-1234-5678` and `+86 138 1234 5678`."""
    try:
        number = phonenumbers.parse(raw, "CN")
        extension = f"x{number.extension}" if number.extension else ""
        return phonenumbers.national_significant_number(number) + extension
    except phonenumbers.NumberParseException:
        return re.sub(r"\D", "", raw)


def _value_key(kind: str, raw: str) -> tuple[str, str]:
    if kind == "email":
        return kind, raw.lower()
    if kind == "phone":
        return kind, _phone_key(raw)
    if kind == "card":
        return kind, re.sub(r"\D", "", raw)
    if kind == "id":
        return kind, raw.upper()
    return kind, raw.strip()


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(k.lower() for k in kinds))
    unknown = [k for k in out if k not in _TAGS]
    if unknown:
        raise ValueError(f"unknown PII kinds {unknown}; known: {ALL_KINDS}")
    return out


def _select(found: Iterable[_Found], protected: list[tuple[int, int]]) -> list[_Found]:
    """Non-overlapping spans: longest first, then the most specific kind; none inside an existing placeholder."""
    taken: list[tuple[int, int]] = list(protected)
    chosen: list[_Found] = []
    for f in sorted(found, key=lambda f: (f.start - f.end, _PRIORITY[f.kind], f.start)):
        if f.end <= f.start or any(f.start < e and s < f.end for s, e in taken):
            continue
        taken.append((f.start, f.end))
        chosen.append(f)
    return sorted(chosen, key=lambda f: f.start)


def redact(text: str, kinds: Iterable[str] = ALL_KINDS, mapping: Mapping[str, str] | None = None) -> Redaction:
    """Replace every detected item of `kinds` with a placeholder. With `mapping` (a previous `Redaction.mapping`),
    values already in it keep their placeholder and new ones continue its numbering. The input is not changed."""
    wanted = _check_kinds(kinds)
    out_mapping: dict[str, str] = dict(mapping or {})
    known: dict[tuple[str, str], str] = {}
    next_number = dict.fromkeys(_TAGS, 1)
    for placeholder, original in out_mapping.items():
        m = _LOOSE_PLACEHOLDER.fullmatch(placeholder.strip())
        if m:
            kind = _KIND_OF_TAG[m.group(1).upper()]
            known.setdefault(_value_key(kind, original), placeholder)
            next_number[kind] = max(next_number[kind], int(m.group(2)) + 1)
    protected = []
    for m in _PLACEHOLDER.finditer(text):  # never reuse a number already visible in the text
        protected.append((m.start(), m.end()))
        kind = _KIND_OF_TAG[m.group(1)]
        next_number[kind] = max(next_number[kind], int(m.group(2)) + 1)

    found = [f for kind in wanted for f in _DETECTORS[kind](text)]
    counts = dict.fromkeys(wanted, 0)
    pieces: list[str] = []
    cursor = 0
    for f in _select(found, protected):
        original = text[f.start:f.end]
        key = _value_key(f.kind, original)
        if key in known:
            placeholder = known[key]
        else:
            placeholder = f"[{_TAGS[f.kind]}_{next_number[f.kind]}]"
            next_number[f.kind] += 1
            known[key] = placeholder
            out_mapping[placeholder] = original
        pieces += [text[cursor:f.start], placeholder]
        cursor = f.end
        counts[f.kind] += 1
    pieces.append(text[cursor:])
    return Redaction("".join(pieces), out_mapping, counts)


def restore(text: str, mapping: Mapping[str, str], kinds_safe: Iterable[str] = SAFE_KINDS) -> str:
    """Put back the originals of placeholders of `kinds_safe`; placeholders of other kinds stay masked (written in
    the canonical `[KIND_n]` form). Placeholders not in `mapping` are left as they are."""
    safe = set(_check_kinds(kinds_safe))

    def replace(m: re.Match[str]) -> str:
        tag, number = m.group(1).upper(), int(m.group(2))
        placeholder = f"[{tag}_{number}]"
        if placeholder not in mapping:
            return m.group()
        return mapping[placeholder] if _KIND_OF_TAG[tag] in safe else placeholder

    return _LOOSE_PLACEHOLDER.sub(replace, text)


def redact_messages(messages: list[dict[str, Any]], kinds: Iterable[str] = ALL_KINDS,
                    mapping: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """`redact` over the `content` of chat-completion messages (a string, or a list of parts of which only
    `{"type": "text", "text": ...}` parts are touched), with one mapping shared across them all. Returns new
    messages and the mapping; the input messages are not changed."""
    wanted = _check_kinds(kinds)
    current: dict[str, str] = dict(mapping or {})

    def clean(text: str) -> str:
        nonlocal current
        result = redact(text, wanted, current)
        current = result.mapping
        return result.text

    out: list[dict[str, Any]] = []
    for message in messages:
        new = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            new["content"] = clean(content)
        elif isinstance(content, list):
            parts: list[Any] = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    part = {**part, "text": clean(part["text"])}
                parts.append(part)
            new["content"] = parts
        out.append(new)
    return out, current


class Restorer:
    """Restores placeholders in a streamed reply, holding back a `[` that may start one until it closes."""

    HOLD = 24  # longer than any placeholder: an unclosed `[` further back is just text

    def __init__(self, mapping: dict[str, str], kinds_safe: Iterable[str] = SAFE_KINDS) -> None:
        self.mapping = mapping
        self.kinds_safe = tuple(kinds_safe)
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = max(text.rfind("["), text.rfind("【"))
        if cut != -1 and "]" not in text[cut:] and "】" not in text[cut:] and len(text) - cut < self.HOLD:
            text, self._held = text[:cut], text[cut:]
        else:
            self._held = ""
        return restore(text, self.mapping, self.kinds_safe) if text else ""

    def flush(self) -> str:
        text, self._held = self._held, ""
        return restore(text, self.mapping, self.kinds_safe) if text else ""

"""Uploads must be what their names say; empty files are refused."""

from __future__ import annotations

import io
import struct
import wave
import zlib

import pytest

from bot.errors import UnsupportedInput
from bot.events import Attachment
from bot.filecheck import check_content, guess_mime


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\x00\x00\x00"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wav_bytes() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    return buf.getvalue()


def test_honest_files_pass() -> None:
    check_content("a.png", png_bytes())
    check_content("notes.txt", "héllo 你好\n".encode())
    check_content("clip.wav", wav_bytes())
    check_content("data.bin", b"\x00\x01")  # unknown extensions are not judged


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.png", b"just some text pretending"),
        ("notes.txt", png_bytes()),
        ("song.mp3", b"plain words, not audio"),
        ("report.pdf", b"%notpdf"),
    ],
)
def test_mismatch_is_refused(name: str, data: bytes) -> None:
    with pytest.raises(UnsupportedInput) as info:
        check_content(name, data)
    assert info.value.key == "file_mismatch"


def test_empty_is_refused() -> None:
    with pytest.raises(UnsupportedInput) as info:
        check_content("empty.txt", b"")
    assert info.value.key == "file_empty"


def test_guess_mime() -> None:
    assert guess_mime("a.png", png_bytes()) == "image/png"
    assert guess_mime("clip.wav", wav_bytes()).startswith("audio/")
    assert guess_mime("notes.md", b"# hi") in ("text/markdown", "text/x-markdown")


async def test_attachment_read_enforces_limit_before_download() -> None:
    calls = []

    async def fetch(limit: int) -> bytes:
        calls.append(limit)
        return b"x" * 100

    big = Attachment("big.txt", "text/plain", 10_000, fetch)
    with pytest.raises(UnsupportedInput) as info:
        await big.read(1000)
    assert info.value.key == "file_too_large" and calls == []
    lying = Attachment("small.txt", "text/plain", 10, fetch)  # size metadata lies
    with pytest.raises(UnsupportedInput):
        await lying.read(50)

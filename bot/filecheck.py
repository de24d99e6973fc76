"""Checks that a file is what its name says before any handler sees its bytes."""

from __future__ import annotations

import mimetypes
from pathlib import PurePath

import filetype

from bot.errors import UnsupportedInput

# Extension -> the extensions `filetype` may report for honest content of that kind.
BINARY_KINDS: dict[str, set[str]] = {
    "png": {"png"},
    "jpg": {"jpg"},
    "jpeg": {"jpg"},
    "gif": {"gif"},
    "webp": {"webp"},
    "bmp": {"bmp"},
    "tif": {"tif"},
    "tiff": {"tif"},
    "pdf": {"pdf"},
    "docx": {"docx", "zip"},
    "pptx": {"pptx", "zip"},
    "xlsx": {"xlsx", "zip"},
    "zip": {"zip"},
    "mp3": {"mp3"},
    "wav": {"wav"},
    "ogg": {"ogg", "opus"},
    "oga": {"ogg", "opus"},
    "opus": {"ogg", "opus"},
    "flac": {"flac"},
    "m4a": {"m4a", "mp4", "mov"},
    "mp4": {"mp4", "m4v", "m4a", "mov"},
    "m4v": {"mp4", "m4v", "mov"},
    "mov": {"mov", "mp4"},
    "webm": {"webm", "mkv"},
    "mkv": {"mkv", "webm"},
}
TEXT_KINDS = {"txt", "md", "markdown", "csv", "tsv", "json", "html", "htm", "xml", "py", "srt", "vtt", "log", "yaml",
              "yml", "toml", "rst", "js", "ts", "css", "sql", "sh"}


def _extension(name: str) -> str:
    return PurePath(name).suffix.lower().lstrip(".")


def _looks_like_text(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the sample's end is still text.
        if e.start < len(sample) - 4:
            return False
    return True


def check_content(name: str, data: bytes) -> None:
    """Raise `UnsupportedInput` for an empty file or one whose bytes contradict its extension."""
    if not data:
        raise UnsupportedInput("file_empty", name=name)
    ext = _extension(name)
    guessed = filetype.guess(data[:8192])
    found = guessed.extension if guessed else None
    if ext in BINARY_KINDS:
        if found not in BINARY_KINDS[ext]:
            raise UnsupportedInput("file_mismatch", name=name, ext=ext, found=found or _describe(data))
    elif ext in TEXT_KINDS and (found is not None or not _looks_like_text(data)):
        raise UnsupportedInput("file_mismatch", name=name, ext=ext, found=found or "binary data")


def _describe(data: bytes) -> str:
    return "text" if _looks_like_text(data) else "unknown binary data"


def guess_mime(name: str, data: bytes | None = None) -> str:
    """The MIME type from the bytes where they tell, else from the name."""
    if data:
        guessed = filetype.guess(data[:8192])
        if guessed is not None:
            # `filetype` calls ogg/opus voice clips video/ogg; chat platforms mean audio.
            if guessed.extension in ("ogg", "opus") and _extension(name) in ("ogg", "oga", "opus"):
                return "audio/ogg"
            if guessed.extension in ("m4a",) or _extension(name) == "m4a":
                return "audio/mp4"
            return str(guessed.mime)
    mime, _ = mimetypes.guess_type(name)
    return mime or "application/octet-stream"

"""Attached images as the image engines take them: checked, decoded, oriented, scaled down, re-encoded as PNG."""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.context import HandlerContext
from bot.errors import UnsupportedInput
from bot.events import Attachment, IncomingEvent


@dataclass(frozen=True)
class LoadedImage:
    png: bytes
    width: int
    height: int
    original: tuple[int, int]  # width, height as sent
    sent: bytes  # the file as it came (kept as the upload's blob)

    @property
    def scaled(self) -> bool:
        return (self.width, self.height) != self.original


def normalize_image(data: bytes, name: str, max_pixels: int, max_decode_pixels: int) -> LoadedImage:
    """Decode any image PIL reads, honour its EXIF orientation, make it RGB and at most `max_pixels`.

    A file that is not an image, or is cut short, raises `UnsupportedInput("image_unreadable")`; one whose
    header claims more than `max_decode_pixels` is refused before its pixels are decoded."""
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UnsupportedInput("image_unreadable", detail=name) from None
    if width * height > max_decode_pixels:
        raise UnsupportedInput("image_too_large", name=name, width=width, height=height,
                               limit=f"{max_decode_pixels / 1e6:g}")
    try:
        if image.format == "JPEG" and width * height > max_pixels:
            image.draft("RGB", (width // 2, height // 2))  # decode JPEGs at a reduced scale when possible
        image = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise UnsupportedInput("image_unreadable", detail=name) from None
    original = (width, height)
    if image.width * image.height > max_pixels:
        scale = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((max(8, int(image.width * scale)), max(8, int(image.height * scale))),
                             Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return LoadedImage(out.getvalue(), image.width, image.height, original, data)


def image_attachments(event: IncomingEvent, given: object = None) -> list[Attachment]:
    """The attachment option's file first (if any), then the event's other image attachments."""
    files = [given] if isinstance(given, Attachment) else []
    return files + [a for a in event.attachments if a not in files]


async def read_image(ctx: HandlerContext, attachment: Attachment, *, notify: bool = True) -> LoadedImage:
    """Download and normalise one attachment; says so when it was scaled down."""
    settings = ctx.settings.images
    data = await attachment.read(ctx.settings.limits.max_upload_bytes)
    loaded = await asyncio.to_thread(normalize_image, data, attachment.name, settings.max_pixels,
                                     settings.max_decode_pixels)
    if loaded.scaled and notify:
        await ctx.responder.send(ctx.t("image_downscaled", name=attachment.name, width=loaded.original[0],
                                       height=loaded.original[1], new_width=loaded.width, new_height=loaded.height))
    return loaded


def fit(width: int, height: int, side: int, minimum: int = 64) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most `side`, both multiples of 8 (at least `minimum`)."""
    scale = min(1.0, side / max(width, height))
    return max(minimum, int(width * scale) // 8 * 8), max(minimum, int(height * scale) // 8 * 8)


def resized(png: bytes, width: int, height: int) -> bytes:
    """An image re-encoded as PNG at exactly `width` x `height`."""
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(out, format="PNG")
    return out.getvalue()

"""Talking-head video: a portrait whose mouth moves with a spoken answer.

`LocalPresenterEngine` (the `presenter` engine) renders on the CPU, in the worker thread, with OpenCV and
ffmpeg: it finds the face in the portrait (OpenCV's Haar cascade), frames head and shoulders, then draws
one frame per 1/fps of audio, opening the mouth by the phoneme timings when the TTS gave them or by the
audio's loudness otherwise, with blinks every 3-5 s and a slight head sway, and pipes the frames to
ffmpeg (H.264, or MPEG-4 part 2 where the ffmpeg build has no libx264) with the audio as AAC. This is a
cheap 2D puppet, not a neural lip-sync model: the lips open and close in time with the speech but do not
form visemes. The types here are shared with hosted renderers (`engines.presenter_did`).
"""

from __future__ import annotations

import io
import logging
import math
import re
import subprocess
import tempfile
import threading
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bot.errors import EngineError, EngineUnavailable, UserFacingError
from engines import audio
from engines.base import EngineRequest, run_each

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresentRequest:
    """What to render: the audio of an answer and, optionally, whose face says it."""

    audio: bytes  # the spoken answer, any format ffmpeg reads (wav/mp3/ogg)
    portrait: bytes | None = None  # image bytes; None: the bundled default portrait
    text: str = ""  # what is said (hosted renderers may want it; captions)
    phonemes: list[tuple[float, float, str]] | None = None  # from the TTS when available
    max_bytes: int = 8 * 2**20  # the platform's upload limit: re-encode smaller to fit
    fps: int = 25
    size: int = 512  # output height (width keeps the portrait's aspect, even numbers)


@dataclass
class Video:
    """A rendered video, ready to upload."""

    data: bytes
    duration_s: float
    width: int
    height: int
    fps: float
    renderer: str  # "local", "d-id"
    mime: str = "video/mp4"
    note: str | None = None  # e.g. "D-ID was unavailable; rendered locally"


class PresenterError(UserFacingError):
    """A portrait or output the presenter cannot use; key = f"presenter_{code}".

    Codes: bad_image, no_face, many_faces, small_face, too_large.
    """

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(f"presenter_{code}", **params)
        self.code = code


# -- portrait -----------------------------------------------------------------------------------------------
DEFAULT_PORTRAIT = Path(__file__).parent / "data" / "presenter_portrait.jpg"
MAX_PIXELS = 120_000_000  # refused before decoding (a 10000 x 10000 image is 100 MP); Pillow's own bomb check is 179 MP
WORK_SIDE = 1024  # portraits are downscaled to this longest side before anything else
MIN_FACE_PX = 64  # face height in the uploaded image's pixels
MIN_FACE_SHARE = 0.06  # face height / image height
MANY_FACES_AREA = 0.6  # a second face at least this share of the largest one's area is "another person"
FACE_SHARE = 0.28  # face height / frame height in the output (head and shoulders)
ASPECT_RANGE = (9 / 16, 16 / 9)
OPEN_MAX = 0.12  # the widest mouth opening, in face heights


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: left, top, width, height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    def slices(self, width: int, height: int) -> tuple[slice, slice]:
        """(rows, columns) of this box clipped to a `width` x `height` image, for numpy indexing."""
        x0, y0 = max(0, int(self.x)), max(0, int(self.y))
        x1, y1 = min(width, math.ceil(self.x + self.w)), min(height, math.ceil(self.y + self.h))
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


@dataclass(frozen=True)
class Layout:
    """Where the animated parts are in the output frame (pixels), before the head's sway. `mouth` covers the
    lips and the opening between them at its widest (the chin below is stretched a little too); `eyes` are the
    eye openings; `lip_y` is the row where the mouth opens and `lip_w` the width of the opening's lips."""

    width: int
    height: int
    face: Box
    mouth: Box
    eyes: tuple[Box, Box]
    lip_y: float
    lip_w: float


def load_portrait(data: bytes) -> tuple[np.ndarray, float]:
    """An uploaded image as RGB uint8, EXIF-rotated, transparency flattened on white, longest side at most
    `WORK_SIDE`; and the scale from the upload's pixels to these. Raises `PresenterError("bad_image")`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise PresenterError("bad_image", reason="the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked below
            image: Any = Image.open(io.BytesIO(data))
            width, height = image.size
            if width < 1 or height < 1 or width * height > MAX_PIXELS:
                raise PresenterError("bad_image", reason=f"it is too large ({width}x{height} pixels)",
                                     width=width, height=height)
            if image.format == "JPEG":
                image.draft("RGB", (WORK_SIDE, WORK_SIDE))  # decode at 1/2 .. 1/8 scale: a 36 MP JPEG stays small
            image = ImageOps.exif_transpose(image)  # loads the pixels
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.getchannel("A"))
            elif image.mode != "RGB":
                image = image.convert("RGB")
            image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
            pixels = np.asarray(image, dtype=np.uint8)
    except PresenterError:
        raise
    except UnidentifiedImageError:
        raise PresenterError("bad_image", reason="it is not an image I can read") from None
    except Image.DecompressionBombError:
        raise PresenterError("bad_image", reason="it is too large (too many pixels)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:  # truncated or corrupt data
        log.debug("portrait unreadable: %s", e)
        raise PresenterError("bad_image", reason="the image is damaged or incomplete") from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 2:
        raise PresenterError("bad_image", reason="it is not an image I can read")
    return np.ascontiguousarray(pixels), max(pixels.shape[:2]) / max(width, height)


@lru_cache(maxsize=1)
def default_portrait() -> bytes:
    """The bundled portrait (NASA, public domain; see `engines/data/PRESENTER_PORTRAIT.md`)."""
    return DEFAULT_PORTRAIT.read_bytes()


_DETECT_LOCK = threading.Lock()  # one CascadeClassifier shared by the threads


@lru_cache(maxsize=1)
def _cascades() -> tuple[Any, Any]:
    import cv2

    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    face = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_default.xml"))
    eye = cv2.CascadeClassifier(str(folder / "haarcascade_eye.xml"))
    if face.empty() or eye.empty():
        raise EngineUnavailable(f"OpenCV's Haar cascades are missing from {folder or 'cv2.data'} "
                                "(install opencv-python-headless>=4.10,<5)")
    return face, eye


def find_face(rgb: np.ndarray, scale: float = 1.0) -> Box:
    """The one face in `rgb` (pixels of the working copy). `scale`: working pixels per uploaded pixel, so
    that sizes in errors are the upload's. Raises `PresenterError` no_face / many_faces / small_face."""
    import cv2

    face_cascade, _ = _cascades()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height = gray.shape[0]
    found: list[tuple[int, int, int, int]] = []
    for image in (gray, cv2.equalizeHist(gray)):  # equalised: dark, flat or backlit photos
        with _DETECT_LOCK:
            faces = face_cascade.detectMultiScale(image, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        found = [tuple(int(v) for v in f) for f in faces]  # type: ignore[misc]
        if found:
            break
    if not found:
        raise PresenterError("no_face")
    found.sort(key=lambda f: f[2] * f[3], reverse=True)
    largest = found[0][2] * found[0][3]
    comparable = [f for f in found if f[2] * f[3] >= MANY_FACES_AREA * largest]
    if len(comparable) > 1:
        raise PresenterError("many_faces", count=len(comparable))
    x, y, w, h = found[0]
    size = round(h / scale)
    if size < MIN_FACE_PX or h < MIN_FACE_SHARE * height:
        least = max(MIN_FACE_PX, math.ceil(MIN_FACE_SHARE * height / scale))
        raise PresenterError("small_face", size=size, min_size=least, share=round(100 * h / height, 1))
    return Box(x, y, w, h)


def frame_portrait(rgb: np.ndarray, face: Box, size: int) -> tuple[np.ndarray, Box]:
    """The head-and-shoulders frame (height `size`, width from the portrait's aspect, both even) cut, scaled
    and, where the photo is too tight, padded by repeating its edges; and the face box in it."""
    import cv2

    height, width = rgb.shape[:2]
    aspect = min(max(width / height, ASPECT_RANGE[0]), ASPECT_RANGE[1])
    out_h = max(2, size // 2 * 2)
    out_w = max(2, round(out_h * aspect / 2) * 2)
    crop_h = min(face.h / FACE_SHARE, max(height, face.h / 0.5))  # zoom in on small faces, pad huge ones to 50%
    crop_w = crop_h * out_w / out_h
    left, top = face.cx - crop_w / 2, face.cy - 0.42 * crop_h
    if crop_w <= width:
        left = min(max(left, 0.0), width - crop_w)
    if crop_h <= height:
        top = min(max(top, 0.0), height - crop_h)
    s = out_h / crop_h
    source = rgb
    if s < 1:  # downscale the whole photo with area averaging first, then shift
        source = cv2.resize(rgb, (max(1, round(width * s)), max(1, round(height * s))), interpolation=cv2.INTER_AREA)
        sx, sy = source.shape[1] / width, source.shape[0] / height
        matrix = np.array([[s / sx, 0, -left * s], [0, s / sy, -top * s]], np.float32)
    else:
        matrix = np.array([[s, 0, -left * s], [0, s, -top * s]], np.float32)
    frame = cv2.warpAffine(source, matrix, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return frame, Box((face.x - left) * s, (face.y - top) * s, face.w * s, face.h * s)


def find_features(frame: np.ndarray, face: Box) -> Layout:
    """Mouth and eyes in the framed portrait. The mouth is the reddest run of rows in the lower third of the
    face (the lips, with any teeth between them), and it opens at the middle of that run; where no lips stand
    out, at the darkest row (the gap between closed lips). The eyes are OpenCV's eye cascade in the upper
    half of the face, else the usual proportions of a frontal face."""
    import cv2

    out_h, out_w = frame.shape[:2]
    band = Box(face.x + 0.34 * face.w, face.y + 0.68 * face.h, 0.32 * face.w, 0.3 * face.h)
    rows, cols = band.slices(out_w, out_h)
    lip_y = face.y + 0.8 * face.h
    if rows.stop - rows.start >= 6 and cols.stop - cols.start >= 3:
        lab = cv2.cvtColor(np.ascontiguousarray(frame[rows, cols]), cv2.COLOR_RGB2LAB).astype(np.float32)
        smooth = np.ones(3, np.float32) / 3
        red = np.convolve(np.pad(lab[..., 1].mean(axis=1), 1, mode="edge"), smooth, mode="valid")
        dark = np.convolve(np.pad(lab[..., 0].mean(axis=1), 1, mode="edge"), smooth, mode="valid")
        middle = float(np.median(red))
        if red.max() - middle >= 3:  # lips redder than the skin around them
            lips = np.flatnonzero(red >= middle + 0.5 * (red.max() - middle))
            first, last = int(lips[0]), int(lips[-1])
            if last - first > 0.22 * face.h:  # two separate red things: keep the run around the reddest row
                peak = int(np.argmax(red))
                first, last = max(first, peak - int(0.11 * face.h)), min(last, peak + int(0.11 * face.h))
            lip_y = rows.start + (first + last) / 2
        else:
            lip_y = rows.start + float(np.argmin(dark))
    lip_y = min(max(lip_y, face.y + 0.72 * face.h), face.y + 0.9 * face.h)
    lip_w = 0.42 * face.w
    open_max = OPEN_MAX * face.h
    mouth = Box(face.cx - 0.3 * face.w, lip_y - 0.1 * face.h, 0.6 * face.w, 0.2 * face.h + open_max)

    _, eye_cascade = _cascades()
    upper = Box(face.x, face.y + 0.15 * face.h, face.w, 0.45 * face.h)
    rows, cols = upper.slices(out_w, out_h)
    gray = cv2.cvtColor(np.ascontiguousarray(frame[rows, cols]), cv2.COLOR_RGB2GRAY)
    with _DETECT_LOCK:
        found = eye_cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                             minSize=(max(8, int(face.w * 0.12)),) * 2,
                                             maxSize=(int(face.w * 0.4) + 1,) * 2)
    geometric = [Box(face.x + fx * face.w - 0.1 * face.w, face.y + 0.38 * face.h - 0.045 * face.h,
                     0.2 * face.w, 0.09 * face.h) for fx in (0.3, 0.7)]
    eyes: list[Box] = []
    for side, fallback in zip((0, 1), geometric, strict=True):
        candidates = [(x + cols.start, y + rows.start, w, h) for x, y, w, h in found
                      if (x + cols.start + w / 2 < face.cx) == (side == 0)]
        if candidates:
            x, y, w, h = (float(v) for v in max(candidates, key=lambda c: c[2] * c[3]))
            cx, cy = x + w / 2, y + 0.55 * h
            eyes.append(Box(cx - 0.38 * w, cy - 0.2 * h, 0.76 * w, 0.4 * h))
        else:
            eyes.append(fallback)
    return Layout(out_w, out_h, face, mouth, (eyes[0], eyes[1]), lip_y, lip_w)


def locate(portrait: bytes | None, size: int = 512) -> Layout:
    """The layout `LocalPresenterEngine` uses for this portrait at this output height (for tests and tools)."""
    rgb, scale = load_portrait(portrait if portrait is not None else default_portrait())
    frame, face = frame_portrait(rgb, find_face(rgb, scale), size)
    return find_features(frame, face)


# -- mouth openness -------------------------------------------------------------------------------------------
_VOWELS = {"a": 1.0, "ɑ": 1.0, "æ": 0.95, "ɶ": 0.9, "ɐ": 0.85, "ɒ": 0.95, "ʌ": 0.85, "ɔ": 0.85, "ɛ": 0.85,
           "œ": 0.8, "ɜ": 0.75, "ɞ": 0.75, "e": 0.75, "o": 0.75, "ø": 0.7, "ɤ": 0.7, "ɵ": 0.7, "ə": 0.6,
           "ɘ": 0.6, "ɪ": 0.6, "i": 0.6, "y": 0.6, "ʏ": 0.6, "u": 0.6, "ʊ": 0.6, "ɯ": 0.6, "ɨ": 0.6, "ʉ": 0.6,
           "ɚ": 0.65, "ɝ": 0.7}
_BILABIAL = set("mbpɓʙɸβ")
_LABIODENTAL = set("fvɱʋ")
_PAUSE = re.compile(r"^(?:|_+|sil|sp|spn|pau|[\s.,;:!?…'\"()\-–—]+|[\^$#])$")
_MARKS = re.compile(r"[ˈˌːˑ‿ʰʲʷˠˤ̃̚͡]")
CONSONANT_OPEN = 0.3


def phoneme_openness(ipa: str) -> float:
    """How open the mouth is for one phoneme: vowels 0.6-1.0 (open ones most), bilabials (m b p) closed,
    f/v nearly closed, other consonants 0.3, pauses closed."""
    text = _MARKS.sub("", unicodedata.normalize("NFC", ipa.strip().lower()))
    if _PAUSE.match(text):
        return 0.0
    values = [_VOWELS[c] for c in text if c in _VOWELS]
    if values:
        return max(values)
    base = unicodedata.normalize("NFD", text)[:1]
    if base in _BILABIAL:
        return 0.0
    if base in _LABIODENTAL:
        return 0.15
    return CONSONANT_OPEN


def loudness(samples: np.ndarray, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """RMS of the audio over each frame's 1/fps."""
    bounds = np.minimum(len(samples), np.round(np.arange(frames + 1) * sample_rate / fps).astype(np.int64))
    squares = np.concatenate([[0.0], np.cumsum(np.square(samples.astype(np.float64)))])
    counts = np.maximum(1, bounds[1:] - bounds[:-1])
    return np.sqrt(np.maximum(0.0, squares[bounds[1:]] - squares[bounds[:-1]]) / counts)


def openness_from_loudness(rms: np.ndarray) -> np.ndarray:
    """Mouth openness 0-1 per frame from RMS: 30 dB under the loud frames (95th percentile) or quieter is
    closed, as loud as them is wide open, linear in dB between; opens fast, closes a little slower."""
    if len(rms) == 0 or float(rms.max()) < 1e-4:
        return np.zeros(len(rms))
    db = 20 * np.log10(np.maximum(rms, 1e-7))
    top = float(np.percentile(db[rms > 1e-4], 95))
    target = np.clip((db - (top - 30.0)) / 30.0, 0.0, 1.0)
    return _attack_release(target, attack=0.8, release=0.7)


def openness_from_phonemes(phonemes: list[tuple[float, float, str]], fps: float, frames: int,
                           rms: np.ndarray | None = None) -> np.ndarray:
    """Mouth openness per frame from (start_s, end_s, IPA) timings: each frame takes its phonemes' openness
    weighted by how much of the frame they cover (time without a phoneme counts as closed), smoothed over
    neighbouring frames; loudness, when given, adds up to 25% emphasis."""
    target = np.zeros(frames)
    edges = np.arange(frames + 1) / fps
    for start, end, ipa in phonemes:
        if end <= start:
            continue
        value = phoneme_openness(ipa)
        first, last = max(0, int(start * fps)), min(frames - 1, int(end * fps))
        for i in range(first, last + 1):
            overlap = min(end, edges[i + 1]) - max(start, edges[i])
            if overlap > 0:
                target[i] += value * overlap * fps
    target = np.clip(target, 0.0, 1.0)
    if frames >= 3:
        target = np.convolve(np.pad(target, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    if rms is not None and len(rms) == frames:
        target *= 0.75 + 0.25 * openness_from_loudness(rms)
    return _attack_release(target, attack=0.9, release=0.8)


def _attack_release(target: np.ndarray, attack: float, release: float) -> np.ndarray:
    out = np.empty(len(target))
    level = 0.0
    for i, value in enumerate(target):
        level += (attack if value > level else release) * (value - level)
        out[i] = level
    return out


def blink_closure(frames: int, fps: float, seed: int = 7) -> np.ndarray:
    """Eyelid closure 0-1 per frame: a blink every 3-5 s (random, seeded), closing over 0.16 s (4 frames at
    25 fps), shut for 0.04 s, opening over 0.14 s."""
    rng = np.random.default_rng(seed)
    closure = np.zeros(frames)
    times = np.arange(frames) / fps
    start = float(rng.uniform(1.0, 3.0))
    while start < frames / fps:
        since = times - start
        shape = np.interp(since, [0.0, 0.16, 0.20, 0.34], [0.0, 1.0, 1.0, 0.0], left=0.0, right=0.0)
        closure = np.maximum(closure, shape)
        start += float(rng.uniform(3.0, 5.0))
    return closure


def head_motion(frames: int, fps: float, width: int, height: int, seed: int = 7) -> np.ndarray:
    """Per frame (dx px, dy px, angle degrees): a slow sway of sums of sines with random phases, at most about
    1% of the frame (dx 0.8% of the width, dy 0.5% of the height, 0.6 degrees)."""
    rng = np.random.default_rng(seed + 1)
    t = np.arange(frames) / fps
    phase = rng.uniform(0, 2 * np.pi, 5)
    dx = width * (0.005 * np.sin(2 * np.pi * t / 6.1 + phase[0]) + 0.003 * np.sin(2 * np.pi * t / 3.7 + phase[1]))
    dy = height * 0.005 * np.sin(2 * np.pi * t / 4.3 + phase[2])
    angle = 0.4 * np.sin(2 * np.pi * t / 5.3 + phase[3]) + 0.2 * np.sin(2 * np.pi * t / 2.9 + phase[4])
    return np.stack([dx, dy, angle], axis=1)


# -- drawing -----------------------------------------------------------------------------------------------
class Animator:
    """Draws frames of one portrait: `frame(openness, closure, (dx, dy, angle))` -> RGB uint8."""

    def __init__(self, base: np.ndarray, layout: Layout) -> None:
        import cv2

        self.cv2 = cv2
        self.base = base
        self.layout = layout
        face = layout.face
        height, width = base.shape[:2]
        self.open_max = OPEN_MAX * face.h
        # the mouth region: lips, the opening and the chin below, which the open jaw stretches
        roi = Box(face.cx - 0.75 * layout.lip_w, layout.lip_y - 0.12 * face.h, 1.5 * layout.lip_w,
                  0.12 * face.h + max(0.3 * face.h, face.y + 1.08 * face.h - layout.lip_y))
        self.mouth_rows, self.mouth_cols = roi.slices(width, height)
        ys = np.arange(self.mouth_rows.start, self.mouth_rows.stop, dtype=np.float32)
        xs = np.arange(self.mouth_cols.start, self.mouth_cols.stop, dtype=np.float32)
        self.grid_y, self.grid_x = np.meshgrid(ys - self.mouth_rows.start, xs - self.mouth_cols.start, indexing="ij")
        across = np.clip((np.abs(xs - face.cx) - 0.3 * layout.lip_w) / (0.45 * layout.lip_w), 0.0, 1.0)
        self.across = (np.cos(across * np.pi / 2) ** 2).astype(np.float32)[None, :]  # 1 mid-mouth, 0 at the corners
        bottom = float(self.mouth_rows.stop)
        taper_from = layout.lip_y + 0.5 * (bottom - layout.lip_y)
        down = np.clip((ys - taper_from) / max(1.0, bottom - taper_from), 0.0, 1.0)
        self.taper = (1 - down * down * (3 - 2 * down)).astype(np.float32)[:, None]  # the jaw's pull fades at the chin
        self.below = (ys - layout.lip_y).astype(np.float32)[:, None]
        self.mouth_base = base[self.mouth_rows, self.mouth_cols].astype(np.float32)
        self.inner = np.array([62, 24, 26], np.float32)
        # eyes: the lid is the skin above the eye slid down over it
        self.eyes: list[tuple[Box, slice, slice]] = []
        for eye in layout.eyes:
            rows, cols = Box(eye.x - 0.15 * eye.w, eye.y - 1.4 * eye.h, 1.3 * eye.w, 2.7 * eye.h).slices(width, height)
            self.eyes.append((eye, rows, cols))
        self.center = (face.cx, face.cy + 0.3 * face.h)  # sway about the neck

    def frame(self, openness: float, closure: float, motion: tuple[float, float, float]) -> np.ndarray:
        cv2 = self.cv2
        out = self.base.copy()
        if openness > 0.01:
            self._mouth(out, float(openness))
        if closure > 0.01:
            for eye in self.eyes:
                self._eyelid(out, eye, float(closure))
        dx, dy, angle = motion
        matrix = cv2.getRotationMatrix2D(self.center, float(angle), 1.0)
        matrix[:, 2] += (dx, dy)
        return cv2.warpAffine(out, matrix, (out.shape[1], out.shape[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT101)

    def _mouth(self, out: np.ndarray, openness: float) -> None:
        """Pull the lower lip and jaw down by the openness and fill the gap with a dark mouth interior."""
        cv2 = self.cv2
        drop = self.open_max * openness * self.across  # per column
        ramp = np.clip(self.below / np.maximum(drop, 1e-3), 0.0, 1.0)  # 0 at the lip line, 1 once past the gap
        shift = drop * ramp * self.taper
        source_y = (self.grid_y - shift).astype(np.float32)
        warped = cv2.remap(self.mouth_base, self.grid_x, source_y, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        mask = np.zeros(warped.shape[:2], np.float32)
        lay = self.layout
        gap = self.open_max * openness
        center = (round((lay.face.cx - self.mouth_cols.start) * 4),
                  round((lay.lip_y + 0.45 * gap - self.mouth_rows.start) * 4))
        axes = (round(0.33 * lay.lip_w * (0.85 + 0.15 * openness) * 4), round(max(0.5, 0.48 * gap) * 4))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, 2)  # quarter-pixel precision
        soft = max(1, round(lay.face.h * 0.012)) * 2 + 1
        mask = cv2.GaussianBlur(mask, (soft, soft), 0)[..., None] * min(1.0, 0.4 + openness)
        shade = self.inner * (0.8 + 0.4 * np.clip((self.grid_y - (center[1] / 4 - axes[1] / 4)) / max(1.0, gap), 0, 1))[
            ..., None]
        warped = warped * (1 - mask) + shade * mask
        out[self.mouth_rows, self.mouth_cols] = np.clip(warped + 0.5, 0, 255).astype(np.uint8)

    def _eyelid(self, out: np.ndarray, eye: tuple[Box, slice, slice], closure: float) -> None:
        """Slide the skin above the eye down over it, to `closure` (1: shut), with a dark lash line at its edge."""
        cv2 = self.cv2
        box, rows, cols = eye
        region = out[rows, cols].astype(np.float32)
        h, w = region.shape[:2]
        if h < 3 or w < 3:
            return
        mask = np.zeros((h, w), np.float32)
        center = (round((box.cx - cols.start) * 4), round((box.cy - rows.start) * 4))
        axes = (round(box.w * 0.52 * 4), round(box.h * 0.62 * 4))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA, 2)
        mask = cv2.GaussianBlur(mask, (3, 3), 0)
        drop = closure * 1.15 * box.h
        ys = np.arange(h, dtype=np.float32)[:, None] + rows.start
        edge = box.y - 0.12 * box.h + drop  # the lid's lower edge
        lid = np.clip(edge - ys + 0.5, 0.0, 1.0) * mask
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        lowest = box.y - 0.55 * box.h - rows.start  # the lid's skin comes from between the brow and the eye
        source_y = np.maximum(grid_y - drop, lowest).astype(np.float32)
        slid = cv2.remap(region, grid_x, source_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        above = region[max(0, int(lowest)):max(1, int(box.y - 0.15 * box.h) - rows.start)].reshape(-1, 3)
        flat = np.median(above, axis=0) if len(above) else slid.reshape(-1, 3).mean(axis=0)
        smear = max(1, int(box.w / 5)) | 1
        skin = (0.45 * cv2.blur(slid, (smear, 1)) + 0.55 * flat) * 0.95
        lash = np.clip(1.0 - np.abs(ys - edge) / max(1.0, 0.1 * box.h), 0.0, 1.0) * mask * min(1.0, closure * 1.5)
        region = region * (1 - lid[..., None]) + skin * lid[..., None]
        region = region * (1 - 0.5 * lash[..., None])
        out[rows, cols] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


# -- encoding ----------------------------------------------------------------------------------------------
FFMPEG_TIMEOUT_S = 600.0
MIN_VIDEO_KBPS = 8
MIN_HEIGHT = 64


@lru_cache(maxsize=1)
def video_encoder() -> str:
    """"libx264" when this ffmpeg has it (`ffmpeg -encoders`), else "mpeg4" (in every build)."""
    done = subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                          timeout=60, check=False)
    return "libx264" if re.search(r"^\s*V\S*\s+libx264\s", done.stdout, re.M) else "mpeg4"


def _video_args(encoder: str, preset: str, crf: int, kbps: int | None = None) -> list[str]:
    if kbps is not None:
        rate = ["-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k"]
    elif encoder == "libx264":
        rate = ["-crf", str(crf)]
    else:
        rate = ["-q:v", "4"]
    extra = ["-preset", preset] if encoder == "libx264" else []
    return ["-c:v", encoder, *extra, *rate, "-pix_fmt", "yuv420p"]


def _ffmpeg_failed(stderr: str) -> EngineError:
    return EngineError(f"ffmpeg could not encode the video: {audio.summarise(stderr)}")


def _checked(payload: Any) -> PresentRequest:
    if not isinstance(payload, PresentRequest):
        raise TypeError(f"presenter engine takes PresentRequest, not {type(payload).__name__}")
    if not 1 <= payload.fps <= 60:
        raise ValueError(f"fps must be 1-60, not {payload.fps}")
    if not 64 <= payload.size <= 2160:
        raise ValueError(f"size must be 64-2160 pixels, not {payload.size}")
    return payload


def encode_frames(engine: LocalPresenterEngine, frames: Iterable[bytes | memoryview], width: int, height: int,
                  sound: Path, target: Path, fps: float) -> None:
    """Pipe rgb24 frames into ffmpeg, which encodes them with `engine`'s video settings and muxes the audio
    (AAC) into `target`; a failed encode raises with ffmpeg's own words."""
    assert engine._encoder is not None
    cmd = [audio.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "pipe:0",
           "-i", str(sound), "-map", "0:v:0", "-map", "1:a:0",
           *_video_args(engine._encoder, engine.preset, engine.crf),
           "-c:a", "aac", "-b:a", f"{engine.audio_kbps}k", "-ac", "1",
           "-movflags", "+faststart", "-shortest", str(target)]
    with open(target.with_suffix(".log"), "w+b") as log_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log_file)
        assert proc.stdin is not None
        try:
            for frame in frames:
                proc.stdin.write(frame)
            proc.stdin.close()
            proc.wait(timeout=FFMPEG_TIMEOUT_S)
        except BrokenPipeError:
            proc.wait(timeout=FFMPEG_TIMEOUT_S)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        log_file.seek(0)
        stderr = log_file.read().decode("utf-8", "replace")
    if proc.returncode != 0 or not target.is_file():
        raise _ffmpeg_failed(stderr)


class LocalPresenterEngine:
    """The `presenter` engine on this machine: a portrait animated with OpenCV, encoded by ffmpeg.

    Synchronous; run it in a thread worker with `max_batch` 1 (a render keeps one core busy drawing and
    ffmpeg's encoder busy on the others). `portrait`: a default portrait file instead of the bundled one.
    `preset`/`crf`: libx264's speed and quality. `max_seconds`: the longest answer it renders.
    """

    name = "presenter"

    def __init__(self, portrait: str | None = None, preset: str = "veryfast", crf: int = 23, audio_kbps: int = 64,
                 max_seconds: float = 600.0, seed: int = 7, memory_mb: int = 0) -> None:
        self.portrait = portrait
        self.preset, self.crf, self.audio_kbps = preset, crf, audio_kbps
        self.max_seconds = max_seconds
        self.seed = seed
        self.memory_mb = memory_mb or 400  # a 10000 x 10000 upload decodes to 300 MB before it is downscaled
        self._default: bytes | None = None
        self._encoder: str | None = None

    def load(self) -> None:
        _cascades()
        try:
            self._encoder = video_encoder()
            self._default = Path(self.portrait).read_bytes() if self.portrait else default_portrait()
        except (OSError, subprocess.SubprocessError) as e:
            raise EngineUnavailable(f"the presenter could not start: {e}") from e
        log.info("presenter: encoder %s", self._encoder)

    def unload(self) -> None:
        self._default, self._encoder = None, None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        return run_each(self.render, batch)

    # -- one video ------------------------------------------------------------------------------------------
    def render(self, request: EngineRequest) -> Video:
        """One request to a `Video`; raises `PresenterError`, `UnsupportedInput` (audio) or `EngineError`."""
        if self._encoder is None or self._default is None:
            self.load()
        assert self._encoder is not None and self._default is not None
        payload = _checked(request.payload)
        rgb, scale = load_portrait(payload.portrait if payload.portrait is not None else self._default)
        base, face = frame_portrait(rgb, find_face(rgb, scale), payload.size)
        del rgb
        layout = find_features(base, face)
        decoded = audio.decode(payload.audio, max_seconds=self.max_seconds)
        fps = float(payload.fps)
        frames = max(1, math.ceil(decoded.duration_s * fps - 1e-6))
        rms = loudness(decoded.samples, decoded.sample_rate, fps, frames)
        if payload.phonemes:
            openness = openness_from_phonemes(payload.phonemes, fps, frames, rms)
        else:
            openness = openness_from_loudness(rms)
        closure = blink_closure(frames, fps, self.seed)
        motion = head_motion(frames, fps, layout.width, layout.height, self.seed)
        animator = Animator(base, layout)
        with tempfile.TemporaryDirectory(prefix="teambot-presenter-") as tmp:
            folder = Path(tmp)
            sound = folder / "audio"
            sound.write_bytes(payload.audio)
            first = folder / "video.mp4"
            self._encode(request, animator, openness, closure, motion, sound, first, fps)
            data, width, height = self._fit(request, first, decoded.duration_s, fps, payload.max_bytes, layout,
                                              folder)
        return Video(data=data, duration_s=round(min(decoded.duration_s, frames / fps), 3), width=width,
                     height=height, fps=fps, renderer="local")

    def _encode(self, request: EngineRequest, animator: Animator, openness: np.ndarray, closure: np.ndarray,
                motion: np.ndarray, sound: Path, target: Path, fps: float) -> None:
        """Draw every frame into ffmpeg, which muxes them with the audio (AAC) into `target`."""
        frames = len(openness)
        step = max(1, frames // 10)

        def drawn() -> Iterator[bytes | memoryview]:
            for i in range(frames):
                if request.cancelled():
                    raise UserFacingError("job_cancelled")
                if i % step == 0:
                    request.progress(i / frames, f"rendering frame {i}/{frames}")
                yield animator.frame(openness[i], closure[i], (motion[i, 0], motion[i, 1], motion[i, 2])).data

        encode_frames(self, drawn(), animator.layout.width, animator.layout.height, sound, target, fps)
        request.progress(1.0, f"rendered {frames} frames")

    def _fit(self, request: EngineRequest, first: Path, duration: float, fps: float, max_bytes: int, layout: Layout,
             folder: Path) -> tuple[bytes, int, int]:
        """The video as is when it fits `max_bytes`, else re-encoded from it at the bitrate that fits (and at a
        smaller size when that bitrate is too low for this one), a few times with a wider margin."""
        assert self._encoder is not None
        data = first.read_bytes()
        width, height = layout.width, layout.height
        if len(data) <= max_bytes:
            return data, width, height
        margin = 0.9
        for attempt in range(4):
            budget = (max_bytes * margin - 2048) * 8 / 1000 / max(duration, 0.1)  # kbit/s, less the MP4 header
            audio_kbps = 48 if budget >= 240 else 32 if budget >= 120 else 24 if budget >= 48 else 16
            video_kbps = int(budget - audio_kbps)
            if video_kbps < MIN_VIDEO_KBPS:
                break
            scale = min(1.0, math.sqrt(video_kbps * 1000 / (0.06 * width * height * fps)))  # 0.06 bit/pixel
            new_h = max(MIN_HEIGHT, round(height * scale / 2) * 2)
            new_w = max(2, round(width * new_h / height / 2) * 2)
            request.progress(1.0, f"re-encoding to fit {max_bytes / 2**20:.1f} MB ({video_kbps} kbit/s, {new_h}p)")
            target = folder / f"fit{attempt}.mp4"
            cmd = [audio.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin", "-i", str(first),
                   "-map", "0:v:0", "-map", "0:a:0", "-vf", f"scale={new_w}:{new_h}:flags=area",
                   *_video_args(self._encoder, self.preset, self.crf, video_kbps),
                   "-c:a", "aac", "-b:a", f"{audio_kbps}k", "-ac", "1", "-movflags", "+faststart", str(target)]
            done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
            if done.returncode != 0 or not target.is_file():
                raise _ffmpeg_failed(done.stderr.decode("utf-8", "replace"))
            data = target.read_bytes()
            log.debug("presenter: re-encoded at %d kbit/s %dx%d: %d bytes (limit %d)", video_kbps, new_w, new_h,
                      len(data), max_bytes)
            if len(data) <= max_bytes:
                return data, new_w, new_h
            margin *= 0.8 * max_bytes / len(data)
        raise PresenterError("too_large", size_mb=round(len(data) / 2**20, 2), limit_mb=round(max_bytes / 2**20, 2),
                             duration=round(duration, 1))

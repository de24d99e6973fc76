"""What handlers send to the image engines and get back. Light: no torch, no diffusers.

Engines: `diffusion` (Stable Diffusion pipelines: txt2img, img2img, inpaint, the x4 upscaler, ControlNet),
`clip` (image and text embeddings, zero-shot classification) and `detect` (OWL-ViT open-vocabulary
detection). Images travel as encoded bytes (PNG or JPEG), already checked and downscaled by the handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bot.errors import EngineError

Mode = Literal["txt2img", "img2img", "inpaint", "upscale", "control"]
ControlType = Literal["canny", "openpose", "scribble"]
SCHEDULERS = ("ddim", "euler", "euler_a", "dpm", "pndm", "lms", "unipc")
CONTROL_TYPES: tuple[ControlType, ...] = ("canny", "openpose", "scribble")


class ImageEngineError(EngineError):
    """An image job that cannot be done, with a message key the handler shows to the user.

    `code` is a key of bot/messages.py (`image_...`); `detail` fills its `{detail}`.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(detail or code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class GenerateRequest:
    """One generation job. `count` images from one prompt; seeds are `seed`, `seed + 1`, ...

    Requests with the same `batch_key` are run together in one pipeline call by the engine.
    `image` is the input of img2img, inpaint, upscale and control; `mask` (white = repaint) of inpaint.
    `control_detect`: run the ControlNet's detector on `image` (False: `image` already is the control map).
    `model`: a name from the engine's `models` option (None: its default). `lora`: a name from its `loras`.
    `safety`: run the safety checker (an admin may turn it off for a workspace).
    `preview_every`: emit a `Preview` every this many steps (0: none).
    """

    prompt: str
    mode: Mode = "txt2img"
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    guidance: float = 7.5
    seed: int = 0
    count: int = 1
    scheduler: str | None = None
    image: bytes | None = None
    mask: bytes | None = None
    strength: float = 0.75
    control: ControlType | None = None
    control_detect: bool = True
    model: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    safety: bool = True
    preview_every: int = 0

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Requests equal in this run in one pipeline call (prompts, seeds, images and counts may differ)."""
        return (self.mode, self.model, self.width, self.height, self.steps, self.guidance, self.scheduler,
                self.strength, self.control, self.lora, self.lora_scale)


@dataclass(frozen=True)
class Preview:
    """A small decoded look at the latents during a job (emitted through `EngineRequest.emit`)."""

    step: int
    steps: int
    png: bytes


@dataclass(frozen=True)
class GeneratedImage:
    """One output image. `withheld`: the safety checker flagged it; `png` is then empty."""

    png: bytes
    seed: int
    width: int
    height: int
    withheld: bool = False


@dataclass(frozen=True)
class GenerateResult:
    """The images of one request, in seed order, and how they were made."""

    images: list[GeneratedImage]
    model: str
    mode: Mode
    steps: int
    seconds: float
    batch_size: int = 1  # requests that shared the pipeline call
    control_map: bytes | None = None  # the detector's output (PNG), for /control
    notes: list[str] = field(default_factory=list)  # e.g. "batch split after out-of-memory"


@dataclass(frozen=True)
class EmbedRequest:
    """CLIP: embed images (encoded bytes) or texts; exactly one of the two is non-empty."""

    images: tuple[bytes, ...] = ()
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]  # L2-normalised, one per input
    model: str  # the name stored beside each vector (vectors of different models never mix)


@dataclass(frozen=True)
class ClassifyRequest:
    image: bytes
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Classification:
    scores: list[tuple[str, float]]  # (label, probability), best first; probabilities sum to 1
    model: str


@dataclass(frozen=True)
class DetectRequest:
    image: bytes
    labels: tuple[str, ...]
    threshold: float = 0.1


@dataclass(frozen=True)
class Box:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the input image


@dataclass(frozen=True)
class Detection:
    boxes: list[Box]  # best first, after non-maximum suppression per label
    annotated: bytes  # PNG: the input with labelled boxes drawn
    model: str

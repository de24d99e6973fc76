"""Vision engines on transformers: CLIP (image and text embeddings, zero-shot classification) and OWL-ViT
(open-vocabulary detection). Requests and results are in `engines/image_types.py`.

`model` is a hub id ("openai/clip-vit-base-patch32", "OFA-Sys/chinese-clip-vit-base-patch16",
"google/owlvit-base-patch32", "google/owlv2-base-patch16-ensemble") or a local folder saved with
`save_pretrained`; both load through the Auto classes, so any CLIP-like model with `get_image_features`,
`get_text_features` and `logit_scale` (CLIP, Chinese-CLIP) and OWL-ViT or OWLv2 work. A local folder is
loaded with `local_files_only` unless told otherwise. An image that cannot be decoded fails only its own
request (`image_unreadable`); everything else in a batch runs in one forward per kind.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import EngineUnavailable
from engines.base import EngineRequest
from engines.image_types import (
    Box,
    Classification,
    ClassifyRequest,
    Detection,
    DetectRequest,
    Embeddings,
    EmbedRequest,
    ImageEngineError,
)

log = logging.getLogger(__name__)

TEMPLATE = "a photo of {label}"
NMS_IOU = 0.3
MAX_BOXES = 20
FORWARD_CHUNK = 64  # images or texts per forward pass
# Distinct, readable box colours, one per label (in the order the labels were asked for).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 225, 25), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128), (128, 128, 128),
)


def decode_image(data: bytes) -> Any:
    """Encoded bytes -> an RGB PIL image; anything undecodable raises `ImageEngineError("image_unreadable")`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGB")
    except Exception as e:  # PIL raises many kinds (UnidentifiedImageError, OSError, ValueError, bomb errors)
        log.debug("undecodable image (%d bytes): %s", len(data), e)
        # No detail: the message's {detail} is the file's name, which only the handler knows.
        raise ImageEngineError("image_unreadable") from e


def stable_name(model: str) -> str:
    """The name stored beside vectors: a hub id as is, a local folder by its last component."""
    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model


class _TransformersEngine:
    """Loading shared by both engines: device and dtype choice, Auto classes, local folders."""

    name = "vision"
    default_memory_mb = 800

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", local_files_only: bool | None = None,
                 memory_mb: int = 0, model_name: str | None = None) -> None:
        self.model_path = model
        self.device = device
        self.dtype = dtype
        self.local_files_only = local_files_only
        self.memory_mb = memory_mb or self.default_memory_mb
        self.model = model_name or stable_name(model)
        self._model: Any = None
        self._processor: Any = None
        self._torch_device: Any = None
        self._lock = threading.Lock()  # one forward at a time: the pool may call run from several threads

    def _auto_model(self) -> Any:
        raise NotImplementedError

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            from engines.torch_compat import prepare

            prepare()  # before transformers: its image utilities import torchvision
            import torch
            from transformers import AutoProcessor
        except ImportError as e:
            raise EngineUnavailable(f"the {self.name} engine needs torch and transformers (pip install '.[torch]')") \
                from e
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailable(f"the {self.name} engine is configured for {device}, but PyTorch sees no CUDA "
                                    "device (install a CUDA build of torch, or set device = \"cpu\")")
        dtype: Any = getattr(torch, self.dtype, None)
        if self.dtype == "auto":
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
        elif not isinstance(dtype, torch.dtype):
            raise EngineUnavailable(f"unknown dtype {self.dtype!r} for the {self.name} engine")
        local = self.local_files_only
        if local is None:
            local = Path(self.model_path).expanduser().is_dir()
        try:
            model = self._auto_model().from_pretrained(self.model_path, dtype=dtype, local_files_only=local)
            processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=local)
        except (OSError, ValueError) as e:
            raise EngineUnavailable(f"the {self.name} model {self.model_path!r} could not load: {e}") from e
        self._torch_device = torch.device(device)
        self._model = model.to(self._torch_device).eval()
        self._processor = processor
        log.info("%s: %s (%s) on %s, %s", self.name, self.model, type(model).__name__, device, dtype)

    def unload(self) -> None:
        model, self._model, self._processor = self._model, None, None
        if model is not None and self._torch_device is not None and self._torch_device.type == "cuda":
            import torch

            del model
            torch.cuda.empty_cache()

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        """Processor output on the model's device; floating tensors in the model's dtype."""
        moved: dict[str, Any] = {}
        for key, value in inputs.items():
            if hasattr(value, "to"):
                value = value.to(self._torch_device)
                if value.is_floating_point():
                    value = value.to(self._model.dtype)
            moved[key] = value
        return moved


def _features(output: Any) -> Any:
    """`get_*_features` returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return output if hasattr(output, "norm") else output.pooler_output


@dataclass
class _ClipPlan:
    """Where each request's inputs sit in the batch's merged image and text lists."""

    results: list[Any]
    images: list[Any]
    texts: list[str]
    image_spans: dict[int, tuple[int, int]]  # request -> [start, end) in images (embed requests)
    text_spans: dict[int, tuple[int, int]]  # request -> [start, end) in texts (embed requests)
    classify: dict[int, tuple[int, list[str], tuple[int, int]]]  # request -> (image index, labels, prompt span)


class ClipEngine(_TransformersEngine):
    """CLIP (or Chinese-CLIP): `EmbedRequest` -> `Embeddings`, `ClassifyRequest` -> `Classification`.

    A batch's images (of embed and classify requests alike) go through one vision forward and its texts
    (embed texts and the classify prompts `template.format(label=...)`) through one text forward. Vectors
    are L2-normalised; classification is the softmax of `logit_scale * cosine` over each request's labels,
    as CLIP's `logits_per_image`. For Chinese-CLIP set `template` to e.g. "一张{label}的照片".
    """

    name = "clip"

    def __init__(self, model: str = "openai/clip-vit-base-patch32", device: str = "auto", dtype: str = "auto",
                 local_files_only: bool | None = None, memory_mb: int = 0, model_name: str | None = None,
                 template: str = TEMPLATE) -> None:
        super().__init__(model, device, dtype, local_files_only, memory_mb, model_name)
        self.template = template

    def _auto_model(self) -> Any:
        from transformers import AutoModelForZeroShotImageClassification

        return AutoModelForZeroShotImageClassification

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        if self._model is None:
            self.load()
        plan = self._plan(batch)
        pending = [i for i, r in enumerate(plan.results) if r is None]
        if not pending:
            return plan.results
        try:
            with self._lock:
                image_vectors = self._embed_images(plan.images)
                text_vectors = self._embed_texts(plan.texts)
                scale = float(self._model.logit_scale.exp().item())
        except Exception as e:  # the model itself failed: every request still waiting fails with it
            for i in pending:
                plan.results[i] = e
            return plan.results
        for i, (start, end) in plan.image_spans.items():
            plan.results[i] = Embeddings(vectors=image_vectors[start:end].tolist(), model=self.model)
        for i, (start, end) in plan.text_spans.items():
            plan.results[i] = Embeddings(vectors=text_vectors[start:end].tolist(), model=self.model)
        for i, (image, labels, (start, end)) in plan.classify.items():
            logits = scale * (text_vectors[start:end] @ image_vectors[image])
            probabilities = logits.softmax(dim=0).tolist()
            scores = sorted(zip(labels, probabilities, strict=True), key=lambda s: s[1], reverse=True)
            plan.results[i] = Classification(scores=[(label, float(p)) for label, p in scores], model=self.model)
        return plan.results

    def _plan(self, batch: list[EngineRequest]) -> _ClipPlan:
        plan = _ClipPlan([None] * len(batch), [], [], {}, {}, {})
        for i, request in enumerate(batch):
            payload = request.payload
            try:
                if isinstance(payload, EmbedRequest):
                    if payload.images and payload.texts:
                        raise ValueError("an EmbedRequest carries images or texts, not both")
                    if payload.images:
                        decoded = [decode_image(data) for data in payload.images]
                        plan.image_spans[i] = (len(plan.images), len(plan.images) + len(decoded))
                        plan.images.extend(decoded)
                    else:
                        plan.text_spans[i] = (len(plan.texts), len(plan.texts) + len(payload.texts))
                        plan.texts.extend(str(t) for t in payload.texts)
                elif isinstance(payload, ClassifyRequest):
                    labels = [label.strip() for label in payload.labels if label.strip()]
                    if not labels:
                        raise ImageEngineError("image_no_labels")
                    image = decode_image(payload.image)
                    prompts = [self.template.format(label=label) for label in labels]
                    span = (len(plan.texts), len(plan.texts) + len(prompts))
                    plan.classify[i] = (len(plan.images), labels, span)
                    plan.images.append(image)
                    plan.texts.extend(prompts)
                else:
                    raise TypeError(f"the clip engine takes EmbedRequest or ClassifyRequest, "
                                    f"not {type(payload).__name__}")
            except Exception as e:  # fails only this request
                plan.results[i] = e
        return plan

    def _embed_images(self, images: list[Any]) -> Any:
        import torch

        parts = []
        for start in range(0, len(images), FORWARD_CHUNK):
            inputs = self._processor(images=images[start:start + FORWARD_CHUNK], return_tensors="pt")
            with torch.inference_mode():
                parts.append(_features(self._model.get_image_features(pixel_values=self._to_device(inputs)[
                    "pixel_values"])).float().cpu())
        return _normalise(torch.cat(parts) if parts else torch.zeros(0, 0))

    def _embed_texts(self, texts: list[str]) -> Any:
        import torch

        parts = []
        for start in range(0, len(texts), FORWARD_CHUNK):
            inputs = self._processor(text=texts[start:start + FORWARD_CHUNK], return_tensors="pt", padding=True,
                                     truncation=True)
            with torch.inference_mode():
                parts.append(_features(self._model.get_text_features(**self._to_device(inputs))).float().cpu())
        return _normalise(torch.cat(parts) if parts else torch.zeros(0, 0))


def _normalise(matrix: Any) -> Any:
    return matrix / matrix.norm(dim=-1, keepdim=True).clamp(min=1e-12) if matrix.numel() else matrix


class DetectEngine(_TransformersEngine):
    """OWL-ViT or OWLv2 text-queried detection: `DetectRequest` -> `Detection`.

    The batch's images run in one forward, each against its own labels (queries padded to the longest
    list and masked out). Boxes above the request's threshold are clipped to the image, suppressed per
    label (IoU > 0.3, `torch_compat.nms`), and the best `max_boxes` kept and drawn into `annotated`.
    """

    name = "detect"

    def __init__(self, model: str = "google/owlvit-base-patch32", device: str = "auto", dtype: str = "auto",
                 local_files_only: bool | None = None, memory_mb: int = 0, model_name: str | None = None,
                 max_boxes: int = MAX_BOXES) -> None:
        super().__init__(model, device, dtype, local_files_only, memory_mb, model_name)
        self.max_boxes = max_boxes

    def _auto_model(self) -> Any:
        from transformers import AutoModelForZeroShotObjectDetection

        return AutoModelForZeroShotObjectDetection

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        if self._model is None:
            self.load()
        results: list[Any] = [None] * len(batch)
        jobs: list[tuple[int, Any, list[str], float]] = []
        for i, request in enumerate(batch):
            payload = request.payload
            try:
                if not isinstance(payload, DetectRequest):
                    raise TypeError(f"the detect engine takes DetectRequest, not {type(payload).__name__}")
                labels = [label.strip() for label in payload.labels if label.strip()]
                if not labels:
                    raise ImageEngineError("image_no_labels")
                jobs.append((i, decode_image(payload.image), labels, float(payload.threshold)))
            except Exception as e:  # fails only this request
                results[i] = e
        if not jobs:
            return results
        try:
            with self._lock:
                found = self._detect([(image, labels, threshold) for _, image, labels, threshold in jobs])
            for (i, image, labels, _), boxes in zip(jobs, found, strict=True):
                results[i] = Detection(boxes=boxes, annotated=annotate(image, boxes, labels), model=self.model)
        except Exception as e:  # the model failed: every request still waiting fails with it
            for i, *_ in jobs:
                if results[i] is None:
                    results[i] = e
        return results

    def _detect(self, jobs: list[tuple[Any, list[str], float]]) -> list[list[Box]]:
        import torch

        from engines.torch_compat import nms

        images = [image for image, _, _ in jobs]
        queries = max(len(labels) for _, labels, _ in jobs)
        text = [labels + [" "] * (queries - len(labels)) for _, labels, _ in jobs]
        inputs = self._processor(images=images, text=text, return_tensors="pt", truncation=True)
        with torch.no_grad():  # not inference_mode: the logits are masked in place below
            outputs = self._model(**self._to_device(inputs))
        logits = outputs.logits.float()
        for row, (_, labels, _) in enumerate(jobs):
            logits[row, :, len(labels):] = float("-inf")  # the padding queries never win
        outputs.logits = logits.cpu()
        outputs.pred_boxes = outputs.pred_boxes.float().cpu()
        # OWLv2 pads every image to a square at the bottom and right: its boxes are relative to that square.
        square = self._model.config.model_type == "owlv2"
        sizes = [(max(im.height, im.width),) * 2 if square else (im.height, im.width) for im in images]
        found: list[list[Box]] = []
        for row, (image, labels, threshold) in enumerate(jobs):
            result = self._processor.image_processor.post_process_object_detection(
                outputs=_Row(outputs, row), threshold=threshold, target_sizes=[sizes[row]])[0]
            boxes = result["boxes"].clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
            scores, label_ids = result["scores"], result["labels"]
            kept: list[Box] = []
            for label_id in label_ids.unique().tolist():
                index = (label_ids == label_id).nonzero().flatten()
                for k in nms(boxes[index], scores[index], NMS_IOU).tolist():
                    j = int(index[k])
                    x0, y0, x1, y1 = (float(v) for v in boxes[j].tolist())
                    kept.append(Box(label=labels[label_id], score=float(scores[j]), box=(x0, y0, x1, y1)))
            kept.sort(key=lambda b: b.score, reverse=True)
            found.append(kept[:self.max_boxes])
        return found


class _Row:
    """One image's slice of a batched detection output, as `post_process_object_detection` reads it."""

    def __init__(self, outputs: Any, row: int) -> None:
        self.logits = outputs.logits[row:row + 1]
        self.pred_boxes = outputs.pred_boxes[row:row + 1]


def annotate(image: Any, boxes: list[Box], labels: list[str]) -> bytes:
    """The image with each box outlined in its label's colour and captioned "label 0.87", as PNG."""
    from PIL import ImageDraw, ImageFont

    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(canvas.size) / 250))
    try:
        font: Any = ImageFont.load_default(size=max(10, round(min(canvas.size) / 40)))
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(dict.fromkeys(labels))}
    for box in reversed(boxes):  # the best box is drawn last, on top
        colour = colours.get(box.label, PALETTE[0])
        x0, y0, x1, y1 = box.box
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        caption = f"{box.label} {box.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y0 - th if y0 - th >= 0 else y0  # above the box when there is room, else inside it
        tx = min(max(0.0, x0), max(0.0, canvas.width - tw))
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top), caption, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()

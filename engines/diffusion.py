"""Stable Diffusion: txt2img, img2img, inpaint, the x4 upscaler and ControlNet, with diffusers.

`DiffusionEngine` (the `diffusion` engine) runs synchronously in a worker thread. Requests of a batch that share
a `GenerateRequest.batch_key` run in one pipeline call: prompts repeated `count` times, one CPU generator per image
(seeded `seed + i`, so an image is the same batched or alone). Every model goes through `_load`
(`from_pretrained(path, local_files_only=..., torch_dtype=...)`); the pipelines' safety checker is taken out and run
here per request, so `safety=False` skips it. img2img, inpaint and ControlNet pipelines are made from the base
with `from_pipe` and share its weights. Out of memory, a call is split in halves and retried; an image that fails
alone is `ImageEngineError("image_oom")` and the engine keeps serving.

Error codes (`ImageEngineError.code`): image_not_configured, image_unknown_model, image_unknown_lora,
image_bad_scheduler, image_unreadable, image_mask_size, image_oom, image_cancelled.
"""

from __future__ import annotations

import gc
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import EngineError
from engines.base import EngineRequest
from engines.image_types import (
    CONTROL_TYPES,
    SCHEDULERS,
    GeneratedImage,
    GenerateRequest,
    GenerateResult,
    ImageEngineError,
    Preview,
)

log = logging.getLogger(__name__)

SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
assert set(SCHEDULER_CLASSES) == set(SCHEDULERS)

# SD 1.x latents (4 channels) to RGB in [-1, 1], a linear fit of the VAE decoder: cheap previews.
LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
INPAINT_KEY, UPSCALER_KEY = "<inpaint>", "<upscaler>"  # LRU keys of the two extra checkpoints


class _Cancelled(Exception):
    """Raised from the upscaler's step callback (that pipeline has no interrupt flag)."""


@dataclass
class _Loaded:
    """A base pipeline, its safety checker (taken out of it) and what hangs off it."""

    name: str
    pipe: Any
    checker: Any = None
    extractor: Any = None
    scheduler: Any = None  # the checkpoint's own scheduler
    derived: dict[str, Any] = field(default_factory=dict)  # "img2img", "inpaint", "control:canny" -> pipeline
    loras: set[str] = field(default_factory=set)


@dataclass
class _Slot:
    """One image of a pipeline call."""

    request: int  # index in the group
    seed: int
    prompt: str
    negative: str
    image: Any = None  # PIL input (img2img, inpaint, upscale) or control map
    mask: Any = None


def _is_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes | None, what: str = "image") -> Any:
    """Encoded bytes to an RGB PIL image; `ImageEngineError("image_unreadable")` when missing or corrupt."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageEngineError("image_unreadable", f"no {what}")
    try:
        image: Any = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise ImageEngineError("image_unreadable", what) from None


def latents_preview(latents: Any, size: int) -> bytes:
    """One image's latents (4, h, w) to a small PNG through `LATENT_RGB_FACTORS` (longest side `size`)."""
    import torch
    from PIL import Image

    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32)
    values = latents[:4].detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", values, factors[: values.shape[0]])
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    return _png(image)


class DiffusionEngine:
    """The `diffusion` engine: Stable Diffusion pipelines on one device, in a thread worker.

    `models`: name -> hub id or diffusers folder (the first is the default); `model`: one model named "default".
    `inpaint_model`, `upscaler`: optional dedicated checkpoints; `controlnets`: control type -> ControlNet;
    `detectors`: "openpose"/"scribble" -> controlnet_aux annotator weights; `loras`: name -> folder, file or hub id.
    `max_loaded`: base pipelines kept (LRU). `local_files_only` None: True for paths that exist on disk.
    """

    name = "diffusion"

    def __init__(self, models: dict[str, str] | None = None, model: str | None = None,
                 inpaint_model: str | None = None, upscaler: str | None = None,
                 controlnets: dict[str, str] | None = None, detectors: dict[str, str] | None = None,
                 loras: dict[str, str] | None = None, safety_checker: bool = True, device: str = "auto",
                 dtype: str = "auto", attention_slicing: bool | None = None, cpu_offload: bool = False,
                 local_files_only: bool | None = None, max_loaded: int = 2, preview_size: int = 64,
                 max_steps: int = 100, memory_mb: int = 0) -> None:
        self.models: dict[str, str] = dict(models or {})
        if model:
            self.models.setdefault("default", model)
        self.inpaint_model, self.upscaler = inpaint_model, upscaler
        self.controlnets = dict(controlnets or {})
        self.detectors = dict(detectors or {})
        self.loras = dict(loras or {})
        self.safety_checker = safety_checker
        self.device_option, self.dtype_option = device, dtype
        self.attention_slicing, self.cpu_offload = attention_slicing, cpu_offload
        self.local_files_only = local_files_only
        self.max_loaded = max(1, max_loaded)
        self.preview_size, self.max_steps = preview_size, max(1, max_steps)
        self.memory_mb = memory_mb or 4500  # SD 1.5 in fp16 with a ControlNet; no torch import to work it out
        self._device: str | None = None
        self._dtype: Any = None
        self._pipes: OrderedDict[str, _Loaded] = OrderedDict()
        self._controlnets: dict[str, Any] = {}
        self._detectors: dict[str, Any] = {}

    @property
    def default_model(self) -> str | None:
        return next(iter(self.models), None)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self._device is not None:
            return
        from engines.torch_compat import prepare

        prepare()
        import torch

        device = self.device_option
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype_option
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        self._dtype = getattr(torch, dtype)
        self._device = device

    def load(self) -> None:
        """Pick the device and load the default model (other models, modes and detectors load on first use)."""
        self._setup()
        if self.default_model is not None:
            self._base(self.default_model)

    def unload(self) -> None:
        self._pipes.clear()
        self._controlnets.clear()
        self._detectors.clear()
        self._free()

    def _free(self) -> None:
        gc.collect()
        if self._device and self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- loading ------------------------------------------------------------------------------------------------
    def _local(self, path: str) -> bool:
        return self.local_files_only if self.local_files_only is not None else Path(path).exists()

    def _load(self, cls: Any, path: str, **kwargs: Any) -> Any:
        """`cls.from_pretrained(path, local_files_only=..., dtype=...)`: how every model and pipeline is loaded.

        (`dtype` is diffusers 0.36+'s name for `torch_dtype`, which now warns as deprecated.)"""
        self._setup()
        try:
            return cls.from_pretrained(path, local_files_only=self._local(path), dtype=self._dtype, **kwargs)
        except (OSError, ValueError) as e:
            raise EngineError(f"could not load {path}: {e}") from e

    def _place(self, pipe: Any) -> Any:
        """Move a pipeline to the device (or set up CPU offload) and attention slicing."""
        if self.cpu_offload and self._device != "cpu":
            pipe.enable_model_cpu_offload(device=self._device)
        else:
            pipe.to(self._device)
        slicing = self.attention_slicing
        if slicing is None and self._device and self._device.startswith("cuda"):
            import torch

            slicing = torch.cuda.get_device_properties(self._device).total_memory < 8 * 2**30
        if slicing:
            pipe.enable_attention_slicing()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _load_pipeline(self, key: str, cls: Any, path: str) -> _Loaded:
        kwargs: dict[str, Any] = {} if self.safety_checker else {"safety_checker": None}
        pipe = self._load(cls, path, **kwargs)
        checker = getattr(pipe, "safety_checker", None)
        extractor = getattr(pipe, "feature_extractor", None)
        if checker is not None:
            pipe.register_modules(safety_checker=None)  # run by the engine, per request
            pipe.register_to_config(requires_safety_checker=False)
            if extractor is None:
                checker = None
            else:
                import torch

                on_cpu = self._device == "cpu" or self.cpu_offload
                checker = checker.to("cpu" if on_cpu else self._device,
                                     dtype=torch.float32 if on_cpu else self._dtype).eval()
        self._place(pipe)
        return _Loaded(name=key, pipe=pipe, checker=checker, extractor=extractor, scheduler=pipe.scheduler)

    def _cached(self, key: str, make: Callable[[], _Loaded]) -> _Loaded:
        loaded = self._pipes.get(key)
        if loaded is not None:
            self._pipes.move_to_end(key)
            return loaded
        while len(self._pipes) >= self.max_loaded:
            dropped, _ = self._pipes.popitem(last=False)
            log.info("diffusion: unloading %s", dropped)
            self._free()
        log.info("diffusion: loading %s", key)
        loaded = make()
        self._pipes[key] = loaded
        return loaded

    def _base(self, name: str) -> _Loaded:
        from diffusers import AutoPipelineForText2Image

        return self._cached(name, lambda: self._load_pipeline(name, AutoPipelineForText2Image, self.models[name]))

    def _controlnet(self, kind: str) -> Any:
        if kind not in self._controlnets:
            from diffusers import ControlNetModel

            model = self._load(ControlNetModel, self.controlnets[kind])
            if not self.cpu_offload:
                model = model.to(self._device)
            self._controlnets[kind] = model
        return self._controlnets[kind]

    def _detector(self, kind: str) -> Any:
        """The controlnet_aux annotator of a control type (Canny needs no weights)."""
        if kind in self._detectors:
            return self._detectors[kind]
        self._setup()
        from controlnet_aux import CannyDetector, HEDdetector, OpenposeDetector

        if kind == "canny":
            detector: Any = CannyDetector()
        else:
            path = self.detectors.get(kind)
            if not path:
                raise ImageEngineError("image_not_configured", f"detector {kind}")
            cls = OpenposeDetector if kind == "openpose" else HEDdetector
            try:
                detector = cls.from_pretrained(path, local_files_only=self._local(path))
            except (OSError, ValueError, RuntimeError) as e:
                raise EngineError(f"could not load the {kind} detector from {path}: {e}") from e
            detector = detector.to("cpu" if self.cpu_offload else self._device)
        self._detectors[kind] = detector
        return detector

    def _pipeline(self, request: GenerateRequest) -> tuple[_Loaded, Any, str]:
        """(the loaded base, the pipeline to call, the model name to report) for a group's mode and model."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

        self._setup()
        if request.mode == "upscale":
            upscaler = self.upscaler
            if not upscaler:
                raise ImageEngineError("image_not_configured", "upscaler")
            from diffusers import StableDiffusionUpscalePipeline

            loaded = self._cached(UPSCALER_KEY, lambda: self._load_pipeline(
                UPSCALER_KEY, StableDiffusionUpscalePipeline, upscaler))
            return loaded, loaded.pipe, "upscaler"
        if not self.models:
            raise ImageEngineError("image_not_configured", "models")
        name = request.model or self.default_model
        assert name is not None
        if name not in self.models:
            raise ImageEngineError("image_unknown_model", name)
        inpaint_model = self.inpaint_model
        if request.mode == "inpaint" and inpaint_model and request.model is None:
            loaded = self._cached(INPAINT_KEY, lambda: self._load_pipeline(
                INPAINT_KEY, AutoPipelineForInpainting, inpaint_model))
            return loaded, loaded.pipe, "inpaint"
        if request.mode == "control":
            kind = request.control
            if kind not in CONTROL_TYPES or kind not in self.controlnets:
                raise ImageEngineError("image_not_configured", f"controlnet {kind}")
            controlnet = self._controlnet(kind)
        loaded = self._base(name)
        if request.mode == "txt2img":
            return loaded, loaded.pipe, name
        key = f"control:{request.control}" if request.mode == "control" else request.mode
        if key not in loaded.derived:
            if request.mode == "img2img":
                pipe = AutoPipelineForImage2Image.from_pipe(loaded.pipe)
            elif request.mode == "inpaint":
                pipe = AutoPipelineForInpainting.from_pipe(loaded.pipe)
            elif request.mode == "control":
                pipe = AutoPipelineForText2Image.from_pipe(loaded.pipe, controlnet=controlnet)
            else:
                raise ImageEngineError("image_not_configured", str(request.mode))
            if self.cpu_offload and self._device != "cpu":
                pipe.enable_model_cpu_offload(device=self._device)
            pipe.set_progress_bar_config(disable=True)
            loaded.derived[key] = pipe
        return loaded, loaded.derived[key], name

    def _scheduler(self, loaded: _Loaded, name: str | None) -> Any:
        if name is None:
            return loaded.scheduler
        if name not in SCHEDULER_CLASSES:
            raise ImageEngineError("image_bad_scheduler", name)
        import diffusers

        extra = {"skip_prk_steps": True} if name == "pndm" else {}  # as SD 1.x ships it; Runge-Kutta needs many steps
        return getattr(diffusers, SCHEDULER_CLASSES[name]).from_config(loaded.scheduler.config, **extra)

    def _lora(self, loaded: _Loaded, pipe: Any, name: str | None, scale: float) -> None:
        if name is None:
            if loaded.loras:
                pipe.disable_lora()
            return
        if name not in loaded.loras:
            path = self.loras[name]
            loaded.pipe.load_lora_weights(path, adapter_name=name, local_files_only=self._local(path))
            loaded.loras.add(name)
        pipe.enable_lora()
        pipe.set_adapters([name], [scale])

    # -- running ------------------------------------------------------------------------------------------------
    def run(self, batch: list[EngineRequest]) -> list[Any]:
        """One result per request: a `GenerateResult`, or the exception that failed it."""
        results: list[Any] = [None] * len(batch)
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, request in enumerate(batch):
            if not isinstance(request.payload, GenerateRequest):
                results[index] = TypeError(f"diffusion takes a GenerateRequest, not {type(request.payload).__name__}")
                continue
            groups.setdefault(request.payload.batch_key, []).append(index)
        for indices in groups.values():
            try:
                outcomes = self._run_group([batch[i] for i in indices])
            except Exception as e:  # fails the group, not the engine
                if _is_oom(e):
                    e = ImageEngineError("image_oom")
                outcomes = [e] * len(indices)
                self._free()
            for index, outcome in zip(indices, outcomes, strict=True):
                results[index] = outcome
        return results

    def _inputs(self, payload: GenerateRequest, width: int, height: int) -> tuple[Any, Any, bytes | None]:
        """(input image, mask, control map PNG) of one request, decoded and sized for its mode."""
        from PIL import Image

        if payload.mode == "txt2img":
            return None, None, None
        image = decode_image(payload.image)
        if payload.mode == "upscale":
            w, h = max(8, image.width // 8 * 8), max(8, image.height // 8 * 8)
            return (image if image.size == (w, h) else image.resize((w, h), Image.Resampling.LANCZOS)), None, None
        mask = None
        if payload.mode == "inpaint":
            mask = decode_image(payload.mask, "mask")
            if mask.size != image.size:
                raise ImageEngineError("image_mask_size", f"{mask.width}x{mask.height} vs {image.width}x{image.height}")
            mask = mask.convert("L").resize((width, height), Image.Resampling.NEAREST)
        control_map = None
        if payload.mode == "control" and payload.control_detect:
            assert payload.control is not None
            detector = self._detector(payload.control)
            resolution = max(64, min(width, height))
            image = detector(image, detect_resolution=resolution, image_resolution=resolution,
                             **({"scribble": True} if payload.control == "scribble" else {}))
            if not isinstance(image, Image.Image):
                image = Image.fromarray(image)
            image = image.convert("RGB")
        image = image.resize((width, height), Image.Resampling.LANCZOS) if image.size != (width, height) else image
        if payload.mode == "control":
            control_map = _png(image)
        return image, mask, control_map

    def _run_group(self, requests: list[EngineRequest]) -> list[Any]:
        started = time.perf_counter()
        first: GenerateRequest = requests[0].payload
        width, height = max(64, first.width // 8 * 8), max(64, first.height // 8 * 8)
        steps = max(1, min(first.steps, self.max_steps))
        if first.lora is not None and first.lora not in self.loras:
            raise ImageEngineError("image_unknown_lora", first.lora)
        if first.scheduler is not None and first.scheduler not in SCHEDULER_CLASSES:
            raise ImageEngineError("image_bad_scheduler", first.scheduler)
        loaded, pipe, model_name = self._pipeline(first)
        pipe.scheduler = self._scheduler(loaded, first.scheduler)
        if first.mode != "upscale":
            self._lora(loaded, pipe, first.lora, first.lora_scale)

        outcomes: list[Any] = [None] * len(requests)
        maps: list[bytes | None] = [None] * len(requests)
        slots: list[_Slot] = []
        for index, request in enumerate(requests):
            payload: GenerateRequest = request.payload
            try:
                image, mask, maps[index] = self._inputs(payload, width, height)
            except ImageEngineError as e:
                outcomes[index] = e
                continue
            for i in range(max(1, payload.count)):
                slots.append(_Slot(index, payload.seed + i, payload.prompt, payload.negative, image, mask))

        images: list[Any] = []
        split = False
        buckets: dict[object, list[_Slot]] = {}
        for slot in slots:  # upscale inputs keep their own size: one call per size
            buckets.setdefault(slot.image.size if slot.image is not None else None, []).append(slot)
        done: list[tuple[_Slot, Any]] = []
        for bucket in buckets.values():
            images, did_split = self._call_split(pipe, first, steps, width, height, requests, bucket)
            split = split or did_split
            done.extend(zip(bucket, images, strict=True))
        self._check_safety(loaded, requests, done)

        notes = ["batch split after out-of-memory"] if split else []
        seconds = time.perf_counter() - started
        for index, request in enumerate(requests):
            if outcomes[index] is not None:
                continue
            mine = [(slot, image) for slot, image in done if slot.request == index]
            failed = next((image for _, image in mine if isinstance(image, Exception)), None)
            if request.cancelled():
                outcomes[index] = ImageEngineError("image_cancelled")
            elif failed is not None:
                outcomes[index] = failed
            else:
                outcomes[index] = GenerateResult(
                    images=[image for _, image in mine], model=model_name, mode=first.mode, steps=steps,
                    seconds=seconds, batch_size=len(requests), control_map=maps[index], notes=list(notes))
        return outcomes

    def _call_split(self, pipe: Any, first: GenerateRequest, steps: int, width: int, height: int,
                    requests: list[EngineRequest], slots: list[_Slot]) -> tuple[list[Any], bool]:
        """Images (np arrays in [0, 1]) or exceptions, one per slot; halves retried after out-of-memory."""
        if all(requests[i].cancelled() for i in {slot.request for slot in slots}):
            return [ImageEngineError("image_cancelled")] * len(slots), False
        try:
            return list(self._call(pipe, first, steps, width, height, requests, slots)), False
        except _Cancelled:
            return [ImageEngineError("image_cancelled")] * len(slots), False
        except Exception as e:
            if not _is_oom(e):
                raise
            log.warning("diffusion: out of memory with %d images", len(slots))
        self._free()  # outside the except block: the traceback's tensors are gone
        if len(slots) == 1:
            return [ImageEngineError("image_oom")], False
        half = (len(slots) + 1) // 2
        head, _ = self._call_split(pipe, first, steps, width, height, requests, slots[:half])
        tail, _ = self._call_split(pipe, first, steps, width, height, requests, slots[half:])
        return head + tail, True

    def _call(self, pipe: Any, first: GenerateRequest, steps: int, width: int, height: int,
              requests: list[EngineRequest], slots: list[_Slot]) -> Any:
        """One pipeline call for `slots`, with progress, previews and cancellation."""
        import torch

        owners = sorted({slot.request for slot in slots})
        offsets = {index: next(i for i, slot in enumerate(slots) if slot.request == index) for index in owners}
        upscale = first.mode == "upscale"

        def on_step(step_index: int, latents: Any) -> bool:
            """Report a finished step; True when every request of the call is cancelled."""
            total = int(getattr(pipe, "_num_timesteps", 0) or steps) if not upscale else steps
            step = step_index + 1
            for index in owners:
                request = requests[index]
                request.progress(min(1.0, step / total), f"step {step}/{total}")
                every = request.payload.preview_every
                if every and step % every == 0 and latents is not None:
                    try:
                        request.emit(Preview(step, total, latents_preview(latents[offsets[index]], self.preview_size)))
                    except Exception:  # a preview never fails the job
                        log.debug("diffusion: preview failed", exc_info=True)
            return all(requests[index].cancelled() for index in owners)

        kwargs: dict[str, Any] = {
            "prompt": [slot.prompt for slot in slots],
            "negative_prompt": [slot.negative for slot in slots],
            "num_inference_steps": steps,
            "guidance_scale": first.guidance,
            "generator": [torch.Generator("cpu").manual_seed(slot.seed) for slot in slots],
            "output_type": "np",
        }
        if upscale:
            def callback(step_index: int, timestep: Any, latents: Any) -> None:
                if on_step(step_index, latents):
                    raise _Cancelled

            kwargs.update(image=[slot.image for slot in slots], callback=callback, callback_steps=1)
        else:
            def callback_on_step_end(p: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if on_step(step_index, tensors.get("latents")):
                    p._interrupt = True  # diffusers skips the remaining steps
                return tensors

            kwargs.update(callback_on_step_end=callback_on_step_end, callback_on_step_end_tensor_inputs=["latents"])
            if first.mode != "img2img":
                kwargs.update(width=width, height=height)
            if first.mode in ("img2img", "inpaint"):
                kwargs.update(image=[slot.image for slot in slots], strength=first.strength)
            if first.mode == "inpaint":
                kwargs.update(mask_image=[slot.mask for slot in slots])
            if first.mode == "control":
                kwargs.update(image=[slot.image for slot in slots])
        with torch.inference_mode():
            output = pipe(**kwargs)
        return output.images

    def _check_safety(self, loaded: _Loaded, requests: list[EngineRequest], done: list[tuple[_Slot, Any]]) -> None:
        """Turn each output array of `done` into a `GeneratedImage` in place, withheld when the checker flags it."""
        import numpy as np
        import torch
        from PIL import Image

        checker, extractor = loaded.checker, loaded.extractor
        if checker is None and loaded.name == UPSCALER_KEY:  # the x4 upscaler has none: borrow the default's
            base = self._pipes.get(self.default_model or "")
            checker, extractor = (base.checker, base.extractor) if base else (None, None)
        pictures: list[Any] = [None] * len(done)
        to_check: list[int] = []
        for position, (slot, array) in enumerate(done):
            if isinstance(array, Exception):
                continue
            pictures[position] = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
            if checker is not None and requests[slot.request].payload.safety:
                to_check.append(position)
        flagged: set[int] = set()
        if to_check:
            parameter = next(checker.parameters())
            clip = extractor([pictures[p] for p in to_check], return_tensors="pt").pixel_values
            with torch.inference_mode():
                _, flags = checker(images=np.stack([done[p][1] for p in to_check]),
                                   clip_input=clip.to(parameter.device, dtype=parameter.dtype))
            flagged = {p for p, flag in zip(to_check, flags, strict=True) if flag}
        for position, (slot, array) in enumerate(done):
            if isinstance(array, Exception):
                continue
            picture = pictures[position]
            withheld = position in flagged
            done[position] = (slot, GeneratedImage(png=b"" if withheld else _png(picture), seed=slot.seed,
                                                   width=picture.width, height=picture.height, withheld=withheld))

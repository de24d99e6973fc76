"""The tiny random-weight image models (built once per test session) and the engines that load them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.settings import EngineSettings
from tests.support import tiny_models, tiny_vision


@dataclass(frozen=True)
class TinyModels:
    sd: Path
    flagged: Path
    upscaler: Path
    controlnet: Path
    lora: Path
    openpose: Path
    hed: Path
    clip: Path
    owlvit: Path


def build_tiny_models(root: Path) -> TinyModels:
    sd = tiny_models.tiny_sd(root / "sd")
    return TinyModels(
        sd=sd,
        flagged=tiny_models.tiny_sd(root / "flagged", flag_all=True),
        upscaler=tiny_models.tiny_upscaler(root / "upscaler"),
        controlnet=tiny_models.tiny_controlnet(root / "controlnet", sd),
        lora=tiny_models.tiny_lora(root / "lora", sd),
        openpose=tiny_models.tiny_openpose_annotators(root / "openpose"),
        hed=tiny_models.tiny_hed_annotators(root / "hed"),
        clip=tiny_vision.tiny_clip(root / "clip"),
        owlvit=tiny_vision.tiny_owlvit(root / "owlvit"),
    )


def image_engines(m: TinyModels, **diffusion: Any) -> dict[str, EngineSettings]:
    options = {"models": {"tiny": str(m.sd), "flagged": str(m.flagged)}, "upscaler": str(m.upscaler),
               "controlnets": {"canny": str(m.controlnet), "openpose": str(m.controlnet),
                               "scribble": str(m.controlnet)},
               "detectors": {"openpose": str(m.openpose), "scribble": str(m.hed)},
               "loras": {"ink": str(m.lora)}, "device": "cpu"}
    options.update(diffusion)
    return {
        "diffusion": EngineSettings(impl="engines.diffusion:DiffusionEngine", max_batch=4, batch_wait_ms=400,
                                    timeout_s=120, options=options),
        "clip": EngineSettings(impl="engines.vision:ClipEngine", max_batch=16, batch_wait_ms=5,
                               options={"model": str(m.clip), "device": "cpu"}),
        "detect": EngineSettings(impl="engines.vision:DetectEngine", options={"model": str(m.owlvit), "device": "cpu"}),
    }

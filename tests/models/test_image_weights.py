"""Real image weights, when an operator configures them (marker `weights`; hub ids or folders in the environment).

    SD_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5 CLIP_MODEL=openai/clip-vit-base-patch32 \\
    OWLVIT_MODEL=google/owlvit-base-patch32 IMAGE_DEVICE=cuda .venv/bin/pytest -m weights tests/models
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engines.base import EngineRequest
from engines.image_types import Classification, ClassifyRequest, DetectRequest, GenerateRequest, GenerateResult

pytestmark = pytest.mark.weights
DEVICE = os.environ.get("IMAGE_DEVICE", "cpu")


def red_circle() -> bytes:
    image = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(image).ellipse((40, 40, 184, 184), fill=(220, 20, 20))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.skipif(not os.environ.get("SD_MODEL"), reason="set SD_MODEL to a Stable Diffusion hub id or folder")
def test_real_stable_diffusion_draws_what_was_asked() -> None:
    from engines.diffusion import DiffusionEngine

    engine = DiffusionEngine(models={"sd": os.environ["SD_MODEL"]}, device=DEVICE)
    request = GenerateRequest(prompt="a plain bright red square on a white background", width=512, height=512,
                              steps=20, seed=1, safety=False)
    [result] = engine.run([EngineRequest(request)])
    assert isinstance(result, GenerateResult), result
    pixels = np.asarray(Image.open(io.BytesIO(result.images[0].png)).convert("RGB"), dtype=np.float32)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    assert red.mean() > 0.05  # a real model draws red; noise would not


@pytest.mark.skipif(not os.environ.get("CLIP_MODEL"), reason="set CLIP_MODEL to a CLIP hub id or folder")
def test_real_clip_tells_a_red_circle_from_a_dog() -> None:
    from engines.vision import ClipEngine

    engine = ClipEngine(model=os.environ["CLIP_MODEL"], device=DEVICE)
    [result] = engine.run([EngineRequest(ClassifyRequest(red_circle(), ("a red circle", "a dog", "a car")))])
    assert isinstance(result, Classification), result
    assert result.scores[0][0] == "a red circle"


@pytest.mark.skipif(not os.environ.get("OWLVIT_MODEL"), reason="set OWLVIT_MODEL to an OWL-ViT hub id or folder")
def test_real_owlvit_boxes_the_circle() -> None:
    from engines.vision import DetectEngine

    engine = DetectEngine(model=os.environ["OWLVIT_MODEL"], device=DEVICE)
    [result] = engine.run([EngineRequest(DetectRequest(red_circle(), ("a red circle",), threshold=0.05))])
    assert not isinstance(result, Exception), result
    x0, y0, x1, y1 = result.boxes[0].box
    assert x0 < 112 < x1 and y0 < 112 < y1

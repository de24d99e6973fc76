"""DiffusionEngine on tiny random-weight Stable Diffusion models built on disk (no downloads).

Outputs are noise; these tests check behaviour: modes and sizes, batching and seeds, progress, previews,
cancellation, out-of-memory splitting, the safety checker, LoRA, detectors and loading from folders.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.base import EngineRequest
from engines.image_types import ControlType, GeneratedImage, GenerateRequest, GenerateResult, ImageEngineError, Preview
from engines.torch_compat import prepare
from tests.support import tiny_models

prepare()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from PIL import Image  # noqa: E402

from engines.diffusion import DiffusionEngine  # noqa: E402

SIZE: dict[str, Any] = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_sd")
    sd = tiny_models.tiny_sd(root / "sd")
    return {
        "sd": sd,
        "flag": tiny_models.tiny_sd(root / "flag", flag_all=True),
        "upscaler": tiny_models.tiny_upscaler(root / "upscaler"),
        "controlnet": tiny_models.tiny_controlnet(root / "controlnet", sd),
        "lora": tiny_models.tiny_lora(root / "style.safetensors", sd),
        "openpose": tiny_models.tiny_openpose_annotators(root / "openpose"),
        "hed": tiny_models.tiny_hed_annotators(root / "hed"),
    }


@pytest.fixture(scope="module")
def engine(tiny: dict[str, Path]) -> Iterator[DiffusionEngine]:
    engine = DiffusionEngine(
        models={"sd": str(tiny["sd"]), "flag": str(tiny["flag"])}, upscaler=str(tiny["upscaler"]),
        controlnets={kind: str(tiny["controlnet"]) for kind in ("canny", "openpose", "scribble")},
        detectors={"openpose": str(tiny["openpose"]), "scribble": str(tiny["hed"])},
        loras={"style": str(tiny["lora"])}, max_loaded=3)
    engine.load()
    yield engine
    engine.unload()


def picture(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """A random RGB PNG with some structure (blocks), so edge detectors find edges."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def size_of(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def run_one(engine: DiffusionEngine, payload: GenerateRequest, **hooks: Any) -> Any:
    return engine.run([EngineRequest(payload, **hooks)])[0]


def ok(result: Any) -> GenerateResult:
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, GenerateResult)
    return result


def pngs(result: Any) -> list[bytes]:
    return [image.png for image in ok(result).images]


def assert_same_pictures(one: list[bytes], two: list[bytes]) -> None:
    """Equal up to float rounding: CPU kernels sum in a different order for another batch size, which moves a
    few pixels by one level (the noise is the same: other seeds differ everywhere)."""
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        x = np.asarray(Image.open(io.BytesIO(a))).astype(int)
        y = np.asarray(Image.open(io.BytesIO(b))).astype(int)
        difference = np.abs(x - y)
        assert x.shape == y.shape and difference.max() <= 2 and (difference > 0).mean() < 0.01


@pytest.fixture
def count_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Prompts per StableDiffusionPipeline call (the txt2img pipeline), recorded by a wrapped __call__."""
    calls: list[int] = []
    original = StableDiffusionPipeline.__call__

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["prompt"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", wrapped)
    return calls


# -- modes --------------------------------------------------------------------------------------------------
def test_txt2img_sizes_seeds_and_rounding(engine: DiffusionEngine) -> None:
    result = ok(run_one(engine, GenerateRequest("a red cat", width=70, height=100, steps=2, seed=3, count=2)))
    assert [(i.width, i.height, i.seed) for i in result.images] == [(64, 96, 3), (64, 96, 4)]
    assert all(size_of(i.png) == (64, 96) and not i.withheld for i in result.images)
    assert result.images[0].png != result.images[1].png
    assert (result.model, result.mode, result.steps, result.batch_size, result.notes) == ("sd", "txt2img", 2, 1, [])


def test_img2img_and_inpaint(engine: DiffusionEngine) -> None:
    image = picture(seed=1)
    img2img = ok(run_one(engine, GenerateRequest("x", mode="img2img", image=image, steps=4, strength=0.5, **SIZE)))
    assert size_of(img2img.images[0].png) == (64, 64) and img2img.mode == "img2img"
    mask = picture(seed=2)
    inpaint = ok(run_one(engine, GenerateRequest("x", mode="inpaint", image=image, mask=mask, steps=2, **SIZE)))
    assert size_of(inpaint.images[0].png) == (64, 64) and inpaint.mode == "inpaint"
    wrong = run_one(engine, GenerateRequest("x", mode="inpaint", image=image, mask=picture(32, 32), steps=2, **SIZE))
    assert isinstance(wrong, ImageEngineError) and wrong.code == "image_mask_size" and wrong.detail == "32x32 vs 64x64"


def test_upscale_is_four_times_the_input(engine: DiffusionEngine) -> None:
    result = ok(run_one(engine, GenerateRequest("x", mode="upscale", image=picture(16, 24), steps=2)))
    assert [(i.width, i.height) for i in result.images] == [(64, 96)]
    assert size_of(result.images[0].png) == (64, 96) and result.model == "upscaler"


@pytest.mark.parametrize("kind", ["canny", "openpose", "scribble"])
def test_controlnet_with_detector(engine: DiffusionEngine, kind: ControlType) -> None:
    payload = GenerateRequest("x", mode="control", control=kind, image=picture(96, 96, seed=4), steps=2, **SIZE)
    result = ok(run_one(engine, payload))
    assert result.control_map is not None and size_of(result.control_map) == (64, 64)
    assert size_of(result.images[0].png) == (64, 64)
    if kind == "canny":  # the blocks have edges; Canny finds them
        assert np.asarray(Image.open(io.BytesIO(result.control_map))).max() == 255
    given = ok(run_one(engine, GenerateRequest("x", mode="control", control=kind, image=result.control_map,
                                               control_detect=False, steps=2, **SIZE)))
    assert given.images[0].png == result.images[0].png  # the map given directly: same image


def test_control_changes_the_image(engine: DiffusionEngine) -> None:
    base: dict[str, Any] = {"mode": "control", "control": "canny", "control_detect": False, "steps": 2, **SIZE}
    one = ok(run_one(engine, GenerateRequest("x", image=picture(seed=5), **base)))
    two = ok(run_one(engine, GenerateRequest("x", image=picture(seed=6), **base)))
    assert one.images[0].png != two.images[0].png


def test_all_schedulers_and_unknown_one(engine: DiffusionEngine) -> None:
    for name in ("ddim", "euler", "euler_a", "dpm", "pndm", "lms", "unipc"):
        assert size_of(ok(run_one(engine, GenerateRequest("x", scheduler=name, steps=2, **SIZE))).images[0].png)
    bad = run_one(engine, GenerateRequest("x", scheduler="warp", steps=2, **SIZE))
    assert isinstance(bad, ImageEngineError) and (bad.code, bad.detail) == ("image_bad_scheduler", "warp")
    default = pngs(run_one(engine, GenerateRequest("x", steps=2, **SIZE)))  # the checkpoint's own is restored
    assert default == pngs(run_one(engine, GenerateRequest("x", scheduler=None, steps=2, **SIZE)))


def test_configuration_errors(engine: DiffusionEngine, tiny: dict[str, Path]) -> None:
    unknown = run_one(engine, GenerateRequest("x", model="nope", steps=2, **SIZE))
    assert isinstance(unknown, ImageEngineError) and (unknown.code, unknown.detail) == ("image_unknown_model", "nope")
    bare = DiffusionEngine(models={"sd": str(tiny["sd"])})
    for payload, detail in [(GenerateRequest("x", mode="upscale", image=picture()), "upscaler"),
                            (GenerateRequest("x", mode="control", control="canny", image=picture()),
                             "controlnet canny")]:
        error = run_one(bare, payload)
        assert isinstance(error, ImageEngineError) and (error.code, error.detail) == ("image_not_configured", detail)
    error = run_one(DiffusionEngine(), GenerateRequest("x"))
    assert isinstance(error, ImageEngineError) and (error.code, error.detail) == ("image_not_configured", "models")


def test_corrupt_input_fails_only_that_request(engine: DiffusionEngine) -> None:
    good = GenerateRequest("x", mode="img2img", image=picture(), steps=2, **SIZE)
    bad = GenerateRequest("x", mode="img2img", image=b"\x89PNG\r\n\x1a\nbroken", steps=2, **SIZE)
    results = engine.run([EngineRequest(good), EngineRequest(bad)])
    assert isinstance(results[1], ImageEngineError) and results[1].code == "image_unreadable"
    assert ok(results[0]).images[0].png


# -- LoRA -----------------------------------------------------------------------------------------------------
def test_lora_changes_output_and_is_switched_off_again(engine: DiffusionEngine) -> None:
    payload = GenerateRequest("x", steps=2, seed=11, **SIZE)
    plain = pngs(run_one(engine, payload))
    styled = pngs(run_one(engine, GenerateRequest("x", steps=2, seed=11, lora="style", **SIZE)))
    assert styled != plain
    assert pngs(run_one(engine, GenerateRequest("x", steps=2, seed=11, lora="style", **SIZE))) == styled
    half = pngs(run_one(engine, GenerateRequest("x", steps=2, seed=11, lora="style", lora_scale=0.3, **SIZE)))
    assert half not in (plain, styled)
    assert pngs(run_one(engine, payload)) == plain  # disabled for requests without one
    unknown = run_one(engine, GenerateRequest("x", steps=2, lora="nope", **SIZE))
    assert isinstance(unknown, ImageEngineError) and (unknown.code, unknown.detail) == ("image_unknown_lora", "nope")


# -- batching and seeds -----------------------------------------------------------------------------------------
def test_same_seed_same_bytes_and_batched_equals_alone(engine: DiffusionEngine, count_calls: list[int]) -> None:
    first = GenerateRequest("a boat", steps=3, seed=21, count=2, **SIZE)
    alone = pngs(run_one(engine, first))
    assert pngs(run_one(engine, first)) == alone
    other = GenerateRequest("a house", negative="blurry", steps=3, seed=5, **SIZE)
    batched = engine.run([EngineRequest(other), EngineRequest(first)])
    assert count_calls == [2, 2, 3]
    assert ok(batched[1]).batch_size == 2
    assert_same_pictures(pngs(batched[1]), alone)
    assert_same_pictures(pngs(batched[0]), pngs(run_one(engine, other)))
    other_seed = np.asarray(Image.open(io.BytesIO(pngs(run_one(engine, GenerateRequest("a boat", steps=3, seed=22,
                                                                                           **SIZE)))[0])))
    assert (np.asarray(Image.open(io.BytesIO(alone[0]))) != other_seed).mean() > 0.5


def test_batch_key_groups_calls(engine: DiffusionEngine, count_calls: list[int]) -> None:
    same = [GenerateRequest(f"prompt {i}", steps=2, seed=i, **SIZE) for i in range(4)]
    results = engine.run([EngineRequest(p) for p in same])
    assert count_calls == [4] and all(ok(r).batch_size == 4 for r in results)
    count_calls.clear()
    mixed = [GenerateRequest("a", steps=2, **SIZE), GenerateRequest("b", steps=3, **SIZE),
             GenerateRequest("c", steps=2, **SIZE), GenerateRequest("d", steps=2, guidance=3.0, **SIZE)]
    results = engine.run([EngineRequest(p) for p in mixed])
    assert sorted(count_calls) == [1, 1, 2] and [ok(r).batch_size for r in results] == [2, 1, 2, 1]


# -- progress, previews, cancel -------------------------------------------------------------------------------
def test_progress_and_previews(engine: DiffusionEngine) -> None:
    progress: list[tuple[float, str]] = []
    previews: list[Any] = []
    result = ok(run_one(engine, GenerateRequest("x", steps=10, preview_every=4, **SIZE),
                        progress=lambda fraction, note: progress.append((fraction, note)), emit=previews.append))
    assert len(progress) >= 3 and progress[-1] == (1.0, "step 10/10")
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)
    assert [(p.step, p.steps) for p in previews] == [(4, 10), (8, 10)]
    assert all(isinstance(p, Preview) and max(size_of(p.png)) == engine.preview_size for p in previews)
    assert result.images[0].png


def test_cancel_stops_early(engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    unet_calls: list[int] = []
    original = UNet2DConditionModel.forward

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        unet_calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", counting)
    progress: list[float] = []
    result = run_one(engine, GenerateRequest("x", steps=10, **SIZE), progress=lambda f, n: progress.append(f),
                     cancelled=lambda: len(progress) >= 2)
    assert isinstance(result, ImageEngineError) and result.code == "image_cancelled"
    assert len(unet_calls) < 10 and len(progress) < 10
    keep: list[float] = []  # one of two cancelled: the call runs on, the other still gets its images
    results = engine.run([EngineRequest(GenerateRequest("a", steps=4, **SIZE), cancelled=lambda: True),
                          EngineRequest(GenerateRequest("b", steps=4, **SIZE), progress=lambda f, n: keep.append(f))])
    assert isinstance(results[0], ImageEngineError) and ok(results[1]).images and keep[-1] == 1.0


# -- out of memory ------------------------------------------------------------------------------------------------
def test_oom_splits_the_batch(engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = [GenerateRequest(f"p{i}", steps=2, seed=i, count=2 if i == 0 else 1, **SIZE) for i in range(3)]
    expected = [pngs(run_one(engine, p)) for p in payloads]
    calls: list[int] = []
    original = StableDiffusionPipeline.__call__

    def small_only(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", small_only)
    results = [ok(r) for r in engine.run([EngineRequest(p) for p in payloads])]
    assert calls == [4, 2, 1, 1, 2, 1, 1]
    for result, wanted in zip(results, expected, strict=True):
        assert_same_pictures(pngs(result), wanted)
    assert all(r.notes == ["batch split after out-of-memory"] for r in results)


def test_oom_every_time_then_recovers(engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    original = StableDiffusionPipeline.__call__

    def always(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", always)
    results = engine.run([EngineRequest(GenerateRequest("x", steps=2, count=2, **SIZE))])
    assert isinstance(results[0], ImageEngineError) and results[0].code == "image_oom"
    monkeypatch.setattr(StableDiffusionPipeline, "__call__", original)
    assert ok(run_one(engine, GenerateRequest("x", steps=2, **SIZE))).images[0].png


# -- safety ---------------------------------------------------------------------------------------------------
def test_safety_checker_withholds_and_can_be_skipped(engine: DiffusionEngine) -> None:
    flagged = ok(run_one(engine, GenerateRequest("x", model="flag", steps=2, count=2, **SIZE)))
    assert all(i == GeneratedImage(png=b"", seed=i.seed, width=64, height=64, withheld=True) for i in flagged.images)
    skipped = ok(run_one(engine, GenerateRequest("x", model="flag", steps=2, safety=False, **SIZE)))
    assert not skipped.images[0].withheld and size_of(skipped.images[0].png) == (64, 64)
    clean = ok(run_one(engine, GenerateRequest("x", model="sd", steps=2, **SIZE)))
    assert not clean.images[0].withheld
    mixed = engine.run([EngineRequest(GenerateRequest("x", model="flag", steps=2, **SIZE)),
                        EngineRequest(GenerateRequest("y", model="flag", steps=2, safety=False, **SIZE))])
    assert ok(mixed[0]).images[0].withheld and not ok(mixed[1]).images[0].withheld
    assert engine._pipes["flag"].pipe.safety_checker is None  # taken out of the pipeline, run by the engine


# -- loading ----------------------------------------------------------------------------------------------------
def test_loads_from_a_folder_offline(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import AutoPipelineForText2Image

    seen: list[dict[str, Any]] = []
    original = AutoPipelineForText2Image.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, path: Any, **kwargs: Any) -> Any:
        seen.append({"path": path, **kwargs})
        return original(cls, path, **kwargs)

    monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", classmethod(spy))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = DiffusionEngine(model=str(tiny["sd"]), max_loaded=1, safety_checker=False)
    engine.load()
    assert seen == [{"path": str(tiny["sd"]), "local_files_only": True, "dtype": torch.float32,
                     "safety_checker": None}]
    result = ok(run_one(engine, GenerateRequest("x", steps=2, **SIZE)))
    assert result.model == "default" and result.images[0].png
    engine.unload()
    assert not engine._pipes

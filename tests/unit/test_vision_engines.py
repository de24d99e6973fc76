"""CLIP and OWL-ViT engines on tiny random-weight checkpoints loaded from disk: batching, maths, failures, drawing."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest

from bot.errors import EngineUnavailable
from engines.base import EngineRequest
from engines.image_types import (
    Classification,
    ClassifyRequest,
    Detection,
    DetectRequest,
    Embeddings,
    EmbedRequest,
    GenerateRequest,
    ImageEngineError,
)
from engines.vision import MAX_BOXES, TEMPLATE, ClipEngine, DetectEngine
from tests.support.tiny_vision import tiny_clip, tiny_owlvit

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision")
    return {"clip": tiny_clip(root / "tiny-clip"), "owl": tiny_owlvit(root / "tiny-owlvit")}


@pytest.fixture(scope="module")
def clip(folders: dict[str, Path]) -> ClipEngine:
    engine = ClipEngine(str(folders["clip"]), device="cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def detect(folders: dict[str, Path]) -> DetectEngine:
    engine = DetectEngine(str(folders["owl"]), device="cpu")
    engine.load()
    return engine


def png(colour: str | tuple[int, int, int], size: tuple[int, int] = (48, 40), stripe: bool = False) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    if stripe:
        ImageDraw.Draw(image).rectangle((0, 0, size[0] // 3, size[1]), fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def run(engine: Any, *payloads: Any) -> list[Any]:
    return engine.run([EngineRequest(p) for p in payloads])


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_clip(folder: Path, images: list[bytes], texts: list[str]) -> Any:
    """What transformers' own CLIPModel.forward says, for comparison with the engine."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    inputs = processor(images=decoded, text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**inputs)


# -- CLIP -----------------------------------------------------------------------------------------------------------


def test_the_model_name_is_the_folder_and_is_stored_with_every_result(clip: ClipEngine,
                                                                      folders: dict[str, Path]) -> None:
    assert clip.model == "tiny-clip" == folders["clip"].name
    assert ClipEngine("openai/clip-vit-base-patch32").model == "openai/clip-vit-base-patch32"
    assert ClipEngine(str(folders["clip"]), model_name="clip-b32").model == "clip-b32"


def test_image_embeddings_are_normalised_identical_for_identical_images_and_batched(
        clip: ClipEngine, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = clip._model.get_image_features

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["pixel_values"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(clip._model, "get_image_features", counted)
    red, blue, striped = png("red"), png("blue"), png("red", stripe=True)
    first, second = run(clip, EmbedRequest(images=(red, blue, red)), EmbedRequest(images=(striped,)))
    assert calls == [4]  # both requests in one forward
    assert isinstance(first, Embeddings) and isinstance(second, Embeddings)
    assert first.model == second.model == "tiny-clip"
    assert len(first.vectors) == 3 and len(second.vectors) == 1
    assert all(len(v) == 16 and norm(v) == pytest.approx(1.0, abs=1e-5) for v in first.vectors + second.vectors)
    assert first.vectors[0] == pytest.approx(first.vectors[2], abs=1e-6)
    assert first.vectors[0] != pytest.approx(first.vectors[1], abs=1e-3)
    assert second.vectors[0] != pytest.approx(first.vectors[0], abs=1e-3)

    reference = reference_clip(folders["clip"], [red, blue], ["x"]).image_embeds
    assert first.vectors[0] == pytest.approx(reference[0].tolist(), abs=1e-5)
    assert first.vectors[1] == pytest.approx(reference[1].tolist(), abs=1e-5)


def test_text_embeddings_match_clip_and_differ_by_text(clip: ClipEngine, folders: dict[str, Path]) -> None:
    (result,) = run(clip, EmbedRequest(texts=("a cat", "a dog on a sofa", "一只猫", "a cat")))
    assert isinstance(result, Embeddings) and len(result.vectors) == 4
    assert all(norm(v) == pytest.approx(1.0, abs=1e-5) for v in result.vectors)
    assert result.vectors[0] == pytest.approx(result.vectors[3], abs=1e-6)  # padding in a batch changes nothing
    assert result.vectors[0] != pytest.approx(result.vectors[2], abs=1e-3)
    reference = reference_clip(folders["clip"], [png("red")], ["a cat", "a dog on a sofa", "一只猫"]).text_embeds
    for ours, theirs in zip(result.vectors, reference.tolist(), strict=False):
        assert ours == pytest.approx(theirs, abs=1e-5)


def test_classification_is_clips_softmax_over_every_label_best_first(clip: ClipEngine,
                                                                    folders: dict[str, Path]) -> None:
    labels = ("cat", "dog", "teapot", "bicycle")
    image = png("green", stripe=True)
    (result,) = run(clip, ClassifyRequest(image, labels))
    assert isinstance(result, Classification) and result.model == "tiny-clip"
    assert sorted(label for label, _ in result.scores) == sorted(labels)
    probabilities = [p for _, p in result.scores]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert probabilities == sorted(probabilities, reverse=True)
    reference = reference_clip(folders["clip"], [image], [TEMPLATE.format(label=label) for label in labels])
    expected = dict(zip(labels, reference.logits_per_image.softmax(dim=1)[0].tolist(), strict=True))
    assert dict(result.scores) == pytest.approx(expected, abs=1e-5)


def test_a_bad_request_fails_alone_in_a_mixed_batch(clip: ClipEngine) -> None:
    results = run(clip, EmbedRequest(images=(png("red"),)), EmbedRequest(images=(png("blue"), b"not an image")),
                  ClassifyRequest(b"\x89PNG\r\n\x1a\ntruncated", ("cat",)), ClassifyRequest(png("red"), (" ", "")),
                  EmbedRequest(texts=("a cat",)), ClassifyRequest(png("red"), ("cat", "dog")),
                  GenerateRequest(prompt="a cat"))
    assert isinstance(results[0], Embeddings) and len(results[0].vectors) == 1
    assert isinstance(results[1], ImageEngineError) and results[1].code == "image_unreadable"
    assert isinstance(results[2], ImageEngineError) and results[2].code == "image_unreadable"
    assert isinstance(results[3], ImageEngineError) and results[3].code == "image_no_labels"
    assert isinstance(results[4], Embeddings) and len(results[4].vectors) == 1
    assert isinstance(results[5], Classification) and len(results[5].scores) == 2
    assert isinstance(results[6], TypeError)
    # Alone, the same good requests give the same answers.
    (alone,) = run(clip, EmbedRequest(images=(png("red"),)))
    assert alone.vectors[0] == pytest.approx(results[0].vectors[0], abs=1e-6)


def test_reload_from_disk_offline_gives_the_same_vectors(folders: dict[str, Path], clip: ClipEngine) -> None:
    engine = ClipEngine(str(folders["clip"]), device="cpu", dtype="float32", local_files_only=True)
    engine.load()
    image = png("red", stripe=True)
    (again,) = run(engine, EmbedRequest(images=(image,)))
    engine.unload()
    assert engine._model is None
    (reloaded,) = run(engine, EmbedRequest(images=(image,)))  # run loads it again
    (original,) = run(clip, EmbedRequest(images=(image,)))
    assert again.vectors[0] == pytest.approx(original.vectors[0], abs=1e-6)
    assert reloaded.vectors[0] == pytest.approx(original.vectors[0], abs=1e-6)


def test_a_missing_model_or_bad_option_is_unavailable(tmp_path: Path, folders: dict[str, Path]) -> None:
    with pytest.raises(EngineUnavailable, match="could not load"):
        ClipEngine(str(tmp_path / "nowhere"), device="cpu", local_files_only=True).load()
    with pytest.raises(EngineUnavailable, match="dtype"):
        ClipEngine(str(folders["clip"]), device="cpu", dtype="float77").load()
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="CUDA"):
            DetectEngine(str(folders["owl"]), device="cuda").load()


# -- OWL-ViT --------------------------------------------------------------------------------------------------------


def test_detection_boxes_are_in_bounds_suppressed_and_only_of_the_asked_labels(detect: DetectEngine) -> None:
    from PIL import Image

    wide, small = png("navy", (120, 90), stripe=True), png("olive", (40, 64))
    big, one, junk = run(detect, DetectRequest(wide, ("cat", "dog", "teapot"), threshold=0.0),
                         DetectRequest(small, ("dog",), threshold=0.0), DetectRequest(b"junk", ("cat",)))
    assert isinstance(junk, ImageEngineError) and junk.code == "image_unreadable"
    for result, (width, height), labels in ((big, (120, 90), {"cat", "dog", "teapot"}), (one, (40, 64), {"dog"})):
        assert isinstance(result, Detection) and result.model == "tiny-owlvit"
        assert 0 < len(result.boxes) <= MAX_BOXES
        # The shorter list is padded to the longer one's length; in this tiny model the padding queries
        # outscore "dog", so unmasked they would win boxes.
        assert {b.label for b in result.boxes} <= labels
        scores = [b.score for b in result.boxes]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
        for b in result.boxes:
            x0, y0, x1, y1 = b.box
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        for i, a in enumerate(result.boxes):  # per label, nothing left overlaps more than the NMS threshold
            for b in result.boxes[i + 1:]:
                if a.label == b.label:
                    assert iou(a.box, b.box) <= 0.3 + 1e-6
        # The tiny model proposes 16 overlapping boxes per label: suppression removed some of each label's.
        for label in labels:
            assert sum(b.label == label for b in result.boxes) < 16
        annotated = Image.open(io.BytesIO(result.annotated))
        assert annotated.format == "PNG" and annotated.size == (width, height)
    (alone,) = run(detect, DetectRequest(small, ("dog",), threshold=0.0))
    assert [(b.label, b.box) for b in alone.boxes] == [(b.label, b.box) for b in one.boxes]
    assert [b.score for b in alone.boxes] == pytest.approx([b.score for b in one.boxes], abs=1e-5)
    original = Image.open(io.BytesIO(wide)).convert("RGB")
    drawn = Image.open(io.BytesIO(big.annotated)).convert("RGB")
    assert original.tobytes() != drawn.tobytes()


def test_threshold_filters_boxes_and_labels_are_required(detect: DetectEngine) -> None:
    from PIL import Image

    image = png("teal", (64, 48))
    everything, nothing, no_labels = run(detect, DetectRequest(image, ("cat",), threshold=0.0),
                                         DetectRequest(image, ("cat",), threshold=1.0),
                                         DetectRequest(image, ("  ",), threshold=0.0))
    assert everything.boxes and nothing.boxes == []
    assert Image.open(io.BytesIO(nothing.annotated)).convert("RGB").tobytes() == \
        Image.open(io.BytesIO(image)).convert("RGB").tobytes()
    cut = min(b.score for b in everything.boxes)
    (some,) = run(detect, DetectRequest(image, ("cat",), threshold=cut))
    assert all(b.score > cut for b in some.boxes) and len(some.boxes) < len(everything.boxes)
    assert isinstance(no_labels, ImageEngineError) and no_labels.code == "image_no_labels"


def test_detect_reloads_offline_with_the_same_boxes(folders: dict[str, Path], detect: DetectEngine) -> None:
    engine = DetectEngine(str(folders["owl"]), device="cpu", local_files_only=True)
    request = DetectRequest(png("maroon", (50, 50), stripe=True), ("cat", "dog"), threshold=0.0)
    (fresh,) = run(engine, request)  # loads on first use
    (warm,) = run(detect, request)
    assert [(b.label, b.box) for b in fresh.boxes] == [(b.label, b.box) for b in warm.boxes]
    assert [b.score for b in fresh.boxes] == pytest.approx([b.score for b in warm.boxes], abs=1e-6)

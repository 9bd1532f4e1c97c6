"""Audio quality measured from a recording: ``voicesessions.audio.measure(source)``.

``source`` is a path, the file's bytes, or a binary file object (read from its current
position; seekable for most containers). The file is decoded with PyAV (FFmpeg's
libraries, bundled in the wheel: no system ffmpeg) and every metric is computed while the
samples stream past, in blocks of about one second of 32-bit float samples, so memory does
not grow with the length of the recording (a 60-minute file is never held whole; see
BENCHMARKS.md). What the SDK stores in ``sessions.audio_quality`` is exactly
:meth:`AudioQuality.as_json`.

Metrics (all levels relative to digital full scale, 1.0 = 0 dBFS)
- ``container``, ``codec``: FFmpeg's names, e.g. ``wav``/``pcm_s16le``, ``flac``/``flac``,
  ``ogg``/``opus``, ``mp3``/``mp3``, ``webm``/``opus``.
- ``sample_rate_hz``, ``channels``: of the decoded stream.
- ``bit_depth``: bits per sample of a lossless stream (PCM, FLAC); None for lossy codecs.
- ``bitrate_bps``: the stream's bit rate as the container declares it, else the average
  over the file (size x 8 / duration).
- ``duration_s``: decoded samples / sample rate (what a player plays; exact for PCM and
  FLAC; lossy codecs may add the encoder's padding where the container does not trim it).
- ``peak_dbfs``: 20 log10 of the largest absolute sample value (sample peak, not
  true peak). A full-scale sine is 0 dBFS.
- ``rms_dbfs``: 20 log10 of the root mean square of every sample of every channel (a
  full-scale sine is -3.01 dBFS: no AES17 +3 dB correction).
- ``integrated_lufs``: integrated loudness per ITU-R BS.1770-4 / EBU R 128: K-weighting
  (high-shelf + high-pass, designed for the file's sample rate), 400 ms blocks overlapping
  by 75 %, absolute gate -70 LUFS, relative gate -10 LU. Channels are weighted 1.0 (the
  standard's weights for mono and stereo; surround channels, weighted 1.41 by the
  standard, are not distinguished). A mono -20 dBFS 997 Hz sine reads -23.0 LUFS.
- ``clipping_ratio``: fraction of samples (all channels) whose magnitude reaches
  :data:`CLIP_LEVEL` (-0.1 dBFS): 0.0 for a clean recording, around 0.01 and above for an
  audibly clipped one.
- ``silence_ratio``: fraction of 100 ms windows whose RMS (all channels) is below
  :data:`SILENCE_THRESHOLD_DBFS` (-60 dBFS).
- ``noise_floor_dbfs``: level of the quietest moments: the 5th percentile of the levels
  (RMS, all channels) of the 20 ms frames, floored at :data:`LEVEL_FLOOR_DBFS` (-100 dBFS:
  digital silence reads -100). Speech pauses between words are that quiet.
- ``snr_db``: signal-to-noise estimate: the level of the loud frames (95th percentile)
  minus ``noise_floor_dbfs``. An estimate from the recording alone (no reference): it reads
  high for clean speech with pauses and low for speech over steady noise.

Levels of a file of digital silence are ``LEVEL_FLOOR_DBFS``; ``integrated_lufs`` is None
for a recording shorter than one 400 ms block or whose every block is below the gates.
"""

from __future__ import annotations

import io
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict

from voicesessions.errors import ConfigurationError, InvalidInputError

__all__ = [
    "CLIP_LEVEL",
    "LEVEL_FLOOR_DBFS",
    "SILENCE_THRESHOLD_DBFS",
    "AudioInfo",
    "AudioQuality",
    "AudioSource",
    "measure",
]

#: What :func:`measure` accepts: a path, the bytes of a file, or a binary file object.
AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

#: A sample counts as clipped when its magnitude reaches this (-0.1 dBFS).
CLIP_LEVEL = 10 ** (-0.1 / 20)
#: A 100 ms window is silent when its RMS is below this level.
SILENCE_THRESHOLD_DBFS = -60.0
#: Lowest level reported: digital silence, and the floor of every level in dB.
LEVEL_FLOOR_DBFS = -100.0
#: Length of the frames whose levels give the noise floor and the signal level, in seconds.
FRAME_S = 0.02
#: Frames per analysis window (100 ms: silence, and BS.1770 sub-blocks).
FRAMES_PER_WINDOW = 5
#: BS.1770 gating block: 4 windows of 100 ms (400 ms, 75 % overlap).
BLOCK_WINDOWS = 4
#: BS.1770 absolute gate (LUFS) and relative gate (LU below the ungated loudness).
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
#: Percentiles of the window levels used for the noise floor and the signal level.
NOISE_PERCENTILE = 5.0
SIGNAL_PERCENTILE = 95.0
#: Samples decoded before the metrics are updated (about one second at 48 kHz).
CHUNK_SAMPLES = 48_000

_LEVEL_FLOOR_POWER = 10 ** (LEVEL_FLOOR_DBFS / 10)

#: FFmpeg demuxer name -> the container name reported.
_CONTAINERS = {
    "matroska,webm": "webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
}

#: Lossless codecs: their bit depth is reported, their bit rate is the average.
_LOSSLESS_PREFIXES = ("pcm_", "flac", "alac", "wavpack", "tta", "ape")


class AudioQuality(BaseModel):
    """Quality of a recording, measured from its container and decoded samples.

    Units: Hz, seconds, bits, bits per second, dBFS (decibels relative to full scale),
    LUFS (loudness units relative to full scale, ITU-R BS.1770), dB, and ratios in [0, 1].
    See the module docstring of :mod:`voicesessions.audio` for each definition.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    container: str
    codec: str
    sample_rate_hz: int
    channels: int
    bit_depth: int | None
    bitrate_bps: int | None
    duration_s: float
    peak_dbfs: float
    rms_dbfs: float
    integrated_lufs: float | None
    clipping_ratio: float
    silence_ratio: float
    noise_floor_dbfs: float
    snr_db: float

    def as_json(self) -> dict[str, Any]:
        """The metrics as stored in ``sessions.audio_quality`` (JSON numbers and strings)."""
        return self.model_dump(mode="json")


class AudioInfo(BaseModel):
    """A session's recording as :meth:`SessionRepository.attach_audio` stored it.

    ``path`` is the object's path in ``bucket`` (``<company_id>/<profile_id>/<session_id>.<ext>``),
    never a URL: use ``audio_url`` for a signed URL.
    """

    model_config = ConfigDict(frozen=True)

    session_id: uuid.UUID
    bucket: str
    path: str
    size_bytes: int
    content_type: str
    quality: AudioQuality


def measure(source: AudioSource) -> AudioQuality:
    """Decode ``source`` and measure it (see the module docstring for the metrics).

    Unsupported, corrupt or empty input (no audio stream, no samples) raises
    :class:`~voicesessions.errors.InvalidInputError`. Memory stays bounded whatever the
    length: samples are processed about one second at a time.
    """
    av, np, signal = _libraries()
    opened, size = _open_input(source)
    try:
        try:
            container = av.open(opened, mode="r")
        except av.FFmpegError as exc:
            raise InvalidInputError(f"not a supported audio file: {_ffmpeg_message(exc)}") from None
        try:
            quality: AudioQuality = _measure_container(av, np, signal, container, size)
            return quality
        except av.FFmpegError as exc:
            raise InvalidInputError(f"corrupt audio: {_ffmpeg_message(exc)}") from None
        finally:
            container.close()
    finally:
        if opened is not source:
            opened.close()


# -- internals ----------------------------------------------------------------------------


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import av
        import numpy as np
        from scipy import signal  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the audio extra is installed in tests
        raise ConfigurationError(
            f"measuring audio needs the 'audio' extra ({exc.name} is missing):"
            " pip install 'voicesessions[audio]'"
        ) from None
    return av, np, signal


def _open_input(source: object) -> tuple[Any, int | None]:
    """What av.open reads, and the size of the input in bytes where it is known."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InvalidInputError("the audio is empty (0 bytes)")
        return io.BytesIO(data), len(data)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            handle = path.open("rb")
        except FileNotFoundError:
            raise InvalidInputError(f"no audio file at {str(path)!r}") from None
        except IsADirectoryError:
            raise InvalidInputError(f"{str(path)!r} is a directory, not an audio file") from None
        except OSError as exc:
            raise InvalidInputError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        if size == 0:
            handle.close()
            raise InvalidInputError(f"the audio file {str(path)!r} is empty (0 bytes)")
        return handle, size
    if hasattr(source, "read"):
        known: int | None = None
        try:
            if source.seekable():  # type: ignore[attr-defined]
                here = source.tell()  # type: ignore[attr-defined]
                known = source.seek(0, io.SEEK_END) - here  # type: ignore[attr-defined]
                source.seek(here)  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            known = None
        if known == 0:
            raise InvalidInputError("the audio is empty (0 bytes)")
        if known is not None and here:
            return _FromHere(source, here), known  # FFmpeg seeks to absolute offsets
        return source, known
    raise InvalidInputError(
        f"audio must be a path, bytes or a binary file object, not {type(source).__name__}"
    )


class _FromHere(io.RawIOBase):
    """A seekable binary file seen from ``start`` on: offset 0 is ``start`` in the file."""

    def __init__(self, raw: Any, start: int) -> None:
        super().__init__()
        self._raw = raw
        self._start = start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self._start
        return int(self._raw.seek(offset, whence)) - self._start

    def tell(self) -> int:
        return int(self._raw.tell()) - self._start

    def close(self) -> None:  # the caller's file stays open
        super().close()


def _ffmpeg_message(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__


def _k_weighting(np: Any, rate: int) -> Any:
    """The BS.1770 K-weighting filter for ``rate`` as second-order sections.

    Stage 1 is the high-shelf (about +4 dB above 2 kHz) modelling the head, stage 2 the
    RLB high-pass (about 38 Hz); both are the standard's analog prototypes taken to
    ``rate`` with the bilinear transform (the 48 kHz coefficients of the standard result).
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, high_pass], dtype=np.float64)


def _chunks(av: Any, np: Any, container: Any, stream: Any, channels: int) -> Iterator[Any]:
    """Decoded samples as float32 arrays of shape (channels, n), about CHUNK_SAMPLES each."""
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
    pending: list[Any] = []
    count = 0

    def converted(frames: list[Any]) -> Iterator[Any]:
        for frame in frames:
            array = frame.to_ndarray()
            if array.ndim == 1:
                array = array.reshape(channels, -1)
            yield array

    for frame in container.decode(stream):
        for array in converted(resampler.resample(frame)):
            pending.append(array)
            count += array.shape[1]
            if count >= CHUNK_SAMPLES:
                yield np.concatenate(pending, axis=1)
                pending, count = [], 0
    for array in converted(resampler.resample(None)):
        pending.append(array)
    if pending:
        yield np.concatenate(pending, axis=1)


def _measure_container(av: Any, np: Any, signal: Any, container: Any, size: int | None) -> Any:
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        raise InvalidInputError("the file has no audio stream")
    stream = streams[0]
    codec_context = stream.codec_context
    rate = int(stream.rate or codec_context.sample_rate or 0)
    channels = int(codec_context.channels or 0)
    if rate <= 0 or channels <= 0:
        raise InvalidInputError("the audio stream has no sample rate or no channels")
    codec = str(codec_context.name)
    container_name = _CONTAINERS.get(container.format.name, container.format.name)

    frame = max(1, round(rate * FRAME_S))
    window = frame * FRAMES_PER_WINDOW
    sos = _k_weighting(np, rate)
    state = np.zeros((sos.shape[0], channels, 2), dtype=np.float64)
    total = 0
    peak = 0.0
    sum_squares = 0.0
    clipped = 0
    carry = np.zeros((channels, 0), dtype=np.float32)
    carry_k = np.zeros((channels, 0), dtype=np.float64)
    frame_power: list[Any] = []  # mean square of each 20 ms frame, all channels
    window_loudness: list[Any] = []  # per 100 ms: sum over channels of K-weighted mean squares

    for chunk in _chunks(av, np, container, stream, channels):
        n = chunk.shape[1]
        if n == 0:
            continue
        total += n
        magnitude = np.abs(chunk)
        peak = max(peak, float(magnitude.max()))
        clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))
        del magnitude
        sum_squares += float(np.einsum("ij,ij->", chunk, chunk, dtype=np.float64))
        weighted, state = signal.sosfilt(sos, chunk, axis=-1, zi=state)
        raw = np.concatenate([carry, chunk], axis=1)
        kw = np.concatenate([carry_k, weighted], axis=1)
        whole = raw.shape[1] // window * window
        if whole:
            r = raw[:, :whole].astype(np.float64).reshape(channels, -1, frame)
            frame_power.append((r * r).mean(axis=2).mean(axis=0))
            k = kw[:, :whole].reshape(channels, -1, window)
            window_loudness.append((k * k).mean(axis=2).sum(axis=0))
        carry = raw[:, whole:]
        carry_k = kw[:, whole:]

    if total == 0:
        raise InvalidInputError("the audio stream has no samples")
    duration = total / rate
    frames = np.concatenate(frame_power) if frame_power else np.zeros(0)
    windows = frames.reshape(-1, FRAMES_PER_WINDOW).mean(axis=1)
    if carry.shape[1]:  # the last, partial window counts for silence and levels
        tail = carry.astype(np.float64)
        windows = np.append(windows, float((tail * tail).mean()))
        if frames.size == 0:
            frames = windows
    loudness = np.concatenate(window_loudness) if window_loudness else np.zeros(0)

    frame_levels = 10 * np.log10(np.maximum(frames, _LEVEL_FLOOR_POWER))
    window_levels = 10 * np.log10(np.maximum(windows, _LEVEL_FLOOR_POWER))
    noise_floor = float(np.percentile(frame_levels, NOISE_PERCENTILE))
    signal_level = float(np.percentile(frame_levels, SIGNAL_PERCENTILE))
    bit_depth, bitrate = _depth_and_rate(codec_context, codec, rate, channels, size, duration)
    return AudioQuality(
        container=container_name,
        codec=codec,
        sample_rate_hz=rate,
        channels=channels,
        bit_depth=bit_depth,
        bitrate_bps=bitrate,
        duration_s=round(duration, 6),
        peak_dbfs=_round(_db(peak * peak)),
        rms_dbfs=_round(_db(sum_squares / (total * channels))),
        integrated_lufs=_integrated_loudness(np, loudness),
        clipping_ratio=round(clipped / (total * channels), 6),
        silence_ratio=round(float(np.mean(window_levels < SILENCE_THRESHOLD_DBFS)), 6),
        noise_floor_dbfs=_round(noise_floor),
        snr_db=_round(signal_level - noise_floor),
    )


def _integrated_loudness(np: Any, window_loudness: Any) -> float | None:
    """BS.1770 gated loudness from the K-weighted power of consecutive 100 ms windows."""
    if window_loudness.size < BLOCK_WINDOWS:  # shorter than one 400 ms block
        return None
    summed = np.convolve(window_loudness, np.ones(BLOCK_WINDOWS), mode="valid")
    blocks = summed / BLOCK_WINDOWS
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(blocks)
    above_absolute = blocks[block_lufs > ABSOLUTE_GATE_LUFS]
    if above_absolute.size == 0:
        return None
    relative_gate = -0.691 + 10 * math.log10(float(above_absolute.mean())) + RELATIVE_GATE_LU
    gated = blocks[(block_lufs > ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
    if gated.size == 0:
        return None
    return _round(-0.691 + 10 * math.log10(float(gated.mean())))


def _depth_and_rate(
    codec_context: Any,
    codec: str,
    rate: int,
    channels: int,
    size: int | None,
    duration: float,
) -> tuple[int | None, int | None]:
    bit_depth: int | None = None
    if codec.startswith(_LOSSLESS_PREFIXES):
        sample_format = codec_context.format
        bits = int(sample_format.bits) if sample_format is not None else 0
        if codec.startswith("pcm_"):
            bits = _pcm_bits(codec) or bits
        bit_depth = bits or None
    declared = int(codec_context.bit_rate or 0)
    if declared > 0:
        return bit_depth, declared
    if codec.startswith("pcm_") and bit_depth:
        return bit_depth, rate * channels * bit_depth
    if size and duration > 0:
        return bit_depth, round(size * 8 / duration)
    return bit_depth, None


def _pcm_bits(codec: str) -> int | None:
    """Bits per sample from an FFmpeg PCM codec name (pcm_s16le -> 16, pcm_f32le -> 32)."""
    digits = "".join(ch for ch in codec.split("_")[1] if ch.isdigit())
    return int(digits) if digits else None


def _db(power: float) -> float:
    return 10 * math.log10(max(power, _LEVEL_FLOOR_POWER))


def _round(value: float) -> float:
    return round(value, 3)


#: Container (as :func:`measure` names it) -> (file extension, content type) of a session
#: recording. Other containers are measured but not accepted as session audio.
SESSION_AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "audio/wav"),
    "flac": ("flac", "audio/flac"),
    "ogg": ("ogg", "audio/ogg"),
    "mp3": ("mp3", "audio/mpeg"),
    "webm": ("webm", "audio/webm"),
    "mp4": ("m4a", "audio/mp4"),
}


async def measure_in_thread(source: AudioSource) -> AudioQuality:
    """:func:`measure` in a worker thread (the async face must not block its event loop)."""
    import asyncio

    return await asyncio.to_thread(measure, source)


def measure_here(source: AudioSource) -> AudioQuality:
    """:func:`measure` in the calling thread (what the generated sync face calls)."""
    return measure(source)

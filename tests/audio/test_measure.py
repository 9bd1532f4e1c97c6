"""voicesessions.audio.measure on real speech (espeak-ng) and derived variants, in every
supported format (WAV, FLAC, OGG/Opus, MP3, WebM/Opus), with stated tolerances.

Tolerances
- duration: within 10 ms of the samples written, for every format. PCM and FLAC are exact;
  FFmpeg trims the encoder delay of Opus (pre-skip) and MP3 (LAME's gapless header), so the
  lossy files measure within the same 10 ms here.
- levels (peak, RMS, LUFS, noise floor): PCM/FLAC within 0.1 dB of theory (16-bit
  quantisation), Opus within 0.5 dB, MP3 within 0.6 dB (LAME's 64 kbps default changes the
  level of the sine by about 0.45 dB).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support import audio as gen
from voicesessions import AudioQuality, InvalidInputError
from voicesessions.audio import measure

DURATION_TOLERANCE_S = 0.010
LEVEL_TOLERANCE_DB = {"wav": 0.1, "flac": 0.1, "ogg": 0.5, "webm": 0.5, "mp3": 0.6}
NOISE_FLOOR_TOLERANCE_DB = {"wav": 0.5, "flac": 0.5, "ogg": 1.5, "webm": 1.5, "mp3": 2.5}
#: A -20 dBFS (peak) 997 Hz mono sine: mean square 0.005 (-23.01 dB), K-weighting gain at
#: 997 Hz +0.691 dB, minus BS.1770's 0.691 offset: -23.01 LUFS.
SINE_LUFS = 10 * math.log10(0.5 * 0.1**2)


@dataclass(frozen=True)
class Corpus:
    directory: Path
    speech: gen.Samples
    variants: dict[str, gen.Samples]

    def file(self, variant: str, fmt: str) -> Path:
        path = self.directory / f"{variant}.{gen.FORMATS[fmt].ext}"
        if not path.exists():
            gen.write(self.variants[variant], self.directory, variant, gen.FORMATS[fmt])
        return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    directory = tmp_path_factory.mktemp("audio")
    speech = gen.speech(directory)
    seconds = len(speech) / gen.RATE
    variants = {
        "clean": speech,
        "quiet": gen.gain(speech, -30.0),
        "clipped": gen.clipped(speech, boost_db=18.0),
        "noisy": gen.with_noise(speech, noise_dbfs=-40.0),
        "padded": gen.padded(speech, before_s=seconds / 2, after_s=seconds / 2),
        "sine": gen.sine(hz=997.0, dbfs=-20.0, seconds=10.0),
    }
    return Corpus(directory, speech, variants)


FORMATS = list(gen.FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_container_codec_and_stream(corpus: Corpus, fmt: str) -> None:
    q = measure(corpus.file("clean", fmt))
    expected = {
        "wav": ("wav", "pcm_s16le"),
        "flac": ("flac", "flac"),
        "ogg": ("ogg", "opus"),
        "mp3": ("mp3", "mp3"),
        "webm": ("webm", "opus"),
    }[fmt]
    assert q.container == expected[0]
    assert q.codec.startswith(expected[1])  # FFmpeg decodes MP3 with "mp3float"
    assert q.sample_rate_hz == gen.RATE
    assert q.channels == 1
    if gen.FORMATS[fmt].lossy:
        assert q.bit_depth is None
        assert q.bitrate_bps is not None
        assert 16_000 <= q.bitrate_bps <= 200_000
    else:
        assert q.bit_depth == 16
        assert q.bitrate_bps is not None
        assert q.bitrate_bps > 0
    if fmt == "wav":
        assert q.bitrate_bps == gen.RATE * 16


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", ["clean", "padded", "sine"])
def test_duration(corpus: Corpus, fmt: str, variant: str) -> None:
    expected = len(corpus.variants[variant]) / gen.RATE
    assert measure(corpus.file(variant, fmt)).duration_s == pytest.approx(
        expected, abs=DURATION_TOLERANCE_S
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_loudness_of_a_known_sine(corpus: Corpus, fmt: str) -> None:
    q = measure(corpus.file("sine", fmt))
    tolerance = LEVEL_TOLERANCE_DB[fmt]
    assert pytest.approx(-23.01, abs=0.005) == SINE_LUFS
    assert q.integrated_lufs == pytest.approx(SINE_LUFS, abs=tolerance)
    assert q.peak_dbfs == pytest.approx(-20.0, abs=tolerance + 0.4)  # lossy overshoot
    assert q.rms_dbfs == pytest.approx(-23.01, abs=tolerance)
    assert q.clipping_ratio == 0.0
    assert q.silence_ratio == 0.0


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_levels_match_the_samples_written(corpus: Corpus, fmt: str) -> None:
    samples = corpus.variants["clean"].astype(np.float64)
    q = measure(corpus.file("clean", fmt))
    assert q.peak_dbfs == pytest.approx(-1.0, abs=0.01)
    rms = 10 * math.log10(float(np.mean(samples * samples)))
    assert q.rms_dbfs == pytest.approx(rms, abs=0.05)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_quiet_recording_reads_30_db_lower(corpus: Corpus, fmt: str) -> None:
    clean, quiet = measure(corpus.file("clean", fmt)), measure(corpus.file("quiet", fmt))
    tolerance = LEVEL_TOLERANCE_DB[fmt]
    assert quiet.rms_dbfs - clean.rms_dbfs == pytest.approx(-30.0, abs=tolerance)
    assert quiet.integrated_lufs is not None
    assert clean.integrated_lufs is not None
    assert quiet.integrated_lufs - clean.integrated_lufs == pytest.approx(-30.0, abs=tolerance)
    assert quiet.peak_dbfs < -30.0 + tolerance
    assert quiet.clipping_ratio == 0.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_clipping(corpus: Corpus, fmt: str) -> None:
    assert measure(corpus.file("clean", fmt)).clipping_ratio == 0.0
    clipped = measure(corpus.file("clipped", fmt))
    # Boosted by 18 dB and hard-limited: about 11 % of the PCM samples sit at full scale;
    # lossy codecs smear the flat tops, but more than 1 % still reach -0.1 dBFS.
    assert clipped.clipping_ratio > 0.01
    if not gen.FORMATS[fmt].lossy:
        written = corpus.variants["clipped"]
        at_full_scale = float(np.mean(np.abs(written) >= 0.999))
        assert clipped.clipping_ratio == pytest.approx(at_full_scale, abs=0.005)
    assert clipped.peak_dbfs >= -0.1


@pytest.mark.parametrize("fmt", FORMATS)
def test_silence_ratio_of_a_half_silent_file(corpus: Corpus, fmt: str) -> None:
    q = measure(corpus.file("padded", fmt))
    assert q.silence_ratio == pytest.approx(0.5, abs=0.05)
    assert measure(corpus.file("clean", fmt)).silence_ratio < 0.15


@pytest.mark.parametrize("fmt", FORMATS)
def test_noise_floor_and_snr(corpus: Corpus, fmt: str) -> None:
    clean, noisy = measure(corpus.file("clean", fmt)), measure(corpus.file("noisy", fmt))
    # The noise added has an RMS of exactly -40 dBFS: the quiet frames read it.
    assert noisy.noise_floor_dbfs == pytest.approx(-40.0, abs=NOISE_FLOOR_TOLERANCE_DB[fmt])
    assert noisy.silence_ratio == 0.0
    # Speech peaks about 25 dB over that noise; the clean file's pauses are near silence.
    assert 15.0 < noisy.snr_db < 35.0
    assert clean.snr_db > 50.0
    assert clean.snr_db - noisy.snr_db > 20.0


def test_the_three_kinds_of_source_agree(corpus: Corpus) -> None:
    path = corpus.file("clean", "webm")
    data = path.read_bytes()
    from_path = measure(path)
    assert measure(str(path)) == from_path
    assert measure(data) == from_path
    handle = io.BytesIO(data)
    assert measure(handle) == from_path
    with path.open("rb") as f:
        assert measure(f) == from_path
    assert isinstance(from_path, AudioQuality)
    assert from_path.as_json()["container"] == "webm"


def test_a_stereo_recording(corpus: Corpus, tmp_path: Path) -> None:
    """Two identical channels: same dBFS levels, 3.01 dB louder in LUFS (channels add)."""
    import av

    mono = corpus.variants["sine"]
    path = tmp_path / "stereo.wav"
    with av.open(str(path), mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=gen.RATE, layout="stereo")
        pcm = np.round(np.stack([mono, mono]) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = gen.RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    q = measure(path)
    assert q.channels == 2
    assert q.rms_dbfs == pytest.approx(-23.01, abs=0.1)
    assert q.integrated_lufs == pytest.approx(SINE_LUFS + 10 * math.log10(2), abs=0.1)


def test_digital_silence(tmp_path: Path) -> None:
    path = gen.write(np.zeros(gen.RATE, dtype=np.float32), tmp_path, "silence", gen.FORMATS["wav"])
    q = measure(path)
    assert q.silence_ratio == 1.0
    assert q.peak_dbfs == q.rms_dbfs == q.noise_floor_dbfs == -100.0
    assert q.integrated_lufs is None  # every block is below the absolute gate
    assert q.snr_db == 0.0


def test_shorter_than_one_gating_block(tmp_path: Path) -> None:
    tone = gen.sine(hz=440.0, dbfs=-6.0, seconds=0.2)
    q = measure(gen.write(tone, tmp_path, "short", gen.FORMATS["flac"]))
    assert q.duration_s == pytest.approx(0.2, abs=DURATION_TOLERANCE_S)
    assert q.integrated_lufs is None
    assert q.peak_dbfs == pytest.approx(-6.0, abs=0.05)


BAD = [
    (b"", "empty"),
    (b"this is not audio at all, just text" * 20, "not a supported audio file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00", "audio"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_unsupported_or_corrupt_input_is_invalid(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        measure(data)
    assert message in str(caught.value)


def test_a_truncated_file_is_invalid(corpus: Corpus) -> None:
    data = corpus.file("clean", "flac").read_bytes()
    with pytest.raises(InvalidInputError):
        measure(data[:64])


def test_a_file_without_audio_is_invalid(tmp_path: Path) -> None:
    import av

    path = tmp_path / "video.webm"
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=5)
        stream.width, stream.height = 16, 16
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InvalidInputError, match="no audio stream"):
        measure(path)


@pytest.mark.parametrize("source", [Path("/nonexistent/voice.wav"), 42, None])
def test_bad_sources(source: object) -> None:
    with pytest.raises(InvalidInputError):
        measure(source)  # type: ignore[arg-type]


def test_a_directory_is_not_audio(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="directory"):
        measure(tmp_path)

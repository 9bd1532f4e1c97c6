"""How long does measuring a 60-minute recording take, and how much memory does it need?

Writes a MINUTES-long mono 48 kHz recording of espeak-ng speech repeated (with a second of
digital silence between repetitions) as FLAC (16-bit) and as OGG/Opus, encoding it block by
block, then measures each file with ``voicesessions.audio.measure`` in a fresh Python process
and reports the wall time, the peak of Python-tracked allocations (tracemalloc: numpy's
buffers included) and the process's peak resident set size (ru_maxrss, which includes the
interpreter, numpy, scipy and FFmpeg's libraries) next to the same process's RSS before
measuring.

    python -m benchmarks.audio_measure [--minutes 60] [--formats flac,ogg]

Needs espeak-ng (apt-get install -y espeak-ng). Prints the numbers; writes nothing else
(the files live in a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import audio as gen


def write_long(path: Path, fmt: gen.Format, speech: gen.Samples, minutes: float) -> float:
    """Encode speech + 1 s of silence, repeated until ``minutes``, without holding it all."""
    unit = np.concatenate([speech, np.zeros(gen.RATE, dtype=np.float32)])
    total = round(minutes * 60 * gen.RATE)
    frame_size = 960 if fmt.codec == "libopus" else 4096
    written = 0
    with av.open(str(path), mode="w", format=fmt.container) as container:
        stream = container.add_stream(fmt.codec, rate=gen.RATE, layout="mono")
        while written < total:
            block = unit[: total - written]
            pcm: np.ndarray = block
            if fmt.sample_format == "s16":
                pcm = np.round(np.clip(block, -1.0, 32767 / 32768) * 32768).astype(np.int16)
            for start in range(0, len(pcm), frame_size):
                part = pcm[start : start + frame_size]
                frame = av.AudioFrame.from_ndarray(
                    part.reshape(1, -1), format=fmt.sample_format, layout="mono"
                )
                frame.sample_rate = gen.RATE
                frame.pts = written + start
                for packet in stream.encode(frame):
                    container.mux(packet)
            written += len(block)
        for packet in stream.encode(None):
            container.mux(packet)
    return written / gen.RATE


def measure_only(path: str) -> None:
    """Child process: measure one file and print the figures as JSON."""
    from voicesessions.audio import measure

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    quality = measure(path)
    seconds = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "traced_peak_mib": traced_peak / 2**20,
                "rss_before_mib": rss_before / 1024,
                "rss_peak_mib": rss_peak / 1024,
                "quality": quality.as_json(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--formats", default="flac,ogg")
    parser.add_argument("--measure-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        measure_only(args.measure_only)
        return
    with tempfile.TemporaryDirectory(prefix="vs-audio-bench-") as tmp:
        directory = Path(tmp)
        speech = gen.speech(directory)
        print(
            f"command: python -m benchmarks.audio_measure --minutes {args.minutes:g}"
            f" --formats {args.formats}"
        )
        print(
            "| format | duration | file MiB | measure s | x realtime | tracemalloc peak MiB"
            " | RSS before MiB | RSS peak MiB | LUFS | silence |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in args.formats.split(","):
            fmt = gen.FORMATS[name]
            path = directory / f"long.{fmt.ext}"
            duration = write_long(path, fmt, speech, args.minutes)
            child = subprocess.run(
                [sys.executable, __file__, "--measure-only", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(child.stdout)
            q = r["quality"]
            print(
                f"| {name} | {q['duration_s'] / 60:.1f} min | {path.stat().st_size / 2**20:.1f}"
                f" | {r['seconds']:.1f} | {duration / r['seconds']:.0f}"
                f" | {r['traced_peak_mib']:.1f} | {r['rss_before_mib']:.0f}"
                f" | {r['rss_peak_mib']:.0f} | {q['integrated_lufs']} | {q['silence_ratio']:.3f} |"
            )
            path.unlink()
        float64_mib = args.minutes * 60 * gen.RATE * 8 / 2**20
        print(f"(the whole recording as float64 would be {float64_mib:.0f} MiB)")


if __name__ == "__main__":
    main()

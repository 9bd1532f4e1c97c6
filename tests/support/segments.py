"""Transcript segments as a voice pipeline emits them, for the live-update tests."""

from __future__ import annotations

from typing import Any


def segment(seq: int, *, final: bool = True, text: str | None = None) -> dict[str, Any]:
    """Segment ``seq``: trainee on even numbers, buyer on odd, one second apart."""
    return {
        "seq": seq,
        "speaker": "trainee" if seq % 2 == 0 else "buyer",
        "text": text if text is not None else f"words of segment {seq}",
        "start_ms": 10_000 + seq * 1000,
        "end_ms": 10_000 + seq * 1000 + 800,
        "confidence": 0.9,
        "segment_id": f"seg-{seq}",
        "is_final": final,
    }

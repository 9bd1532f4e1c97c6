"""espeak-ng speech synthesis through the library the ``espeakng-loader`` wheel ships, so the
audio tests need no system package (``pip install -e '.[dev]'`` brings it).

The C API (espeak-ng's ``speak_lib.h``): initialise once for synchronous output with a
callback that receives 16-bit mono samples, choose a voice, synthesise, collect.
"""

from __future__ import annotations

import ctypes
import threading
import wave
from pathlib import Path

import espeakng_loader

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.Lock()
_state: dict[str, object] = {}


def _library() -> tuple[ctypes.CDLL, int]:
    """The initialised library and its sample rate (once per process)."""
    if "lib" not in _state:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise AssertionError(f"espeak-ng failed to initialise (code {rate})")
        if lib.espeak_SetVoiceByName(b"en") != 0:
            raise AssertionError("espeak-ng has no English voice")
        _state["lib"], _state["rate"] = lib, rate
    return _state["lib"], int(_state["rate"])  # type: ignore[return-value, call-overload]


def synthesize_wav(text: str, path: Path) -> Path:
    """Write espeak-ng speaking ``text`` to ``path``: 16-bit mono WAV at its native rate."""
    with _lock:  # the library keeps global state
        lib, rate = _library()
        chunks: list[bytes] = []

        def collect(wav: ctypes._Pointer[ctypes.c_short], count: int, events: object) -> int:
            if wav and count > 0:
                chunks.append(ctypes.string_at(wav, count * 2))
            return 0

        callback = _CALLBACK(collect)  # kept alive until synthesis ends
        lib.espeak_SetSynthCallback(callback)
        encoded = text.encode()
        status = lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != 0 or not chunks:
            raise AssertionError(f"espeak-ng produced no speech (status {status})")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(chunks))
    return path

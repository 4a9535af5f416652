"""Which source schemes this install can read, and how: PyAV's own libav, or the ffmpeg relay.

Cheap enough for `check-config` and cached: PyAV's libav is asked for its input protocols
with libavformat's own `avio_enum_protocols` (through ctypes on the library PyAV loaded; no
network), falling back to a probe (`av.open("SCHEME://")`, where only a missing protocol fails
with ProtocolNotFoundError at once). The relay needs an `ffmpeg` on PATH whose
`ffmpeg -hide_banner -protocols` lists the scheme as an input.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess

# Schemes that are demuxers in libavformat rather than protocols: readable when the demuxer and
# the transport protocol they ride on are there.
_DEMUXER_SCHEMES = {"rtsp": ("rtsp", "tcp"), "rtsps": ("rtsp", "tls")}
_INSTALL_HINT = "Debian/Ubuntu: apt-get install ffmpeg"


@functools.lru_cache(maxsize=1)
def libav_input_protocols() -> frozenset[str] | None:
    """The input protocols of the libavformat PyAV loaded, or None if it cannot be asked."""
    try:
        import av  # noqa: F401  (loads its libavformat into this process)
    except ImportError:
        return None
    path = None
    try:
        with open("/proc/self/maps") as maps:
            path = next((line.split()[-1] for line in maps if "libavformat" in line and "/" in line), None)
    except OSError:
        pass
    if path is None:
        return None
    try:
        enum = ctypes.CDLL(path).avio_enum_protocols
    except (OSError, AttributeError):
        return None
    enum.restype, enum.argtypes = ctypes.c_char_p, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    opaque, names = ctypes.c_void_p(), set()
    while (name := enum(ctypes.byref(opaque), 0)) is not None:
        names.add(name.decode())
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def _probe(scheme: str) -> bool:
    """Fallback without ctypes: does PyAV's libav know `scheme`? (`SCHEME://` has no host, so no
    protocol that exists gets as far as the network.)"""
    import av

    try:
        av.open(f"{scheme}://", timeout=(0.5, 0.5)).close()
    except av.error.ProtocolNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - any other failure means the protocol was found
        return True
    return True


def libav_reads(scheme: str) -> bool:
    """PyAV's libav reads `scheme://` itself."""
    try:
        import av
    except ImportError:
        return False
    scheme = scheme.lower()
    if scheme in _DEMUXER_SCHEMES:
        demuxer, transport = _DEMUXER_SCHEMES[scheme]
        protocols = libav_input_protocols()
        return demuxer in av.formats_available and (protocols is None or transport in protocols)
    protocols = libav_input_protocols()
    return scheme in protocols if protocols is not None else _probe(scheme)


@functools.lru_cache(maxsize=8)
def _ffmpeg_protocols(ffmpeg: str) -> dict[str, frozenset[str]] | None:
    """`ffmpeg -protocols` of the `ffmpeg` on PATH as {"Input": ..., "Output": ...}, None without one."""
    exe = shutil.which(ffmpeg)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    names: dict[str, set[str]] = {"Input": set(), "Output": set()}
    section = None
    for line in out.splitlines():
        word = line.strip()
        if word.rstrip(":") in ("Input", "Output"):
            section = word.rstrip(":")
        elif word and section and not word.endswith(":"):
            names[section].add(word)
    return {k: frozenset(v) for k, v in names.items()}


def ffmpeg_input_protocols(ffmpeg: str = "ffmpeg") -> frozenset[str] | None:
    """Input protocols of the `ffmpeg` on PATH, or None when there is none that runs."""
    found = _ffmpeg_protocols(ffmpeg)
    return None if found is None else found["Input"]


def ffmpeg_output_protocols(ffmpeg: str = "ffmpeg") -> frozenset[str] | None:
    """Output protocols of the `ffmpeg` on PATH (the inline marker's srt:// output), or None."""
    found = _ffmpeg_protocols(ffmpeg)
    return None if found is None else found["Output"]


def needs_relay(scheme: str | None, ffmpeg: str = "ffmpeg") -> bool:
    """True when `scheme` is read through the ffmpeg relay (PyAV's libav lacks it, ffmpeg has it)."""
    if not scheme:
        return False
    scheme = scheme.lower()
    return not libav_reads(scheme) and scheme in (ffmpeg_input_protocols(ffmpeg) or ())


def unsupported_reason(scheme: str | None, ffmpeg: str = "ffmpeg") -> str | None:
    """None when this install can read `scheme://` (a file or device when `scheme` is None),
    else one line saying why and what to do."""
    if not scheme:
        return None
    scheme = scheme.lower()
    if libav_reads(scheme) or needs_relay(scheme, ffmpeg):
        return None
    via = "PyAV's libav lacks it" if libav_input_protocols() is not None or _has_av() else "PyAV is not installed"
    found = ffmpeg_input_protocols(ffmpeg)
    if found is None:
        relay = f"no {ffmpeg!r} on PATH for the relay"
    else:
        relay = f"the {ffmpeg!r} on PATH cannot read it either (not in `ffmpeg -protocols`)"
    lib = {"srt": "libsrt", "rist": "librist", "rtmp": "librtmp or its native rtmp"}.get(scheme)
    need = f"an ffmpeg with {lib} on PATH" if lib else "an ffmpeg that lists it in `ffmpeg -protocols`"
    return f"{scheme}:// is not readable here: {via} and {relay}; install {need} ({_INSTALL_HINT})"


def _has_av() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def cache_clear() -> None:
    """Forget what was found (tests; a new ffmpeg installed while running)."""
    libav_input_protocols.cache_clear()
    _ffmpeg_protocols.cache_clear()
    _probe.cache_clear()

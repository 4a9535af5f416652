"""HLS playlists over HTTP(S) (`http://.../index.m3u8`, `https://`): the kind is named `http`."""

from __future__ import annotations

from detector.sources.opencv import OpenCvSource


class HlsSource(OpenCvSource):
    kind = "http"
    schemes = ("http", "https")

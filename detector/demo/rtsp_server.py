#!/usr/bin/python3
"""Serve an H.264 MP4 file as a live RTSP stream with Debian's GStreamer RTSP server.

Runs under the *system* Python (`/usr/bin/python3`), because the GStreamer bindings
(`python3-gi`, `gir1.2-gst-rtsp-server-1.0`) belong to it, not to a virtual environment.
Used by `ad-detector demo`, the live tests and `bench/live.py`. No re-encoding: the file's
H.264 is packetised as it is, so serving costs almost no CPU. Each client that connects
gets the file from its start, paced at its native rate like a live channel.

    /usr/bin/python3 rtsp_server.py --port 8554 --mount /demo FILE.mp4 [--loop]

Prints "READY rtsp://127.0.0.1:PORT/MOUNT" on stdout once it listens.

The GStreamer bindings are imported inside `main()`, not at import time: this file ships
inside the `detector` package, whose own interpreter (a virtual environment) has no `gi`,
and importing every module of the package there must work.
"""

import argparse
import signal
import sys


def main() -> int:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(f"ERROR the GStreamer RTSP server bindings are missing ({exc}): run this with /usr/bin/python3 "
              "after `apt-get install python3-gi gir1.2-gst-rtsp-server-1.0`", flush=True)
        return 2
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--mount", default="/live")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--shared", action="store_true", help="all clients see the same running stream")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )')
    factory.set_shared(args.shared)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on {args.host}:{args.port}", flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://{args.host}:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

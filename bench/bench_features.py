"""Benchmark the feature analysis (corpus/features.py + corpus/pitch.py) against a baseline.

    python bench/bench_features.py [--seconds 20] [--hops 400] [--repeats 5]
                                   [--baseline 718a1f9433e214eccbc22351914f2bb7f2d626a9]

The baseline is the implementation as it was before the speed work: both files are read from
that commit with ``git show`` and loaded as modules in this run (its features module is
pointed at its own pitch module), so old and new are timed on the same machine, interleaved.

Figures (48 kHz, one core):
1. Streaming: ``StreamAnalyzer.process`` fed one 256-sample hop at a time (what the live
   compressor does), pitched and unpitched: per-hop cost and realtime factor (hop duration /
   cost; goal for pitched >= 10x, i.e. <= 0.53 ms per hop including the YIN tracker).
2. Offline: ``analyze`` of a whole clip (pitched free, pitched with a known note, unpitched):
   seconds, realtime factor, and the time 10 minutes of audio would take.
3. Agreement: the largest difference between old and new features / loudness / f0.

Each figure is the best of ``--repeats`` runs (the machine is shared; the best run is the
least disturbed one), as wall-clock time and as this process's CPU time (the cost on one
core, whatever else runs). Ratios are old / new.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")              # one core, as in the live compressor

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instrument.corpus import features as new_features  # noqa: E402

SR = 48000
HOP_SAMPLES = 256
BASELINE = "718a1f9433e214eccbc22351914f2bb7f2d626a9"


def load_baseline(commit: str) -> types.ModuleType | None:
    """The features module of ``commit`` (with its own pitch module), or None."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout

    try:
        pitch_src, feat_src = show("instrument/corpus/pitch.py"), show(
            "instrument/corpus/features.py")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"baseline {commit[:10]} not readable ({e}); timing the new code only")
        return None
    mods = []
    for name, src in (("_baseline_pitch", pitch_src), ("_baseline_features", feat_src.replace(
            "from instrument.corpus.pitch import", "from _baseline_pitch import"))):
        mod = types.ModuleType(name)
        sys.modules[name] = mod                    # dataclasses look their module up
        exec(compile(src, f"{commit[:10]}:{name}", "exec"), mod.__dict__)
        mods.append(mod)
    return mods[1]


def test_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """A pitched clip: a 40-harmonic tone gliding 110..440 Hz with vibrato, light noise, a
    noise burst and a silence (so voiced, unvoiced and silent frames all occur)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 110.0 * 2.0 ** (2.0 * (0.5 - 0.5 * np.cos(2 * np.pi * t / max(seconds, 1.0))))
    f0 *= 1.0 + 0.01 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = np.zeros(n)
    for k in range(1, 41):
        x += np.where(k * f0 < SR / 2, (0.4 / k) * np.sin(k * phase + rng.uniform(0, 6.3)), 0.0)
    x += 0.002 * rng.standard_normal(n)
    burst = slice(n // 3, n // 3 + SR // 4)
    x[burst] = 0.1 * rng.standard_normal(len(x[burst]))
    x[2 * n // 3:2 * n // 3 + SR // 4] = 0.0
    return x.astype(np.float32)


def best_of(fn: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float]:
    """Best (wall s, cpu s) of ``repeats`` runs (each the best of its own)."""
    runs = [fn() for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, cpu s of this process) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def stream_cost_s(module: types.ModuleType, x: np.ndarray, mode: str,
                  hops: int) -> tuple[float, float]:
    """(wall, cpu) seconds per hop of ``StreamAnalyzer.process`` fed one hop at a time."""
    sa = module.StreamAnalyzer(SR, mode, HOP_SAMPLES)
    sa.process(x[:SR])
    blocks = [x[SR + i * HOP_SAMPLES:SR + (i + 1) * HOP_SAMPLES] for i in range(hops)]

    def run() -> None:
        for b in blocks:
            sa.process(b)

    wall, cpu = timed(run)
    return wall / hops, cpu / hops


def offline_s(module: types.ModuleType, x: np.ndarray, mode: str,
              f0_hz: float | None) -> tuple[float, float]:
    return timed(lambda: module.analyze(x, SR, mode, f0_hz))


def agreement(old: types.ModuleType, x: np.ndarray) -> None:
    print("\nagreement, old vs new (max |difference|):")
    for mode, f0 in (("pitched", None), ("pitched", 220.0), ("unpitched", None)):
        a, b = old.analyze(x, SR, mode, f0), new_features.analyze(x, SR, mode, f0)
        print(f"  {mode:9s} f0_hz={f0!s:5s}  features {np.abs(a.features - b.features).max():.2e}"
              f"  loudness_db {np.abs(a.loudness_db - b.loudness_db).max():.2e}"
              f"  f0_hz {np.abs(a.f0_hz - b.f0_hz).max():.2e}"
              f"  voiced same {bool(np.array_equal(a.voiced, b.voiced))}")
    sa_old, sa_new = old.StreamAnalyzer(SR, "pitched"), new_features.StreamAnalyzer(SR, "pitched")
    fa = np.concatenate([sa_old.process(x[i:i + 300]).features for i in range(0, SR, 300)])
    fb = np.concatenate([sa_new.process(x[i:i + 300]).features for i in range(0, SR, 300)])
    print(f"  streaming pitched (300-sample blocks): features {np.abs(fa - fb).max():.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="offline clip length")
    ap.add_argument("--hops", type=int, default=400, help="hops per streaming run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per figure (best is kept)")
    ap.add_argument("--baseline", default=BASELINE, help="commit of the old implementation")
    args = ap.parse_args()
    old = load_baseline(args.baseline)
    x = test_signal(max(args.seconds, 1.0 + (args.hops + 2) * HOP_SAMPLES / SR))
    hop_s = HOP_SAMPLES / SR
    impls = [("new", new_features)] + ([("old", old)] if old else [])

    print(f"streaming, one {HOP_SAMPLES}-sample hop per call ({hop_s * 1e3:.2f} ms of audio):")
    for mode in ("pitched", "unpitched"):
        cost = {name: best_of(lambda m=m, mode=mode: stream_cost_s(m, x, mode, args.hops),
                              args.repeats) for name, m in impls}
        for i, kind in enumerate(("wall", "cpu")):
            line = "  ".join(f"{name} {c[i] * 1e3:.3f} ms/hop ({hop_s / c[i]:4.1f}x realtime)"
                             for name, c in cost.items())
            ratio = f"  speed-up {cost['old'][i] / cost['new'][i]:.1f}x" if old else ""
            print(f"  {mode:9s} {kind:4s} {line}{ratio}")

    clip_s = len(x) / SR
    print(f"\noffline analyze of {clip_s:.0f} s:")
    for mode, f0 in (("pitched", None), ("pitched", 220.0), ("unpitched", None)):
        cost = {name: best_of(lambda m=m, mode=mode, f0=f0: offline_s(m, x, mode, f0),
                              max(1, args.repeats // 2)) for name, m in impls}
        for i, kind in enumerate(("wall", "cpu")):
            line = "  ".join(f"{name} {c[i]:.3f} s ({clip_s / c[i]:3.0f}x realtime, 10 min in "
                             f"{600.0 * c[i] / clip_s:4.1f} s)" for name, c in cost.items())
            ratio = f"  speed-up {cost['old'][i] / cost['new'][i]:.1f}x" if old else ""
            print(f"  {mode:9s} f0_hz={f0!s:5s} {kind:4s} {line}{ratio}")
    if old:
        agreement(old, x)


if __name__ == "__main__":
    main()

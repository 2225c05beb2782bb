"""Offline encoding: a sound file -> trajectory (CSV / JSON) and a picture over the corpus map.

:func:`encode_file` runs the same :class:`~instrument.listen.follower.Follower` as the live
listener, so an offline trajectory equals the live one for the same file whatever the block
size (``block_frames`` only chooses how the file is chunked; the result is identical).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from instrument.errors import ConfigError, describe
from instrument.listen.follower import Coord, Follower, load_encoder
from instrument.listen.live import read_audio
from instrument.model.modelfile import Encoder

FIELDS = ("time_s", "x", "y", "loudness_db", "voiced", "silent", "f0_hz")


def encode_audio(model: Encoder | str | Path, audio: np.ndarray, sample_rate: int,
                 block_frames: int | None = None, smoothing_ms: float = 0.0,
                 silence_db: float = -70.0) -> list[Coord]:
    """Samples ((n,) or (n, ch)) at ``sample_rate`` -> one Coord per hop of the signal."""
    f = Follower(load_encoder(model), sample_rate, smoothing_ms, silence_db)
    coords = f.encode_all(audio, block_frames)
    duration_s = len(audio) / sample_rate
    return [c for c in coords if c.time_s <= duration_s]


def encode_file(model: Encoder | str | Path, path: str | Path, block_frames: int | None = None,
                smoothing_ms: float = 0.0, silence_db: float = -70.0) -> list[Coord]:
    """A sound file at its own rate (resampled to the model's inside) -> trajectory."""
    audio, sr = read_audio(path)
    return encode_audio(model, audio, sr, block_frames, smoothing_ms, silence_db)


def write_csv(coords: list[Coord], out: str | Path) -> Path:
    out = Path(out)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        for c in coords:
            w.writerow([f"{c.time_s:.6f}", f"{c.x:.6f}", f"{c.y:.6f}", f"{c.loudness_db:.2f}",
                        int(c.voiced), int(c.silent), f"{c.f0_hz:.3f}"])
    return out


def read_csv(path: str | Path) -> list[Coord]:
    with Path(path).open(encoding="utf-8") as fh:
        return [Coord(float(r["time_s"]), float(r["x"]), float(r["y"]), float(r["loudness_db"]),
                      r["voiced"] == "1", r["silent"] == "1", float(r.get("f0_hz") or 0.0))
                for r in csv.DictReader(fh)]


def write_json(coords: list[Coord], out: str | Path, meta: dict | None = None) -> Path:
    out = Path(out)
    doc = {"fields": list(FIELDS), **(meta or {}), "coords": [c.as_dict() for c in coords]}
    out.write_text(json.dumps(doc, indent=None), encoding="utf-8")
    return out


def write_trajectory(coords: list[Coord], out: str | Path, meta: dict | None = None) -> Path:
    """By extension: ``.csv`` or ``.json``."""
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return write_csv(coords, out)
    if suffix == ".json":
        return write_json(coords, out, meta)
    raise ConfigError(describe("encode: output file", str(out), ".csv or .json",
                               "name the output e.g. trajectory.csv"))


# Corpus label styles: nine well-separated hues (matplotlib's tab10 without its grey, which
# is kept for the trajectory's grey-to-black time ramp); past nine labels the marker changes
# too, so every label has its own (colour, marker) pair.
LABEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#bcbd22", "#17becf")
LABEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _label_style(k: int) -> tuple[str, str]:
    """(colour, marker) of the k-th sorted corpus label."""
    n_c = len(LABEL_COLOURS)
    return LABEL_COLOURS[k % n_c], LABEL_MARKERS[(k // n_c) % len(LABEL_MARKERS)]


def plot_trajectory(model: Encoder | str | Path, coords: list[Coord], out_png: str | Path,
                    title: str | None = None) -> Path:
    """Corpus points (coloured by label) in the 0..1 square with the trajectory over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    enc = load_encoder(model)
    lat = enc.meta.get("latent", {})
    pts = np.asarray(lat.get("corpus_points", []), np.float64).reshape(-1, 2)
    labels = list(lat.get("corpus_labels", []))
    if len(labels) != len(pts):
        labels = ["corpus"] * len(pts)
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=100)
    try:
        uniq = sorted(set(labels))
        lab_arr = np.asarray(labels, dtype=object)
        for k, lab in enumerate(uniq):
            sel = lab_arr == lab
            colour, marker = _label_style(k)
            ax.scatter(pts[sel, 0], pts[sel, 1], s=10, alpha=0.6, color=colour, marker=marker,
                       linewidths=0, label=lab)
        live = [c for c in coords if not c.silent]
        if live:
            xy = np.array([[c.x, c.y] for c in live])
            t = np.array([c.time_s for c in live])
            ax.plot(xy[:, 0], xy[:, 1], color="black", lw=0.8, alpha=0.6)
            # grey -> black over time: no hue, so it never reads as one of the labels
            ramp = matplotlib.colors.LinearSegmentedColormap.from_list(
                "time", [(0.62, 0.62, 0.62), (0.0, 0.0, 0.0)])
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=t, cmap=ramp, s=10, zorder=3)
            fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04, label="time (s)")
            ax.scatter(*xy[0], marker="o", s=60, facecolors="none", edgecolors="green",
                       zorder=4, label="start")
            ax.scatter(*xy[-1], marker="x", s=60, color="red", zorder=4, label="end")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("latent x")
        ax.set_ylabel("latent y")
        ax.set_title(title or f"{enc.folder.name}: {len(live)} sounding hops of {len(coords)}")
        if uniq or live:
            ax.legend(loc="upper left", fontsize=7, markerscale=1.5, framealpha=0.7)
        out = Path(out_png)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def encode(path: str | Path, model: str | Path | None = None, out: str | Path | None = None,
           plot: str | Path | None = None, block_frames: int | None = None,
           smoothing_ms: float = 0.0, silence_db: float = -70.0) -> list[Coord]:
    """Entry point for ``instrument encode``: trajectory to ``out`` (CSV/JSON), picture to
    ``plot``; prints a one-line summary. Without ``out`` the CSV goes next to the input."""
    enc = load_encoder(model or "default")
    coords = encode_file(enc, path, block_frames, smoothing_ms, silence_db)
    out_path = Path(out) if out else Path(path).with_suffix(".trajectory.csv")
    write_trajectory(coords, out_path, {"model": str(enc.folder), "input": str(path)})
    sounding = sum(not c.silent for c in coords)
    msg = f"encode: {path}: {len(coords)} hops ({sounding} sounding) -> {out_path}"
    if plot:
        plot_trajectory(enc, coords, plot)
        msg += f", picture {plot}"
    print(msg)
    return coords


def encode_main(args) -> int:
    """``instrument encode`` with the CLI's argparse namespace (see cli.py ``_p_encode``)."""
    encode(args.file, model=getattr(args, "model", None), out=getattr(args, "out", None),
           plot=getattr(args, "plot", None), smoothing_ms=getattr(args, "smoothing_ms", 0.0)
           or 0.0)
    return 0

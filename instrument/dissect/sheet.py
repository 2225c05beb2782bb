"""The picture sheet of a dissection: what went in, what came out, the loss, the square."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Ten well-separated hues (matplotlib's tab10); past ten labels the marker changes too, so
# every label keeps one (colour, marker) pair in every square of the sheet.
LABEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")
LABEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_LEGEND_LABELS = 40  # more than this and the legend would crowd out the squares


def label_styles(names) -> dict[str, tuple[str, str]]:
    """``{label: (colour, marker)}`` for the sorted ``names``: distinct pairs, stable order."""
    n_c = len(LABEL_COLOURS)
    return {name: (LABEL_COLOURS[i % n_c], LABEL_MARKERS[(i // n_c) % len(LABEL_MARKERS)])
            for i, name in enumerate(sorted(set(names)))}


def plot_sheet(history, out_png: str | Path, n_moments: int = 4) -> Path:
    """Input spectrogram above the reconstruction's, the loss curve (by step), the stream
    LSD curve (by stream time, :func:`~instrument.dissect.render.lsd_over`, with the printed
    first/last-second figures marked) and the memory's positions in the 2-D knob square at up
    to ``n_moments`` moments of learning, the last of them the final state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from instrument.dissect.render import lsd_first_last_s, lsd_over

    h = history
    moments = list(h.code_moments)
    if len(moments) > n_moments:  # spread over the learning; the first and the final state
        pick = np.unique(np.round(np.linspace(0, len(moments) - 1, n_moments)).astype(int))
        moments = [moments[i] for i in pick]
    n_m = max(1, len(moments))
    n_cols = max(n_m, 2)
    fig = plt.figure(figsize=(3.2 * max(n_m, 3), 10.8), constrained_layout=True)
    gs = fig.add_gridspec(4, n_cols, height_ratios=[1, 1, 0.8, 1])
    t_end = max(h.seconds, h.hop_s)
    lo, hi = float(np.log(1e-4)), 0.0
    for row, (frames, title) in enumerate(((h.in_frames, "input (log features)"),
                                           (h.out_frames, "reconstruction through the net"))):
        ax = fig.add_subplot(gs[row, :])
        if len(frames):
            ax.imshow(np.asarray(frames, np.float32).T, aspect="auto", origin="lower",
                      extent=[0, t_end, 0, frames.shape[1]], vmin=lo, vmax=hi, cmap="magma",
                      interpolation="nearest")
        ax.set_title(title)
        ax.set_ylabel("harmonic / noise band" if h.mode == "pitched" else "bin")
        ax.set_xlabel("stream time (s)")
    half = n_cols // 2
    ax = fig.add_subplot(gs[2, :half])
    steps = [p.step for p in h.progress if np.isfinite(p.loss)]
    loss = [p.loss for p in h.progress if np.isfinite(p.loss)]
    if steps:
        ax.plot(steps, loss, color="C0")
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("loss")
    # the stream LSD: the same definition (lsd_over) as the printed first/last-second figures
    ax = fig.add_subplot(gs[2, half:])
    win_s = max(0.25, t_end / 100, h.stride * h.hop_s)
    edges = np.arange(0.0, t_end + win_s, win_s)
    curve = [(a + win_s / 2, lsd_over(h, a, a + win_s)) for a in edges[:-1]]
    curve = [c for c in curve if np.isfinite(c[1])]
    if curve:
        ax.plot(*zip(*curve, strict=True), color="C1", marker=".", ms=3)
    first_db, last_db = lsd_first_last_s(h)
    marks = [((0.0, min(1.0, t_end)), first_db, "first"),
             ((max(0.0, t_end - 1.0), t_end), last_db, "last")]
    if t_end <= 1.0:  # one second or less: the first and the last second are the same frames
        marks = [((0.0, t_end), first_db, "whole stream")]
    for (a, b), v, name in marks:
        if np.isfinite(v):
            ax.hlines(v, a, b, color="k", lw=2)
            label = name if name == "whole stream" else f"{name} second"
            # inside the axes, over its own line: the first label starts at the left end
            # (clear of the y-axis label), the last one ends at the right end
            right = name == "last"
            ax.annotate(f"{label} {v:.2f} dB", (b if right else a, v), fontsize=7,
                        xytext=(-2 if right else 2, 3), textcoords="offset points",
                        ha="right" if right else "left", va="bottom",
                        bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                              "alpha": 0.7})
    ax.set_xlim(0, t_end)
    ax.set_xlabel("stream time (s)")
    ax.set_ylabel("LSD (dB)")
    ax.set_title(f"stream LSD per {win_s:.2g} s (as played)")
    styles = label_styles(lab for _, _, labels in moments for lab in labels)
    handles = {}
    for i, (step, knob, labels) in enumerate(moments):
        ax = fig.add_subplot(gs[3, i])
        lab_arr = np.asarray(labels, dtype=object)
        for name in sorted(set(labels)):
            sel = lab_arr == name
            colour, marker = styles[name]
            handles[name] = ax.scatter(knob[sel, 0], knob[sel, 1], s=8, color=colour,
                                       marker=marker, label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        final = i == len(moments) - 1 and len(moments) > 1
        ax.set_title(f"square at step {step}" + (" (final)" if final else ""))
    if handles and len(styles) <= MAX_LEGEND_LABELS:
        # one legend for every square (same colours in each), below them: it covers no data
        names = sorted(handles)
        fig.legend([handles[n] for n in names], names, loc="outside lower center",
                   ncol=min(len(names), 8), fontsize=7, markerscale=1.5, frameon=False,
                   title="memory labels (every square)", title_fontsize=7)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

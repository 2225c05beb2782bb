"""The picture sheet of a dissection: what went in, what came out, the loss, the square."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_sheet(history, out_png: str | Path, n_moments: int = 4) -> Path:
    """Input spectrogram above the reconstruction's, the loss and LSD curves, and the
    corpus's positions in the 2-D knob square at up to ``n_moments`` moments of learning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = history
    hop_s = h.hop_samples / h.sample_rate
    moments = list(h.code_moments)
    if len(moments) > n_moments:
        pick = np.unique(np.round(np.linspace(0, len(moments) - 1, n_moments)).astype(int))
        moments = [moments[i] for i in pick]
    n_m = max(1, len(moments))
    fig = plt.figure(figsize=(3.2 * max(n_m, 3), 10), constrained_layout=True)
    gs = fig.add_gridspec(4, n_m, height_ratios=[1, 1, 0.8, 1])
    t_end = max(len(h.in_frames), 1) * hop_s
    lo, hi = float(np.log(1e-4)), 0.0
    for row, (frames, title) in enumerate(((h.in_frames, "input (log features)"),
                                           (h.out_frames, "reconstruction through the net"))):
        ax = fig.add_subplot(gs[row, :])
        if len(frames):
            ax.imshow(np.asarray(frames, np.float32).T, aspect="auto", origin="lower",
                      extent=[0, t_end, 0, frames.shape[1]], vmin=lo, vmax=hi, cmap="magma")
        ax.set_title(title)
        ax.set_ylabel("harmonic / noise band" if h.mode == "pitched" else "bin")
        ax.set_xlabel("stream time (s)")
    ax = fig.add_subplot(gs[2, :])
    steps = [p.step for p in h.progress if np.isfinite(p.loss)]
    loss = [p.loss for p in h.progress if np.isfinite(p.loss)]
    if steps:
        ax.plot(steps, loss, label="training loss", color="C0")
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    pl = [(p.step, p.lsd_db) for p in h.progress if np.isfinite(p.lsd_db)]
    if pl:
        ax2.plot(*zip(*pl, strict=True), color="C1", label="LSD on latest frames")
    ax2.set_ylabel("LSD (dB)", color="C1")
    ax.set_title("learning")
    for i, (step, knob, labels) in enumerate(moments):
        ax = fig.add_subplot(gs[3, i])
        names = sorted(set(labels))
        for j, name in enumerate(names):
            sel = np.array([lab == name for lab in labels])
            ax.scatter(knob[sel, 0], knob[sel, 1], s=6, color=f"C{j % 10}", label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(f"square at step {step}")
        if i == 0 and len(names) <= 12:
            ax.legend(fontsize=6, markerscale=2)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

"""Rebuild the shipped default model: ``python models/build_default.py``.

Renders a real corpus with fluidsynth from the FluidR3 GM soundfont (MIT licence) — 12 GM
programs of contrasting timbre, MIDI notes 48..72, 1.5 s each with release, 48 kHz — into a
temporary folder (not committed), trains the pitched autoencoder and cuts it to
``models/default/``. ``render_corpus`` is also used to make ``tests/data/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
LICENCE = "rendered with fluidsynth from the FluidR3 GM soundfont (MIT licence)"
# name -> General MIDI program (0-based)
PROGRAMS = {
    "piano": 0, "epiano": 4, "vibraphone": 11, "organ": 19, "guitar": 24, "violin": 40,
    "cello": 42, "trumpet": 56, "oboe": 68, "clarinet": 71, "flute": 73, "pad": 89,
}
ROOT = Path(__file__).resolve().parents[1]
CORPUS_DESCRIPTION = ("12 GM programs x MIDI notes 48-72, 1.5 s each, rendered at 48 kHz by "
                      "models/build_default.py")


def _write_midi(path: Path, program: int, note: int, hold_s: float, total_s: float,
                velocity: int = 96) -> None:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tempo = 500000  # 120 bpm: 960 ticks per second
    tps = 960
    tr.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    tr.append(mido.Message("program_change", program=program, time=0))
    tr.append(mido.Message("note_on", note=note, velocity=velocity, time=0))
    tr.append(mido.Message("note_off", note=note, velocity=0, time=int(hold_s * tps)))
    tr.append(mido.MetaMessage("end_of_track", time=int((total_s - hold_s) * tps)))
    mid.save(str(path))


def render_note(out_wav: Path, program: int, note: int, seconds: float, hold_s: float,
                sample_rate: int = 48000, gain: float = 0.5) -> None:
    """Render one note to a 16-bit mono WAV of exactly ``seconds``."""
    import soundfile as sf

    if shutil.which("fluidsynth") is None or not SF2.is_file():
        raise RuntimeError(f"needs fluidsynth and {SF2} (apt install fluidsynth "
                           "fluid-soundfont-gm)")
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "n.mid", Path(tmp) / "n.wav"
        _write_midi(mid, program, note, hold_s, seconds)
        subprocess.run(["fluidsynth", "-ni", "-R", "0", "-C", "0", "-g", str(gain), "-r",
                        str(sample_rate), "-F", str(wav), str(SF2), str(mid)],
                       check=True, capture_output=True)
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    n = int(round(seconds * sample_rate))
    mono = np.pad(mono[:n], (0, max(0, n - len(mono))))
    fade = min(n, int(0.01 * sample_rate))
    mono[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    sf.write(str(out_wav), mono, sample_rate, subtype="PCM_16")


def render_corpus(out_dir: Path, programs: dict[str, int], notes: list[int], seconds: float,
                  hold_s: float, sample_rate: int = 48000) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, prog in programs.items():
        for note in notes:
            p = out_dir / f"{name}_{note}.wav"
            render_note(p, prog, note, seconds, hold_s, sample_rate)
            paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--seconds", type=float, default=175.0, help="training time limit")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--keep-corpus", type=Path, default=None,
                    help="render the corpus here and keep it")
    args = ap.parse_args(argv)

    from instrument.model.cut import cut
    from instrument.model.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.keep_corpus or Path(tmp) / "corpus"
        if not any(corpus.glob("*.wav")):
            print(f"rendering corpus to {corpus} ...", file=sys.stderr)
            render_corpus(corpus, PROGRAMS, list(range(48, 73)), 1.5, 1.1)
        ck = Path(tmp) / "default.pt"
        cfg = TrainConfig(mode="pitched", steps=args.steps, max_seconds=args.seconds,
                          batch=512, lr=3e-3, licence=LICENCE, eval_every=500)
        train(corpus, ck, cfg)
        out = cut(ck, args.out, name="default")
    # the corpus was a temporary folder: record how to make it again instead of its path
    meta_path = Path(out) / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["corpus"]["folder"] = CORPUS_DESCRIPTION
    meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

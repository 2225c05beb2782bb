"""Read a sound folder into clips: float32 mono at one sample rate, with labels and notes.

Every file gives one report line: read (duration, original rate/channels, notes such as
"DC removed" or "resampled 96000->48000") or skipped (the reason). Policy:

- Formats: whatever libsndfile reads (WAV/AIFF/FLAC/OGG/MP3, any rate, depth, channels).
  Files with other extensions (.txt, .json, ...) are skipped without being opened.
- Reading is done in bounded blocks, so a header that claims 4 GB never makes us allocate
  4 GB: only what is really in the file is read.
- Channels are averaged to mono; the mean (DC offset) is always removed, and reported when
  it is above 0.001 of full scale; then soxr (very high quality) resamples.
- NaN or inf samples: the file is rejected (naming it), so the loss can never become NaN.
- A truncated file (e.g. MP3 cut in half) is read as far as it goes, with a warning.
- A file shorter than ``min_seconds`` (default: one analysis window, 2048 samples) is
  skipped with a message rather than padded: a few milliseconds of sound padded with
  silence would teach the model mostly silence.
- A file whose peak is below -80 dBFS is skipped as silent.
- Broken WAV headers (truncated, or a malformed chunk such as a bad PEAK chunk) are
  diagnosed by walking the RIFF chunks, since libsndfile's own message ("No 'data' chunk
  marker") is misleading.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from instrument.corpus.features import WINDOW_SAMPLES
from instrument.errors import AudioFileError, CorpusError, describe

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".bwf", ".aif", ".aiff", ".aifc", ".flac", ".ogg", ".oga", ".mp3"})
BLOCK_FRAMES = 1 << 16          # frames per read: bounds every allocation
SILENCE_PEAK_DB = -80.0         # a file whose peak is below this is silent
DC_REPORT_THRESHOLD = 1e-3      # report DC removal above this offset (full scale = 1)
MIN_TOTAL_SECONDS = 0.5         # read_folder refuses a corpus with less usable audio
NOTE_NAMES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_NOTE_RE = re.compile(r"^([a-g])(#|b|s)?(-?\d)$", re.IGNORECASE)
_SEP_RE = re.compile(r"[_\- .]+")


@dataclass
class Clip:
    """One usable file: ``audio`` float32 mono at ``sample_rate``."""

    path: Path
    audio: np.ndarray
    label: str
    note: int | None = None
    sample_rate: int = 48000

    @property
    def seconds(self) -> float:
        return len(self.audio) / float(self.sample_rate)


@dataclass
class Corpus:
    """The usable clips of a folder, one report line per file, and the skipped files."""

    folder: Path
    sample_rate: int
    clips: list[Clip] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)

    @property
    def seconds(self) -> float:
        return float(sum(c.seconds for c in self.clips))

    @property
    def labels(self) -> list[str]:
        return sorted({c.label for c in self.clips})

    def summary(self) -> str:
        """One line: files read/skipped, minutes of audio, labels."""
        n = len(self.clips) + len(self.skipped)
        labels = ", ".join(self.labels) if self.clips else "none"
        return (f"{len(self.clips)} of {n} files read, {len(self.skipped)} skipped; "
                f"{self.seconds / 60.0:.2f} min of audio at {self.sample_rate} Hz; "
                f"labels: {labels}")


def safe_name(path: str | os.PathLike) -> str:
    """A printable form of a file name (undecodable bytes shown as \\xNN, never raises)."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def parse_name(stem: str) -> tuple[str, int | None]:
    """``(label, midi note)`` from a file stem: ``flute_60``, ``piano-C4``, ``violin_A#3``.

    The note is the last ``_``/``-``/space separated token: a MIDI number 0..127 or a note
    name with octave (C4 = 60, sharps ``#``/``s``, flats ``b``). The label is the stem without
    it; note is None (label = whole stem) when the last token is not a note."""
    parts = [p for p in _SEP_RE.split(stem) if p]
    if len(parts) < 2:
        return stem, None
    token = parts[-1]
    note: int | None = None
    if token.isdigit() and len(token) <= 3 and 0 <= int(token) <= 127:
        note = int(token)
    else:
        m = _NOTE_RE.match(token)
        if m:
            acc = {"#": 1, "s": 1, "b": -1}.get((m.group(2) or "").lower(), 0)
            n = 12 * (int(m.group(3)) + 1) + NOTE_NAMES[m.group(1).lower()] + acc
            note = n if 0 <= n <= 127 else None
    if note is None:
        return stem, None
    cut = stem.rfind(token)
    label = stem[:cut].rstrip("_- .")
    return (label or stem), note


def _diagnose_riff(head: bytes, size: int) -> str | None:
    """Explain why a RIFF/WAVE file is unreadable, or None if its chunks look sound."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return None
    pos = 12
    prev: tuple[str, int, int] | None = None
    while True:
        if pos + 8 > size:
            where = (f"after chunk '{prev[0]}'" if prev else "right after the RIFF header")
            return (f"truncated WAV header: the file ends at byte {size} {where}, before any "
                    f"'data' chunk; the file was cut off while being written or copied")
        cid, csize = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if not all(32 <= b < 127 for b in cid):
            if prev is None:
                return f"malformed WAV: no valid chunk at byte {pos}"
            return (f"malformed '{prev[0]}' chunk at byte {prev[1]}: it declares {prev[2]} "
                    f"bytes, but what follows is not a chunk ({cid!r}); re-export the file "
                    f"(a DAW, sox or ffmpeg rewrites the header)")
        name = cid.decode("ascii")
        if name == "data":
            return None
        if pos + 8 + csize > size:
            return (f"truncated WAV header: chunk '{name}' at byte {pos} declares {csize} "
                    f"bytes but the file ends at byte {size}")
        prev = (name, pos, csize)
        pos += 8 + csize + (csize & 1)
        if pos + 8 > len(head):       # chunks beyond what we loaded: give up diagnosing
            return None


def _open_error(path: Path, err: Exception) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    why = _diagnose_riff(head, size)
    if why:
        return why
    sample = head[:64]
    if sample and all(b in b"\t\n\r" or 32 <= b < 127 for b in sample):
        text = sample[:24].decode("ascii")
        return f"not an audio file: it holds text ({text!r}...)"
    return f"not a readable audio file ({err}); formats: WAV, AIFF, FLAC, OGG, MP3"


def _read_raw(path: Path, sample_rate: int) -> tuple[np.ndarray, list[str], str]:
    """(audio, notes, origin) or AudioFileError; origin like ``44100 Hz 2 ch PCM_24``."""
    if sample_rate <= 0:
        raise AudioFileError(describe("sample_rate", sample_rate, "> 0 Hz", "pass e.g. 48000"))
    if not path.is_file():
        raise AudioFileError(f"{safe_name(path)}: not found or not a file")
    if path.stat().st_size == 0:
        raise AudioFileError("empty file (0 bytes): not audio")
    try:
        f = sf.SoundFile(os.fsencode(path))   # bytes: names with undecodable bytes work
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioFileError(_open_error(path, e)) from None
    notes: list[str] = []
    with f:
        rate, channels, claimed = int(f.samplerate), int(f.channels), int(f.frames)
        origin = f"{rate} Hz, {channels} ch, {f.subtype}"
        blocks: list[np.ndarray] = []
        total = 0
        try:
            while True:
                b = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if len(b) == 0:
                    break
                blocks.append(b)
                total += len(b)
        except (sf.LibsndfileError, RuntimeError) as e:
            if not blocks:
                raise AudioFileError(f"cannot decode audio ({e})") from None
            notes.append(f"decode error after {total} frames, kept what was read ({e})")
    if rate <= 0:
        raise AudioFileError(describe("sample rate in header", rate, "> 0 Hz",
                                      "the header is broken; re-export the file"))
    if total == 0:
        raise AudioFileError(f"no audio frames ({origin})")
    if 0 < claimed and total < 0.99 * claimed:
        notes.append(f"truncated: header says {claimed / rate:.3f} s, "
                     f"read {total / rate:.3f} s")
    x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    bad = ~np.isfinite(x)
    if bad.any():
        raise AudioFileError(f"contains {int(bad.sum())} NaN/inf samples of {x.size}; "
                             f"rejected so training never sees them; fix or re-export it")
    mono = x.mean(axis=1, dtype=np.float64) if channels > 1 else x[:, 0].astype(np.float64)
    if channels > 1:
        notes.append(f"mixed {channels} channels to mono")
    dc = float(mono.mean())
    mono -= dc
    if abs(dc) > DC_REPORT_THRESHOLD:
        notes.append(f"DC removed (offset {dc:+.3f})")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="VHQ")
        notes.append(f"resampled {rate}->{sample_rate}")
    return np.ascontiguousarray(mono, dtype=np.float32), notes, origin


def read_file(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Float32 mono audio at ``sample_rate`` (DC removed), or AudioFileError with the reason."""
    p = Path(path)
    try:
        return _read_raw(p, sample_rate)[0]
    except AudioFileError as e:
        raise AudioFileError(f"{safe_name(p)}: {e}") from None


def read_folder(folder: str | os.PathLike, sample_rate: int, min_seconds: float | None = None,
                min_total_seconds: float = MIN_TOTAL_SECONDS) -> Corpus:
    """Scan ``folder`` recursively (sorted) into a :class:`Corpus`.

    ``min_seconds`` (default one analysis window) is the shortest usable file. Raises
    CorpusError with the summary when less than ``min_total_seconds`` of sound remains."""
    root = Path(folder)
    if not root.is_dir():
        raise CorpusError(describe("sound folder", safe_name(root), "an existing folder",
                                   "give the folder that holds your sound files"))
    if min_seconds is None:
        min_seconds = WINDOW_SAMPLES / float(sample_rate)
    corpus = Corpus(root, int(sample_rate))
    files = sorted((p for p in root.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    for p in files:
        rel = safe_name(p.relative_to(root).as_posix())

        def skip(reason: str, rel: str = rel) -> None:
            corpus.skipped.append((rel, reason))
            corpus.report.append(f"skipped {rel}: {reason}")
            log.warning("skipped %s: %s", rel, reason)

        if p.suffix.lower() not in AUDIO_EXTENSIONS:
            skip(f"not an audio file type ({p.suffix or 'no extension'})")
            continue
        try:
            audio, notes, origin = _read_raw(p, sample_rate)
        except AudioFileError as e:
            skip(str(e))
            continue
        seconds = len(audio) / float(sample_rate)
        if seconds < min_seconds:
            skip(f"too short: {seconds * 1000:.1f} ms, need at least {min_seconds * 1000:.1f} "
                 f"ms (one analysis window); use a longer recording")
            continue
        peak = float(np.max(np.abs(audio)))
        if peak <= 10.0 ** (SILENCE_PEAK_DB / 20.0):
            skip(f"silent (peak below {SILENCE_PEAK_DB:g} dBFS)")
            continue
        label, note = parse_name(p.stem)
        corpus.clips.append(Clip(p, audio, label, note, int(sample_rate)))
        extra = "".join(f"; {n}" for n in notes)
        nt = f", note {note}" if note is not None else ""
        line = f"read {rel}: {seconds:.3f} s ({origin}), label {label!r}{nt}{extra}"
        corpus.report.append(line)
        log.info("%s", line)
    if not corpus.clips or corpus.seconds < min_total_seconds:
        reasons = "; ".join(f"{f}: {r}" for f, r in corpus.skipped[:10])
        more = f" (+{len(corpus.skipped) - 10} more)" if len(corpus.skipped) > 10 else ""
        err = CorpusError(
            f"{safe_name(root)}: too little usable audio to train on: {corpus.summary()}; "
            f"need at least {min_total_seconds:g} s of sound. Skipped: {reasons or 'none'}"
            f"{more}. Fix: add audible WAV/AIFF/FLAC/OGG/MP3 files to the folder")
        err.corpus = corpus          # type: ignore[attr-defined]  (for callers' reports)
        raise err
    return corpus

"""Sources of sound for dissecting: files, folders, video audio tracks and a live input.

Every source yields mono float32 hops of ``hop_samples`` at the model rate. File sources are
read whole, one file at a time, through :mod:`instrument.corpus.read` (so they are resampled
and cleaned exactly like a training corpus), then cut into hops; :func:`paced` spaces them in
real time for live use, a render takes them as fast as it asks. :class:`DeviceSource` reads a
sounddevice input whose callback only copies into a preallocated ring.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instrument.engine.ring import Ring
from instrument.errors import AudioFileError, CorpusError, DeviceError, describe

log = logging.getLogger(__name__)

AUDIO_EXTS = {".wav", ".wave", ".aif", ".aiff", ".flac", ".ogg", ".oga", ".mp3", ".opus"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".m4a"}


def read_video_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode the audio track of a video file with PyAV, mono float32 at ``sample_rate``."""
    try:
        import av  # optional: only video sources need it
    except ImportError:
        raise AudioFileError(describe(f"{path}: video file", path.suffix,
                                      "audio files without PyAV",
                                      "pip install av (PyAV) to read the audio of video files"))\
            from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioFileError(f"{path}: the video has no audio track; pick another file")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except AudioFileError:
        raise
    except Exception as e:  # PyAV raises many kinds; name the file and go on
        raise AudioFileError(f"{path}: cannot decode the audio track ({e}); skipped") from None
    audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)


def read_any(path: Path, sample_rate: int) -> np.ndarray:
    """One file -> mono float32 at ``sample_rate`` (audio via corpus.read, video via PyAV)."""
    if path.suffix.lower() in VIDEO_EXTS:
        return read_video_audio(path, sample_rate)
    from instrument.corpus.read import read_file

    return np.asarray(read_file(path, sample_rate), np.float32).reshape(-1)


def list_files(source: str | Path) -> list[Path]:
    """A file, or a folder's audio/video files (recursively, sorted)."""
    p = Path(source)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*")
                       if f.is_file() and f.suffix.lower() in AUDIO_EXTS | VIDEO_EXTS)
        if files:
            return files
        raise CorpusError(describe(f"source folder {p}", "no audio or video files",
                                   ", ".join(sorted(AUDIO_EXTS | VIDEO_EXTS)),
                                   "point at a folder of sounds"))
    raise CorpusError(describe("source", str(source), "an existing file or folder",
                               "check the path"))


class FileSource:
    """The audio of a file or a folder (each file in turn) as hops at ``sample_rate``.

    Unreadable files are skipped with a log line naming them; ``loop`` starts again after the
    last file; ``seconds`` stops after that much audio. ``label`` is the current file's stem;
    ``passes`` counts the passes over the files begun so far and ``pass_samples`` is the
    length of one whole pass (known once the first pass is done).
    """

    def __init__(self, source: str | Path, sample_rate: int, hop_samples: int = 256,
                 loop: bool = False, seconds: float | None = None):
        self.files = list_files(source)
        self.sample_rate = int(sample_rate)
        self.hop_samples = int(hop_samples)
        self.loop = loop
        self.max_samples = None if seconds is None else int(seconds * sample_rate)
        self.label = ""
        self.skipped: list[str] = []
        self.passes = 0
        self.pass_samples = 0

    def clips(self) -> Iterator[tuple[str, np.ndarray]]:
        self.passes, self.pass_samples = 0, 0  # counted afresh by each reading
        while True:
            good = 0
            self.passes += 1
            for f in self.files:
                try:
                    audio = read_any(f, self.sample_rate)
                except (AudioFileError, CorpusError) as e:
                    if str(f) not in self.skipped:
                        self.skipped.append(str(f))
                        log.warning("skipped %s", e)
                    continue
                if len(audio) == 0:
                    continue
                good += 1
                if self.passes == 1:
                    self.pass_samples += len(audio)
                yield f.stem, audio
            if good == 0 and self.skipped:
                raise CorpusError(f"no readable audio in {len(self.files)} file(s); "
                                  f"skipped: {', '.join(self.skipped)}")
            if not self.loop or good == 0:
                return

    def hops(self) -> Iterator[np.ndarray]:
        """Yield (hop_samples,) float32 arrays; the last hop of a file is zero-padded."""
        h = self.hop_samples
        done = 0
        for label, audio in self.clips():
            self.label = label
            pad = (-len(audio)) % h
            if pad:
                audio = np.concatenate([audio, np.zeros(pad, np.float32)])
            for i in range(0, len(audio), h):
                if self.max_samples is not None and done >= self.max_samples:
                    return
                done += h
                yield audio[i:i + h]


def paced(hops: Iterator[np.ndarray], sample_rate: int, hop_samples: int,
          speed: float = 1.0, stop: threading.Event | None = None) -> Iterator[np.ndarray]:
    """Space ``hops`` in real time (``speed`` x), never drifting: hop n is due at n*hop/sr."""
    t0 = time.perf_counter()
    period_s = hop_samples / sample_rate / speed
    for n, hop in enumerate(hops):
        if stop is not None and stop.is_set():
            return
        wait_s = t0 + n * period_s - time.perf_counter()
        if wait_s > 0:
            time.sleep(wait_s)
        yield hop


class DeviceSource:
    """A live input device; the callback only copies into a preallocated ring.

    ``overruns`` counts callbacks that found the ring full (the reader fell behind) and
    ``status_flags`` those PortAudio flagged; ``hops()`` yields as soon as a hop is there.
    """

    def __init__(self, device: str | int | None, sample_rate: int, hop_samples: int = 256,
                 ring_seconds: float = 4.0, block: int = 256):
        self.sample_rate = int(sample_rate)
        self.hop_samples = int(hop_samples)
        self.device = device
        self.block = block
        self._ring = Ring(max(int(ring_seconds * sample_rate), 4 * block))
        self.overruns = 0  # only the callback writes these two
        self.status_flags = 0
        self._stream = None
        self.label = f"input {device}" if device is not None else "default input"

    def _callback(self, indata, frames, time_info, status) -> None:  # realtime: copy only
        try:
            if status:
                self.status_flags += 1
            if self._ring.free < frames:  # the reader is behind: drop this block, count it
                self.overruns += 1
                return
            self._ring.write(indata[:frames, 0])
        except Exception:  # never let an exception escape into PortAudio
            self.overruns += 1

    def start(self) -> None:
        import sounddevice as sd

        dev = int(self.device) if isinstance(self.device, str) and self.device.isdigit() \
            else self.device
        try:
            self._stream = sd.InputStream(device=dev, channels=1, samplerate=self.sample_rate,
                                          blocksize=self.block, dtype="float32",
                                          callback=self._callback)
            self._stream.start()
        except Exception as e:  # PortAudioError, ValueError for unknown names
            raise DeviceError(describe("input device", self.device,
                                       "a device from 'instrument devices' that runs at "
                                       f"{self.sample_rate} Hz", f"pick another ({e})")) from None

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def hops(self, stop: threading.Event | None = None) -> Iterator[np.ndarray]:
        if self._stream is None:
            self.start()
        h = self.hop_samples
        try:
            while stop is None or not stop.is_set():
                if self._ring.available < h:
                    time.sleep(h / self.sample_rate / 4)
                    continue
                hop = np.empty(h, np.float32)
                self._ring.read_into(hop)
                yield hop
        finally:
            self.stop()

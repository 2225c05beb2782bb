"""The live listener: an input device (or a file played in real time) -> Follower -> OSC.

Device input: a sounddevice ``InputStream`` whose callback only copies the block into a
preallocated ring and counts overflow flags; a worker thread reads the ring, runs the
:class:`~instrument.listen.follower.Follower` and hands the coordinates to the
:class:`~instrument.listen.sender.Sender` (its own thread) and to ``on_coords``.

File input: a thread reads the file and feeds it block by block, paced by the clock (as a
device would deliver it), optionally looping.

This is the only module of ``listen/`` that imports sounddevice, and only when a device is
opened.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from instrument.errors import ConfigError, DeviceError, describe
from instrument.listen.follower import Coord, Follower, load_encoder
from instrument.listen.sender import (
    CONTROL_PORT,
    DEFAULT_ADDRESS,
    Sender,
    SubscriptionServer,
    Target,
    wekinator_target,
)

RING_SECONDS = 2.0
FILE_BLOCK_FRAMES = 256
POLL_S = 0.001


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as (frames, channels) float32 at its own rate (NaNs left for the Follower)."""
    import soundfile as sf

    from instrument.errors import AudioFileError

    p = Path(path)
    if not p.is_file():
        raise AudioFileError(describe("listen: input file", str(p), "an existing sound file",
                                      "check the path"))
    try:
        audio, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioFileError(f"{p}: cannot be read as audio ({e}); convert it to WAV or FLAC") \
            from None
    if audio.shape[0] == 0:
        raise AudioFileError(describe(f"{p}: length", 0, "at least one sample",
                                      "pass a file that holds audio"))
    return audio, int(sr)


def _find_input_device(sd, device: int | str | None) -> tuple[int, dict]:
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudio not available at all
        raise DeviceError(f"audio input: cannot list devices ({e}); install PortAudio "
                          "or start JACK") from None
    inputs = [(i, d) for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    names = ", ".join(f"{i}: {d['name']}" for i, d in inputs) or "none"
    if device is None:
        idx = sd.default.device[0]
        if idx is None or idx < 0:
            if not inputs:
                raise DeviceError(describe("audio input device", None, names,
                                           "connect an input or start JACK"))
            return inputs[0]
        return int(idx), devices[int(idx)]
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if isinstance(device, int):
        for i, d in inputs:
            if i == device:
                return i, d
    else:
        hits = [(i, d) for i, d in inputs if str(device).lower() in d["name"].lower()]
        if hits:
            return hits[0]
    raise DeviceError(describe("audio input device", device, names,
                               "pick an input by index or name ('instrument devices')"))


class Listener:
    """Listen to a device or a file; send coordinates to OSC targets and ``on_coords``.

    ``targets``: ``host:port[/address]`` strings or :class:`Target`; ``wekinator=True``
    adds ``/wek/inputs`` to 127.0.0.1:6448. ``control_port`` (None = off) accepts
    ``/inst/listen/subscribe [port]``. ``on_coords(list[Coord])`` is called from the worker
    thread (drive mode turns it into SetLatent commands).
    """

    def __init__(self, encoder_folder, device: int | str | None = None,
                 file: str | Path | None = None, loop: bool = False,
                 targets: Iterable[str | Target] = (),
                 on_coords: Callable[[list[Coord]], None] | None = None,
                 smoothing_ms: float = 0.0, silence_db: float = -70.0,
                 address: str = DEFAULT_ADDRESS, wekinator: bool = False,
                 control_port: int | None = None, channels: int | None = None,
                 blocksize: int = 0, log: Callable[[str], None] | None = print):
        if device is not None and file is not None:
            raise ConfigError("listen: got both a device and a file; pass one input")
        if channels is not None and channels not in (1, 2):
            raise ConfigError(describe("listen: channels", channels, "1 or 2",
                                       "omit it to use the device's (up to 2)"))
        self.encoder = load_encoder(encoder_folder)
        self.device, self.file, self.loop = device, file, bool(loop)
        self.on_coords = on_coords
        self.smoothing_ms, self.silence_db = smoothing_ms, silence_db
        self.channels, self.blocksize = channels, int(blocksize)
        self._log = log or (lambda s: None)
        self.sender = Sender(targets, address)
        if wekinator:
            self.sender.add_target(wekinator_target())
        self._control_port = control_port
        self.subscriptions: SubscriptionServer | None = None
        self.follower: Follower | None = None
        self.sample_rate = 0
        self.device_name = ""
        self._stream = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ring = np.zeros((0, 1), np.float32)
        self._written = 0  # total frames written by the callback (only the callback writes)
        self._read = 0  # total frames the worker has copied out (only the worker writes)
        self.input_overflows = 0
        self.callback_errors = 0
        self.ring_overruns = 0
        self.callback_errors_seen = 0
        self.coords_out = 0
        self.on_coords_errors = 0
        self.finished = threading.Event()  # set when a non-looping file has been played
        self.file_t0 = 0.0

    # -- setup ----------------------------------------------------------------------------
    def start(self) -> Listener:
        if self._thread is not None:
            return self
        if self._control_port is not None:
            self.subscriptions = SubscriptionServer(self.sender, port=self._control_port).start()
        self.sender.start()
        if self.file is not None:
            self._audio, self.sample_rate = read_audio(self.file)
            self.device_name = f"file {self.file}{' (loop)' if self.loop else ''}"
            self.follower = Follower(self.encoder, self.sample_rate, self.smoothing_ms,
                                     self.silence_db)
            self._thread = threading.Thread(target=self._file_worker, name="listen-file",
                                            daemon=True)
        else:
            self._open_device()
            self._thread = threading.Thread(target=self._device_worker, name="listen-worker",
                                            daemon=True)
        self._stop.clear()
        self._thread.start()
        if self._stream is not None:
            self._stream.start()
        self._print_banner()
        return self

    def _open_device(self) -> None:
        import sounddevice as sd

        idx, info = _find_input_device(sd, self.device)
        ch = self.channels or max(1, min(2, int(info["max_input_channels"])))
        rate = int(round(info["default_samplerate"]))
        self.sample_rate = rate
        self.device_name = f"{idx}: {info['name']}"
        self.follower = Follower(self.encoder, rate, self.smoothing_ms, self.silence_db)
        self._ring = np.zeros((int(RING_SECONDS * rate), ch), np.float32)
        self._written = 0
        self._read = 0
        try:
            self._stream = sd.InputStream(device=idx, channels=ch, samplerate=rate,
                                          dtype="float32", blocksize=self.blocksize,
                                          latency="low", callback=self._callback)
        except Exception as e:  # PortAudioError and friends
            raise DeviceError(describe(f"audio input {self.device_name}", f"{rate} Hz, {ch} ch",
                                       "a rate and channel count the device supports",
                                       f"pick another device ({e})")) from None

    def _print_banner(self) -> None:
        f = self.follower
        assert f is not None
        ch = self._ring.shape[1] if self._stream is not None else self._audio.shape[1]
        rs = "" if f.sample_rate == f.model_rate else f" (resampled to {f.model_rate} Hz)"
        self._log(f"listen: input {self.device_name}, {self.sample_rate} Hz{rs}, {ch} ch")
        self._log(f"listen: model {self.encoder.folder} ({self.encoder.mode}), "
                  f"latency {f.latency_samples} samples ({f.latency_ms:.1f} ms)")
        tg = ", ".join(str(t) for t in self.sender.targets) or "none"
        self._log(f"listen: sending to {tg}")
        if self.subscriptions is not None:
            self._log(f"listen: subscribe with /inst/listen/subscribe [port] to "
                      f"{self.subscriptions.host}:{self.subscriptions.port}")

    # -- the audio callback: copy only ---------------------------------------------------
    def _callback(self, indata, frames, time_info, status) -> None:
        try:
            if status.input_overflow:
                self.input_overflows += 1
            ring = self._ring
            cap = ring.shape[0]
            n = min(frames, cap)
            w = self._written
            if w + n - self._read > cap:  # the worker is behind: drop this block, count it
                self.ring_overruns += 1
                return
            i = w % cap
            first = min(n, cap - i)
            ring[i:i + first] = indata[frames - n:frames - n + first]
            if n > first:
                ring[:n - first] = indata[frames - n + first:]
            self._written = w + n
        except Exception:  # never let an exception escape into PortAudio
            self.callback_errors += 1

    # -- workers --------------------------------------------------------------------------
    def _emit(self, coords: list[Coord]) -> None:
        if not coords:
            return
        self.coords_out += len(coords)
        self.sender.send(coords)
        if self.on_coords is not None:
            try:
                self.on_coords(coords)
            except Exception as e:  # a faulty consumer must not stop listening
                self.on_coords_errors += 1
                if self.on_coords_errors == 1:
                    self._log(f"listen: on_coords raised {type(e).__name__}: {e}")

    def _device_worker(self) -> None:
        f = self.follower
        assert f is not None
        read = 0
        cap = self._ring.shape[0]
        while not self._stop.is_set():
            w = self._written
            if w == read:
                time.sleep(POLL_S)
                continue
            i, n = read % cap, w - read
            first = min(n, cap - i)
            block = self._ring[i:i + first].copy()
            if n > first:
                block = np.concatenate([block, self._ring[:n - first]])
            read = w
            self._read = read  # only now may the callback reuse that part of the ring
            self._emit(f.process(block))

    def _file_worker(self) -> None:
        f = self.follower
        assert f is not None
        audio, sr = self._audio, self.sample_rate
        block = FILE_BLOCK_FRAMES
        t0 = time.monotonic()
        self.file_t0 = t0  # sample s of the file is "captured" at t0 + (s + 1) / sr
        fed = 0  # frames fed since t0
        pos = 0
        while not self._stop.is_set():
            due = t0 + (fed + block) / sr
            wait = due - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                if self._stop.is_set():
                    break
            chunk = audio[pos:pos + block]
            pos += len(chunk)
            fed += len(chunk)
            self._emit(f.process(chunk))
            if pos >= len(audio):
                if not self.loop:
                    self._emit(f.flush())
                    self.finished.set()
                    return
                pos = 0

    # -- control --------------------------------------------------------------------------
    def run(self, seconds: float | None = None) -> None:
        """Start (if needed) and block until ``seconds`` pass, the file ends, or Ctrl-C."""
        self.start()
        t_end = None if seconds is None else time.monotonic() + float(seconds)
        last_report = time.monotonic()
        reported = self.problem_counts()
        try:
            while not self.finished.is_set():
                if t_end is not None and time.monotonic() >= t_end:
                    break
                self.finished.wait(0.2)
                if time.monotonic() - last_report >= 2.0:
                    last_report = time.monotonic()
                    now = self.problem_counts()
                    if now != reported:
                        self._log("listen: " + ", ".join(f"{k} {v}" for k, v in now.items()))
                        reported = now
        finally:
            self.stop()

    def problem_counts(self) -> dict:
        f = self.follower.counts() if self.follower else {}
        return {"input_overflows": self.input_overflows, "callback_errors": self.callback_errors,
                "ring_overruns": self.ring_overruns, "nonfinite_samples":
                f.get("nonfinite_samples", 0), "clipped_samples": f.get("clipped_samples", 0),
                "dropped_coords": self.sender.dropped, "send_errors": self.sender.send_errors}

    def status(self) -> dict:
        f = self.follower
        return {"input": self.device_name, "sample_rate": self.sample_rate,
                "latency_ms": round(f.latency_ms, 2) if f else None,
                "position": f.position if f else None, "coords": self.coords_out,
                **self.problem_counts(), **{"targets": self.sender.status()["targets"]}}

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.sender.stop()
        if self.subscriptions is not None:
            self.subscriptions.stop()
            self.subscriptions = None

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def latent_command(coords: list[Coord]):
    """Drive mode: the newest sounding Coord of a batch as ``SetLatent(x, y)``, else None.

    Silent frames give nothing, so the synthesizer's point holds while the input is quiet
    (unvoiced frames carry the held position, so they do not move it either)."""
    from instrument.control.commands import SetLatent

    for c in reversed(coords):
        if not c.silent:
            return SetLatent(min(1.0, max(0.0, c.x)), min(1.0, max(0.0, c.y)))
    return None


class Drive:
    """Drive mode: the input plays the synthesizer.

    The newest sounding position moves the latent. With ``voice`` the input also plays the
    drone voice (``/inst/gate``): on while the input sounds, at the input's tracked pitch
    (``drone_hz``), and with ``loudness`` its level follows the input's
    (``gain_db = base_gain_db + loudness_db - ref_db``, clamped to the parameter's range).
    Commands go to ``send`` (``Engine.send``); nothing here blocks.
    """

    def __init__(self, send: Callable[[object], object], voice: bool = True,
                 loudness: bool = True, base_gain_db: float = -6.0, ref_db: float = -20.0):
        self.send, self.voice, self.loudness = send, voice, loudness
        self.base_gain_db, self.ref_db = base_gain_db, ref_db
        self._gate = False

    def __call__(self, coords: list[Coord]) -> None:
        from instrument import params
        from instrument.control.commands import Gate, SetParam

        cmd = latent_command(coords)
        if cmd is not None:
            self.send(cmd)
        if not self.voice or not coords:
            return
        last = coords[-1]
        if last.silent:
            if self._gate:
                self.send(Gate(False))
                self._gate = False
            return
        voiced = [c for c in coords if c.voiced and c.f0_hz > 0]
        if voiced:
            hz = params.PARAMS["drone_hz"]
            self.send(SetParam("drone_hz", min(hz.max, max(hz.min, voiced[-1].f0_hz))))
        if self.loudness:
            g = params.PARAMS["gain_db"]
            db = self.base_gain_db + last.loudness_db - self.ref_db
            self.send(SetParam("gain_db", min(g.max, max(g.min, db))))
        if not self._gate:
            self.send(Gate(True))
            self._gate = True


def follow_into(send: Callable[[object], object]) -> Callable[[list[Coord]], None]:
    """An ``on_coords`` for drive mode: ``Listener(..., on_coords=follow_into(engine.send))``."""

    def on_coords(coords: list[Coord]) -> None:
        cmd = latent_command(coords)
        if cmd is not None:
            send(cmd)

    return on_coords


def listen(model: str | Path | None = None, device: int | str | None = None,
           file: str | Path | None = None, loop: bool = False, send: Iterable[str] = (),
           address: str = DEFAULT_ADDRESS, wekinator: bool = False, smoothing_ms: float = 0.0,
           silence_db: float = -70.0, seconds: float | None = None,
           control_port: int | None = CONTROL_PORT) -> dict:
    """Entry point for ``instrument listen``: run until ``seconds``, end of file, or Ctrl-C."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(describe("listen: seconds", seconds, "a positive number",
                                   "omit it to run until Ctrl-C"))
    lst = Listener(model or "default", device=device, file=file, loop=loop, targets=list(send),
                   smoothing_ms=smoothing_ms, silence_db=silence_db, address=address,
                   wekinator=wekinator, control_port=control_port)
    lst.run(seconds)
    st = lst.status()
    print("listen: stopped; " + ", ".join(f"{k} {v}" for k, v in st.items()
                                          if k not in ("targets", "position")))
    return st


def listen_main(args) -> int:
    """``instrument listen`` with the CLI's argparse namespace (see cli.py ``_p_listen``)."""
    listen(model=getattr(args, "model", None), device=getattr(args, "device", None),
           file=getattr(args, "file", None), loop=getattr(args, "loop", False),
           send=getattr(args, "send", []) or [],
           address=getattr(args, "address", DEFAULT_ADDRESS),
           wekinator=getattr(args, "wekinator", False),
           smoothing_ms=getattr(args, "smoothing_ms", 0.0) or 0.0,
           silence_db=getattr(args, "silence_db", -70.0),
           seconds=getattr(args, "seconds", None),
           control_port=getattr(args, "control_port", CONTROL_PORT))
    return 0

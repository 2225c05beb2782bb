"""Realtime playback: the project's only ``import sounddevice``.

Three threads: a worker runs the engine a few blocks ahead into a :class:`Ring`; the PortAudio
callback only copies from the ring into ``outdata`` (no allocation of sample memory, no lock,
no logging, nothing escapes it) and counts problems; a reporter logs the counters.
The engine synthesizes at the device rate, so nothing ever plays at the wrong speed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from instrument.engine.engine import Engine
from instrument.engine.ring import Ring
from instrument.errors import DeviceError, describe

log = logging.getLogger(__name__)

NO_DEVICE_FIX = ("no audio output device was found; render offline instead: "
                 "'instrument render SCORE -o out.wav' (or start JACK / plug in a device)")


def _sd():
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise DeviceError(f"PortAudio cannot be loaded ({e}); {NO_DEVICE_FIX}") from None
    return sd


def list_devices() -> list[dict]:
    """Audio devices as dicts (index, name, hostapi, channels, default_samplerate)."""
    sd = _sd()
    apis = sd.query_hostapis()
    out = []
    for i, d in enumerate(sd.query_devices()):
        out.append({"index": i, "name": d["name"], "hostapi": apis[d["hostapi"]]["name"],
                    "max_output_channels": d["max_output_channels"],
                    "max_input_channels": d["max_input_channels"],
                    "default_samplerate": d["default_samplerate"]})
    return out


def output_device_info(device: int | str | None) -> dict:
    """The output device's info dict, or a DeviceError naming what exists."""
    sd = _sd()
    try:
        info = sd.query_devices(device, "output")
    except (ValueError, sd.PortAudioError) as e:
        names = [d["name"] for d in list_devices() if d["max_output_channels"] > 0]
        if not names:
            asked = "" if device is None else f" (asked for --device {device!r})"
            raise DeviceError(f"{NO_DEVICE_FIX}{asked}; PortAudio says: {e}") from None
        raise DeviceError(describe("audio output device", device, ", ".join(names),
                                   "pass --device with one of these names or indexes")) from None
    return dict(info)


def resolve_rate(device: int | str | None, sample_rate: int | None) -> tuple[dict, int]:
    """The device info and the rate to run at; DeviceError if the wanted rate is refused."""
    sd = _sd()
    info = output_device_info(device)
    default = int(round(info["default_samplerate"]))
    if sample_rate is None:
        return info, default
    try:
        sd.check_output_settings(device=device, samplerate=sample_rate, channels=1,
                                 dtype="float32")
    except (ValueError, sd.PortAudioError) as e:
        raise DeviceError(describe(f"audio output {info['name']!r} sample rate", sample_rate,
                                   f"the device's rate {default} Hz ({e})",
                                   f"run at {default} Hz (omit --rate): the engine synthesizes "
                                   "at the device rate, so the model still plays in tune"))\
            from None
    return info, int(sample_rate)


class Player:
    """Plays an :class:`Engine` on an audio output in real time."""

    def __init__(self, engine: Engine | Callable[[int], Engine], device: int | str | None = None,
                 sample_rate: int | None = None, blocksize: int = 0,
                 latency: str | float = "low", ahead_blocks: int = 3,
                 report_s: float = 2.0):
        self._sd = _sd()
        self.device_info, rate = resolve_rate(device, sample_rate)
        if isinstance(engine, Engine):
            if engine.sample_rate != rate:
                raise DeviceError(describe(
                    f"engine rate vs audio output {self.device_info['name']!r}",
                    f"engine {engine.sample_rate} Hz, device {rate} Hz", "equal rates",
                    "build the engine at the device rate (pass an engine factory)"))
            self.engine = engine
        else:
            self.engine = engine(rate)
        self.sample_rate = rate
        self.device = device
        self.blocksize = int(blocksize)
        self.latency = latency
        self.channels = max(1, min(2, int(self.device_info["max_output_channels"])))
        self.chunk_frames = self.engine.hop_samples
        block = self.blocksize or max(256, self.engine.block_hint)
        self.ahead_frames = int(ahead_blocks) * max(block, self.chunk_frames)
        self.ring = Ring(self.ahead_frames + 4 * max(block, self.chunk_frames) + 8192)
        self.report_s = float(report_s)
        self.status_flags = 0  # callbacks that PortAudio flagged (under/overflow)
        self.callback_errors = 0
        self.callbacks = 0
        self._stream = None
        self._running = False
        self._threads: list[threading.Thread] = []
        self._switch_interval = sys.getswitchinterval()
        self.worker_error: str | None = None

    # ----------------------------------------------------------------- callback
    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        try:
            self.callbacks += 1
            if status:
                self.status_flags += 1
            self.ring.read_into(outdata[:, 0])
            if self.channels > 1:
                outdata[:, 1:] = outdata[:, :1]
        except Exception:
            self.callback_errors += 1
            try:
                outdata.fill(0.0)
            except Exception:
                pass

    # ----------------------------------------------------------------- threads
    def _fill(self) -> None:
        ring, chunk = self.ring, self.chunk_frames
        while ring.available < self.ahead_frames and ring.free >= chunk:
            ring.write(self.engine.process(chunk))

    def _worker(self) -> None:
        poll_s = min(0.002, 0.25 * self.chunk_frames / self.sample_rate)
        try:
            while self._running:
                self._fill()
                time.sleep(poll_s)
        except Exception as e:  # keep the program alive; the callback plays silence
            self.worker_error = f"{type(e).__name__}: {e}"
            log.error("audio worker stopped: %s", self.worker_error)

    def _reporter(self) -> None:
        last = (0, 0, 0, 0)
        while self._running:
            time.sleep(self.report_s)
            now = (self.ring.underflows, self.status_flags, self.callback_errors,
                   self.engine.dropped)
            self.engine.xruns = self.xruns
            if now != last:
                fix = ("; the engine fell behind: raise --ahead-blocks or --block"
                       if now[0] > last[0] else "")
                log.warning("audio: underflows %d, device xruns %d, callback errors %d, "
                            "dropped commands %d%s", *now, fix)
                last = now

    # ----------------------------------------------------------------- public
    @property
    def xruns(self) -> int:
        return self.status_flags + self.ring.underflows

    @property
    def latency_samples(self) -> int:
        """Engine hop + ring fill + the device's reported output latency."""
        dev = int(round(self._stream.latency * self.sample_rate)) if self._stream else 0
        return self.engine.latency_samples + self.ahead_frames + dev

    def start(self) -> Player:
        if self._running:
            return self
        self._fill()  # prime before the device starts pulling
        try:
            self._stream = self._sd.OutputStream(
                samplerate=self.sample_rate, blocksize=self.blocksize, device=self.device,
                channels=self.channels, dtype="float32", latency=self.latency,
                callback=self._callback)
        except (ValueError, self._sd.PortAudioError) as e:
            raise DeviceError(f"audio output {self.device_info['name']!r} at "
                              f"{self.sample_rate} Hz cannot be opened ({e}); pick another "
                              f"--device, or {NO_DEVICE_FIX}") from None
        self._running = True
        sys.setswitchinterval(0.001)  # let the callback thread get the GIL promptly
        self._threads = [threading.Thread(target=self._worker, name="engine-worker",
                                          daemon=True),
                         threading.Thread(target=self._reporter, name="audio-reporter",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        self._stream.start()
        log.info("audio: %s at %d Hz, %d ch, latency %d samples (%.1f ms)",
                 self.device_info["name"], self.sample_rate, self.channels,
                 self.latency_samples, 1000.0 * self.latency_samples / self.sample_rate)
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        try:
            self._stream.stop()
            self._stream.close()
        finally:
            for t in self._threads:
                t.join(timeout=self.report_s + 1.0)
            sys.setswitchinterval(self._switch_interval)
            self.engine.xruns = self.xruns

    def status(self) -> dict:
        s = self.engine.status()
        s.update({
            "device": self.device_info["name"],
            "block": self.blocksize or "host",
            "xruns": self.xruns,
            "status_flags": self.status_flags,
            "underflows": self.ring.underflows,
            "callback_errors": self.callback_errors,
            "callbacks": self.callbacks,
            "ring_frames": self.ring.available,
            "latency_samples": self.latency_samples,
            "latency_ms": 1000.0 * self.latency_samples / self.sample_rate,
            "worker_error": self.worker_error,
        })
        return s

    def __enter__(self) -> Player:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

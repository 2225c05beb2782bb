"""The verbs behind ``instrument ...``: thin glue between the stages.

``Session`` is the live instrument: one engine (at the device rate), an OSC server, an
optional MIDI input and an optional follower (drive mode), all feeding ``engine.send``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from instrument.errors import ConfigError, InstrumentError, describe
from instrument.files import check_out_file

log = logging.getLogger("instrument")
ROOT = Path(__file__).resolve().parents[1]


def shipped(path: str | Path) -> Path:
    """``path`` as given if it exists, else relative to the project (shipped patches/scores)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    q = ROOT / p
    return q if q.exists() else p


def _patch(path: str | None):
    from instrument.control.patches import Patch, load_patch

    if path is None:
        default = ROOT / "patches" / "default.toml"
        return load_patch(default) if default.is_file() else Patch.default()
    return load_patch(shipped(path))


# --------------------------------------------------------------------------- render
def cmd_render(a: argparse.Namespace) -> int:
    from instrument.engine.render import check_output, write_file
    from instrument.engine.score import Event, load
    from instrument.model.modelfile import Decoder

    check_output(a.out)  # before any work: a wrong suffix or folder is refused at once
    patch = _patch(a.patch)
    decoder = Decoder(a.model or patch.model)
    rate = int(a.rate or decoder.sample_rate)
    if not 8000 <= rate <= 384000:
        raise ConfigError(describe("render --rate", rate, "8000..384000 Hz", "pick a rate"))
    events = [Event(0.0, c) for c in patch.initial_commands()] + load(shipped(a.score))
    t0 = time.perf_counter()
    s = write_file(decoder, events, a.out, rate, block_frames=a.block)
    print(f"render: {a.out}: {s['seconds']:.2f} s at {rate} Hz, model {decoder.name} "
          f"({decoder.mode}), {len(events)} events, peak {s['peak_dbfs']:.1f} dBFS, "
          f"{time.perf_counter() - t0:.2f} s to render")
    return 0


# --------------------------------------------------------------------------- play
class Session:
    """The live instrument: engine + audio player + OSC + MIDI (+ follower)."""

    def __init__(self, a: argparse.Namespace):
        from instrument.engine.engine import Engine
        from instrument.engine.stream import Player
        from instrument.model.modelfile import Decoder

        self.args = a
        self.patch = _patch(a.patch)
        self.decoder = Decoder(a.model or self.patch.model)
        self.player = Player(lambda rate: Engine(self.decoder, rate, block_hint=a.block),
                             device=a.device, sample_rate=a.rate, blocksize=a.block,
                             ahead_blocks=getattr(a, "ahead_blocks", 1))
        self.engine = self.player.engine
        self.osc = None
        self.midi = None
        self.listener = None
        self._running = False
        self._notifier: threading.Thread | None = None
        self._load_lock = threading.Lock()
        self._load_pool: ThreadPoolExecutor | None = None
        self._load_job: tuple[str, Future] | None = None  # the latest patch load

    NOTIFY_S = 0.05

    def _notify_loop(self) -> None:
        """Push changes to ``/inst/notify`` subscribers (whatever moved them: OSC, MIDI,
        follow): ``/inst/latent/reply x y`` (the smoothed point, 0..1),
        ``/inst/voices/reply n`` (sounding voices), ``/inst/xruns/reply n``."""
        last: dict[str, tuple] = {}
        while self._running:
            time.sleep(self.NOTIFY_S)
            osc = self.osc
            if osc is None or not osc.subscribers:
                continue
            try:
                st = self.player.status()
            except RuntimeError:  # a dict changed under us: try again next tick
                continue
            now = {"/inst/latent/reply": tuple(round(float(v), 4) for v in st["latent"]),
                   "/inst/voices/reply": (int(st["voices"]),),
                   "/inst/xruns/reply": (int(st["xruns"]),)}
            for address, args in now.items():
                if last.get(address) != args:
                    osc.notify(address, *args)
            last = now

    def status(self) -> dict:
        s = self.player.status()
        s["model"] = self.decoder.name
        s["patch"] = self.patch.path or "built-in"
        s["midi"] = self.midi.opened_name if self.midi else "off"
        return s

    def apply_patch(self, patch) -> None:
        for cmd in patch.initial_commands():
            self.engine.send(cmd)
        if self.osc is not None:
            self.osc.clear_aliases()
            for al in patch.osc:
                self.osc.add_alias(al.address, list(al.args), list(al.invert), al.swap)
        if self.midi is not None:
            from instrument.control.midi import MidiMapper

            self.midi.mapper = MidiMapper(patch.midi)

    def load_patch(self, path: str) -> Future:
        """``/inst/patch/load``: start loading ``path`` on the patch-load thread and return its
        future (the OSC server replies when it completes). One load at a time: while one
        runs, another raises :class:`~instrument.control.osc.Busy` (``/inst/fail ... busy``)."""
        from instrument.control.osc import Busy

        with self._load_lock:
            job = self._load_job
            if job is not None and not job[1].done():
                raise Busy(f"busy: still loading patch {job[0]!r}; wait for its /inst/done or "
                           "/inst/fail, then send the load again")
            if self._load_pool is None:
                self._load_pool = ThreadPoolExecutor(max_workers=1,
                                                     thread_name_prefix="patch-load")
            future = self._load_pool.submit(self._load_patch_now, path)
            self._load_job = (path, future)
            return future

    def _load_patch_now(self, path: str) -> None:
        """Read, check and apply a patch (the patch-load thread): file read, TOML parse and
        maybe a model load happen here, never on the OSC receiver or the audio worker.
        Raises InstrumentError (-> /inst/fail) and leaves the running patch as it was."""
        from instrument.model.modelfile import Decoder

        patch = _patch(path)
        if self.args.model is None and patch.model != self.decoder.name:
            dec = Decoder(patch.model)
            self.engine.swap_decoder(dec)
            self.decoder = dec
        self.patch = patch
        self.apply_patch(patch)
        log.info("patch loaded: %s", patch.path)

    def start(self) -> Session:
        from instrument.control.midi import MidiInput, MidiMapper
        from instrument.control.osc import OscServer

        a = self.args
        self.osc = OscServer(self.engine.send, status=self.status, load_patch=self.load_patch,
                             host=a.osc_host, port=a.osc_port)
        self.apply_patch(self.patch)
        self.osc.start()
        if not a.no_midi:
            self.midi = MidiInput.try_open(self.engine.send, port_name=a.midi,
                                           mapper=MidiMapper(self.patch.midi))
        self.player.start()
        self._running = True
        self._notifier = threading.Thread(target=self._notify_loop, name="notify", daemon=True)
        self._notifier.start()
        if a.follow:
            from instrument.listen.live import Drive, Listener

            src = Path(a.follow)
            kw = {"file": src, "loop": True} if src.is_file() else {"device": a.follow}
            drive = Drive(self.engine.send, voice=not a.follow_latent_only,
                          base_gain_db=self.patch.param("gain_db"))
            self.listener = Listener(a.model or self.patch.model, on_coords=drive,
                                     control_port=None, **kw).start()
        self._banner()
        return self

    def _latency_parts(self) -> str:
        """The printed latency's parts in ms: what it adds up, so the figure is honest."""
        rate = self.player.sample_rate
        hop, ring = self.engine.latency_samples, self.player.ahead_frames
        dev = self.player.latency_samples - hop - ring
        return (f"engine hop {1000 * hop / rate:.1f} + ring {1000 * ring / rate:.1f} + "
                f"device-reported {1000 * dev / rate:.1f} ms (the measured OSC->sound median "
                "is lower: bench/RESULTS.md)")

    def _midi_state(self) -> str:
        """The banner's MIDI words: the port, or why MIDI is off."""
        if self.midi is not None:
            return f"in: {self.midi.opened_name}"
        if self.args.no_midi:
            return "off (--no-midi)"
        from instrument.control.midi import MidiInput

        return f"off ({MidiInput.last_off_reason or 'no MIDI input opened'})"

    def _banner(self) -> None:
        s = self.status()
        lines = [
            f"play: model {self.decoder.name} ({self.decoder.mode}, {self.decoder.sample_rate} Hz)"
            f", patch {s['patch']}",
            f"audio: {s['device']} at {s['sample_rate']} Hz, block {s['block']}, latency "
            f"{s['latency_samples']} samples ({s['latency_ms']:.1f} ms) worst case = "
            + self._latency_parts(),
            f"OSC: listening on {self.osc.host}:{self.osc.port} (send /inst/status for a reply)",
            f"MIDI: {self._midi_state()}",
        ]
        if self.listener is not None:
            lines.append(f"follow: {self.args.follow} -> latent (encoder latency "
                         f"{self.listener.status().get('latency_ms', float('nan')):.1f} ms)")
        print("\n".join(lines), flush=True)

    def stop(self) -> None:
        self._running = False
        for part in (self.listener, self.midi, self.osc, self.player):
            if part is not None:
                try:
                    part.stop() if hasattr(part, "stop") else part.close()
                except Exception as e:  # keep closing the rest
                    log.warning("stopping %s: %s", type(part).__name__, e)
        if self._load_pool is not None:  # a load still running finishes on its own
            self._load_pool.shutdown(wait=False, cancel_futures=True)


def check_follow(a: argparse.Namespace) -> None:
    """``play --follow``: refuse a missing file (a value that looks like a path) and
    ``--follow-latent-only`` without ``--follow``, before any device opens."""
    if getattr(a, "follow_latent_only", False) and not a.follow:
        raise ConfigError("play --follow-latent-only: got no --follow INPUT; add --follow "
                          "with an input device or a sound file, or leave the flag out")
    if a.follow:
        p = Path(a.follow)
        # a file suffix like .wav (not the '.0' of a device named 'USB Audio 2.0') or a slash
        looks_like_path = bool(re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]{0,4}", p.suffix)) \
            or "/" in a.follow or "\\" in a.follow
        if looks_like_path and not p.is_file():
            what = "is a folder" if p.is_dir() else "file not found"
            raise ConfigError(f"play --follow {a.follow!r}: {what}; pass a sound file that "
                              "exists, or an input device name or index ('instrument "
                              "devices')")


def cmd_play(a: argparse.Namespace) -> int:
    if a.seconds is not None and not (math.isfinite(a.seconds) and a.seconds > 0):
        raise ConfigError(describe("play --seconds", a.seconds, "> 0", "omit it to run until "
                                   "Ctrl-C"))
    check_follow(a)
    s = Session(a).start()
    try:
        t_end = None if a.seconds is None else time.monotonic() + a.seconds
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.1)
    finally:
        st = s.status()
        s.stop()
        print(f"play: stopped; xruns {st['xruns']}, dropped commands {st['dropped']}, "
              f"OSC {s.osc.counters.get('applied', 0)} applied / "
              f"{s.osc.counters.get('dropped', 0)} dropped")
    return 0


# --------------------------------------------------------------------------- others
def cmd_devices(a: argparse.Namespace) -> int:
    from instrument.control.midi import list_ports

    try:
        from instrument.engine.stream import list_devices

        devs = list_devices()
        print("audio devices:")
        for d in devs:
            print(f"  [{d['index']}] {d['name']} ({d['hostapi']}): "
                  f"{d['max_input_channels']} in, {d['max_output_channels']} out, "
                  f"{d['default_samplerate']:g} Hz")
        if not devs:
            print("  none (use 'instrument render' to make sound offline)")
    except InstrumentError as e:
        print(f"audio devices: none ({e})")
    m = list_ports()
    print(f"MIDI ({m['backend']}):" + (f" off: {m['error']}" if m.get("error") else ""))
    for n in m.get("inputs", []):
        print(f"  in:  {n}")
    for n in m.get("outputs", []):
        print(f"  out: {n}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from instrument.model.train import TrainConfig, train

    # refuse up front what would otherwise fail after minutes of training
    cut_folder = model_out_folder(a.cut, None, a.force, "train --cut") if a.cut else None
    if Path(a.checkpoint).is_dir():
        raise ConfigError(f"train -o {a.checkpoint!r}: is a folder; give a checkpoint file "
                          "name such as checkpoints/model.pt")
    cfg = TrainConfig(mode=None if a.mode == "auto" else a.mode, seed=a.seed, device=a.device,
                      sample_rate=a.sample_rate, max_seconds=a.seconds,
                      progress=True)
    if a.steps is not None:
        cfg.steps = a.steps
    if a.licence:
        cfg.licence = a.licence
    ck = train(a.folder, a.checkpoint, cfg, resume=a.resume)
    print(f"train: checkpoint {ck}")
    if a.cut:
        from instrument.model.cut import cut

        out = cut(ck, cut_folder, name=a.cut)
        print(f"cut: {out}")
    return 0


MODEL_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def model_out_folder(name: str, out: str | None, force: bool, what: str = "cut") -> Path:
    """The folder a cut writes (``out`` or models/NAME), refused up front if the name is not a
    plain folder name or the folder already holds something and ``force`` is not set."""
    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(describe(f"{what}: model name", name, "1-64 letters, digits, '-', "
                                   "'_' or '.', not starting with '.' (no '/')",
                                   "pass a plain name such as -n my-model"))
    folder = Path(out) if out else ROOT / "models" / name
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what}: output {str(folder)!r} is a file, not a model folder; "
                          "pick another name or -o folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise ConfigError(f"{what}: model folder {str(folder)!r} already exists; pass --force "
                          "to replace it, or pick another name")
    return folder


def cmd_cut(a: argparse.Namespace) -> int:
    from instrument.model.cut import cut

    name = Path(a.checkpoint).stem if a.name is None else a.name
    folder = model_out_folder(name, a.out, a.force)
    if not Path(a.checkpoint).is_file():
        raise ConfigError(f"cut: checkpoint {a.checkpoint!r}: file not found; train first "
                          "('instrument train FOLDER -o CHECKPOINT')")
    out = cut(a.checkpoint, folder, name=name)
    print(f"cut: {out} (decoder.safetensors + encoder.safetensors + model.json, self-checked)")
    return 0


def cmd_listen(a: argparse.Namespace) -> int:
    from instrument.listen.live import listen_main

    return listen_main(a)


def cmd_encode(a: argparse.Namespace) -> int:
    from instrument.listen.encode import encode_main

    if not Path(a.file).is_file():
        raise ConfigError(f"encode: input {a.file!r}: file not found; pass a sound file "
                          "(wav/aiff/flac/ogg/mp3)")
    check_out_file(a.out or Path(a.file).with_suffix(".trajectory.csv"), "encode -o",
                   (".csv", ".json"))
    if a.plot:
        check_out_file(a.plot, "encode --plot", (".png", ".svg", ".pdf"))
    return encode_main(a)


def cmd_dissect(a: argparse.Namespace) -> int:
    from instrument.dissect.main import dissect_main

    # refused now, not after the learning (dissect makes missing folders itself)
    if a.render:
        check_out_file(a.render, "dissect --render", (".wav", ".aiff", ".aif"), False)
    if a.plot:
        check_out_file(a.plot, "dissect --plot", (".png", ".svg", ".pdf"), False)
    return dissect_main(a.source, device=a.device, render=a.render, plot=a.plot,
                        listen=a.listen, mode=a.mode, seconds=a.seconds, seed=a.seed,
                        osc_port=a.osc_port, control_port=a.control_port,
                        midi=not a.no_midi, midi_port=a.midi)

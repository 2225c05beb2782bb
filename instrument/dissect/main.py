"""``instrument dissect``: hear (and see) an untrained network learn from a stream of sound."""

from __future__ import annotations

import logging
import sys
import threading
import time

from instrument.errors import ConfigError, describe

log = logging.getLogger(__name__)


def dissect_main(source: str | None, device: str | None = None, render: str | None = None,
                 plot: str | None = None, listen: str = "recon", mode: str = "auto",
                 seconds: float | None = None, seed: int = 0, osc_port: int = 57131,
                 sample_rate: int = 48000, steps_per_hop: int = 2,
                 out_device: str | None = None, control_port: int = 57130,
                 midi: bool = True, midi_port: str | None = None) -> int:
    """Offline (``render``: deterministic WAV) or live (audio out, OSC, MIDI, keyboard)
    dissection. Live: the dissect controls on ``osc_port`` (57131), the instrument's own OSC on
    ``control_port`` (57130) and MIDI (unless ``midi`` is False) drive the knobs engine.

    Returns a process exit status (0 = fine)."""
    from instrument.dissect.session import check_listen

    check_listen(listen)
    if mode not in ("auto", "pitched", "unpitched"):
        raise ConfigError(describe("dissect --mode", mode, "auto, pitched, unpitched",
                                   "pick one"))
    if source is None and device is None:
        raise ConfigError(describe("dissect source", None, "a sound file or folder, or "
                                   "--device INPUT", "give one"))
    if render is not None:
        if source is None:
            raise ConfigError("dissect --render needs a file or folder SOURCE (a live input "
                              "cannot be rendered deterministically); drop --device")
        from instrument.dissect.render import render_learning

        report, hist = render_learning(source, render, seconds=seconds, seed=seed, mode=mode,
                                       sample_rate=sample_rate, listen=listen,
                                       steps_per_hop=steps_per_hop, return_history=True)
        if report["passes"] > 1:
            print(f"source {source} is {report['source_seconds']:.2f} s long: looped ("
                  f"{report['passes']} passes) to fill --seconds {seconds:g}")
        lsd = f"first second {report['lsd_first_s_db']:.2f} dB, last second " \
            f"{report['lsd_last_s_db']:.2f} dB"
        if report["seconds"] <= 1.0:
            lsd = f"the whole {report['seconds']:.2f} s {report['lsd_first_s_db']:.2f} dB " \
                "(give --seconds 2 or more to see first and last second apart)"
        print(f"rendered {report['seconds']:.2f} s ({report['mode']}, {report['steps']} steps) "
              f"-> {render}; stream LSD (as played) {lsd}")
        if plot:
            from instrument.dissect.sheet import plot_sheet

            print(f"sheet -> {plot_sheet(hist, plot)}")
        return 0
    return _live(source, device, plot, listen, mode, seconds, seed, osc_port, sample_rate,
                 out_device, control_port, midi, midi_port)


def _live(source, device, plot, listen, mode, seconds, seed, osc_port, sample_rate,
          out_device, control_port=57130, midi=True, midi_port=None) -> int:
    from instrument.dissect.live import DissectOsc, LiveControl, LiveDissection
    from instrument.dissect.render import detect_mode, history_of
    from instrument.dissect.session import Dissection
    from instrument.dissect.stream import DeviceSource, FileSource
    from instrument.dissect.threads import limit_blas_threads
    from instrument.dissect.trainer import OnlineTrainer
    from instrument.engine.stream import Player, resolve_rate

    limit_blas_threads(1)
    _, rate = resolve_rate(out_device, None)
    dev_src = None
    if device is not None:
        dev_src = DeviceSource(device, rate)
        if mode == "auto":
            mode = "pitched"
        hops = None
        what = f"input device {device!r}"
    else:
        src = FileSource(source, rate, loop=True, seconds=seconds)
        if mode == "auto":
            mode = detect_mode(src)
        hops = src.hops()
        what = f"{source} ({len(src.files)} file(s), looped)"
    trainer = OnlineTrainer(mode, rate, seed=seed)
    session = Dissection(trainer, listen=listen, seed=seed)
    session.keep_history = plot is not None  # bounded (FrameHistory), only for the sheet
    player = control = osc = None
    try:
        if dev_src is not None:
            dev_src.start()
            hops = dev_src.hops()
        live = LiveDissection(session, hops, dev_src)
        player = Player(lambda r: live, device=out_device, sample_rate=rate)
        osc = DissectOsc(session, port=osc_port).start()
        control = LiveControl(live, status=player.status, port=control_port, midi=midi,
                              midi_port=midi_port).start()
        trainer.start()
        player.start()
        st = player.status()
        print("\n".join([
            f"dissect: {mode}, learning from {what}, listen {session.listen}",
            f"audio: {st['device']} at {st['sample_rate']} Hz, block {st['block']}, latency "
            f"{st['latency_samples']} samples ({st['latency_ms']:.1f} ms, incl. analysis "
            f"{session.frames.delay_samples} samples)",
            f"OSC: dissect controls on {osc.host}:{osc.port}; the instrument (/inst/latent, "
            f"/inst/note ..., heard in knobs mode) on {control.host}:{control.port}",
            f"MIDI: {control.midi_text}",
            "keys: r/k/m listen, space pause, 0 reset, f freeze, c cut, q quit"]), flush=True)
        _wait(live, osc, player, seconds)
    except KeyboardInterrupt:
        pass
    finally:
        for part in (player, control, osc):
            if part is not None:
                part.stop()
        trainer.stop()
        if dev_src is not None:
            dev_src.stop()
    trainer.finish()
    print(f"dissect: {trainer.step_count} steps, stream LSD (last second) "
          f"{session.recent_lsd_db:.2f} dB, xruns {player.xruns}", file=sys.stderr)
    if plot:
        from instrument.dissect.sheet import plot_sheet

        print(f"sheet -> {plot_sheet(history_of(session), plot)}")
    return 0


def _wait(live, osc, player, seconds: float | None) -> None:
    """Until q, the stream's end or ``seconds``: keys and a status line on a terminal, else a
    status line every second."""
    from instrument.dissect.live import keyboard_loop, status_line

    stop = threading.Event()
    t_end = None if seconds is None else time.monotonic() + seconds
    if sys.stdin.isatty():
        if seconds is not None:
            timer = threading.Timer(seconds, stop.set)
            timer.daemon = True
            timer.start()
        keyboard_loop(live, osc, stop, player)
        return
    while not live.ended.is_set() and (t_end is None or time.monotonic() < t_end):
        time.sleep(1.0)
        sys.stderr.write(status_line(live, player) + "\n")

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
                 out_device: str | None = None) -> int:
    """Offline (``render``: deterministic WAV) or live (audio out, OSC, keyboard) dissection.

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
                 out_device)


def _live(source, device, plot, listen, mode, seconds, seed, osc_port, sample_rate,
          out_device) -> int:
    from instrument.dissect.live import DissectOsc, LiveDissection, keyboard_loop, status_line
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
    else:
        src = FileSource(source, rate, loop=True, seconds=seconds)
        if mode == "auto":
            mode = detect_mode(src)
        hops = src.hops()
    trainer = OnlineTrainer(mode, rate, seed=seed)
    session = Dissection(trainer, listen=listen, seed=seed)
    session.keep_history = plot is not None  # bounded (FrameHistory), only for the sheet
    if dev_src is not None:
        dev_src.start()
        hops = dev_src.hops()
    live = LiveDissection(session, hops, dev_src)
    osc = DissectOsc(session, port=osc_port).start()
    player = Player(lambda r: live, device=out_device, sample_rate=rate)
    stop = threading.Event()
    trainer.start()
    player.start()
    print(f"dissect: {mode} at {rate} Hz; OSC on 127.0.0.1:{osc.port}; keys r/k/m listen, "
          "space pause, 0 reset, f freeze, c cut, q quit", file=sys.stderr)
    t_end = None if seconds is None else time.monotonic() + seconds
    try:
        if sys.stdin.isatty():
            timer = None
            if t_end is not None:
                timer = threading.Timer(seconds, stop.set)
                timer.daemon = True
                timer.start()
            keyboard_loop(live, osc, stop, player)
        else:
            while not stop.is_set() and not live.ended.is_set() and \
                    (t_end is None or time.monotonic() < t_end):
                time.sleep(1.0)
                sys.stderr.write(status_line(live, player) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        player.stop()
        trainer.stop()
        osc.stop()
        if dev_src is not None:
            dev_src.stop()
    print(f"dissect: {trainer.step_count} steps, LSD {trainer.snapshot.lsd_db:.2f} dB, "
          f"xruns {player.xruns}", file=sys.stderr)
    if plot:
        from instrument.dissect.sheet import plot_sheet

        print(f"sheet -> {plot_sheet(history_of(session), plot)}")
    return 0

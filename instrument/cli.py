"""``instrument`` command line: one verb per stage of the data flow.

    instrument train FOLDER        learn from a folder of sounds -> checkpoint
    instrument cut CHECKPOINT      cut it in two -> models/NAME/ (decoder + encoder)
    instrument play                realtime synthesizer, controlled by OSC and MIDI
    instrument render SCORE -o W   the same engine offline -> WAV
    instrument listen              audio in -> encoder -> 2-D coordinates over OSC
    instrument encode FILE         offline trajectory (CSV/JSON) and picture
    instrument dissect SOURCE      hear an untrained network learn
    instrument devices             audio and MIDI ports
    instrument info MODEL          what a model file says about itself

Heavy imports (torch, sounddevice, matplotlib) happen inside the verbs that need them, so
``play`` and ``render`` start without torch.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from instrument.errors import InstrumentError

log = logging.getLogger("instrument")

MAX_BLOCK = 16384          # samples; larger blocks only add latency and memory
MAX_AHEAD_BLOCKS = 16
MIN_RATE_HZ, MAX_RATE_HZ = 8000, 384000


class _Parser(argparse.ArgumentParser):
    """argparse with one-line refusals: ``instrument VERB: error: ...; see --help``."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(kind: type, lo: float | None, hi: float | None, fix: str,
            units: str = "") -> Callable[[str], float]:
    """An argparse ``type=`` that parses ``kind`` and refuses values outside [lo, hi]."""
    lo_s = "" if lo is None else f"{lo:g}"
    hi_s = "" if hi is None else f"{hi:g}"
    allowed = (f"{lo_s}..{hi_s}" if lo is not None and hi is not None
               else f">= {lo_s}" if lo is not None else f"<= {hi_s}") + units

    def convert(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"got {text!r}, allowed {'an integer' if kind is int else 'a number'} "
                f"{allowed}; {fix}") from None
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"got {text!r}, allowed {allowed}; {fix}")
        return v

    convert.__name__ = kind.__name__  # argparse names the type in its own messages
    return convert


_PORT = _number(int, 0, 65535, "pick a free UDP port (0 = any free port)")
_RATE = _number(int, MIN_RATE_HZ, MAX_RATE_HZ, "pick a sample rate, or omit it", " Hz")
_BLOCK = _number(int, 1, MAX_BLOCK, "pick a block size such as 256 or 512", " samples")
_SECONDS = _number(float, 0.001, 7 * 86400.0, "pass a duration in seconds, or omit it", " s")
_STEPS = _number(int, 1, 10_000_000, "pass a number of optimiser steps such as 3000")
_AHEAD = _number(int, 1, MAX_AHEAD_BLOCKS, "1 is lowest latency; raise it only if the "
                 "status reports underflows")


def _cmd_info(a: argparse.Namespace) -> int:
    from instrument.model.modelfile import Decoder, Encoder

    dec = Decoder(a.model)
    enc = Encoder(a.model)
    m = dec.meta
    sr = dec.sample_rate
    corpus = m.get("corpus", {})
    print(f"model      {dec.name}  ({dec.folder})")
    print(f"format     {m['format']}   mode {dec.mode}")
    print(f"rate       {sr} Hz   hop {dec.hop_samples} samples ({1000 * dec.hop_samples / sr:.2f}"
          f" ms)   n_fft {dec.n_fft}")
    if dec.pitched:
        print(f"frame      {dec.n_harmonics} harmonics + {dec.n_noise_bands} noise bands")
    print(f"latency    decoder {dec.latency_samples} samples "
          f"({1000 * dec.latency_samples / sr:.2f} ms), encoder {enc.latency_samples} samples "
          f"({1000 * enc.latency_samples / sr:.2f} ms)")
    print(f"latent     raw x {dec.raw_lo[0]:.3f}..{dec.raw_hi[0]:.3f}, "
          f"y {dec.raw_lo[1]:.3f}..{dec.raw_hi[1]:.3f}  (knobs 0..1 span this)")
    if corpus:
        print("corpus     " + ", ".join(f"{k}={v}" for k, v in corpus.items()
                                        if not isinstance(v, list | dict)))
        labels = corpus.get("labels")
        if labels:
            print(f"labels     {', '.join(map(str, labels))}")
    print("self-check passed (decoder and encoder reproduce their stored outputs)")
    return 0


VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str]] = {}


def _verb(name: str, help_: str, target: str):
    def deco(fn: Callable[[argparse.ArgumentParser], None]):
        VERBS[name] = (help_, fn, target)
        return fn

    return deco


@_verb("info", "describe a model (rate, hop, latency, latent ranges, corpus)", "")
def _p_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="default", help="model name or folder")


def _model_arg(p: argparse.ArgumentParser, patch: bool = True) -> None:
    default = "the patch's model, else 'default'" if patch else "'default'"
    p.add_argument("--model", default=None, help=f"model name in models/ or a folder "
                   f"(default: {default})")


@_verb("train", "learn from a folder of sounds (writes a resumable checkpoint)",
       "instrument.app:cmd_train")
def _p_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of sounds (wav/aiff/flac/ogg/mp3, any rate)")
    p.add_argument("-o", "--checkpoint", default="checkpoints/model.pt", help="checkpoint path")
    p.add_argument("--mode", choices=["auto", "pitched", "unpitched"], default="auto",
                   help="synthesis mode; auto measures the corpus's periodicity")
    p.add_argument("--steps", type=_STEPS, default=None, help="total optimiser steps (default "
                   "3000; with --resume the count continues, so pass more than the "
                   "checkpoint has)")
    p.add_argument("--seconds", type=_SECONDS, default=None, help="this run's time budget: "
                   "stop after training this long (with --resume, counted from now)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=_RATE, default=48000, help="model sample rate (Hz)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint (which "
                   "must exist)")
    p.add_argument("--licence", default=None, help="the licence of the training sounds "
                   "(stored in the model file)")
    p.add_argument("--cut", metavar="NAME", default=None,
                   help="after training, cut the model to models/NAME")
    p.add_argument("--force", action="store_true", help="with --cut: replace an existing "
                   "models/NAME")


@_verb("cut", "cut a checkpoint into models/NAME (decoder + encoder, self-checked)",
       "instrument.app:cmd_cut")
def _p_cut(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint")
    p.add_argument("-n", "--name", default=None, help="model name: letters, digits, '-', '_', "
                   "'.' (default: checkpoint stem)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: models/NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")


@_verb("play", "play live: realtime engine on an audio device, controlled by OSC and MIDI",
       "instrument.app:cmd_play")
def _p_play(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--patch", default=None, help="patch TOML (default: patches/default.toml)")
    p.add_argument("--device", default=None, help="audio output device (name or index)")
    p.add_argument("--rate", type=_RATE, default=None,
                   help="device sample rate (default: device's)")
    p.add_argument("--block", type=_BLOCK, default=256,
                   help=f"audio block size in samples, 1..{MAX_BLOCK}")
    p.add_argument("--ahead-blocks", type=_AHEAD, default=1, help="blocks the worker keeps "
                   f"ready ahead of the device, 1..{MAX_AHEAD_BLOCKS}: 1 = lowest latency "
                   "(measured OSC->sound median 7.6 ms at 256 samples/48 kHz on JACK, see "
                   "bench/RESULTS.md; the figure play prints is the worst case: engine hop + "
                   "ring + the device's reported latency); raise it if the status reports "
                   "underflows on a busy machine")
    p.add_argument("--osc-host", default="127.0.0.1", help="OSC bind address (default loopback)")
    p.add_argument("--osc-port", type=_PORT, default=57130, help="OSC UDP port, 0..65535")
    p.add_argument("--midi", default=None, help="MIDI input port name (substring); "
                   "default: a virtual port named 'instrument'")
    p.add_argument("--no-midi", action="store_true", help="do not open MIDI")
    p.add_argument("--follow", default=None, metavar="INPUT",
                   help="drive mode: live input (an input device name or index, or a sound "
                   "file played in a loop) "
                   "moves the latent and plays the drone voice at its pitch and loudness")
    p.add_argument("--follow-latent-only", action="store_true",
                   help="with --follow: move the latent only (MIDI/OSC notes play)")
    p.add_argument("--seconds", type=_SECONDS, default=None, help="stop after this long")


@_verb("render", "render a score of timed commands to a WAV with the same engine",
       "instrument.app:cmd_render")
def _p_render(p: argparse.ArgumentParser) -> None:
    p.add_argument("score", nargs="?", default="patches/scores/demo.txt",
                   help="score file (text lines 'TIME COMMAND' or JSON)")
    p.add_argument("-o", "--out", default="out.wav", help="output sound file: .wav, .flac, "
                   ".aiff or .ogg (24-bit PCM; Vorbis for .ogg)")
    _model_arg(p)
    p.add_argument("--patch", default=None, help="patch TOML applied at time 0")
    p.add_argument("--rate", type=_RATE, default=None, help="output rate (default: model's)")
    p.add_argument("--block", type=_BLOCK, default=512, help=f"block size, 1..{MAX_BLOCK} "
                   "(output is identical whatever the block size)")


@_verb("listen", "audio in -> encoder -> 2-D coordinates over OSC", "instrument.app:cmd_listen")
def _p_listen(p: argparse.ArgumentParser) -> None:
    _model_arg(p, patch=False)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", default=None, help="input device (name or index)")
    src.add_argument("--file", default=None, help="play this file as the input, in real time")
    p.add_argument("--loop", action="store_true", help="loop --file")
    p.add_argument("--send", action="append", default=[], metavar="HOST:PORT",
                   help="send coordinates here (repeatable)")
    p.add_argument("--address", default="/inst/listen/xy", help="OSC address for coordinates")
    p.add_argument("--wekinator", action="store_true", help="also send /wek/inputs to :6448")
    p.add_argument("--smoothing-ms", type=_number(float, 0.0, 10000.0, "pass a smoothing time "
                   "in ms, 0 = none", " ms"), default=0.0)
    p.add_argument("--seconds", type=_SECONDS, default=None, help="stop after this long")


@_verb("encode", "encode a sound file to a trajectory (CSV/JSON) and a picture",
       "instrument.app:cmd_encode")
def _p_encode(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a sound file (wav/aiff/flac/ogg/mp3)")
    _model_arg(p, patch=False)
    p.add_argument("-o", "--out", default=None, help="trajectory .csv or .json (default: next "
                   "to the input, as FILE.trajectory.csv)")
    p.add_argument("--plot", default=None, help="draw the trajectory over the corpus map "
                   "(.png, .svg or .pdf)")


@_verb("dissect", "hear and see an untrained network learn from a stream of sound",
       "instrument.app:cmd_dissect")
def _p_dissect(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default=None, help="a sound file or folder")
    p.add_argument("--device", default=None, help="live input device instead of SOURCE")
    p.add_argument("--render", default=None, help="write the learning's audio to this WAV")
    p.add_argument("--plot", default=None, help="write a picture sheet (PNG)")
    p.add_argument("--listen", choices=["recon", "knobs", "mix"], default="recon",
                   help="what to hear: the stream through the net, the decoder at the knobs, "
                   "or a mix with the dry input")
    p.add_argument("--mode", choices=["auto", "pitched", "unpitched"], default="auto")
    p.add_argument("--seconds", type=_SECONDS, default=None, help="how long to learn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--osc-port", type=_PORT, default=57131, help="OSC UDP port, 0..65535")
    p.add_argument("--control-port", type=_PORT, default=57130, help="live: the instrument's "
                   "OSC port (/inst/latent, /inst/note ...) driving the knobs engine")
    p.add_argument("--midi", default=None, help="live: MIDI input port name (substring); "
                   "default: a virtual port named 'instrument'")
    p.add_argument("--no-midi", action="store_true", help="live: do not open MIDI")


@_verb("devices", "list audio devices and MIDI ports", "instrument.app:cmd_devices")
def _p_devices(p: argparse.ArgumentParser) -> None:
    pass


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="instrument", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="debug logging, and a traceback for unexpected errors")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_Parser)
    for name, (help_, fn, _) in VERBS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # -v after the verb too; SUPPRESS keeps a top-level -v when it is not repeated here
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging, and a traceback for unexpected errors")
        fn(p)
    return ap


def _run_verb(a: argparse.Namespace) -> int:
    if a.verb == "info":
        return _cmd_info(a)
    target = VERBS[a.verb][2]
    mod_name, fn_name = target.split(":")
    import importlib

    fn = getattr(importlib.import_module(mod_name), fn_name)
    return int(fn(a) or 0)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return _run_verb(a)
    except InstrumentError as e:
        print(f"instrument {a.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"instrument {a.verb}: stopped", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, ArithmeticError, MemoryError) as e:
        # last resort: something no up-front check caught; a user sees one line, -v the rest
        if a.verbose:
            raise
        print(f"instrument {a.verb}: error: {type(e).__name__}: {e} "
              "(run with -v for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


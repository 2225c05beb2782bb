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
import sys
from collections.abc import Callable

from instrument.errors import InstrumentError

log = logging.getLogger("instrument")


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


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name in models/ or a folder "
                   "(default: the patch's model, else 'default')")


@_verb("train", "learn from a folder of sounds (writes a resumable checkpoint)",
       "instrument.app:cmd_train")
def _p_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of sounds (wav/aiff/flac/ogg/mp3, any rate)")
    p.add_argument("-o", "--checkpoint", default="checkpoints/model.pt", help="checkpoint path")
    p.add_argument("--mode", choices=["auto", "pitched", "unpitched"], default="auto",
                   help="synthesis mode; auto measures the corpus's periodicity")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 3000)")
    p.add_argument("--seconds", type=float, default=None, help="stop earlier after this long")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=48000, help="model sample rate (Hz)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--licence", default=None, help="the licence of the training sounds "
                   "(stored in the model file)")
    p.add_argument("--cut", metavar="NAME", default=None,
                   help="after training, cut the model to models/NAME")


@_verb("cut", "cut a checkpoint into models/NAME (decoder + encoder, self-checked)",
       "instrument.app:cmd_cut")
def _p_cut(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint")
    p.add_argument("-n", "--name", default=None, help="model name (default: checkpoint stem)")
    p.add_argument("-o", "--out", default=None, help="output folder (default: models/NAME)")


@_verb("play", "play live: realtime engine on an audio device, controlled by OSC and MIDI",
       "instrument.app:cmd_play")
def _p_play(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    p.add_argument("--patch", default=None, help="patch TOML (default: patches/default.toml)")
    p.add_argument("--device", default=None, help="audio output device (name or index)")
    p.add_argument("--rate", type=int, default=None, help="device sample rate (default: device's)")
    p.add_argument("--block", type=int, default=256, help="audio block size in samples")
    p.add_argument("--ahead-blocks", type=int, default=1, help="blocks the worker keeps ready "
                   "ahead of the device: 1 = lowest latency (OSC->sound ~8 ms at 256/48 kHz); "
                   "raise it if the status reports underflows on a busy machine")
    p.add_argument("--osc-host", default="127.0.0.1", help="OSC bind address (default loopback)")
    p.add_argument("--osc-port", type=int, default=57130)
    p.add_argument("--midi", default=None, help="MIDI input port name (substring); "
                   "default: a virtual port named 'instrument'")
    p.add_argument("--no-midi", action="store_true", help="do not open MIDI")
    p.add_argument("--follow", default=None, metavar="INPUT",
                   help="drive mode: live input (an input device, or a file played in a loop) "
                   "moves the latent and plays the drone voice at its pitch and loudness")
    p.add_argument("--follow-latent-only", action="store_true",
                   help="with --follow: move the latent only (MIDI/OSC notes play)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")


@_verb("render", "render a score of timed commands to a WAV with the same engine",
       "instrument.app:cmd_render")
def _p_render(p: argparse.ArgumentParser) -> None:
    p.add_argument("score", nargs="?", default="patches/scores/demo.txt",
                   help="score file (text lines 'TIME COMMAND' or JSON)")
    p.add_argument("-o", "--out", default="out.wav", help="output WAV")
    _model_arg(p)
    p.add_argument("--patch", default=None, help="patch TOML applied at time 0")
    p.add_argument("--rate", type=int, default=None, help="output rate (default: model's)")
    p.add_argument("--block", type=int, default=512, help="block size (output is identical "
                   "whatever the block size)")


@_verb("listen", "audio in -> encoder -> 2-D coordinates over OSC", "instrument.app:cmd_listen")
def _p_listen(p: argparse.ArgumentParser) -> None:
    _model_arg(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", default=None, help="input device (name or index)")
    src.add_argument("--file", default=None, help="play this file as the input, in real time")
    p.add_argument("--loop", action="store_true", help="loop --file")
    p.add_argument("--send", action="append", default=[], metavar="HOST:PORT",
                   help="send coordinates here (repeatable)")
    p.add_argument("--address", default="/inst/listen/xy", help="OSC address for coordinates")
    p.add_argument("--wekinator", action="store_true", help="also send /wek/inputs to :6448")
    p.add_argument("--smoothing-ms", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")


@_verb("encode", "encode a sound file to a trajectory (CSV/JSON) and a picture",
       "instrument.app:cmd_encode")
def _p_encode(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    _model_arg(p)
    p.add_argument("-o", "--out", default=None, help="trajectory .csv or .json")
    p.add_argument("--plot", default=None, help="draw the trajectory over the corpus map (PNG)")


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
    p.add_argument("--seconds", type=float, default=None, help="how long to learn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--osc-port", type=int, default=57131)


@_verb("devices", "list audio devices and MIDI ports", "instrument.app:cmd_devices")
def _p_devices(p: argparse.ArgumentParser) -> None:
    pass


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="instrument", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (help_, fn, _) in VERBS.items():
        p = sub.add_parser(name, help=help_, description=help_)
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


if __name__ == "__main__":
    sys.exit(main())


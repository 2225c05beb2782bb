"""Score files: timed commands, as text (``0.50 note 60 0.8`` per line, ``#`` comments) or
JSON (``[{"t": 0.5, "cmd": "note 60 0.8"}, ...]``); times in seconds from the start,
0..3600 (:data:`MAX_TIME_S`).

Lines need not be in time order: the events are sorted by time (a stable sort, so lines at
the same time keep their order) and the first line that goes back in time is reported once
as a warning. Every error names the file and line (``score.txt:3``) or JSON item.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from instrument.control.commands import Command, parse
from instrument.errors import InstrumentError, ScoreError, describe
from instrument.files import read_small_text

log = logging.getLogger(__name__)

MAX_TIME_S = 3600.0  # one hour; a longer piece is several scores


@dataclass(frozen=True)
class Event:
    time_s: float
    cmd: Command


def _event(where: str, t: object, text: object) -> Event:
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) \
            or not 0 <= t <= MAX_TIME_S:
        raise ScoreError(describe(f"{where}: time", t, f"seconds in 0..{MAX_TIME_S:g}",
                                  "write e.g. '0.5 note 60 0.8' (split longer pieces)"))
    if not isinstance(text, str) or not text.strip():
        raise ScoreError(describe(f"{where}: command", text, "a command string",
                                  "write e.g. 'note 60 0.8'"))
    try:
        return Event(float(t), parse(text))
    except InstrumentError as e:  # ControlError, and ParamError for 'param NAME VALUE'
        raise ScoreError(f"{where}: {e}") from None


def _sorted(events: list[Event], wheres: list[str]) -> list[Event]:
    """Events by time (stable); warn once at the first one earlier than the one before."""
    for i in range(1, len(events)):
        if events[i].time_s < events[i - 1].time_s:
            log.warning("%s: time %g s is earlier than the line before (%g s); the score's "
                        "events are sorted by time (same-time lines keep their order)",
                        wheres[i], events[i].time_s, events[i - 1].time_s)
            break
    return sorted(events, key=lambda e: e.time_s)


def parse_text(text: str, name: str = "<score>") -> list[Event]:
    events, wheres = [], []
    for i, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        where = f"{name}:{i}"
        head, _, rest = body.partition(" ")
        try:
            t = float(head)
        except ValueError:
            raise ScoreError(describe(f"{where}: time", head, "seconds, then a command",
                                      "start the line with a time, e.g. '0.5 note 60'"))\
                from None
        events.append(_event(where, t, rest.strip()))
        wheres.append(where)
    return _sorted(events, wheres)


def parse_json(text: str, name: str = "<score>") -> list[Event]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScoreError(f"{name}:{e.lineno}: not valid JSON ({e.msg}); write a list of "
                         '{"t": seconds, "cmd": "note 60 0.8"} objects') from None
    except RecursionError:
        raise ScoreError(f"{name}: JSON nested too deeply; write a flat list of "
                         '{"t": seconds, "cmd": "note 60 0.8"} objects') from None
    if not isinstance(data, list):
        raise ScoreError(describe(f"{name}: top level", type(data).__name__, "a JSON list",
                                  'write [{"t": 0, "cmd": "note 60"}]'))
    events, wheres = [], []
    for i, item in enumerate(data):
        where = f"{name}: item {i}"
        if not isinstance(item, dict) or "t" not in item or "cmd" not in item:
            raise ScoreError(describe(where, item, 'an object with "t" and "cmd"',
                                      'write {"t": 0.5, "cmd": "note 60 0.8"}'))
        events.append(_event(where, item["t"], item["cmd"]))
        wheres.append(where)
    return _sorted(events, wheres)


MAX_SCORE_BYTES = 16 << 20  # 16 MiB of text is hours of dense commands


def load(path: str | Path) -> list[Event]:
    """Read a score file (JSON if it ends in .json or starts with '[')."""
    p = Path(path)
    text = read_small_text(p, "score", MAX_SCORE_BYTES, ScoreError, "text or JSON",
                           "a score is timed commands, see patches/scores/demo.txt")
    if p.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return parse_json(text, str(p))
    return parse_text(text, str(p))

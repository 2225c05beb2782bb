"""The files a performer points at: small text files read safely (patches, scores), and
output paths checked before any work is done (render, encode, dissect).

Only a regular file of at most ``limit_bytes`` is read: checked with ``os.stat`` before
opening, opened non-blocking and checked again, and at most the limit + 1 bytes read. So a
path such as ``/dev/zero``, a FIFO or a folder is refused at once instead of being read
forever (over OSC, ``/inst/patch/load /dev/zero`` once read 17 GB).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from instrument.errors import ConfigError, InstrumentError, describe


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for the error message."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_small_text(path: str | Path, what: str, limit_bytes: int,
                    error: type[InstrumentError], kind: str, fix: str) -> str:
    """The UTF-8 text of ``path``, or ``error`` naming ``what`` (e.g. "patch file"), the
    problem, what is allowed (``kind``, e.g. "TOML") and ``fix``."""
    p = str(path)
    thing = f"{what} {p}"

    def unreadable(err: OSError) -> InstrumentError:
        return error(describe(thing, err.strerror or str(err), f"a readable {kind} file",
                              f"check the path ({fix})"))

    def too_big(size_bytes: int) -> InstrumentError:
        return error(describe(thing, f"{size_bytes} bytes", f"at most {limit_bytes} bytes",
                              f"a {what} is a short {kind} text; check that the path "
                              f"names one ({fix})"))

    try:
        st = os.stat(path)
    except OSError as err:
        raise unreadable(err) from None
    if not stat.S_ISREG(st.st_mode):
        raise error(describe(thing, _file_kind(st.st_mode), "a regular file",
                             f"give the path of a {kind} file ({fix})"))
    if st.st_size > limit_bytes:
        raise too_big(st.st_size)
    try:
        # O_NONBLOCK: should the path turn into a FIFO between stat and open, open() must
        # not wait for a writer; the fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise error(describe(thing, "not a regular file any more", "a regular file",
                                     f"give the path of a {kind} file"))
            raw = f.read(limit_bytes + 1)
    except OSError as err:
        raise unreadable(err) from None
    if len(raw) > limit_bytes:  # it grew after the stat
        raise too_big(len(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(describe(thing, f"byte {raw[err.start]:#04x} at offset {err.start}",
                             "UTF-8 text", "save the file as UTF-8")) from None


def check_out_file(path: str | Path, what: str, suffixes: tuple[str, ...],
                   folder_must_exist: bool = True) -> Path:
    """Refuse an output path up front: a suffix not in ``suffixes``, a missing folder, or a
    folder where a file should go (one line naming the option and the fix)."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ConfigError(describe(f"{what} {str(p)!r}: file type", p.suffix or "no suffix",
                                   ", ".join(suffixes), f"end the name in {suffixes[0]}"))
    if folder_must_exist and not p.parent.is_dir():
        raise ConfigError(f"{what} {str(p)!r}: folder {str(p.parent)!r} does not exist; create "
                          "it first or write somewhere else")
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r}: is a folder; give a file name")
    return p

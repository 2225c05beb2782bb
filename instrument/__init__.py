"""A live audio instrument: an autoencoder cut into a synthesizer and a compressor.

Data flow (one folder per stage)::

    corpus/  -> model/ (train, cut) -> models/NAME/ -> engine/ <- control/ (OSC, MIDI, patches)
    audio in -> listen/ (encoder) -> OSC out
    stream   -> dissect/ (online trainer) -> engine/
"""

import os as _os

# The realtime path multiplies tiny matrices (batch <= 16); numpy's OpenBLAS worker threads
# only add wake-up jitter there, and fight torch for the cores while dissect trains. One
# thread unless the user says otherwise (effective when numpy is imported after this; torch
# keeps its own thread pool for training).
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

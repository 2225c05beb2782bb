"""A live audio instrument: an autoencoder cut into a synthesizer and a compressor.

Data flow (one folder per stage)::

    corpus/  -> model/ (train, cut) -> models/NAME/ -> engine/ <- control/ (OSC, MIDI, patches)
    audio in -> listen/ (encoder) -> OSC out
    stream   -> dissect/ (online trainer) -> engine/
"""

__version__ = "0.1.0"

"""Model: the torch autoencoder, its training loop, and the cut into two numpy-runnable files.

Only :mod:`instrument.model.modelfile` is imported on the play/render path; it needs numpy
and safetensors alone (no torch).
"""

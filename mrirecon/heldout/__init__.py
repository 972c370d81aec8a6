"""Held-out evaluation protocol: images and geometries no shipped model or tuning ever saw.

Kept apart from the training recipes on purpose: nothing in :mod:`mrirecon.training` or
:mod:`mrirecon.data` imports this package, and this package reads only the reserved images of
:mod:`mrirecon.io.heldout_sources`. :mod:`mrirecon.heldout.data` builds the data at deployment
size, :mod:`mrirecon.heldout.protocol` runs every pipeline's method on it, and
:mod:`mrirecon.heldout.validation` builds the *validation* split (allowed training sources at
the same geometry) on which the baselines' parameters are chosen.
"""

"""What the training sets and samples share for notebook use: short reprs, and ``set[i]`` refused
naming ``get``.

:class:`SampleSet` is the mixin of :class:`~mrirecon.training.data.MRITrainingSet` and
:class:`~mrirecon.training.data_ct.CTTrainingSet`: their repr says the folder, the number of
samples and the settings (it was ``<... object at 0x...>``), and ``train_set[0]`` is refused with
a ``TypeError`` that names ``get(0, mask_seed=...)`` (it was "'MRITrainingSet' object is not
subscriptable"): a sample is drawn with a mask seed, which indexing cannot give.
:class:`~mrirecon.containers.ShortRepr` (the samples' repr: tensors as shape and dtype) is
re-exported for :mod:`mrirecon.training.data`.
"""

from __future__ import annotations

from mrirecon.containers import ShortRepr

__all__ = ["SampleSet", "ShortRepr", "mask_text"]


def mask_text(cfg) -> str:
    """A :class:`~mrirecon.training.config.MaskConfig` in a few words:
    ``equispaced_fraction 4x/8x (centre 0.08/0.04)``."""
    rates = "/".join(f"{a:g}x" for a in cfg.accelerations)
    centre = "/".join(f"{c:g}" for c in cfg.center_fractions)
    return f"{cfg.type} {rates} (centre {centre})"


class SampleSet:
    """Mixin of the training sets, whose samples come from ``get(index, mask_seed)``.

    A subclass has ``folder``, ``train`` and ``__len__``; the MRI sets also ``mask_config`` and
    ``maps`` (the repr's settings; a subclass with others overrides :meth:`_repr_settings` and
    says what its seed draws in ``_seeded``)."""

    _seeded = "mask"

    def _repr_settings(self) -> list[str]:
        return [f"mask={mask_text(self.mask_config)}", f"maps={self.maps!r}"]

    def __repr__(self) -> str:
        parts = [repr(str(self.folder)), f"{len(self)} samples", *self._repr_settings(),
                 f"train={self.train}"]
        return f"{type(self).__name__}({', '.join(parts)})"

    def __getitem__(self, index):
        name = type(self).__name__
        i = index if isinstance(index, int) else 0
        raise TypeError(
            f"{name}[{index!r}]: a sample is drawn with {name}.get(index, mask_seed=...), not "
            f"indexed: .get({i}, mask_seed=0) in a training set (train=True, each sample's "
            f"{self._seeded} drawn from mask_seed); a validation set (train=False) needs no seed: "
            f".get({i})")

"""Overlapping patch extraction as a :class:`~mrirecon.core.LinearOperator` (EPLL, patch GMM,
unrolled EM, DLMRI); the kernels are those of :mod:`mrirecon.functional.patches`."""

from __future__ import annotations

from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.functional.patches import extract_patches, fold_patches, patch_counts, patch_index


class Patches(LinearOperator):
    """Overlapping patch extraction ``P: (..., H, W) -> (..., L, p*p)``.

    Parameters
    ----------
    image_shape
        ``(H, W)`` of the images.
    patch_size
        Side ``p`` of the square patches.
    stride
        Step between patch origins.
    border
        ``"cover"`` (default): the last row/column of patches is shifted to touch the border, so
        every pixel is covered (``stride = 1``: all ``(H-p+1)(W-p+1)`` patches); ``"drop"``: the
        grid stops at the last full stride (``unfold``'s layout; border pixels may be in no
        patch). See :mod:`mrirecon.functional.patches`.

    Notes
    -----
    Patch ``l`` is the row-major ``p x p`` block at ``(rows[l // nW], cols[l % nW])`` flattened
    row-major. The adjoint adds each patch back into place (overlap-add), so ``P^H P`` is the
    diagonal of per-pixel patch counts (:attr:`counts`), its closed-form gram. Works on real and
    complex images alike.
    """

    def __init__(self, image_shape: tuple[int, int], patch_size: int = 8, stride: int = 1,
                 border: str = "cover") -> None:
        h, w = (int(s) for s in image_shape)
        index = patch_index((h, w), patch_size, stride, border)
        super().__init__((h, w), tuple(index.shape))
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("counts", patch_counts(index, (h, w)), persistent=False)
        self.image_shape, self.patch_size, self.stride = (h, w), int(patch_size), int(stride)
        self.border = border

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, patch={self.patch_size}, stride={self.stride}, "
                f"border={self.border}")

    def _forward(self, x: Tensor) -> Tensor:
        return extract_patches(x, self.index)

    def _adjoint(self, y: Tensor) -> Tensor:
        return fold_patches(y, self.index, self.image_shape)

    def _gram(self, x: Tensor) -> Tensor:
        return self.counts.to(x.real.dtype) * x

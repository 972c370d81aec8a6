"""Pure, stateless kernels: centred FFTs, coil combination, finite differences, wavelets."""

from mrirecon.functional.coils import (
    center_crop,
    center_pad,
    channels_to_complex,
    coil_combine,
    complex_to_channels,
    rss,
)
from mrirecon.functional.fft import (
    crop_readout,
    fft2c,
    fftc,
    ifft2c,
    ifftc,
    uncentred_fft2,
    uncentred_ifft2,
)
from mrirecon.functional.finite_differences import forward_difference, forward_difference_adjoint
from mrirecon.functional.wavelet import dwt2, idwt2, max_levels

__all__ = [
    "center_crop",
    "center_pad",
    "channels_to_complex",
    "coil_combine",
    "complex_to_channels",
    "crop_readout",
    "dwt2",
    "fft2c",
    "fftc",
    "forward_difference",
    "forward_difference_adjoint",
    "idwt2",
    "ifft2c",
    "ifftc",
    "max_levels",
    "rss",
    "uncentred_fft2",
    "uncentred_ifft2",
]

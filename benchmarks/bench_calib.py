"""Speed and quality of ESPIRiT and GRAPPA against SigPy and pygrappa on one simulated slice.

Data: Shepp-Logan (smooth phase) x SigPy birdcage maps, centred k-space with complex Gaussian
noise, complex64. ESPIRiT: ``mrirecon.calib.espirit_maps`` vs ``sigpy.mri.app.EspiritCalib``
(NumPy, CPU), same parameters (calib 24, kernel 6, thresh 0.02, crop 0.95, 100 power steps);
quality = per-pixel ``|<m_ours, m_sigpy>|`` inside the object. GRAPPA: ``mrirecon.recon.grappa``
vs ``pygrappa.grappa`` (5x5 kernel, lamda 0.01) at acceleration ``R`` along W with a central
ACS band; quality = NRMSE of the RSS image against the fully sampled one. ESPIRiT kernels:
``mrirecon.calib.espirit.espirit_kernels`` (eigh of the smaller Gram matrix of the calibration
matrix) vs the former ``cols x cols`` Gram route and SigPy's SVD of the matrix, on random 24 x 24
calibration blocks of 8 / 16 / 32 coils at kernel 6 (the default) and 16 (a wide matrix),
with ``--kernels``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_calib.py            # 15 x 640 x 368, R = 4
    OMP_NUM_THREADS=1 python benchmarks/bench_calib.py --quick    # 15 x 320 x 320
    OMP_NUM_THREADS=1 python benchmarks/bench_calib.py --skip grappa --kernels  # + kernel table

Times are the best of ``--repeats`` runs, per slice, on ``--threads`` torch threads (NumPy's
threads follow ``OMP_NUM_THREADS``; keep both at 1 for a like-for-like CPU comparison); ``ratio``
is ours / peer (below 1: we are faster), as in every benchmark.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sigpy
import sigpy.mri
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mrirecon.calib import espirit_maps
from mrirecon.calib.espirit import espirit_kernels
from mrirecon.functional import ifft2c, rss
from mrirecon.recon.grappa import grappa
from _timing import best_time, machine_line, others_running, ratio_text  # noqa: E402 (benchmarks/ is on sys.path)


def simulate(
    coils: int, h: int, w: int, noise: float = 1e-3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(h, w)`` and centred multi-coil k-space ``(coils, h, w)`` (complex64)."""
    img = sigpy.shepp_logan((h, w), dtype=np.complex128)
    yy, xx = np.mgrid[:h, :w]
    img = img * np.exp(1j * 0.5 * np.pi * (xx / w - 0.5) * (yy / h))
    maps = sigpy.mri.birdcage_maps((coils, h, w), r=1.2)
    ksp = sigpy.fft(maps * img, axes=(-2, -1))
    rng = np.random.default_rng(seed)
    ksp = ksp + noise * (rng.standard_normal(ksp.shape) + 1j * rng.standard_normal(ksp.shape))
    return img, ksp.astype(np.complex64)


@contextmanager
def numpy_unravel_workaround():
    """Work around wrong ``np.unravel_index`` results for ``(n, 1)`` inputs with ``n > 8192``
    (seen with NumPy 2.4.6; it leaves most of pygrappa's holes unfilled at realistic sizes):
    unravel the flattened indices instead. Only active around the pygrappa call."""
    original = np.unravel_index

    def fixed(indices, shape, order="C"):
        a = np.asarray(indices)
        return tuple(o.reshape(a.shape) for o in original(a.ravel(), shape, order=order))

    np.unravel_index = fixed
    try:
        yield
    finally:
        np.unravel_index = original


def bench_espirit(img, ksp, repeats, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_ref, (ref, ref_eig) = best_time(
        lambda: sigpy.mri.app.EspiritCalib(ksp, show_pbar=False, output_eigenvalue=True).run(),
        repeats,
    )
    k = torch.from_numpy(ksp).to(device)
    espirit_maps(k[:, :64, :64], calib_width=16)  # warm-up (allocator, kernels)
    t_ours, (maps, eig) = best_time(lambda: espirit_maps(k, return_eigenvalues=True), repeats,
                               sync=sync)
    maps, eig = maps.cpu().numpy(), eig.cpu().numpy()
    obj = np.abs(img) > 0.05
    corr = np.abs(np.sum(maps.conj() * ref, axis=0))[obj]
    print(
        f"ESPIRiT {ksp.shape[0]} coils x {ksp.shape[1]} x {ksp.shape[2]} (complex64, device {device}):"
    )
    print(f"  sigpy EspiritCalib  {t_ref:8.3f} s/slice")
    print(f"  mrirecon            {t_ours:8.3f} s/slice   ratio ours/peer {ratio_text(t_ours, t_ref)}")
    print(
        f"  |<m_ours, m_sigpy>| inside object: min {corr.min():.6f}, mean {corr.mean():.6f}; "
        f"max |eig_ours - eig_sigpy| {np.abs(eig - ref_eig.reshape(eig.shape)).max():.2e}"
    )


def bench_espirit_kernels(repeats):
    """Signal-subspace kernels of one calibration block (complex64, CPU): ours vs the former
    eigendecomposition of the cols x cols Gram matrix (one run: up to 18 s) and SigPy's SVD."""
    print("ESPIRiT kernels, random 24 x 24 calibration block (complex64, cpu), thresh 0.02:")
    for coils, k in [(8, 6), (16, 6), (32, 6), (8, 16), (16, 16)]:
        g = torch.Generator().manual_seed(0)
        calib = torch.randn(coils, 24, 24, dtype=torch.complex64, generator=g)
        blocks = calib.unfold(1, k, 1).unfold(2, k, 1)  # the calibration matrix, as ours builds it
        mat = blocks.permute(1, 2, 0, 3, 4).reshape(-1, coils * k * k)
        t_ours, _ = best_time(lambda: espirit_kernels(calib, k, 0.02), repeats, warmup=1)
        t_former, _ = best_time(lambda: torch.linalg.eigh(mat.mH @ mat), 1)
        m = mat.numpy()
        t_ref, _ = best_time(lambda: np.linalg.svd(m, full_matrices=False), repeats)
        print(f"  {coils:2d} coils, kernel {k:2d}: matrix {m.shape[0]:3d} x {m.shape[1]:4d}  ours "
              f"{t_ours * 1e3:8.1f} ms  former cols x cols {t_former * 1e3:8.1f} ms  sigpy svd "
              f"{t_ref * 1e3:8.1f} ms  ratio ours/peer {ratio_text(t_ours, t_ref)}")


def bench_grappa(ksp, accel, acs, repeats, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    c, h, w = ksp.shape
    mask = np.zeros(w, dtype=bool)
    mask[::accel] = True
    left = w // 2 - acs // 2
    mask[left : left + acs] = True
    under = ksp * mask
    calib = np.ascontiguousarray(ksp[..., left : left + acs])
    ref_img = rss(ifft2c(torch.from_numpy(ksp)), 0)

    def nrmse(k):
        x = rss(ifft2c(torch.as_tensor(k).cpu()), 0)
        return float(torch.linalg.vector_norm(x - ref_img) / torch.linalg.vector_norm(ref_img))

    try:  # the GRAPPA peer only: --skip grappa runs without it (it was imported at the top)
        import pygrappa
    except ImportError:
        sys.exit("bench_calib: the GRAPPA peer pygrappa is not installed (pip install -e "
                 "'.[test]', or make setup-test); --skip grappa runs the ESPIRiT part alone")

    def run_ref():
        with numpy_unravel_workaround():
            return pygrappa.grappa(under, calib, kernel_size=(5, 5), coil_axis=0, lamda=0.01)

    t_ref, ref = best_time(run_ref, repeats)
    u = torch.from_numpy(under).to(device)
    grappa(u[:, :64], acs)  # warm-up
    t_ours, out = best_time(lambda: grappa(u, acs, kernel_size=(5, 5), lam=0.01), repeats,
                               sync=sync)
    t_pad, out_pad = best_time(
        lambda: grappa(u, acs, kernel_size=(5, 5), lam=0.01, pad_calib=True), 1, sync=sync
    )
    holes = int((~mask).sum()) * h

    def unfilled(k):  # holes whose window holds no acquired sample stay empty in both
        return f"{int(np.count_nonzero(np.abs(np.asarray(k)[0][:, ~mask]) == 0))}/{holes}"

    print(
        f"GRAPPA R={accel}, ACS {acs}, 5x5 kernel, {c} coils x {h} x {w} (complex64, device {device}):"
    )
    print(f"  zero-filled NRMSE {nrmse(under):.5f}")
    print(
        f"  pygrappa.grappa   {t_ref:8.3f} s/slice  NRMSE {nrmse(ref):.5f}  empty holes {unfilled(ref)}"
    )
    print(
        f"  mrirecon grappa   {t_ours:8.3f} s/slice  NRMSE {nrmse(out):.5f}  empty holes {unfilled(out.cpu())}  ratio ours/peer {ratio_text(t_ours, t_ref)}"
    )
    print(
        f"  mrirecon pad_calib {t_pad:7.3f} s/slice  NRMSE {nrmse(out_pad):.5f}  (pygrappa's training set; "
        f"rel. diff to pygrappa {np.linalg.norm(out_pad.cpu().numpy() - ref) / np.linalg.norm(ref):.1e})"
    )


def main(argv=None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="15 coils x 320 x 320, one repeat")
    p.add_argument("--coils", type=int_at_least(1), default=15)
    p.add_argument(
        "--shape", type=int_at_least(1), nargs=2, default=None, help="H W (default 640 368; quick 320 320)"
    )
    p.add_argument("--accel", type=int_at_least(1), default=4)
    p.add_argument("--acs", type=int_at_least(1), default=24)
    p.add_argument("--repeats", type=int_at_least(1), default=None, help="default 3 (quick 1)")
    p.add_argument("--threads", type=int_at_least(1), default=1)
    p.add_argument(
        "--device", default="cpu", help="device for mrirecon (references always run on CPU)"
    )
    p.add_argument("--skip", choices=["espirit", "grappa"], default=None)
    p.add_argument("--kernels", action="store_true",
                   help="also time ESPIRiT's kernels against the former cols x cols route (up to "
                        "19 s a case) and SigPy's SVD")
    args = p.parse_args(argv)
    shape = tuple(args.shape) if args.shape else ((320, 320) if args.quick else (640, 368))
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    img, ksp = simulate(args.coils, *shape)
    print(f"machine: {machine_line()}, sigpy {sigpy.__version__}\nbefore: {others_running()}")
    if args.skip != "espirit":
        bench_espirit(img, ksp, repeats, device)
    if args.skip != "grappa":
        bench_grappa(ksp, args.accel, args.acs, repeats, device)
    if args.kernels:
        bench_espirit_kernels(repeats)
    print(f"after: {others_running()}")


if __name__ == "__main__":
    main()

"""Non-Cartesian MRI: NUFFT, Toeplitz gram and radial CG-SENSE against SigPy and torchkbnufft.

Problem: Shepp-Logan (smooth phase) x SigPy birdcage maps, ``C`` coils, ``N x N``, radial
trajectory of ``S`` full spokes x ``M`` samples (golden angle, 2x readout oversampling),
complex64, data simulated with our NUFFT plus complex Gaussian noise.

(a) NUFFT forward + adjoint on the coil stack: ``nufft`` + ``nufft_adjoint`` (FINUFFT, tolerance
    1e-5; also at 1e-3, SigPy's accuracy class) vs ``sigpy.nufft`` + ``sigpy.nufft_adjoint`` (defaults: oversampling 1.25, width 4)
    vs torchkbnufft ``KbNufft`` + ``KbNufftAdjoint`` (defaults: 2x grid, 6 neighbours, table
    interpolation). Accuracy of each against a float64 FINUFFT at 1e-12 is printed.
(b) Normal operator ``A^H A``: Toeplitz ``nufft_sense(...).gram`` vs the NUFFT pair
    ``op.H(op(x))`` (same operator, 32 coils), and their relative difference.
(c) CG-SENSE, 20 iterations, ``lam = 0``: ``recon.run("cg_sense", y, nufft_sense(maps, traj))``
    vs ``sigpy.mri.app.SenseRecon(y, maps, coord=..., max_iter=20)``; NRMSE of ours against
    SigPy's image after the least-squares complex scale.

Usage::

    python benchmarks/bench_noncartesian.py                 # 32 x 256^2, 400 x 512
    python benchmarks/bench_noncartesian.py --quick         # 8 x 128^2, 200 x 256
    python benchmarks/bench_noncartesian.py --threads 1
    python benchmarks/bench_noncartesian.py --problem 2 32 24 64 --repeats 1   # smoke test

Times are the best of ``--repeats`` runs after a warm-up (plans, numba compilation); ``ratio``
is ours / peer (below 1: we are faster), as in every benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mrirecon.functional.nufft import nufft, nufft_adjoint  # noqa: E402
from mrirecon.operators import nufft_sense  # noqa: E402
from mrirecon.recon import run  # noqa: E402
from mrirecon.sampling import golden_angle_radial  # noqa: E402
from _timing import best_time, ratio_text  # noqa: E402 (benchmarks/ is on sys.path)


def rel(a, b):
    """Relative error after the best complex scale (torchkbnufft's "ortho" norm divides by the
    square root of its 2x grid, i.e. half our orthonormal scale; the scale is not the error)."""
    return nrmse_after_scale(a, b)


def nrmse_after_scale(x, ref):
    x, ref = np.asarray(x).ravel(), np.asarray(ref).ravel()
    s = np.vdot(x, ref) / np.vdot(x, x)
    return float(np.linalg.norm(s * x - ref) / np.linalg.norm(ref))


def simulate(coils, n, spokes, samples, noise=1e-3, seed=0):
    import sigpy
    import sigpy.mri

    img = sigpy.shepp_logan((n, n), dtype=np.complex128)
    yy, xx = np.mgrid[:n, :n]
    img = img * np.exp(1j * 0.5 * np.pi * (xx / n - 0.5) * (yy / n))
    maps = sigpy.mri.birdcage_maps((coils, n, n), r=1.2)
    maps = maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    traj = golden_angle_radial(spokes, samples)
    maps_t = torch.from_numpy(maps.astype(np.complex64))
    img_t = torch.from_numpy(img.astype(np.complex64))
    y = nufft_sense(maps_t, traj, toeplitz=False)(img_t)
    g = torch.Generator().manual_seed(seed)
    y = y + noise * torch.complex(torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g))
    return img_t, maps_t, traj, y


def main(argv=None):
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int_at_least(1), default=None)
    ap.add_argument("--repeats", type=int_at_least(1), default=3)
    ap.add_argument("--skip-cg", action="store_true")
    ap.add_argument("--cg-only", action="store_true", help="skip (a) and (b)")
    ap.add_argument("--gram-only", action="store_true", help="run (b) only")
    ap.add_argument("--problem", type=int_at_least(1), nargs=4, default=None,
                    metavar=("COILS", "N", "SPOKES", "SAMPLES"),
                    help="another problem size (a smoke test: 2 32 24 64)")
    ap.add_argument("--cg-double", action="store_true",
                    help="(c) in complex128 against SigPy LinearLeastSquares with an accurate "
                         "NUFFT, also in complex128 (the float32 CG rounding check)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    coils, n, spokes, samples = args.problem or ((8, 128, 200, 256) if args.quick
                                                 else (32, 256, 400, 512))

    import sigpy
    import sigpy.mri
    import torchkbnufft as tkbn

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}; sigpy {sigpy.__version__}")
    print(f"problem: {coils} coils, {n}x{n}, {spokes} spokes x {samples} samples, complex64")
    img, maps, traj, y = simulate(coils, n, spokes, samples)
    coil_images = maps * img
    t32 = traj.float()

    if args.cg_only or args.cg_double:
        return cg_section(args, img, maps, traj, y, n)
    if args.gram_only:
        return gram_section(args, img, maps, traj)
    # ---- (a) NUFFT forward + adjoint --------------------------------------------------------
    exact_y = nufft(coil_images.to(torch.complex128), traj, eps=1e-12)
    exact_x = nufft_adjoint(exact_y, traj, (n, n), eps=1e-12)

    def ours():
        k = nufft(coil_images, t32)
        return k, nufft_adjoint(k, t32, (n, n))

    coord = traj.numpy() * n  # cycles/FOV, same axis order ([..., 0] along H)
    ci_np = coil_images.numpy()

    def sig():
        k = sigpy.nufft(ci_np, coord)
        return k, sigpy.nufft_adjoint(k, coord, oshape=ci_np.shape)

    omega = (2 * np.pi * t32.reshape(-1, 2).T).contiguous()
    fwd = tkbn.KbNufft(im_size=(n, n))
    adj = tkbn.KbNufftAdjoint(im_size=(n, n))
    ci_t = coil_images[None]

    def kb():
        k = fwd(ci_t, omega, norm="ortho")
        return k, adj(k, omega, norm="ortho")

    def ours_1e3():
        k = nufft(coil_images, t32, eps=1e-3)
        return k, nufft_adjoint(k, t32, (n, n), eps=1e-3)

    t_ours, t_sig, t_kb = (best_time(f, args.repeats, warmup=1)[0] for f in (ours, sig, kb))
    t_o3 = best_time(ours_1e3, args.repeats, warmup=1)[0]
    k_3, x_3 = ours_1e3()
    k_o, x_o = ours()
    k_s, x_s = sig()
    k_k, x_k = kb()
    ey, ex = exact_y.numpy().reshape(coils, -1), exact_x.numpy()
    print("(a) NUFFT forward + adjoint")
    print(f"    ours (finufft)   {t_ours * 1e3:8.1f} ms  error fwd {rel(k_o.numpy().reshape(coils, -1), ey):.1e}"
          f" adj {rel(x_o.numpy(), ex):.1e}")
    print(f"    ours, eps 1e-3   {t_o3 * 1e3:8.1f} ms  error fwd {rel(k_3.numpy().reshape(coils, -1), ey):.1e}"
          f" adj {rel(x_3.numpy(), ex):.1e}   ratio ours/peer: SigPy {ratio_text(t_o3, t_sig)}, "
          f"tkbn {ratio_text(t_o3, t_kb)}")
    print(f"    SigPy            {t_sig * 1e3:8.1f} ms  error fwd {rel(k_s.reshape(coils, -1), ey):.1e}"
          f" adj {rel(x_s, ex):.1e}   ratio ours/peer {ratio_text(t_ours, t_sig)}")
    print(f"    torchkbnufft     {t_kb * 1e3:8.1f} ms  error fwd "
          f"{rel(k_k.numpy().reshape(coils, -1), ey):.1e} adj {rel(x_k.numpy()[0], ex):.1e}   "
          f"ratio ours/peer {ratio_text(t_ours, t_kb)}")

    gram_section(args, img, maps, traj)

    if args.skip_cg:
        return
    cg_section(args, img, maps, traj, y, n)


def gram_section(args, img, maps, traj):
    """(b) Toeplitz gram vs the NUFFT pair on the same operator."""
    op = nufft_sense(maps, traj)
    x = img
    t_gram = best_time(lambda: op.gram(x), args.repeats, warmup=1)[0]
    t_pair = best_time(lambda: op.H(op(x)), args.repeats, warmup=1)[0]
    print("(b) normal operator A^H A")
    print(f"    Toeplitz gram    {t_gram * 1e3:8.1f} ms   NUFFT pair {t_pair * 1e3:8.1f} ms   "
          f"speed-up {t_pair / t_gram:.2f}x   difference {rel(op.gram(x).numpy(), op.H(op(x)).numpy()):.1e}")


def cg_section(args, img, maps, traj, y, n):
    import sigpy
    import sigpy.mri

    coord = traj.numpy() * n
    if args.cg_double:
        maps, y = maps.to(torch.complex128), y.to(torch.complex128)
        t0 = time.perf_counter()
        ours_img = run("cg_sense", y, nufft_sense(maps, traj), iterations=20)
        t_cg = time.perf_counter() - t0
        pair = run("cg_sense", y, nufft_sense(maps, traj, toeplitz=False), iterations=20)
        accurate = (sigpy.linop.NUFFT(tuple(maps.shape), coord, oversamp=2.0, width=8)
                    * sigpy.linop.Multiply((n, n), maps.numpy()))
        t0 = time.perf_counter()
        sig_acc = sigpy.app.LinearLeastSquares(accurate, y.numpy(), max_iter=20, show_pbar=False).run()
        t_sig = time.perf_counter() - t0
        sense = sigpy.mri.app.SenseRecon(y.numpy(), maps.numpy(), coord=coord, max_iter=20,
                                         show_pbar=False).run()
        o = ours_img.numpy()
        print("(c) radial CG-SENSE, 20 iterations, complex128")
        print(f"    NRMSE ours vs SigPy SenseRecon (default NUFFT, complex128) after scale "
              f"{nrmse_after_scale(o, sense):.2e}")
        print(f"    ours {t_cg:.2f} s   SigPy LinearLeastSquares (2x grid, width 8) {t_sig:.2f} s   NRMSE "
              f"ours vs SigPy after scale {nrmse_after_scale(o, sig_acc):.2e}   ours Toeplitz vs "
              f"NUFFT-pair gram {nrmse_after_scale(o, pair.numpy()):.2e}")
        return
    # ---- (c) CG-SENSE 20 iterations ---------------------------------------------------------
    t0 = time.perf_counter()
    op_c = nufft_sense(maps, traj)
    ours_img = run("cg_sense", y, op_c, iterations=20)
    t_cg = time.perf_counter() - t0
    t0 = time.perf_counter()
    sig_img = sigpy.mri.app.SenseRecon(y.numpy(), maps.numpy(), coord=coord, max_iter=20,
                                       show_pbar=False).run()
    t_sig_cg = time.perf_counter() - t0
    # the same least-squares problem in SigPy with an accurate NUFFT (2x grid, width 8): SigPy's
    # default NUFFT (1.25x, width 4) has ~3e-3 error, which bounds the agreement of the images
    accurate = (sigpy.linop.NUFFT(tuple(maps.shape), coord, oversamp=2.0, width=8)
                * sigpy.linop.Multiply((n, n), maps.numpy()))
    t0 = time.perf_counter()
    sig_acc = sigpy.app.LinearLeastSquares(accurate, y.numpy(), max_iter=20, show_pbar=False).run()
    t_sig_acc = time.perf_counter() - t0
    o = ours_img.numpy()
    # the float64 reference: the same 20 CG iterations in complex128 (ours; it equals SigPy's
    # complex128 LinearLeastSquares with an accurate NUFFT to ~1e-4, see --cg-double). In
    # complex64 every FFT-based normal operator (ours and SigPy's) has rounding errors of
    # ~eps * ||A^H A|| * ||p||, which CG amplifies in the weakly sampled directions (radial
    # without density weights: A^H A is near singular), so two complex64 runs differ by ~1e-3
    # and each drifts ~5e-3 from the complex128 iterate; see benchmarks/README.md
    ref = run("cg_sense", y.to(torch.complex128), nufft_sense(maps.to(torch.complex128), traj),
              iterations=20).numpy()
    print("(c) radial CG-SENSE, 20 iterations (ours incl. the Toeplitz kernel)")
    print(f"    ours {t_cg:.2f} s   SigPy SenseRecon {t_sig_cg:.2f} s   ratio ours/peer "
          f"{ratio_text(t_cg, t_sig_cg)}   NRMSE vs SenseRecon after scale "
          f"{nrmse_after_scale(o, sig_img):.2e}")
    print(f"    SigPy LinearLeastSquares, accurate NUFFT {t_sig_acc:.2f} s (ratio ours/peer "
          f"{ratio_text(t_cg, t_sig_acc)})   NRMSE ours vs it after scale {nrmse_after_scale(o, sig_acc):.2e}")
    print(f"    NRMSE vs the complex128 iterate (ours, 20 it.): ours c64 {nrmse_after_scale(o, ref):.2e}   "
          f"SenseRecon c64 {nrmse_after_scale(sig_img, ref):.2e}   accurate SigPy c64 "
          f"{nrmse_after_scale(sig_acc, ref):.2e}")
    print(f"    NRMSE vs truth: ours {nrmse_after_scale(o, img.numpy()):.4f}   SenseRecon "
          f"{nrmse_after_scale(sig_img, img.numpy()):.4f}   accurate SigPy "
          f"{nrmse_after_scale(sig_acc, img.numpy()):.4f}")


if __name__ == "__main__":
    main()

"""Peer scripts for ``bench_pipeline.py``: each runs in its own process (threads set by the
parent through ``OMP_NUM_THREADS``) and prints one JSON line with its time and output paths.

``kernels OUT``: PyWavelets and SigPy wavelet pairs; scikit-image ``iradon`` and ASTRA FBP of a
512 x 512 / 1000-view sinogram (made by our projector, which agrees with ASTRA's to 7e-4).
``bart FILE OUT LAM full|crop THRESH SCALE``: fastMRI slice -> cfl -> ``bart ecalib`` + ``bart pics``
-> image, on ``mri_cs``'s problem: ``ecalib -t THRESH**2`` (BART thresholds squared singular values,
mrirecon singular values) and ``pics -w SCALE`` (``mrirecon.recon.data_scale`` of the slice, so
that LAM weighs the same data units as ``mri_cs``'s ``lam``; see :func:`bart_commands`).
``sigpy FILE OUT LAM``: SigPy ESPIRiT + L1-wavelet on the readout-cropped slice.
``varnet FILE OUT``: fastMRI's VarNet with the shipped ``varnet_brain_sim`` weights.
``ct FILE OUT``: ASTRA FBP and scikit-image ``iradon`` (Hann) of a LoDoPaB-layout sinogram.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _timing import best_time  # noqa: E402 (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _crop(img: np.ndarray, shape) -> np.ndarray:
    h, w = img.shape[-2:]
    t, l = (h - shape[0]) // 2, (w - shape[1]) // 2
    return img[..., t : t + shape[0], l : l + shape[1]]


def _crop_readout(k: np.ndarray, rows: int) -> np.ndarray:
    """NumPy version of the hybrid-space readout crop (axis -2)."""
    h = k.shape[-2]
    ax = -2
    hyb = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=ax), axis=ax, norm="ortho"), axes=ax)
    hyb = hyb[..., (h - rows) // 2 : (h - rows) // 2 + rows, :]
    out = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(hyb, axes=ax), axis=ax, norm="ortho"), axes=ax)
    return out.astype(np.complex64)


def _read_slice(path: str):
    import h5py

    with h5py.File(path, "r") as f:
        k = f["kspace"][0]
        ref_shape = f["reconstruction_rss"].shape[-2:]
        mask = f["mask"][()] if "mask" in f else None
    return k, ref_shape, mask


def kernels(out: str) -> dict:
    import astra
    import pywt
    import sigpy as sp
    import torch
    from skimage.transform import iradon

    sys.path.insert(0, str(ROOT))
    from mrirecon.operators import ParallelBeam
    from mrirecon.operators.ct_geometry import CTGeometry

    Path(out).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((640, 368)) + 1j * rng.standard_normal((640, 368))).astype(np.complex64)
    pair = lambda: pywt.waverec2(pywt.wavedec2(x, "db4", mode="periodization", level=4), "db4",  # noqa: E731
                                 mode="periodization")
    W = sp.linop.Wavelet((640, 368), wave_name="db4", level=4)
    res = {"pywt_s": best_time(pair, 20)[0], "sigpy_s": best_time(lambda: W.H(W(x)), 20)[0]}
    n, views = 512, 1000
    g = CTGeometry.parallel((n, n), views)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    phantom = ((xx**2 + yy**2 < (0.4 * n) ** 2) * 1.0 + ((xx - 60) ** 2 + yy**2 < 50**2) * 0.5)
    phantom = phantom.astype(np.float32)
    sino = ParallelBeam(g)(torch.from_numpy(phantom)).numpy()
    theta = np.degrees(np.asarray(g.angles))
    t0 = time.perf_counter()
    rec = iradon(sino.T, theta=theta, filter_name="hann", output_size=n, circle=False)
    res["iradon_s"] = time.perf_counter() - t0
    res.update(_astra_fbp(sino, g, out, "astra_path", res))
    for name, arr in (("sino", sino), ("phantom", phantom), ("iradon", rec)):
        np.save(Path(out) / f"{name}.npy", arr)
        res[f"{name}_path"] = str(Path(out) / f"{name}.npy")
    return res


def _astra_fbp(sino: np.ndarray, g, out: str, key: str, res: dict, repeats: int = 3) -> dict:
    import astra

    vol = astra.create_vol_geom(*g.image_shape)
    proj = astra.create_proj_geom("parallel", g.detector_spacing / g.pixel_size, g.num_detectors,
                                  np.asarray(g.angles))
    pid = astra.create_projector("linear", proj, vol)

    def run():
        sid = astra.data2d.create("-sino", proj, sino)
        rid = astra.data2d.create("-vol", vol)
        cfg = astra.astra_dict("FBP")
        cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid,
                   option={"FilterType": "hann"})
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid)
        img = astra.data2d.get(rid)
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        return img

    seconds = best_time(run, repeats)[0]
    img = run()
    astra.projector.delete(pid)
    path = Path(out) / f"{key}.npy"
    np.save(path, img)
    return {key: str(path), key.replace("_path", "_s"): seconds}


def bart_commands(base: str, lam: str, thresh: str, scale: str) -> list[list[str]]:
    """``bart ecalib`` and ``bart pics`` on ``mri_cs``'s problem (50 iterations, as the bench
    sets ``mri_cs``): ESPIRiT at the pipeline's calib 24 / kernel 6 / crop 0.95 and its
    singular-value ``thresh``, which is BART's ``-t thresh**2`` (BART keeps a kernel where
    ``s / s_max > sqrt(t)``, ``src/calib/calib.c``; its default 0.001 is thresh 0.0316, not
    ``mri_cs``'s 0.02); ``pics -w scale`` with ``scale`` = ``mri_cs``'s data scale of the slice
    (the zero-filled RSS peak), so ``-R W:3:0:lam`` weighs ``y / scale`` as ``mri_cs``'s ``lam``
    does (``pics`` scales by its own estimate otherwise: 0.31x / 0.52x of it on the bench's
    8-coil slice, i.e. another ``lam``). What still differs is the wavelet: BART's ``W`` is a
    redundant Daubechies-2 (``dau2``) transform with every band thresholded, ours the
    orthogonal periodised db4, and the step (BART 0.95 / L, ours 1 / L)."""
    t = f"{float(thresh) ** 2:.6g}"
    return [["bart", "ecalib", "-m1", "-r", "24", "-k", "6", "-t", t, "-c", "0.95", base,
             base + "_maps"],
            ["bart", "pics", "-S", "-w", str(scale), "-R", f"W:3:0:{lam}", "-i", "50", base,
             base + "_maps", base + "_img"]]


def bart(path: str, out: str, lam: str, mode: str, thresh: str, scale: str) -> dict:
    from mrirecon.io import read_cfl, write_cfl  # BART's arrays, checked against bart itself

    sys.path.insert(0, str(Path(__file__).parent))
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    k, ref_shape, _ = _read_slice(path)
    if mode == "crop":
        k = _crop_readout(k, ref_shape[0])
    base = str(Path(out) / "k")
    write_cfl(base, np.transpose(k, (1, 2, 0))[:, :, None, :])  # (x=H, y=W, z, coils)
    for cmd in bart_commands(base, lam, thresh, scale):
        subprocess.run(cmd, check=True, capture_output=True)
    img = _crop(np.abs(read_cfl(base + "_img").squeeze()), ref_shape)
    seconds = time.perf_counter() - t0
    np.save(Path(out) / "img.npy", img)
    return {"seconds": seconds, "image_path": str(Path(out) / "img.npy")}


def sigpy_cs(path: str, out: str, lam: str) -> dict:
    import sigpy.mri as spmri

    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    k, ref_shape, _ = _read_slice(path)
    k = _crop_readout(k, ref_shape[0])
    img0 = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    scale = float(np.sqrt((np.abs(img0) ** 2).sum(0)).max())
    maps = spmri.app.EspiritCalib(k, calib_width=24, thresh=0.02, kernel_width=6, crop=0.95,
                                  show_pbar=False).run()
    img = spmri.app.L1WaveletRecon(k / scale, maps, float(lam), max_iter=50, show_pbar=False).run()
    img = _crop(np.abs(img), ref_shape)
    seconds = time.perf_counter() - t0
    np.save(Path(out) / "img.npy", img)
    return {"seconds": seconds, "image_path": str(Path(out) / "img.npy")}


def varnet(path: str, out: str) -> dict:
    import torch
    from fastmri.models import VarNet

    sys.path.insert(0, str(ROOT))
    from mrirecon.models import fastmri_varnet_state_dict

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    Path(out).mkdir(parents=True, exist_ok=True)
    weights = torch.load(ROOT / "mrirecon" / "weights" / "varnet_brain_sim.pt", weights_only=True)
    t0 = time.perf_counter()
    ref = VarNet(num_cascades=5, chans=10, pools=3, sens_chans=4, sens_pools=3).eval()
    ours_keys = list(fastmri_varnet_state_dict(ref.state_dict()))  # same order as ref's keys
    ref.load_state_dict({rk: weights[ok] for rk, ok in zip(ref.state_dict(), ours_keys)})
    k, ref_shape, mask = _read_slice(path)
    y = torch.view_as_real(torch.from_numpy(k))[None]
    m = torch.from_numpy(mask.astype(bool)).view(1, 1, 1, -1, 1)
    with torch.inference_mode():
        img = ref(y * m, m, None)[0].numpy()
    img = _crop(img, ref_shape)
    seconds = time.perf_counter() - t0
    np.save(Path(out) / "img.npy", img)
    return {"seconds": seconds, "image_path": str(Path(out) / "img.npy")}


def ct(path: str, out: str) -> dict:
    from skimage.transform import iradon

    sys.path.insert(0, str(ROOT))
    from mrirecon.io.lodopab import LoDoPaBFiles

    Path(out).mkdir(parents=True, exist_ok=True)
    files = LoDoPaBFiles(Path(path).parent, "test")
    g = files.geometry
    sino = files.sinogram(0).data[0].numpy().astype(np.float32)
    res = _astra_fbp(sino, g, out, "astra_path", {})
    t0 = time.perf_counter()
    rec = iradon(sino.T, theta=np.degrees(np.asarray(g.angles)), filter_name="hann",
                 output_size=g.image_shape[0], circle=False)
    res["iradon_s"] = time.perf_counter() - t0
    np.save(Path(out) / "iradon.npy", rec)
    res["iradon_path"] = str(Path(out) / "iradon.npy")
    return res


PEERS = {"kernels": kernels, "bart": bart, "sigpy": sigpy_cs, "varnet": varnet, "ct": ct}


def main(argv: list[str]) -> None:
    """``peer_scripts.py PEER ARGS...`` (see the module docstring); ``--help`` or no / an unknown
    peer prints the docstring and exits 2 (was a raw KeyError / IndexError)."""
    if not argv or argv[0] not in PEERS:
        print(__doc__, file=sys.stderr)
        sys.exit(0 if argv[:1] in (["--help"], ["-h"]) else 2)
    print(json.dumps(PEERS[argv[0]](*argv[1:])))


if __name__ == "__main__":
    main(sys.argv[1:])

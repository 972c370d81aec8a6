"""Generate tests/data/fastmri_masks.json from the reference ``fastmri.data.subsample`` (0.3.0).

Run once (``python tests/data/make_fastmri_masks.py``) where fastmri is installed; the JSON lets
tests/test_sampling.py check mrirecon's masks bit for bit when fastmri is absent.

Each case builds one reference mask function (type, centre fractions, accelerations,
allow_any_combination, constructor seed) and makes a sequence of calls on it, so the stored
masks also pin down the generator state between calls: unseeded calls advance it, seeded calls
(int or file-name tuple) must leave it untouched. Masks are stored as hex of ``np.packbits``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fastmri.data import subsample

REFERENCE = {
    "random": subsample.RandomMaskFunc,
    "equispaced": subsample.EquiSpacedMaskFunc,
    "equispaced_fraction": subsample.EquispacedMaskFractionFunc,
    "magic": subsample.MagicMaskFunc,
    "magic_fraction": subsample.MagicMaskFractionFunc,
}
WIDTHS = (320, 368, 372, 640)
CONFIGS = (
    ([0.08], [4], False),
    ([0.08, 0.04], [4, 8], False),
)
# (seed, offset) per call; tuples stand for the file-name seed convention
CALLS = (
    (None, None),
    (1234, None),
    ("file1000031.h5", None),
    (None, None),
    (7, 1),
)


def main() -> None:
    cases = []
    for k, (name, cls) in enumerate(REFERENCE.items()):
        configs = CONFIGS + ((([0.08, 0.04], [4, 8, 6], True),) if name == "random" else ())
        for width in WIDTHS:
            for cfs, accs, anyc in configs:
                init_seed = 100 + k * 10 + width % 7
                fn = cls(cfs, accs, allow_any_combination=anyc, seed=init_seed)
                calls = []
                for seed, offset in CALLS:
                    call_seed = tuple(map(ord, seed)) if isinstance(seed, str) else seed
                    mask, num_low = fn((1, 8, width, 2), offset, call_seed)
                    vec = mask.numpy().reshape(-1).astype(bool)
                    calls.append(
                        {
                            "seed": seed,
                            "offset": offset,
                            "num_low": int(num_low),
                            "mask_hex": np.packbits(vec).tobytes().hex(),
                        }
                    )
                cases.append(
                    {
                        "type": name,
                        "center_fractions": cfs,
                        "accelerations": accs,
                        "allow_any_combination": anyc,
                        "init_seed": init_seed,
                        "num_cols": width,
                        "calls": calls,
                    }
                )
    out = Path(__file__).with_name("fastmri_masks.json")
    lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases)
    out.write_text('{"reference":"fastmri.data.subsample 0.3.0","cases":[\n' + lines + "\n]}\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()

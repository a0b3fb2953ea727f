"""Time the generation of the synthetic UDA benchmark (msl.data.synth) and print a table.

The brief's budget: the default set within 60 s on 2 cores. Run: `python benchmarks/synth_generation.py`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from msl.data.synth import SCALES, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--shift", type=float, default=0.5)
    args = parser.parse_args()
    print(f"cpu cores visible: {os.cpu_count()}")
    print(f"{'scale':<10}{'images':>8}{'seconds':>10}{'images/s':>10}")
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as out:
            summary = generate(Path(out) / "synth", scale=scale, shift=args.shift, progress=False)
        images, seconds = sum(summary["counts"].values()), summary["seconds"]
        print(f"{scale:<10}{images:>8}{seconds:>10.1f}{images / seconds:>10.0f}")


if __name__ == "__main__":
    main()

"""What every benchmark here shares: stderr logging, the command line, machine facts."""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

import psframework


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def arguments(doc: str, quick: str, reps: str) -> argparse.Namespace:
    """--quick, --shards and --reps, with this benchmark's help texts."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--shards", type=int, default=2, help="shards in the LocalCluster")
    p.add_argument("--reps", type=int, default=None, help=reps)
    return p.parse_args()


def machine() -> dict:
    """The facts that make numbers from different runs comparable, or not."""
    return {"cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__,
            "psframework": psframework.__version__,
            "loadavg_1m": round(os.getloadavg()[0], 2)}

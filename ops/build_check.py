"""Build the CUDA extension against the installed torch (no GPU needed) and import it.

Usage: ``python -m ops.build_check [--arch 8.0] [--quiet] [--strict]``

Exit status 0 when the extension built (or was found in the build cache) and imported, non-zero when the build
failed. Without nvcc it prints ``skipped: nvcc not found`` and exits 0; with a CPU-only torch it prints a skip
message too (exit 0), unless ``--strict`` is given, in which case both skips exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.build_check", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", help="CUDA architectures, e.g. '8.0' or '8.0;9.0' (sets DOMAIN_ADAPT_CUDA_ARCH)")
    ap.add_argument("--quiet", action="store_true", help="do not show the compiler commands and output")
    ap.add_argument("--strict", action="store_true", help="exit 2 instead of 0 when the build is skipped")
    args = ap.parse_args(argv)
    if args.arch:
        os.environ["DOMAIN_ADAPT_CUDA_ARCH"] = args.arch

    from . import _plugin

    skip_code = 2 if args.strict else 0
    if _plugin.find_nvcc() is None:
        print("skipped: nvcc not found (no CUDA toolkit; set CUDA_HOME or put nvcc on PATH to build the ops)")
        return skip_code
    import torch

    if not torch.version.cuda:
        print(f"skipped: torch {torch.__version__} is a CPU-only build; the CUDA ops need a CUDA build of torch")
        return skip_code

    arches = _plugin.arch_list()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), nvcc {_plugin.find_nvcc()}, "
          f"CUDA_HOME {_plugin.cuda_home()}, arch {arches}")
    print(f"build directory: {_plugin.build_directory(arches, _plugin.cuda_home())}", flush=True)
    t0 = time.perf_counter()
    try:
        mod = _plugin.build(verbose=not args.quiet)
    except Exception as exc:  # noqa: BLE001
        print(f"FAILED after {time.perf_counter() - t0:.1f} s: {exc}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    fns = sorted(n for n in dir(mod) if not n.startswith("_"))
    print(f"built and imported {mod.__name__} from {getattr(mod, '__file__', '?')} in {dt:.1f} s")
    print("exported functions: " + ", ".join(fns))
    return 0


if __name__ == "__main__":
    sys.exit(main())

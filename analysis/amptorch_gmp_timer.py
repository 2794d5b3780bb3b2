"""Times AMPTorch's own GMP featurisation; run by bench_fingerprints.py in AMPTorch's interpreter.

Reads JSON commands from stdin, one a line: ``{"images": traj path, "fp_params": AMPTorch
fp_params, "derivatives": bool, "count": n}`` featurises the first ``n`` images of the file once
with ``amptorch.descriptor.GMP(...).prepare_fingerprints`` (no fingerprint database) and writes
``{"wall": s, "cpu": s}`` on stdout. Imports only AMPTorch, ASE and the standard library.
"""

import json
import sys
import time


def main() -> int:
    import ase.io
    from amptorch.descriptor.GMP import GMP

    out = sys.stdout
    sys.stdout = sys.stderr  # AMPTorch prints progress; only the timings go to stdout
    images = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["images"] not in images:
            images[cmd["images"]] = ase.io.read(cmd["images"], ":")
        batch = images[cmd["images"]][: int(cmd["count"])]
        elements = sorted({s for a in batch for s in a.get_chemical_symbols()})
        descriptor = GMP(MCSHs=json.loads(json.dumps(cmd["fp_params"])), elements=elements)
        t0, c0 = time.perf_counter(), time.process_time()
        descriptor.prepare_fingerprints(batch, calc_derivatives=bool(cmd["derivatives"]), save_fps=False,
                                        verbose=False, cores=1, log=None)
        print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start: import time, ``python -m tqref --help``, and the first
training step's JIT compile time with and without Numba's on-disk cache.

    python benchmarks/cold_start.py

Each measurement runs in a fresh interpreter.  "Without the cache" points
``NUMBA_CACHE_DIR`` at an empty temporary directory, so every kernel the
step needs is compiled from scratch (the cache is then written there and
thrown away); "with the cache" runs the same step twice in that directory's
place: the second run loads the compiled kernels from disk.  The first
step's time minus a later step's time is the compile (or cache-load) cost.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

STEP_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import tqref
from tqref.functional import softmax_cross_entropy
from tqref.models import get_model
from tqref.optim import SGD
t_import = time.perf_counter() - t0
model = get_model("resnet20", seed=0)
opt = SGD(model.parameters_and_gradients(), lr=0.1, momentum=0.9)
rng = np.random.default_rng(0)
x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
y = rng.integers(0, 10, 128)
times = []
for _ in range(3):
    t = time.perf_counter()
    loss, d = softmax_cross_entropy(model.forward(x), y)
    model.backward(d)
    opt.step()
    times.append(time.perf_counter() - t)
print(json.dumps({"import": t_import, "first": times[0], "later": min(times[1:])}))
"""


def run(cmd, env=None):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def main():
    py = sys.executable
    t_import, _ = run([py, "-c", "import tqref"])
    t_help, _ = run([py, "-m", "tqref", "--help"])
    t_nothing, _ = run([py, "-c", "pass"])
    print(f"python -c 'import tqref'      {t_import:5.2f} s  (bare interpreter {t_nothing:.2f} s)")
    print(f"python -m tqref --help        {t_help:5.2f} s")
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        _, out = run([py, "-c", STEP_SCRIPT], env)
        cold = json.loads(out)
        _, out = run([py, "-c", STEP_SCRIPT], env)
        warm = json.loads(out)
    for label, r in (("empty cache (compile)", cold), ("on-disk cache", warm)):
        print(f"first ResNet-20 step, {label:22s}: {r['first']:5.2f} s, later steps {r['later']:.2f} s "
              f"-> JIT cost {r['first'] - r['later']:5.2f} s  (import {r['import']:.2f} s)")


if __name__ == "__main__":
    main()

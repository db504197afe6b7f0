"""Run a script in a fresh interpreter with ``NUMBA_DISABLE_JIT=1``.

With the JIT off, every ``@numba.njit`` function is the plain Python function
it decorates, so these runs check that the kernels are correct Python too
(slowly).  The script gets one argument, the path of an ``.npz`` to write its
results to; ``run_without_jit`` returns that file, loaded.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_without_jit(script_text, tmp_path, timeout=300):
    script = tmp_path / "nojit.py"
    script.write_text(script_text)
    result_file = tmp_path / "nojit.npz"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(script), str(result_file)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return np.load(result_file)

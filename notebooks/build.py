"""Build the notebooks from their sources and run them.

    python notebooks/build.py            # every notebook
    python notebooks/build.py 03         # the ones whose name contains "03"

Each notebook is written as a plain Python file in ``notebooks/src/`` in the
"percent" format (``# %%`` starts a code cell, ``# %% [markdown]`` a text
cell whose lines start with ``# ``), which reads well in a diff and in any
editor.  jupytext (the ecosystem's reader and writer of that format) turns
each source into a notebook; this script adds what jupytext does not do: it
writes ``notebooks/NAME.ipynb``,
executes it top to bottom in a fresh kernel (as "Restart & Run All" does)
with ``notebooks/`` as the working directory, and saves it with its outputs,
so the notebooks read well on a code host.  Machine paths are removed from
the outputs.  ``tests/test_notebooks.py`` checks that each ``.ipynb`` matches
its source and runs without error.
"""

import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
KERNEL = "python3"
TIMEOUT_PER_CELL = 600


def make_notebook(source_path):
    """The notebook of one percent-format source, without outputs.

    jupytext does the parsing (``# %%`` starts a code cell, ``# %% [markdown]``
    a text cell); this adds the kernel every notebook runs on."""
    import jupytext
    nb = jupytext.read(str(source_path), fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata.pop("jupytext", None)  # the source is the pairing; no per-notebook format note
    return nb


def scrub_paths(nb):
    """Replace machine paths in outputs by placeholders: the repository, the
    data folder (``$TQREF_DATA``), temporary folders and the home folder."""
    import os
    import tempfile
    places = [(str(HERE.parent), "…")]
    if os.environ.get("TQREF_DATA"):
        data = Path(os.environ["TQREF_DATA"])
        places += [(str(data.resolve()), "$TQREF_DATA"), (str(data.absolute()), "$TQREF_DATA")]
    places += [(str(Path.home()), "~")]
    alternatives = [re.escape(tempfile.gettempdir()) + r"/[\w.-]+"] + [re.escape(p) for p, _ in places]
    names = ["<tmp>"] + [name for _, name in places]
    pattern = re.compile("|".join(f"({a})" for a in alternatives))

    def replace(match):
        return names[match.lastindex - 1]
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = pattern.sub(replace, output["text"])
            for key, value in output.get("data", {}).items():
                if key.startswith("text/") and isinstance(value, str):
                    output["data"][key] = pattern.sub(replace, value)
    return nb


def execute(nb, cwd=HERE, timeout=TIMEOUT_PER_CELL):
    import os

    from nbclient import NotebookClient
    # the kernel inherits this environment: MPLBACKEND=Agg (set by CI for the tests) would
    # make plt.show() draw nothing, and a built notebook would keep no figures
    os.environ.pop("MPLBACKEND", None)
    NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def build(source_path, run=True):
    import nbformat
    nb = make_notebook(source_path)
    start = time.perf_counter()
    if run:
        execute(nb)
        for cell in nb.cells:  # stable outputs in git: no execution timestamps
            cell.get("metadata", {}).pop("execution", None)
        scrub_paths(nb)
    target = HERE / (Path(source_path).stem + ".ipynb")
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(target)  # atomic: an interrupted build keeps the old notebook
    return target, time.perf_counter() - start


def main(argv):
    wanted = argv[1:]
    for source in sorted(SOURCES.glob("*.py")):
        if wanted and not any(w in source.stem for w in wanted):
            continue
        target, seconds = build(source)
        print(f"{target.name}: built and run in {seconds:.0f} s")


if __name__ == "__main__":
    main(sys.argv)

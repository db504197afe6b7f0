"""Refresh what results/README.md shows of the runs, from the run folders.

    python results/refresh.py            # from anywhere; run it after committing new epochs

It rewrites the part of results/README.md between the two ``refresh.py``
markers with the output of

    python -m tqref compare results/NAME ... --paper-table --markdown
    python -m tqref compare results/NAME ... --markdown

(every run folder: every folder of results/ holding a config.json, which
is what ``results/*/`` expands to),
headed by the date and the epoch each run has reached, and redraws each
run's committed figures with ``python -m tqref plot``: ``curves.png``, and
``sparsity.png`` for ternary runs (the other figures ``plot`` draws are not
committed).  Nothing is computed here: the numbers are compare's, read from
each run's log.jsonl and last.npz.
"""

import datetime
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tqref.compare import read_run
from tqref.train import read_log

RESULTS = Path(__file__).resolve().parent
REPO = RESULTS.parent
README = RESULTS / "README.md"
BEGIN = "<!-- refresh.py: begin -->"
END = "<!-- refresh.py: end -->"


def run_folders():
    return sorted(p for p in RESULTS.iterdir() if (p / "config.json").is_file())


def tqref(*args):
    """``python -m tqref ARGS`` from the repository root; its standard output."""
    done = subprocess.run([sys.executable, "-m", "tqref", *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"refresh: python -m tqref {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def status_line(folder):
    """``resnet20-fp: in progress, epoch 67 of 200, learning rate 0.1`` (``finished`` once
    compare counts the run as finished: result.json and every planned epoch logged)."""
    run = read_run(folder)
    if run["finished"]:
        return f"`{folder.name}`: finished ({run['epochs_planned']} epochs)"
    if not run["epochs_done"]:
        return f"`{folder.name}`: not started"
    return (f"`{folder.name}`: in progress, epoch {run['epochs_done']} of {run['epochs_planned']}, "
            f"learning rate {read_log(folder)[-1]['lr']:g}")


def section(folders):
    names = [f"results/{f.name}" for f in folders]
    paper = tqref("compare", *names, "--paper-table", "--markdown")
    runs = tqref("compare", *names, "--markdown")
    return "\n".join([
        BEGIN,
        f"What it printed on {datetime.date.today().isoformat()} "
        f"(written by `python results/refresh.py`), with the runs at:",
        "",
        *[f"- {status_line(f)}" for f in folders],
        "",
        "Runs in progress are far from their final numbers until the learning rate has dropped.",
        "",
        "```bash",
        "python -m tqref compare results/*/ --paper-table --markdown",
        "```",
        "",
        paper,
        "",
        "```bash",
        "python -m tqref compare results/*/ --markdown",
        "```",
        "",
        runs,
        END,
    ])


def redraw(folder):
    with tempfile.TemporaryDirectory() as tmp:
        tqref("plot", f"results/{folder.name}", "--out", tmp)
        for name in ("curves.png", "sparsity.png"):
            if (Path(tmp) / name).is_file():
                shutil.copyfile(Path(tmp) / name, folder / name)


def main():
    text = README.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"refresh: {README} must hold the markers {BEGIN} and {END}, once each, in that order")
    folders = run_folders()
    head, rest = text.split(BEGIN)
    tail = rest.split(END, 1)[1]
    README.write_text(head + section(folders) + tail)
    for folder in folders:
        if (folder / "log.jsonl").is_file() and (folder / "last.npz").is_file():
            redraw(folder)
    print(f"refresh: {README.relative_to(REPO)} and the figures of {len(folders)} run(s) rewritten")


if __name__ == "__main__":
    main()

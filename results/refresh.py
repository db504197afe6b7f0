"""Refresh what the READMEs show of the runs, from the run folders.

    python results/refresh.py            # from anywhere; run it after committing new epochs

It rewrites the part of results/README.md between the two ``refresh.py``
markers with the output of

    python -m tqref compare results/NAME ... --paper-table --markdown
    python -m tqref compare results/NAME ... --seeds --markdown
    python -m tqref compare results/NAME ... --markdown

(every run folder: every folder of results/ holding a config.json, which
is what ``results/*/`` expands to), and the same part of the top-level
README.md with the first of them (the paper's table), each headed by the
date and the epoch each run has reached; and it redraws each
run's committed figures with ``python -m tqref plot``: ``curves.png``, and
``sparsity.png`` for ternary runs (the other figures ``plot`` draws are not
committed).  Nothing is computed here: the numbers are compare's, read from
each run's log.jsonl and last.npz — all from one copy of the run folders
taken at the start, so a run that logs an epoch meanwhile cannot put two
different epochs into one README.
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
TOP_README = REPO / "README.md"
BEGIN = "<!-- refresh.py: begin -->"
END = "<!-- refresh.py: end -->"


def run_folders():
    return sorted(p for p in RESULTS.iterdir() if (p / "config.json").is_file())


def snapshot(folders, root):
    """Copy each run folder's files to ``root/results/NAME`` and return the copies.

    The runs may be training meanwhile: working on one copy keeps the status
    lines, both tables and the figures at the same epoch.  The log is copied
    after last.npz, so it holds the checkpoint's epoch (compare reads only
    the model's size from last.npz)."""
    copies = []
    for folder in folders:
        copy = root / "results" / folder.name
        copy.mkdir(parents=True)
        for name in ("config.json", "result.json", "last.npz", "log.jsonl"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, copy / name)
        copies.append(copy)
    return copies


def tqref(*args, cwd):
    """``python -m tqref ARGS`` run in the folder ``cwd``; its standard output."""
    done = subprocess.run([sys.executable, "-m", "tqref", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"refresh: python -m tqref {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def status_line(folder, run):
    """``resnet20-fp: in progress, epoch 67 of 200, learning rate 0.1`` (``finished`` once
    compare counts the run as finished: result.json and every planned epoch logged);
    ``run``: the folder's ``read_run``."""
    if run["finished"]:
        return f"`{folder.name}`: finished ({run['epochs_planned']} epochs)"
    if not run["epochs_done"]:
        return f"`{folder.name}`: not started"
    return (f"`{folder.name}`: in progress, epoch {run['epochs_done']} of {run['epochs_planned']}, "
            f"learning rate {read_log(folder)[-1]['lr']:g}")


# the compare commands each README shows, as its flags after ``compare results/*/``
TABLES = {README: (["--paper-table", "--markdown"], ["--seeds", "--markdown"], ["--markdown"]),
          TOP_README: (["--paper-table", "--markdown"],)}


def section(copies, runs, tables, root):
    """The README part between the markers, from the snapshot ``root/results/NAME`` of
    the run folders: ``copies``, and their ``read_run`` dicts ``runs``."""
    names = [f"results/{copy.name}" for copy in copies]
    lines = [
        BEGIN,
        f"What it printed on {datetime.date.today().isoformat()} "
        f"(written by `python results/refresh.py`), with the runs at:",
        "",
        *[f"- {status_line(copy, run)}" for copy, run in zip(copies, runs)],
    ]
    if not all(run["finished"] for run in runs):
        lines += ["", "Runs in progress are far from their final numbers until the learning rate has dropped."]
    for flags in tables:
        lines += ["", "```bash", f"python -m tqref compare results/*/ {' '.join(flags)}", "```", "",
                  tqref("compare", *names, *flags, cwd=root)]
    return "\n".join(lines + [END])


def redraw(copy, folder):
    """Draw the figures of the run snapshot ``copy`` (``ROOT/results/NAME``) into the run
    folder ``folder``; run from ROOT, so the figures are titled ``results/NAME``, not with
    the snapshot's temporary path."""
    with tempfile.TemporaryDirectory() as tmp:
        tqref("plot", f"results/{copy.name}", "--out", tmp, cwd=copy.parent.parent)
        for name in ("curves.png", "sparsity.png"):
            if (Path(tmp) / name).is_file():
                shutil.copyfile(Path(tmp) / name, folder / name)


def rewrite(readme, new_section):
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"refresh: {readme} must hold the markers {BEGIN} and {END}, once each, in that order")
    head, rest = text.split(BEGIN)
    readme.write_text(head + new_section + rest.split(END, 1)[1])


def main():
    folders = run_folders()
    with tempfile.TemporaryDirectory() as tmp:
        copies = snapshot(folders, Path(tmp))
        runs = [read_run(copy) for copy in copies]  # once: it loads each last.npz
        for readme, tables in TABLES.items():
            rewrite(readme, section(copies, runs, tables, Path(tmp)))
        for copy, folder in zip(copies, folders):
            if (copy / "log.jsonl").is_file() and (copy / "last.npz").is_file():
                redraw(copy, folder)
    print(f"refresh: {', '.join(str(r.relative_to(REPO)) for r in TABLES)} "
          f"and the figures of {len(folders)} run(s) rewritten")


if __name__ == "__main__":
    main()

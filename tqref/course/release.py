"""``python -m tqref course release OUT``: write the student edition.

OUT receives

    tqref/                 the package, every solution region replaced by
                           raise NotImplementedError("task N: ...: implement f() in ...")
    tests/course/          the student tests (the same files this repository runs)
    pyproject.toml         this repository's (its readme pointed at README_STUDENT.md)
    requirements.txt
    docs/method.md         the method write-up the docstrings refer to (and docs/course.md once it exists)
    notebooks/             one notebook per task (tqref.course.notebook), in nbgrader's format:
                           each function's cell with its solution region blanked as nbgrader's
                           generate_assignment does, the graded cell last
    README_STUDENT.md      the tasks, how to test and grade

The files with regions are found by scanning tqref/ (``markers.scan_package``,
which also checks every region against the task registry); each region's
enclosing function, found with ``ast``, picks the stub's message.  The
edition is built in a temporary folder beside OUT and renamed to OUT at the
end, so OUT is either complete or absent; an OUT that exists and is not
empty is refused.  Before the rename the edition is checked: no marker line
and no solution line is left in it, the notebooks' cells included.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from tqref.course import markers
from tqref.course.tasks import COURSE_DOC, TASKS, TOTAL_POINTS

STUDENT_README = "README_STUDENT.md"
NOTEBOOKS = "notebooks"
TESTS = Path("tests") / "course"
DOCS = ("docs/method.md", COURSE_DOC)  # copied when present
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".nbi", ".nbc"}


def source_root():
    """The folder that holds this tqref package (the repository, or an edition)."""
    return Path(__file__).resolve().parents[2]


def _copy_tree(src, dst):
    def ignore(folder, names):
        return [n for n in names if n in SKIP_DIRS or Path(n).suffix in SKIP_SUFFIXES]
    shutil.copytree(src, dst, ignore=ignore)


def _pyproject(text):
    """The repository's pyproject.toml with its readme pointed at the student README
    (setuptools refuses a readme that is not there)."""
    return text.replace('readme = "README.md"', f'readme = "{STUDENT_README}"')


def student_readme():
    rows = []
    for t in TASKS:
        functions = ", ".join(f"`{f.qualname}` ({f.path})" for f in t.functions)
        before = ", ".join(t.prerequisites) or "—"
        rows.append(f"| {t.id} | {t.title} | {t.points} | {t.minutes} min | {before} | {functions} |")
    table = "\n".join(rows)
    return f"""# tqref, the course edition

This is tqref (a NumPy framework for ternary-weight CNNs, He, Gong & Fan,
WACV 2019) with the bodies of {sum(len(t.functions) for t in TASKS)} functions taken out. Each now raises
`NotImplementedError("task N: ...")`; your job is to write them back. The
docstring of each function (and the module's) is the specification, and
`docs/method.md` explains the equations. Argument checks left in place
before a stub are given: keep them.

## Setup

```bash
pip install -e ".[course]"          # tqref, pytest and hypothesis (the property tests skip without it)
python -m tqref course list         # the tasks
```

## The tasks

| task | what | points | time | do first | implement |
|---|---|---:|---:|---|---|
{table}

{TOTAL_POINTS} points in all. The tests of a task do not use your code of the
other tasks (they replace it with stand-ins), so the tasks can be done in
any order; "do first" is what helps to understand them.

## Testing and grading

```bash
python -m tqref course test --task 3     # the tests of task 3 (pytest's output), then the summary
python -m pytest -m task3               # the same with plain pytest
python -m tqref course grade            # points per task, the first failing check of each
python -m tqref course grade --json     # the same as JSON
```

Or work in the notebooks: `{NOTEBOOKS}/` holds one per task (`jupyter lab {NOTEBOOKS}/`),
with a cell per function to write and, last, a cell that grades the task
with the same tests (it puts the notebook's functions into a copy of the
library and runs `python -m tqref course grade --task N` there). They are
nbgrader notebooks: a course on JupyterHub can hand them out and autograde
them.

The tests draw hidden random inputs (shapes, strides, paddings, weights)
from a new seed at every run, so an answer that fits one input fails the
next. The seed is printed; `TQREF_GRADE_SEED=1234 python -m tqref course
grade` repeats the inputs of a run. A task's points count when all its
tests pass. A task whose functions still raise shows as "not implemented
yet".
"""


def solution_only_lines(root):
    """The lines (stripped) that occur in solution regions of ``root``/tqref and nowhere
    else in its sources: what must not appear in a student edition."""
    inside, outside = set(), set()
    for path in markers.package_sources(root):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        regions = markers.find_regions(text, path) if markers.has_markers(text) else []
        in_region = set()
        for r in regions:
            in_region.update(range(r.begin - 1, r.end))
        for k, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            (inside if k in in_region else outside).add(stripped)
    return inside - outside


def _notebook_lines(text):
    """The lines of a notebook's cells (sources and text outputs), or of ``text`` if it is not one."""
    try:
        cells = json.loads(text)["cells"]
    except (ValueError, KeyError, TypeError):
        return text.splitlines()
    lines = []
    for cell in cells:
        parts = [cell.get("source", "")] + [o.get("text", "") for o in cell.get("outputs", [])]
        for part in parts:
            lines += ("".join(part) if isinstance(part, list) else str(part)).splitlines()
    return lines


def find_leaks(edition, root):
    """[(file, line number, text)] of the edition's lines that are solution-only lines of
    ``root`` or solution markers; [] for a clean edition.  A notebook's lines are those of
    its cells (numbered across them)."""
    secret = solution_only_lines(root)
    leaks = []
    for path in sorted(Path(edition).rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".md", ".toml", ".txt", ".cfg", ".ipynb"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = _notebook_lines(text) if path.suffix == ".ipynb" else text.splitlines()
        for number, line in enumerate(lines, start=1):
            if line.strip() in secret or markers.is_marker(line):
                leaks.append((path.relative_to(edition), number, line.strip()))
    return leaks


def release(out, root=None, log=print):
    """Write the student edition of the package in ``root`` (default: this one) to ``out``.

    Returns the list of (file, region, task, function) stubbed.  Raises ValueError
    when ``out`` is a non-empty folder or a file, MarkerError for a bad region."""
    root = Path(root) if root is not None else source_root()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"course release: {out} exists and is not an empty folder; give a new folder "
                         f"(the student edition is written whole, never over other files)")
    for needed in ("tqref", "pyproject.toml", str(TESTS)):
        if not (root / needed).exists():
            raise ValueError(f"course release: {root / needed} is missing; release from the repository "
                             f"that holds tqref/ with its solutions")
    found = markers.scan_package(root)  # checks the regions against the registry first
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _copy_tree(root / "tqref", tmp / "tqref")
        stubbed = []
        for path in found:
            rel = path.relative_to(root)
            text, done = markers.stub_source(path.read_text(encoding="utf-8"), markers.module_name(path, root), rel)
            (tmp / rel).write_text(text, encoding="utf-8")
            stubbed.extend((rel, region, task, function) for region, task, function in done)
        _copy_tree(root / TESTS, tmp / TESTS)
        (tmp / "pyproject.toml").write_text(_pyproject((root / "pyproject.toml").read_text(encoding="utf-8")),
                                            encoding="utf-8")
        for extra in ("requirements.txt",) + DOCS:
            if (root / extra).is_file():
                (tmp / extra).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / extra, tmp / extra)
        (tmp / STUDENT_README).write_text(student_readme(), encoding="utf-8")
        from tqref.course.notebook import write_notebooks
        write_notebooks(tmp / NOTEBOOKS, root, student=True)
        leaks = find_leaks(tmp, root)
        if leaks:
            where = "; ".join(f"{f}:{n}: {t!r}" for f, n, t in leaks[:5])
            raise RuntimeError(f"course release: solution text left in the edition ({len(leaks)} lines): {where}")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0o700
        if out.exists():
            out.rmdir()  # empty (checked above); a file written there since makes this fail
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    order = {t.id: k for k, t in enumerate(TASKS)}
    for rel, region, task, function in sorted(stubbed, key=lambda s: (order[s[2].id], str(s[0]), s[1].begin)):
        log(f"  task {task.id}: {function.qualname}() in {rel} (lines {region.begin}-{region.end}) -> stub")
    log(f"wrote the student edition to {out}: {len(stubbed)} functions of {len(TASKS)} tasks stubbed, "
        f"{TOTAL_POINTS} points, one notebook per task in {out / NOTEBOOKS}; start with: cd {out} && pip install -e '.[course]' && python -m tqref course list")
    return stubbed

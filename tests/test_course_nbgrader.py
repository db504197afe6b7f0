"""The course notebooks (tqref/course/notebook.py) and nbgrader.

Default run: the notebooks are cut from the library (a solution cell is its
function, byte for byte), their nbgrader metadata, the released ones are
blanked as nbgrader blanks them and hold no solution line.

Under ``long``: the round trip through nbgrader itself, in a temporary
course directory with its own gradebook: ``nbgrader generate_assignment`` on
the solution notebooks, three students' submissions (the released notebooks
unchanged, the solutions written in, one wrong solution), ``nbgrader
autograde``, and each notebook's score in the gradebook equals that task's
points from ``python -m tqref course grade --json`` on the equivalent library
edition, with the same hidden inputs.
"""

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tqref.course import markers, notebook, release, tasks
from tqref.course.checks import SEED_ENV, grade_seed

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "tqref"


def _nbgrader(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _solution_cells(nb):
    return [c for c in nb.cells if _nbgrader(c).get("solution")]


@pytest.mark.parametrize("task", tasks.TASKS, ids=[t.id for t in tasks.TASKS])
def test_a_notebook_holds_the_library_functions_and_one_graded_cell(task):
    import nbformat
    nb = notebook.build_notebook(task, REPO)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec["name"] == "python3"
    solutions = _solution_cells(nb)
    assert [c.source for c in solutions] == [notebook.function_source(f, REPO) for f in task.functions]
    for cell, f in zip(solutions, task.functions):
        tree = ast.parse(cell.source)
        assert [type(n) for n in tree.body] == [ast.FunctionDef] and tree.body[0].name == f.qualname.split(".")[-1]
        assert cell.source.count(tasks.BEGIN_SOLUTION) == 1 and cell.source.count(tasks.END_SOLUTION) == 1
    graded = [c for c in nb.cells if _nbgrader(c).get("grade")]
    assert len(graded) == 1 and graded[0] is nb.cells[-1]
    assert _nbgrader(graded[0])["points"] == task.points and _nbgrader(graded[0])["locked"]
    assert graded[0].source == f'course.grade_task("{task.id}", globals())'
    ids = [_nbgrader(c)["grade_id"] for c in nb.cells if _nbgrader(c)]
    assert len(set(ids)) == len(ids)
    assert f"# Task {task.id}: {task.title} ({task.points} points" in nb.cells[0].source


def test_splicing_a_functions_own_source_gives_the_module_back():
    for task in tasks.TASKS:
        for f in task.functions:
            text = (REPO / f.path).read_text()
            assert notebook.splice(text, f.qualname, notebook.function_source(f, REPO)) == text, f.target


def test_blanking_is_nbgraders():
    from nbformat.v4 import new_code_cell
    ClearSolutions = pytest.importorskip("nbgrader.preprocessors").ClearSolutions
    clear = ClearSolutions()
    for task in tasks.TASKS:
        for f in task.functions:
            source = notebook.function_source(f, REPO)
            cell = new_code_cell(source)
            clear._replace_solution_region(cell, "python")
            assert notebook.blank_solutions(source) == cell.source


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("course-nb") / "edition"
    release.release(out, REPO, log=lambda line: None)
    return out


def test_the_edition_has_one_blanked_notebook_per_task_and_no_solution(edition):
    import nbformat
    found = sorted(p.name for p in (edition / release.NOTEBOOKS).iterdir())
    assert found == sorted(f"{notebook.notebook_name(t)}.ipynb" for t in tasks.TASKS)
    secret = release.solution_only_lines(REPO)
    for task in tasks.TASKS:
        nb = nbformat.read(str(edition / release.NOTEBOOKS / f"{notebook.notebook_name(task)}.ipynb"), 4)
        nbformat.validate(nb)
        solutions = _solution_cells(nb)
        assert len(solutions) == len(task.functions)
        for cell in nb.cells:
            for line in cell.source.splitlines():
                assert line.strip() not in secret and not markers.is_marker(line), (task.id, line)
        for cell in solutions:
            assert "    # YOUR CODE HERE\n    raise NotImplementedError()" in cell.source
            ast.parse(cell.source)
    assert release.find_leaks(edition, REPO) == []
    # and the leak check reads a notebook's cells
    leaky = edition.parent / "leaky"
    notebook.write_notebooks(leaky, REPO, tasks=[tasks.get_task("5")])
    leaks = release.find_leaks(leaky, REPO)
    assert leaks and {str(f) for f, _, _ in leaks} == {"task5_expansions.ipynb"}
    readme = (edition / release.STUDENT_README).read_text()
    assert "notebooks/" in readme and "nbgrader" in readme


def test_the_names_a_notebook_gets_are_the_modules_but_not_the_tasks_functions():
    namespace = {}
    notebook.start("3", namespace)
    assert "np" in namespace and "check_delta_factor" in namespace and "threshold" not in namespace
    with pytest.raises(AssertionError, match=r"task 3: threshold\(\) is not defined in this notebook"):
        notebook.notebook_sources(tasks.get_task("3"), namespace)


# ---------------------------------------------------------------- nbgrader, for real (long)
def _run(command, cwd, env, timeout=1200):
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, " ".join(map(str, command)) + "\n" + (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def _submit(course, student, release_dir, replace=None):
    """Copy the released notebooks to submitted/STUDENT/; ``replace(task, function, source)`` gives
    the source a student writes into a solution cell (None: the cell as released)."""
    import nbformat
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    for task in tasks.TASKS:
        name = f"{notebook.notebook_name(task)}.ipynb"
        nb = nbformat.read(str(release_dir / name), 4)
        if replace is not None:
            for cell, f in zip(_solution_cells(nb), task.functions):
                cell.source = replace(task, f, notebook.function_source(f, REPO))
        nbformat.write(nb, str(folder / name))


@pytest.mark.long
def test_nbgrader_autogrades_the_notebooks_as_course_grade_grades_the_library(tmp_path):
    pytest.importorskip("nbgrader")
    import nbformat
    from nbgrader.api import Gradebook
    from test_course import MUTANTS, _put_solutions

    started = time.perf_counter()
    seed = grade_seed()
    env = dict(os.environ, **{SEED_ENV: str(seed)})
    env.pop("PYTEST_ADDOPTS", None)
    course = tmp_path / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    db = f"sqlite:///{course / 'gradebook.db'}"
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'tqref'\n"
        f"c.CourseDirectory.db_url = {db!r}\n"
        f"c.Exchange.root = {str(tmp_path / 'exchange')!r}\n"
        "c.Execute.timeout = 900\n")  # per cell: a graded cell runs its task's tests
    notebook.write_notebooks(course / "source" / ASSIGNMENT, REPO)

    _run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT], course, env)
    released = course / "release" / ASSIGNMENT
    # nbgrader's student version: no solution, and the same code as course release's notebooks
    assert release.find_leaks(released, REPO) == []
    ours = tmp_path / "ours"
    notebook.write_notebooks(ours, REPO, student=True)
    for task in tasks.TASKS:
        name = f"{notebook.notebook_name(task)}.ipynb"
        theirs_nb, ours_nb = (nbformat.read(str(d / name), 4) for d in (released, ours))
        assert [c.source for c in theirs_nb.cells] == [c.source for c in ours_nb.cells], name

    wrong = "4 gradient not in place"
    task_id, qualname, old, new = MUTANTS[wrong]

    def mutate(task, f, source):
        if f.qualname == qualname:
            assert source.count(old) == 1
            return source.replace(old, new)
        return source

    _submit(course, "stubs", released)
    _submit(course, "solutions", released, lambda task, f, source: source)
    _submit(course, "wrong", released, mutate)
    before = time.perf_counter()
    _run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT], course, env, timeout=3000)
    autograde_seconds = time.perf_counter() - before

    scores = {}
    with Gradebook(db) as gradebook:
        for student in ("stubs", "solutions", "wrong"):
            for task in tasks.TASKS:
                sub = gradebook.find_submission_notebook(notebook.notebook_name(task), ASSIGNMENT, student)
                assert sub.max_score == task.points and not sub.needs_manual_grade
                scores[student, task.id] = sub.score

    # the same code as a library edition, graded by python -m tqref course grade with the same seed
    editions = tmp_path / "editions"
    editions.mkdir()
    expected = {}
    for student, mutant in (("stubs", "none"), ("solutions", None), ("wrong", MUTANTS[wrong])):
        copy = editions / student
        release.release(copy, REPO, log=lambda line: None)
        if mutant != "none":
            _put_solutions(copy, mutant)
        result = notebook.grade_edition(copy, seed=seed)
        assert result["seed"] == seed
        for row in result["tasks"]:
            expected[student, row["id"]] = row["earned"]
    assert scores == expected
    total = {s: sum(v for (who, _), v in scores.items() if who == s) for s in ("stubs", "solutions", "wrong")}
    assert total == {"stubs": 0, "solutions": 100, "wrong": 100 - tasks.get_task(task_id).points}

    # the released notebooks run with the stubs up to the graded cell, which says what to write
    for task in tasks.TASKS:
        nb = nbformat.read(str(course / "autograded" / "stubs" / ASSIGNMENT / f"{notebook.notebook_name(task)}.ipynb"), 4)
        errors = [(k, o) for k, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.output_type == "error"]
        assert [k for k, _ in errors] == [len(nb.cells) - 1], task.id
        message = errors[0][1].evalue
        assert message.startswith(f"task {task.id} is not implemented yet: "), message
        assert ", ".join(f"{f.qualname}()" for f in task.functions) in message
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
        assert f"{SEED_ENV}={seed}" in text  # the kernel graded with the test's hidden inputs
    wrong_nb = nbformat.read(str(course / "autograded" / "wrong" / ASSIGNMENT / "task4_ste.ipynb"), 4)
    error = next(o for o in wrong_nb.cells[-1].outputs if o.output_type == "error")
    assert error.evalue.startswith("task 4 failed: ")

    # nbgrader's CSV export has the same totals
    _run([sys.executable, "-m", "nbgrader", "export", "--to", str(tmp_path / "grades.csv")], course, env)
    import csv
    rows = {r["student_id"]: float(r["raw_score"]) for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert rows == {s: float(v) for s, v in total.items()}
    print(f"nbgrader round trip: {time.perf_counter() - started:.0f} s (autograde {autograde_seconds:.0f} s)")

"""The course edition's machinery (tqref/course/): the task registry, the
solution markers in the library, the release of the student edition, and
grading.  The student tests themselves are in tests/course/ (they run here
against the solutions).

Under the marker ``long`` (each grades an edition in a child process, a few
seconds each): an edition as released earns 0 points with every task "not
implemented yet"; with the solutions copied in, all points; with one
deliberately wrong solution, exactly that task's points are lost.
"""

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tqref.cli import main
from tqref.course import grade, markers, release, tasks
from tqref.course.checks import SEED_ENV, grade_seed

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the registry
def test_the_registry_is_consistent_and_names_real_functions():
    tasks.check_registry()
    assert tasks.TOTAL_POINTS == 100
    assert [t.id for t in tasks.TASKS] == ["1a", "1b", "2", "3", "4", "5"]
    for task in tasks.TASKS:
        assert (REPO / "tests" / "course" / task.tests).is_file(), task.tests
        assert f"pytestmark = pytest.mark.{task.marker}" in (REPO / "tests" / "course" / task.tests).read_text()
        for f in task.functions:
            obj = importlib.import_module(f.module)
            for part in f.qualname.split("."):
                obj = getattr(obj, part)
            assert callable(obj), f.target
            assert (REPO / f.path).is_file()
            message = task.message(f)
            assert message.startswith(f"task {task.id}: {f.label}: implement {f.qualname}() in {f.path}")
    with pytest.raises(ValueError, match="no task '7'"):
        tasks.get_task("7")
    assert tasks.get_task("task1b") is tasks.get_task("1b")


def test_every_task_marker_is_registered_in_pyproject():
    text = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; tqref supports 3.10)
    for task in tasks.TASKS:
        assert f'    "{task.marker}: course task {task.id},' in text, task.marker
    assert 'course = ["pytest>=8,<10", "hypothesis>=' in text


def test_a_bad_registry_is_refused():
    t = tasks.TASKS[1]
    with pytest.raises(ValueError, match="prerequisite '9'"):
        tasks.check_registry((t._replace(prerequisites=("9",)),))
    with pytest.raises(ValueError, match="duplicate ids"):
        tasks.check_registry((t, t))


# ---------------------------------------------------------------- the markers
def test_the_library_has_one_region_per_task_function_at_body_indentation():
    found = markers.scan_package(REPO)  # raises on any region the registry does not name, or a function without one
    regions = {(markers.module_name(p, REPO), r.qualname): r for p, rs in found.items() for r in rs}
    assert set(regions) == {(f.module, f.qualname) for t in tasks.TASKS for f in t.functions}
    # argument checks stay outside the region, so a stub still validates its input
    text = (REPO / "tqref/ternary/quantize.py").read_text().splitlines()
    region = regions[("tqref.ternary.quantize", "threshold")]
    assert "check_delta_factor(" in text[region.begin - 2]
    text = (REPO / "tqref/functional/conv.py").read_text().splitlines()
    assert "check_inputs(" in text[regions[("tqref.functional.conv", "conv2d_forward")].begin - 2]


SOURCE = '''\
def f(x):
    """doc"""
    check(x)
    ### BEGIN SOLUTION
    y = x + 1
    return y
    ### END SOLUTION


class A:
    def g(self):
        ### BEGIN SOLUTION
        return 2
        ### END SOLUTION
'''


def test_find_regions_and_stub_source(monkeypatch):
    regions = markers.find_regions(SOURCE, "m.py")
    assert [(r.begin, r.end, r.indent, r.qualname) for r in regions] == [(4, 7, "    ", "f"), (12, 14, "        ", "A.g")]
    assert markers.region_lines(SOURCE, regions[0]) == ["y = x + 1", "return y"]
    fake = (tasks.Task("9", "t", 1, (tasks.Function("m:f", "eff"), tasks.Function("m:A.g", "gee")), "", 1, (),
                       "test_x.py"),)
    monkeypatch.setattr(tasks, "TASKS", fake)  # task_of_function reads the module's TASKS
    new, done = markers.stub_source(SOURCE, "m", "m.py")
    assert len(done) == 2
    assert '    check(x)\n    raise NotImplementedError("task 9: eff: implement f() in m.py (docs/course.md)")\n' in new
    assert '        raise NotImplementedError("task 9: gee: implement A.g() in m.py (docs/course.md)")\n' in new
    assert "SOLUTION" not in new and "x + 1" not in new
    ast.parse(new)


@pytest.mark.parametrize("source, error", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without a '### BEGIN SOLUTION'"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", "inside the region"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n  ### END SOLUTION\n", "indented differently"),
    ("if True:\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION\n", "outside any function"),
    ("def f():\n    if 1:\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n",
     "indentation of the body"),
    ("def f():\n    ## BEGIN SOLUTION\n    return 1\n", "a line of its own"),
    ("def f():\n    ### BEGIN SOLUTION\n    # nothing\n    ### END SOLUTION\n    return 1\n", "without code"),
    ("def f(:\n", "not valid Python"),
])
def test_bad_markers_are_refused_with_their_line(source, error):
    with pytest.raises(markers.MarkerError, match=error) as info:
        markers.find_regions(source, "bad.py")
    assert str(info.value).startswith("bad.py:")


def test_a_region_in_a_function_no_task_names_is_refused():
    with pytest.raises(markers.MarkerError, match="no task of tqref.course.tasks names"):
        markers.stub_source(SOURCE, "tqref.nowhere", "x.py")


# ---------------------------------------------------------------- the release
@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "edition"
    release.release(out, REPO, log=lambda line: None)
    return out


def test_the_edition_holds_the_package_the_tests_and_a_readme(edition):
    for path in ("tqref/__init__.py", "tqref/course/grade.py", "tests/course/conftest.py", "pyproject.toml",
                 "requirements.txt", "README_STUDENT.md", "docs/method.md"):
        assert (edition / path).is_file(), path
    assert not (edition / "tests" / "test_course.py").exists()  # the machinery's tests stay here
    assert not list(edition.rglob("__pycache__")) and not list(edition.rglob("*.nbc"))
    config = (edition / "pyproject.toml").read_text()
    assert 'readme = "README_STUDENT.md"' in config and '"task1a: course task 1a' in config
    readme = (edition / "README_STUDENT.md").read_text()
    for task in tasks.TASKS:
        assert f"| {task.id} | {task.title} | {task.points} |" in readme
    assert "TQREF_GRADE_SEED" in readme and "python -m tqref course grade" in readme


def test_every_task_function_of_the_edition_is_its_stub(edition):
    for task in tasks.TASKS:
        for f in task.functions:
            text = (edition / f.path).read_text()
            tree = ast.parse(text)
            node = tree
            for part in f.qualname.split("."):
                node = next(n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                            and n.name == part)
            last = node.body[-1]
            assert isinstance(last, ast.Raise), f.target
            assert ast.literal_eval(last.exc.args[0]) == task.message(f)
            assert last.exc.func.id == "NotImplementedError"


def test_no_solution_line_is_left_in_the_edition(edition):
    """(d): every line that occurs only inside the library's solution regions is absent
    from every file of the edition, and no marker line is left."""
    secret = release.solution_only_lines(REPO)
    assert len(secret) > 40
    for path in edition.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".md", ".toml", ".txt"):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                assert line.strip() not in secret, f"{path.relative_to(edition)}:{number}: {line.strip()}"
                assert not markers.is_marker(line), f"{path.relative_to(edition)}:{number}"
    assert release.find_leaks(edition, REPO) == []
    # and the leak check does find one
    leaky = edition.parent / "leaky"
    shutil.copytree(edition / "tests", leaky / "tests")
    (leaky / "tests" / "course" / "conftest.py").write_text("    return [ternarize(latent_weight, d, threshold_rule, "
                                                           "per_channel) for d in delta_factors]\n")
    assert [str(f) for f, _, _ in release.find_leaks(leaky, REPO)] == ["tests/course/conftest.py"]


def test_release_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["course", "release", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: course release: ") and "not an empty folder" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not an empty folder"):
        release.release(tmp_path / "file", REPO, log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]  # no temporary folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["course", "release", str(empty)]) == 0
    assert (empty / "tqref").is_dir() and "wrote the student edition" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "out"]


def test_a_failed_release_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(release, "student_readme", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        release.release(tmp_path / "out", REPO, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_course_list(capsys):
    assert main(["course", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in listed] == [t.id for t in tasks.TASKS]
    assert listed[3]["functions"][0]["target"] == "tqref.ternary.quantize:threshold"
    assert main(["course", "list"]) == 0
    assert "task 4: Eq. (4)" in capsys.readouterr().out


# ---------------------------------------------------------------- grading, from records
def _records(*rows):
    out = []
    for task, nodeid, outcome, kind, message in rows:
        out.append({"event": "start", "nodeid": nodeid, "task": task})
        r = {"event": "result", "nodeid": nodeid, "task": task, "when": "call", "outcome": outcome}
        if kind:
            r.update(kind=kind, message=message)
        out.append(r)
    return out


def test_grade_records_statuses():
    stub3 = tasks.get_task("3").message(tasks.get_task("3").functions[1])
    records = _records(
        ("1a", "a::t1", "passed", None, None), ("1a", "a::t2", "passed", None, None),
        ("1b", "b::t1", "passed", None, None), ("1b", "b::t2", "failed", "check", "conv2d_backward: dx: wrong"),
        ("1b", "b::t3", "failed", "check", "second"),
        ("3", "c::t1", "failed", "stub", stub3),
        ("4", "d::t1", "failed", "stub", stub3), ("4", "d::t2", "passed", None, None),
        ("5", "e::t1", "skipped", None, None),
    )
    result = grade.grade_records(records, stubs={"3": ["threshold()", "alpha()"]})
    rows = {r["id"]: r for r in result["tasks"]}
    assert (rows["1a"]["earned"], rows["1a"]["status"]) == (15, "passed")
    assert (rows["1b"]["earned"], rows["1b"]["message"]) == (0, "conv2d_backward: dx: wrong")
    assert rows["2"]["status"] == "no tests"
    assert (rows["3"]["status"], rows["3"]["message"]) == ("not implemented",
                                                           "not implemented yet: threshold(), alpha()")
    assert rows["4"]["status"] == "failed" and rows["4"]["message"].startswith("needs task 3, which is not")
    assert rows["5"]["status"] == "no tests" and rows["5"]["skipped"] == 1
    assert (result["earned"], result["possible"]) == (15, 100)
    text = grade.format_grade({**result, "seed": 7, "package": "p"})
    assert "[  0/15 ] task 3: not implemented yet: threshold(), alpha()" in text
    assert "[ 15/15 ] task 1a: passed (2 tests passed)" in text
    assert text.splitlines()[-1] == "[ 15/100] total" and f"{SEED_ENV}=7" in text
    hung = grade.grade_records(_records(("2", "f::t1", "passed", None, None))
                               + [{"event": "start", "nodeid": "f::t2", "task": "2"}], timed_out=True, timeout=5)
    row = hung["tasks"][2]
    assert (row["status"], row["earned"]) == ("timed out", 0) and "stopped after 5 s in t2" in row["message"]


def test_grading_without_course_tests_is_an_error(tmp_path, capsys):
    assert main(["course", "grade", "--tests", str(tmp_path / "nothing")]) == 2
    assert "no course tests in" in capsys.readouterr().err


def test_the_property_tests_skip_without_hypothesis():
    """Block hypothesis's import (and its pytest plugin, which an installation without
    hypothesis does not have): test_properties.py is skipped, nothing errors."""
    code = ("import sys, importlib.abc\n"
            "class Refuse(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'hypothesis' or name.startswith('hypothesis.'):\n"
            "            raise ModuleNotFoundError('no hypothesis here')\n"
            "sys.meta_path.insert(0, Refuse())\n"
            "import pytest\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', 'tests/course/test_properties.py']))\n")
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=env)
    # 5: pytest's "no tests collected" (the one module skipped whole); not an error
    assert proc.returncode in (0, 5), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 skipped" in proc.stdout and "could not import 'hypothesis'" in proc.stdout


# ---------------------------------------------------------------- grading editions (long)
# One wrong solution per task (several for some): (task, function, old text, new text),
# applied to the repository's solution.  Each must cost that task's points, and only those.
MUTANTS = {
    "1a kernel flipped in dx": ("1a", "conv2d_backward_naive", "+= g * w[f]", "+= g * w[f, :, ::-1, ::-1]"),
    "1b dw from the first image only": (
        "1b", "conv2d_backward", "dw = (dout_nhwc.reshape(-1, F).T @ cols).reshape(w.shape)",
        "dw = (dout_nhwc[:1].reshape(-1, F).T @ cols[: H_out * W_out]).reshape(w.shape)"),
    "2 no variance term": (
        "2", "batchnorm_backward",
        "dx = scale * (dout - _per_channel((dbeta / m).astype(dt)) - xhat * _per_channel((dgamma / m).astype(dt)))",
        "dx = scale * (dout - _per_channel((dbeta / m).astype(dt)))"),
    "3 alpha over all weights": ("3", "alpha", "selected = (magnitude >= delta) & (delta > 0)",
                                 "selected = (magnitude >= 0) & (delta > 0)"),
    "4 clip at 0.5": ("4", "straight_through_gradient", "mask = np.abs(latent_weight) < clip",
                      "mask = np.abs(latent_weight) < 0.5"),
    "4 wrong sign": ("4", "straight_through_gradient", "np.where(mask, grad_effective *",
                     "np.where(mask, -grad_effective *"),
    "4 gradient not in place": ("4", "TernaryMixin.accept_weight_gradient", 'self.grads["weight"][...] = ste(',
                                'self.grads["weight"] = ste('),
    "5 expansions of the residual": (
        "5", "ternarize_expansions",
        "return [ternarize(latent_weight, d, threshold_rule, per_channel) for d in delta_factors]",
        "result, residual = [], latent_weight\n"
        "for d in delta_factors:\n"
        "    result.append(ternarize(residual, d, threshold_rule, per_channel))\n"
        "    residual = residual - result[-1].weight(residual.dtype)\n"
        "return result"),
    "5 effective weight of the first expansion only": ("5", "effective_weight", "for expansion in expansions[1:]:",
                                                       "for expansion in expansions[1:1]:"),
}


def _put_solutions(edition, mutant=None):
    """Copy the repository's solutions into ``edition`` (b); with ``mutant``, one of them wrong (c)."""
    for path in markers.scan_package(REPO):
        text = path.read_text()
        if mutant is not None:
            task_id, qualname, old, new = mutant

            def keep_or_break(region, task, function, text=text):
                body = "\n".join(markers.region_lines(text, region))
                if region.qualname == qualname:
                    assert body.count(old) == 1, f"the mutant's text is not in {qualname}(): {old!r}"
                    body = body.replace(old, new)
                return body.split("\n")

            text, _ = markers.stub_source(text, markers.module_name(path, REPO), path, replace=keep_or_break)
        (edition / path.relative_to(REPO)).write_text(text)


def _grade(edition, *args, timeout=300):
    env = dict(os.environ, **{SEED_ENV: str(grade_seed()), "PYTHONPATH": str(edition)})
    proc = subprocess.run([sys.executable, "-m", "tqref", "course", "grade", *args], cwd=edition, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _fresh(edition, tmp_path):
    copy = tmp_path / "edition"
    shutil.copytree(edition, copy)
    return copy


@pytest.mark.long
def test_a_released_edition_grades_to_zero_with_every_task_not_implemented(edition, tmp_path):
    """(a)"""
    copy = _fresh(edition, tmp_path)
    result = json.loads(_grade(copy, "--json"))
    assert result["package"] == str(copy / "tqref")  # graded the edition, not this repository
    assert (result["earned"], result["possible"]) == (0, 100)
    for row in result["tasks"]:
        task = tasks.get_task(row["id"])
        assert row["status"] == "not implemented", row
        assert row["first_failure"]["message"].startswith(f"task {task.id}: "), row
        assert row["message"] == "not implemented yet: " + ", ".join(f"{f.qualname}()" for f in task.functions)
    text = _grade(copy)
    for task in tasks.TASKS:
        assert f"task {task.id}: not implemented yet" in text
    assert "Traceback" not in text and text.splitlines()[-1] == "[  0/100] total"


@pytest.mark.long
def test_the_edition_with_the_solutions_grades_to_full_points(edition, tmp_path):
    """(b)"""
    copy = _fresh(edition, tmp_path)
    _put_solutions(copy)
    result = json.loads(_grade(copy, "--json"))
    assert (result["earned"], result["possible"]) == (100, 100), [r["message"] for r in result["tasks"]]
    assert all(r["failed"] == 0 and r["passed"] >= 5 for r in result["tasks"])


@pytest.mark.long
@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_one_wrong_solution_loses_that_tasks_points_only(edition, tmp_path, mutant):
    """(c)"""
    copy = _fresh(edition, tmp_path)
    _put_solutions(copy, MUTANTS[mutant])
    result = json.loads(_grade(copy, "--json"))
    wrong = MUTANTS[mutant][0]
    for row in result["tasks"]:
        if row["id"] == wrong:
            assert (row["earned"], row["status"]) == (0, "failed"), row
            assert row["message"] and "\n" not in row["message"]
        else:
            assert row["earned"] == row["points"], row
    assert result["earned"] == 100 - tasks.get_task(wrong).points


@pytest.mark.long
def test_course_test_runs_pytest_and_summarises(edition, tmp_path):
    copy = _fresh(edition, tmp_path)
    _put_solutions(copy, MUTANTS["3 alpha over all weights"])
    env = dict(os.environ, **{SEED_ENV: "12345", "PYTHONPATH": str(copy)})
    proc = subprocess.run([sys.executable, "-m", "tqref", "course", "test", "--task", "3", "--", "-x"], cwd=copy,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "1 failed" in out and "alpha(W" in out  # pytest's own report, stopped at the first failure (-x)
    assert f"{SEED_ENV}=12345" in out
    assert "[ 0/15] task 3: failed: alpha(W" in out and out.splitlines()[-1] == "[ 0/15] total"


@pytest.mark.long
def test_an_endless_loop_is_stopped_and_named(edition, tmp_path):
    copy = _fresh(edition, tmp_path)
    _put_solutions(copy, ("2", "batchnorm_backward", "m = N * H * W", "m = N * H * W\nwhile True:\n    pass"))
    result = json.loads(_grade(copy, "--json", "--task", "2", "--timeout", "20"))
    row = result["tasks"][0]
    assert (row["id"], row["status"], row["earned"]) == ("2", "timed out", 0), row
    assert "stopped after 20" in row["message"]


@pytest.mark.long
def test_a_syntax_error_is_named_in_one_line(edition, tmp_path):
    """A package that does not import fails every task that imports it, with the file and line."""
    copy = _fresh(edition, tmp_path)
    _put_solutions(copy)
    path = copy / "tqref" / "ternary" / "quantize.py"
    path.write_text(path.read_text() + "def broken(:\n")
    line = len(path.read_text().splitlines())
    result = json.loads(_grade(copy, "--json"))
    assert result["earned"] == 0
    for row in result["tasks"]:
        assert row["status"] == "failed" and "SyntaxError: invalid syntax" in row["message"], row
        assert f"line {line}" in row["message"] and "\n" not in row["message"]


@pytest.mark.long
def test_the_edition_is_ruff_clean(edition):
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed")
    proc = subprocess.run(["ruff", "check", "--no-cache", "."], cwd=edition, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]

"""``python -m tqref course grade`` and ``course test``: run the student tests, score each task.

pytest runs in a child process (``python -m pytest tests/course -p
tqref.course.plugin``), with the folder that holds the tqref package first
on its path, the reference backend (the student's code) and the run's
hidden seed in TQREF_GRADE_SEED.  A child process keeps the grader alive
whatever the student's code does (an endless loop is stopped after
``timeout`` seconds, a crash ends only the child), and the plugin's report
file says what ran.

Scoring: a task earns its points when every one of its tests passed (at
least one ran); otherwise 0.  Per task the grader reports the first failing
check in one line, or "not implemented yet" when what failed are the stubs
of that task (NotImplementedError).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tqref.course.checks import SEED_ENV
from tqref.course.plugin import ALL_TASKS
from tqref.course.tasks import TASKS, TOTAL_POINTS, get_task

DEFAULT_TIMEOUT = 900


def package_root():
    """The folder that holds the tqref package being graded."""
    return Path(__file__).resolve().parents[2]


def tests_folder(tests=None):
    folder = Path(tests).resolve() if tests is not None else package_root() / "tests" / "course"
    if not folder.is_dir():
        raise ValueError(f"course: no course tests in {folder}; grade inside the student edition "
                         f"(python -m tqref course release OUT, then cd OUT) or give --tests DIR")
    return folder


def choose_seed(seed=None):
    if seed is not None:
        return int(seed)
    from tqref.course.checks import grade_seed
    return grade_seed()  # $TQREF_GRADE_SEED, else a fresh one


def pytest_command(tests, report, tasks, extra=(), quiet=True):
    markers = " or ".join(get_task(t).marker for t in tasks) if tasks else " or ".join(t.marker for t in TASKS)
    # "--course-report=FILE" in one piece: pytest takes a separate path argument for a test path
    # when it looks for its configuration file, and would miss pyproject.toml (and the markers)
    command = [sys.executable, "-m", "pytest", str(tests), "-p", "tqref.course.plugin", f"--course-report={report}",
               "-p", "no:cacheprovider", "-m", f"({markers}) and not long",
               "--continue-on-collection-errors",  # a test file that fails to import does not stop the others
               "--rootdir", str(package_root())]
    if quiet:
        command += ["-q", "--no-header", "--tb=no", "-p", "no:warnings"]
    return command + list(extra)


def run_tests(tests=None, seed=None, tasks=None, timeout=DEFAULT_TIMEOUT, quiet=True, extra=()):
    """Run the course tests; return the grade (see ``grade_records``) with the pytest exit code."""
    tests = tests_folder(tests)
    seed = choose_seed(seed)
    tasks = [get_task(t).id for t in tasks] if tasks else [t.id for t in TASKS]
    env = dict(os.environ)
    env[SEED_ENV] = str(seed)
    env["TQREF_BACKEND"] = "reference"  # the layers run the student's operations, and no kernel is compiled
    env["PYTHONPATH"] = os.pathsep.join([str(package_root())] + [p for p in [env.get("PYTHONPATH")] if p])
    if quiet:
        env.pop("PYTEST_ADDOPTS", None)
    with tempfile.TemporaryDirectory(prefix="tqref-grade-") as scratch:
        report = Path(scratch) / "report.jsonl"
        report.touch()
        command = pytest_command(tests, report, tasks, extra, quiet)
        timed_out = False
        try:
            proc = subprocess.run(command, cwd=package_root(), env=env, timeout=timeout,
                                  stdout=subprocess.PIPE if quiet else None,
                                  stderr=subprocess.STDOUT if quiet else None, text=True)
            returncode, output = proc.returncode, proc.stdout or ""
        except subprocess.TimeoutExpired as err:
            timed_out, returncode = True, None
            output = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        records = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = grade_records(records, tasks, timed_out=timed_out, timeout=timeout, stubs=unwritten())
    result.update(seed=seed, package=str(package_root() / "tqref"), tests=str(tests), returncode=returncode)
    if returncode not in (0, 1) and not timed_out and not records:
        # pytest itself failed (usage error, a broken conftest): say so rather than grade nothing
        tail = " ".join(output.strip().splitlines()[-3:])
        result["error"] = f"pytest exited with status {returncode} before running any test: {tail}"
    return result


def unwritten(root=None):
    """{task id: ["f()", ...]}: the functions whose stub is still in the package's source."""
    root = Path(root) if root is not None else package_root()
    found = {}
    for task in TASKS:
        for f in task.functions:
            path = root / f.path
            if path.is_file() and task.message(f) in path.read_text(encoding="utf-8"):
                found.setdefault(task.id, []).append(f"{f.qualname}()")
    return found


def _stub_function(message):
    """'task 3: Eq. (1) threshold: implement threshold() in ...' -> ('3', 'threshold()')."""
    if message.startswith("task ") and ": implement " in message:
        task_id = message[5:].split(":")[0]
        function = message.split(": implement ")[1].split(" in ")[0]
        return task_id, function
    return None, None


def grade_records(records, tasks=None, timed_out=False, timeout=None, stubs=None):
    """The grade of the plugin's records: {"tasks": [...], "earned", "possible", ...}.
    ``stubs``: ``unwritten()``, to name every function of a task still to write."""
    stubs = stubs or {}
    tasks = [get_task(t) for t in tasks] if tasks else list(TASKS)
    outcome, failures, started = {}, {}, []
    for r in records:
        if r["event"] == "start":
            started.append(r)
            continue
        for task in ([t.id for t in tasks] if r.get("task") == ALL_TASKS else [r.get("task")]):
            key = (task, r["nodeid"])
            if r["outcome"] == "failed":
                outcome[key] = "failed"
                failures.setdefault(task, []).append(r)
            elif outcome.get(key) != "failed":
                outcome[key] = r["outcome"]
    finished = {r["nodeid"] for r in records if r["event"] == "result"}
    hung = next((r for r in reversed(started) if r["nodeid"] not in finished), None) if timed_out else None
    rows = []
    for task in tasks:
        counts = {k: sum(1 for (t, _), o in outcome.items() if t == task.id and o == k)
                  for k in ("passed", "failed", "skipped")}
        # the task's own test file first: its checks say more than the property tests'
        fails = sorted(failures.get(task.id, []), key=lambda f: Path(f["nodeid"].split("::")[0]).name != task.tests)
        row = {"id": task.id, "title": task.title, "points": task.points, "earned": 0, **counts,
               "status": "", "message": "", "first_failure": None}
        if hung is not None and hung["task"] == task.id:
            row.update(status="timed out", message=f"stopped after {timeout} s in {hung['nodeid'].split('::')[-1]}: "
                                                   f"an endless loop, or a very slow one?")
            counts["failed"] += 1
        elif fails:
            mine = [f for f in fails if f.get("kind") == "stub" and _stub_function(f["message"])[0] == task.id]
            others = [f for f in fails if f not in mine]
            row["first_failure"] = {k: fails[0].get(k) for k in ("nodeid", "kind", "message")}
            missing = list(dict.fromkeys(stubs.get(task.id, []) + [_stub_function(f["message"])[1] for f in mine]))
            if not others:
                row.update(status="not implemented", message=f"not implemented yet: {', '.join(missing)}")
            else:
                first = others[0]
                blocked = _stub_function(first["message"])[0] if first.get("kind") == "stub" else None
                text = first["message"]
                if blocked and blocked != task.id:
                    text = f"needs task {blocked}, which is not implemented yet: {text}"
                if missing:
                    text += f" (and not implemented yet: {', '.join(missing)})"
                row.update(status="failed", message=text)
        elif counts["passed"] == 0:
            row.update(status="no tests", message=f"no test of task {task.id} ran (tests/course/{task.tests}, "
                                                  f"marker {task.marker})")
        else:
            row.update(status="passed", earned=task.points, message=f"{counts['passed']} tests passed")
        rows.append(row)
    possible = sum(t.points for t in tasks)
    return {"tasks": rows, "earned": sum(r["earned"] for r in rows), "possible": possible,
            "all_tasks_possible": TOTAL_POINTS, "timed_out": timed_out}


def format_grade(result):
    """The grade as text: one line per task, then the total."""
    lines = [f"tqref course grade: {result['package']}",
             f"hidden inputs: {SEED_ENV}={result['seed']} (set it to repeat them)"]
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    width = len(str(result["possible"]))
    for r in result["tasks"]:
        if r["status"] == "passed":
            detail = f"passed ({r['message']})"
        elif r["status"] == "not implemented":
            detail = r["message"]
        else:
            detail = f"{r['status']}: {r['message']}"
        lines.append(f"[{r['earned']:>{width}}/{r['points']:<{width}}] task {r['id']}: {detail}")
    lines.append(f"[{result['earned']:>{width}}/{result['possible']:<{width}}] total")
    return "\n".join(lines)

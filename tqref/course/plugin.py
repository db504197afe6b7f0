"""The pytest plugin behind ``python -m tqref course grade`` and ``course test``.

Loaded with ``-p tqref.course.plugin --course-report FILE``, it appends one
JSON line to FILE for every course test: when it starts, and its outcome
with, for a failure, one line that says what failed.  The grader
(``tqref.course.grade``) reads the file; because each line is written as it
happens, a run that crashes or is stopped for time still leaves what it
did.  Records:

    {"event": "start",   "nodeid": ..., "task": "3"}
    {"event": "result",  "nodeid": ..., "task": "3", "outcome": "failed", "kind": "check", "message": "..."}
    {"event": "collect", "task": "3", "outcome": "failed", "kind": "error", "message": "..."}

kind: "stub" (a NotImplementedError: a function not written yet), "check"
(an AssertionError: a check of the tests failed), "error" (any other
exception, raised in the student's code or because of it).
"""

import json
import re
from pathlib import Path

import pytest

from tqref.course.tasks import TASKS, task_of_marker

OPTION = "--course-report"
ALL_TASKS = "*"  # the task of a record that concerns every task
MAX_MESSAGE = 400


def pytest_addoption(parser):
    parser.addoption(OPTION, default=None, metavar="FILE",
                     help="tqref course: append one JSON line per course test to FILE")


def pytest_configure(config):
    path = config.getoption("course_report")
    if path:
        config.pluginmanager.register(Recorder(path), "tqref-course-recorder")


def _one_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def describe_exception(excinfo):
    """(kind, one line) for a failed test's exception."""
    value = excinfo.value
    if isinstance(value, NotImplementedError):
        return "stub", _one_line(value) or "NotImplementedError (a function is not written yet)"
    if isinstance(value, AssertionError):
        message = _one_line(value)
        if message:
            return "check", message
        entry = excinfo.traceback[-1]
        return "check", f"assertion failed in {entry.name} at {Path(str(entry.path)).name}:{entry.lineno + 1}"
    where = ""
    if excinfo.traceback:
        entry = excinfo.traceback[-1]
        path = Path(str(entry.path))
        short = "/".join(path.parts[path.parts.index("tqref"):]) if "tqref" in path.parts else path.name
        where = f" (in {entry.name}, {short}:{entry.lineno + 1})"
    return "error", _one_line(f"{excinfo.typename}: {_one_line(value)}{where}")


def collect_error(text):
    """The last line of a collection error, with the file and line it names:
    "SyntaxError: invalid syntax (tqref/ternary/quantize.py, line 201)"."""
    lines = [re.sub(r"^E\s+", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "unknown error"
    where = [m for m in (re.search(r'File "([^"]+)", line (\d+)', line) for line in lines) if m]
    if not where:
        return lines[-1]
    path = Path(where[-1].group(1))
    short = "/".join(path.parts[path.parts.index("tqref"):]) if "tqref" in path.parts else path.name
    return f"{lines[-1]} ({short}, line {where[-1].group(2)})"


class Recorder:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")
        self.task = {}  # nodeid -> task id

    def _write(self, **record):
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()

    def pytest_collection_modifyitems(self, items):
        for item in items:
            for mark in item.iter_markers():
                task = task_of_marker(mark.name)
                if task is not None:
                    self.task[item.nodeid] = task.id
                    break

    def pytest_collectreport(self, report):
        if not report.failed:
            return
        name = Path(report.nodeid.split("::")[0]).name
        # a file of one task costs that task; another (the property tests) every task
        task = next((t.id for t in TASKS if t.tests == name), ALL_TASKS)
        message = collect_error(str(report.longrepr))
        kind = "stub" if message.startswith("NotImplementedError") else "error"
        self._write(event="collect", task=task, nodeid=report.nodeid, outcome="failed", kind=kind,
                    message=_one_line(f"{name} could not be loaded: {message}"))

    def pytest_runtest_logstart(self, nodeid, location):
        if nodeid in self.task:
            self._write(event="start", nodeid=nodeid, task=self.task[nodeid])

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        task = self.task.get(item.nodeid)
        if task is None or (report.when != "call" and report.passed):
            return
        record = {"event": "result", "nodeid": item.nodeid, "task": task, "when": report.when,
                  "outcome": report.outcome}
        if report.failed and call.excinfo is not None:
            record["kind"], record["message"] = describe_exception(call.excinfo)
        elif report.failed:  # e.g. a test that passed where it was expected to fail
            record["kind"], record["message"] = "check", _one_line(report.longreprtext) or "failed"
        self._write(**record)

    def pytest_unconfigure(self, config):
        self.file.close()

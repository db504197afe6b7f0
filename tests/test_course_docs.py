"""docs/course.md's task table says what the registry (tqref/course/tasks.py) says."""

import re
from pathlib import Path

from tqref.course.tasks import TASKS

DOC = Path(__file__).resolve().parents[1] / "docs" / "course.md"


def _table_rows():
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.fullmatch(r"\d[a-z]?", cells[0]):
            rows[cells[0]] = cells
    return rows


def test_the_guide_lists_every_task_with_its_points_minutes_prerequisites_and_functions():
    rows = _table_rows()
    assert list(rows) == [t.id for t in TASKS]
    for task in TASKS:
        _, what, points, minutes, after, notebook = rows[task.id]
        assert int(points) == task.points, task.id
        assert int(minutes) == task.minutes, task.id
        assert after == ", ".join(task.prerequisites), task.id
        assert notebook == task.notebook, task.id
        for function in task.functions:
            assert f"`{function.qualname.split('.')[-1]}`" in what, (task.id, function.qualname)

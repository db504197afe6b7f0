"""The course edition of tqref: students write the library's key functions, pytest grades them.

Design note (phase 1 of the issue "Course edition": the engine)
---------------------------------------------------------------

One source of truth.  ``tasks.py`` lists the tasks: id, title, points, the
functions a student writes ("module:qualname"), what each teaches, the
expected minutes, prerequisites, the test file and the notebook that
explains it.  Release, the tests (one pytest marker ``task<ID>`` per task,
registered in pyproject.toml) and the grader all read it; nothing else
names a task.

Solutions stay in the library.  Inside each of those functions the solution
lines sit between nbgrader's marker lines ``### BEGIN SOLUTION`` and
``### END SOLUTION``, at the body's indentation.  They are comments, so the
repository runs, trains and tests with its solutions as always.  Argument
checks stay above the region: a stub still validates its input.

Release (``release.py``, ``python -m tqref course release OUT``) copies the
package, the student tests (tests/course/), pyproject.toml, requirements.txt
and docs/method.md, and replaces every region with one
``raise NotImplementedError("task 3: Eq. (1) threshold: implement threshold()
in tqref/ternary/quantize.py (docs/course.md)")``.  Regions are found by
scanning tqref/ and matched to the registry through the enclosing function
(``ast``; ``markers.py``), which refuses anything ambiguous.  The edition is
built beside OUT and renamed into place, and is refused if any marker or any
line found only in solution regions is left in it.

Tests (tests/course/, shipped, and run here against the solutions) draw
hidden inputs from $TQREF_GRADE_SEED, else a fresh seed per run
(``checks.rng_for``), and compare with references that are not the
student's code: the FFT convolution, numeric gradients (``tqref.gradcheck``,
float64) of it or of the library's batch-norm forward, weights whose Δ, α and
T are known by construction, analytic identities; hypothesis property tests
are optional (they skip without it).  Each task is graded on its own: where
a task uses another task's function, the test replaces it with a stand-in
(the backend's ``ternarize_expansions`` for task 4, task 3's functions for
task 5), so one wrong function costs exactly one task.  A failed check is
one line: function, inputs, quantity, error, worst entry.

Grading (``grade.py``, ``plugin.py``; ``python -m tqref course grade
[--json]``, ``course test``) runs pytest in a child process with a plugin
that writes one JSON line per test, so a crash or an endless loop (stopped
by a timeout) cannot take the grader down.  A task earns its points when
all its tests pass; a task whose failures are its own stubs reads "not
implemented yet".

Notebooks (phase 2a; ``notebook.py``)
-------------------------------------

One nbgrader notebook per task (``task3_quantize.ipynb``), generated from
the library and the registry, never edited by hand: a solution cell per
function holding its definition as the library has it (the regions
included), and last a locked graded cell worth the task's points,
``course.grade_task("3", globals())``, which puts the notebook's
definitions into a stubbed copy of the library and runs ``python -m tqref
course grade --json --task 3`` there.  So a notebook's points are
``course grade``'s by construction.  ``course release`` writes the student
notebooks (regions blanked as nbgrader's generate_assignment blanks them)
to notebooks/; ``python -m tqref.course.notebook DIR`` writes the solution
notebooks, nbgrader's source/<assignment>/.  tests/test_course_nbgrader.py
runs nbgrader's generate_assignment and autograde on them (long).

Left open for the later phases
------------------------------

* Capstones: ``tqref.use_backend("reference", conv2d_backward=...)`` already
  runs a network on a student's operations; the student's
  ``straight_through_gradient`` is shared by the fast backend as it is.
* docs/course.md: the stub messages point to it already.
"""

from tqref.course.tasks import TASKS, TOTAL_POINTS, Function, Task, get_task

__all__ = ["Function", "get_task", "Task", "TASKS", "TOTAL_POINTS"]

"""The course's tasks: the single source of truth for release, tests and grading.

Each task names the library functions a student implements (as
``module:qualname``, the function whose body holds a marked solution
region), its points, what it teaches, the time it is expected to take and
the tasks it builds on.  ``release`` takes the stub messages from here,
the student tests carry the task's pytest marker (``marker``), and
``grade`` scores the tests of each marker.

Nothing here imports NumPy: ``python -m tqref --help`` and ``course list``
stay fast.
"""

from typing import NamedTuple

COURSE_DOC = "docs/course.md"  # the students' guide (a later phase writes it)
# Marker lines of nbgrader (and of this library's solution regions).
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"


class Function(NamedTuple):
    """One function a student implements: ``target`` = "module:qualname"
    (e.g. "tqref.ternary.quantize:threshold", "tqref.ternary.layers:TernaryMixin.weight_for_forward"),
    ``label`` = what the stub's message calls it ("Eq. (1) threshold")."""

    target: str
    label: str

    @property
    def module(self):
        return self.target.split(":")[0]

    @property
    def qualname(self):
        return self.target.split(":")[1]

    @property
    def path(self):
        """The file, relative to the folder that holds ``tqref/``."""
        return self.module.replace(".", "/") + ".py"


class Task(NamedTuple):
    id: str                  # "1a", "2", ...: the marker is "task" + id
    title: str
    points: int
    functions: tuple         # of Function
    teaches: str
    minutes: int             # expected time for a student who did the prerequisites
    prerequisites: tuple     # task ids (what to do first; the tests do not depend on them)
    tests: str               # the task's test file, in tests/course/
    notebook: str = ""       # the notebook that explains it (notebooks/), if any

    @property
    def marker(self):
        return f"task{self.id}"

    def message(self, function):
        """The NotImplementedError message of ``function``'s stub in the student edition."""
        return (f"task {self.id}: {function.label}: implement {function.qualname}() in {function.path} "
                f"({COURSE_DOC})")


def _f(target, label):
    return Function(target, label)


CONV = "tqref.functional.conv"
BN = "tqref.functional.batchnorm"
Q = "tqref.ternary.quantize"
LAYERS = "tqref.ternary.layers"

TASKS = (
    Task("1a", "convolution with loops: forward and backward", 15,
         (_f(f"{CONV}:conv2d_forward_naive", "convolution forward (loops)"),
          _f(f"{CONV}:conv2d_backward_naive", "convolution backward (loops)")),
         "the convolution as a sum over windows, and its three gradients dx, dw, db "
         "(each output pixel hands its gradient back to the window it came from)",
         45, (), "test_task1a_conv_loops.py", "01_convolution"),
    Task("1b", "vectorised convolution (im2col): forward and backward", 20,
         (_f(f"{CONV}:_windows", "im2col windows"),
          _f(f"{CONV}:conv2d_forward", "convolution forward (im2col)"),
          _f(f"{CONV}:conv2d_backward", "convolution backward (im2col, col2im)")),
         "im2col as a strided view, the convolution as one matrix product, dw as one product, "
         "dx as col2im (overlapping windows add up); the reference backend that trains",
         60, ("1a",), "test_task1b_conv_im2col.py", "01_convolution"),
    Task("2", "batch norm backward (training and evaluation mode)", 20,
         (_f(f"{BN}:batchnorm_backward", "batch norm backward"),),
         "the chain rule through the batch statistics: the terms through μ and σ² in training mode, "
         "none in evaluation mode; float64 sums for float32 data",
         45, (), "test_task2_batchnorm.py", "02_batchnorm_resnet"),
    Task("3", "Eqs. (1)-(3): threshold, scale and ternary codes", 15,
         (_f(f"{Q}:threshold", "Eq. (1) threshold"),
          _f(f"{Q}:alpha", "Eq. (2) alpha"),
          _f(f"{Q}:ternary_codes", "Eq. (3) ternary codes")),
         "Δ = δ·max|W|, α as the mean magnitude above Δ (the least-squares scale), T ∈ {−1, 0, +1}; "
         "ties at ±Δ, all-zero weights, per-channel thresholds",
         30, (), "test_task3_quantize.py", "03_ternarization"),
    Task("4", "Eq. (4): the straight-through estimator and the ternary layer's hooks", 15,
         (_f(f"{Q}:straight_through_gradient", "Eq. (4) straight-through gradient"),
          _f(f"{LAYERS}:TernaryMixin.weight_for_forward", "the ternary layer's forward weight"),
          _f(f"{LAYERS}:TernaryMixin.accept_weight_gradient", "the ternary layer's weight gradient")),
         "the latent weight, W_eff in the forward pass, the clipped identity as the weight's gradient "
         "(not the exact derivative), written in place where the optimiser reads it",
         30, ("3",), "test_task4_ste.py", "04_straight_through"),
    Task("5", "Eq. (5): residual expansion", 15,
         (_f(f"{Q}:ternarize_expansions", "Eq. (5) ternarize expansions"),
          _f(f"{Q}:effective_weight", "Eq. (5) effective weight")),
         "t_ex ternarizations of the same latent W at nested thresholds, W_eff = Σ α_k T_k, "
         "one convolution per layer",
         25, ("3",), "test_task5_expansions.py", "05_residual_expansion"),
)

TOTAL_POINTS = sum(t.points for t in TASKS)


class Capstone(NamedTuple):
    """A capstone: a network trained with the student's functions (``tqref.course.capstone``), not
    graded by pytest and worth no points; ``uses`` are the tasks whose functions it runs (and counts)."""

    id: str
    title: str
    command: str
    minutes: int             # on the 2-core development machine, idle
    uses: tuple              # task ids
    passes: str


CAPSTONES = (
    Capstone("I", "a ternary and a full-precision small net on a CIFAR-10 subset, on your operations",
             "python -m tqref course capstone", 6, ("1b", "2", "3", "4", "5"),
             "every function you wrote ran (counted, from your files) and the ternary net reaches the stated "
             "test top-1; the gap to full precision is reported"),
    Capstone("II", "optional: your quantizer in the fast backend trains a ternary ResNet-20 on all of CIFAR-10",
             "python -m tqref course capstone2", 60, ("3", "4", "5"),
             "final test top-1 within 0.6 points of the library's own quantizer (same recipe, seed 0)"),
)


def get_task(task_id):
    """The task called ``task_id`` ("1a", "task1a", "3", 3)."""
    key = str(task_id).removeprefix("task")
    for task in TASKS:
        if task.id == key:
            return task
    raise ValueError(f"course: no task {task_id!r}; the tasks are {', '.join(t.id for t in TASKS)}")


def task_of_marker(name):
    """The task whose pytest marker is ``name``, or None."""
    for task in TASKS:
        if task.marker == name:
            return task
    return None


def task_of_function(module, qualname):
    """(task, function) for a function a student implements, or (None, None)."""
    for task in TASKS:
        for function in task.functions:
            if function.module == module and function.qualname == qualname:
                return task, function
    return None, None


def check_registry(tasks=TASKS):
    """Raise ValueError if the registry contradicts itself (ids, prerequisites, points, functions)."""
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"course tasks: duplicate ids in {ids}")
    targets = [f.target for t in tasks for f in t.functions]
    if len(set(targets)) != len(targets):
        raise ValueError("course tasks: a function belongs to two tasks")
    for position, task in enumerate(tasks):
        if task.points <= 0 or task.minutes <= 0 or not task.functions:
            raise ValueError(f"course task {task.id}: expected positive points and minutes and some functions")
        for pre in task.prerequisites:
            if pre not in ids[:position]:
                raise ValueError(f"course task {task.id}: prerequisite {pre!r} is not an earlier task")
        for f in task.functions:
            if not f.module.startswith("tqref.") or ":" not in f.target or not f.qualname:
                raise ValueError(f"course task {task.id}: bad function target {f.target!r}")
    for capstone in CAPSTONES:
        if not capstone.uses or not set(capstone.uses) <= set(ids):
            raise ValueError(f"course capstone {capstone.id}: uses {capstone.uses}, expected task ids of {ids}")

"""The course notebooks: one per task, in nbgrader's format, generated from the library.

A task's notebook (``task3_quantize.ipynb``: "task" + id + the test file's
suffix) has these cells, in order (nbgrader's cell metadata in brackets):

    markdown                 the task: what to write, the equations, the time it takes
    setup       [locked]     course.start("3", globals()): the names the library's module
                             offers its functions (np, the argument checks, helpers)
    per function:
      markdown               the function, its file, what it computes
      solution  [solution]   the function's definition exactly as in the library, docstring,
                             argument checks and the ### BEGIN / END SOLUTION region;
                             a method (TernaryMixin.accept_weight_gradient) as a plain def
    markdown                 how it is graded
    tests       [grade, points = the task's, locked]
                             course.grade_task("3", globals())

The solution cells are cut out of the library's source (``function_source``),
so library and notebooks cannot drift.  The student's copy blanks every
region as nbgrader's ``generate_assignment`` does (``# YOUR CODE HERE`` /
``raise NotImplementedError()``); ``course release`` writes it to
notebooks/ in the edition.

How a notebook is graded, and why the points equal ``course grade``'s:
``grade_task`` takes the source of each of the task's functions as the
notebook defines them (``inspect.getsource``: the cell the function was last
defined in), writes a copy of the student edition's library (the
repository's solutions stubbed, as ``course release`` does) with those
definitions in place of the library's, and runs ``python -m tqref course
grade --json --task ID`` on that copy in a child process.  The cell passes
(nbgrader gives the task's points) exactly when that grade gives the task
its points, and raises AssertionError with the grade's one-line message
otherwise ("task 3 is not implemented yet: threshold(), alpha() ...").  The
notebook's points for task N are therefore ``course grade``'s for task N on
the edition holding the notebook's functions; as each task's tests replace
the other tasks' functions with stand-ins, they are also that task's row of
``course grade`` on an edition holding every notebook's functions
(tests/test_course_nbgrader.py checks it with nbgrader itself).

For an nbgrader course: ``python -m tqref.course.notebook COURSE/source/ASSIGNMENT``
(in this repository) writes the notebooks with their solutions, the
source of ``nbgrader generate_assignment ASSIGNMENT``; ``--student`` writes
the blanked ones.  A graded cell runs its task's tests, a few seconds, more
than nbgrader's default 30 s per cell on a slow machine: set
``c.Execute.timeout`` higher in nbgrader_config.py.  The kernel needs tqref
installed in place (``pip install -e``) with tests/course/ beside it: the
repository for an instructor, the edition for a student.

Nothing here runs at import but the registry: nbformat is imported by the
functions that write notebooks.
"""

import ast
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tqref.course import markers
from tqref.course.tasks import BEGIN_SOLUTION, COURSE_DOC, END_SOLUTION, TASKS, get_task

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# what nbgrader's ClearSolutions writes in place of a region (its default code stub)
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
NBGRADER_SCHEMA = 3
GRADE_TIMEOUT = 600  # seconds for the tests of one task (the grader's own limit; nbgrader's is per cell)

# What each notebook says about its task besides the registry's fields: the equations.
EQUATIONS = {
    "1a": "For an input x (N, C, H, W), weights w (F, C, HH, WW) and bias b (F,), output pixel (n, f, i, j) is\n"
          "$$\\text{out}[n, f, i, j] = b_f + \\sum_{c, k, l} x_{\\text{pad}}[n, c, i s + k, j s + l]\\; w[f, c, k, l]$$\n"
          "and the backward pass hands ∂L/∂out[n, f, i, j] back to the window it came from: to dx through w, "
          "to dw through the window of x, to db directly.",
    "1b": "im2col lays every receptive field out as a row: the convolution is then one matrix product "
          "(windows × kernels), dw is one product with the output gradient, and dx is col2im: the columns "
          "scattered back, where overlapping windows add up.",
    "2": "With $\\hat x = (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon}$ and $y = \\gamma \\hat x + \\beta$ over "
         "the m = N·H·W values of a channel, training mode gives\n"
         "$$\\frac{\\partial L}{\\partial x} = \\frac{\\gamma}{\\sqrt{\\sigma^2+\\epsilon}}\\Big(g - "
         "\\tfrac{1}{m}\\textstyle\\sum g - \\hat x\\, \\tfrac{1}{m}\\sum g\\,\\hat x\\Big)$$\n"
         "(the terms through μ and σ²); evaluation mode uses the running statistics, constants.",
    "3": "Eq. (1) $\\Delta = \\delta \\cdot \\max_i |W_i|$ (δ = 0.05); Eq. (2) "
         "$\\alpha = \\operatorname{mean}\\{|W_i| : |W_i| \\ge \\Delta\\}$; Eq. (3) $T_i = +1$ if $W_i \\ge \\Delta$, "
         "$-1$ if $W_i \\le -\\Delta$, 0 otherwise.",
    "4": "Eq. (4): the forward pass uses $W_{\\text{eff}}$; the latent W receives "
         "$\\partial L/\\partial W = t_{ex} \\cdot \\partial L/\\partial W_{\\text{eff}} \\cdot 1[|W| < \\text{clip}]$, "
         "written in place into the layer's gradient array (the optimiser reads that array).",
    "5": "Eq. (5): $W_{\\text{eff}} = \\sum_k \\alpha_k T_k$, each $(\\alpha_k, T_k)$ a ternarization of the same "
         "latent W with threshold $\\Delta_k = \\delta_k \\max|W|$ (nested, increasing).",
}


def notebook_name(task):
    """"task3_quantize": the test file's name without "test_" and ".py"."""
    return Path(task.tests).stem.removeprefix("test_")


def _task(task):
    return task if hasattr(task, "functions") else get_task(task)


# ---------------------------------------------------------------- the library's source
def _function_node(tree, qualname):
    node = tree
    for part in qualname.split("."):
        node = next((n for n in ast.iter_child_nodes(node)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            raise ValueError(f"course notebook: no {qualname} in the module")
    return node


def _span(text, qualname):
    """(first line, last line, column) of ``qualname``'s definition, 1-based, decorators and a
    closing ### END SOLUTION line (which comes after the function's last statement) included."""
    tree = ast.parse(text)
    node = _function_node(tree, qualname)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    last = node.end_lineno
    lines = text.splitlines()
    while last < len(lines) and lines[last].strip() == END_SOLUTION:
        last += 1
    return first, last, node.col_offset


def _dedent(lines, column):
    return [line[column:] if line[:column].strip() == "" else line.lstrip() for line in lines]


def function_source(function, root):
    """The definition of ``function`` (a tasks.Function) in the library under ``root``, at column 0."""
    text = (Path(root) / function.path).read_text(encoding="utf-8")
    first, last, column = _span(text, function.qualname)
    return "\n".join(_dedent(text.splitlines()[first - 1:last], column))


def blank_solutions(source):
    """``source`` with every solution region replaced as nbgrader's ClearSolutions does."""
    out, inside = [], False
    for line in source.split("\n"):
        if line.strip() == BEGIN_SOLUTION:
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + stub for stub in CODE_STUB]
            inside = True
        elif line.strip() == END_SOLUTION:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def splice(text, qualname, source):
    """The module ``text`` with the definition of ``qualname`` replaced by ``source`` (a def at
    column 0, as a notebook holds it), indented to where the old one was."""
    first, last, column = _span(text, qualname)
    lines = text.splitlines()
    pad = " " * column
    new = [pad + line if line.strip() else "" for line in source.rstrip().split("\n")]
    result = "\n".join(lines[:first - 1] + new + lines[last:]) + "\n"
    ast.parse(result)
    return result


# ---------------------------------------------------------------- writing the notebooks
def _meta(grade_id, solution=False, grade=False, points=None, locked=False):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": NBGRADER_SCHEMA,
            "solution": solution}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def build_notebook(task, root, student=False):
    """The notebook of ``task`` (an nbformat NotebookNode): the solutions of the library under
    ``root``, or, with ``student``, their regions blanked."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    task = _task(task)
    name = notebook_name(task)
    functions = ", ".join(f"`{f.qualname}()`" for f in task.functions)
    before = (f"Do task {', '.join(task.prerequisites)} first: it helps to understand this one (the tests "
              f"of this task do not use your code of it). " if task.prerequisites else "")
    explained = f" The notebook `notebooks/{task.notebook}.ipynb` explains it." if task.notebook else ""
    cells = [new_markdown_cell(
        f"# Task {task.id}: {task.title} ({task.points} points, about {task.minutes} min)\n\n"
        f"Write the bodies of {functions}. What it teaches: {task.teaches}.\n\n"
        f"{EQUATIONS.get(task.id, '')}\n\n"
        f"Each function's docstring is its specification; `docs/method.md` explains the equations, "
        f"`{COURSE_DOC}` the course.{explained} {before}\n\n"
        f"Write your code where it says `# YOUR CODE HERE` (remove the `raise NotImplementedError()`), "
        f"inside the function: the grader takes each function's definition from this notebook and puts it "
        f"into the library in place of the stub, so the names of the library's module (imported by the next "
        f"cell) are what the function can use. Then run the last cell: it runs the tests of "
        f"`tests/course/{task.tests}` on hidden random inputs.")]
    cells.append(new_code_cell(f'from tqref.course import notebook as course\n\ncourse.start("{task.id}", globals())',
                               metadata=_meta(f"{name}_setup", locked=True)))
    for f in task.functions:
        source = function_source(f, root)
        if student:
            source = blank_solutions(source)
        where = f"`{f.path}`" + (f", a method of `{f.qualname.split('.')[0]}` (written here as a plain "
                                 f"function with `self`)" if "." in f.qualname else "")
        cells.append(new_markdown_cell(f"## `{f.qualname}()`: {f.label}\n\nIn {where}."))
        cells.append(new_code_cell(source, metadata=_meta(f"{name}_{f.qualname.replace('.', '_')}", solution=True)))
    cells.append(new_markdown_cell(
        f"## Grading\n\nThe next cell grades task {task.id}: it puts the functions above into a copy of the "
        f"library and runs the task's tests there (`python -m tqref course grade --task {task.id}`). It "
        f"passes, worth {task.points} points, when they all pass; otherwise it says which function is not "
        f"written yet or which check failed. Set `TQREF_GRADE_SEED` to repeat a run's hidden inputs."))
    cells.append(new_code_cell(f'course.grade_task("{task.id}", globals())',
                               metadata=_meta(f"{name}_tests", grade=True, points=task.points, locked=True)))
    return new_notebook(cells=cells, metadata={"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}})


def write_notebooks(out, root, student=False, tasks=TASKS):
    """Write one notebook per task to the folder ``out``; return their paths."""
    import nbformat
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in tasks:
        path = out / f"{notebook_name(task)}.ipynb"
        nbformat.write(build_notebook(task, root, student), str(path))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- in the notebook
def _modules(task):
    import importlib
    return [importlib.import_module(m) for m in dict.fromkeys(f.module for f in task.functions)]


def start(task_id, namespace):
    """The setup cell: give the notebook the names the task's functions use in the library
    (NumPy as np, the argument checks, helpers), but not the functions to write."""
    task = get_task(task_id)
    own = {f.qualname.split(".")[-1] for f in task.functions}
    for module in _modules(task):
        for key, value in vars(module).items():
            if not key.startswith("__") and key not in own:
                namespace.setdefault(key, value)
    print(f"task {task.id}: {task.title} ({task.points} points). Write "
          f"{', '.join(f.qualname + '()' for f in task.functions)} below, then run the last cell.")


def notebook_sources(task, namespace):
    """{Function: source} of the task's functions as the notebook defines them."""
    task = _task(task)
    sources = {}
    for f in task.functions:
        name = f.qualname.split(".")[-1]
        obj = namespace.get(name)
        if obj is None or not inspect.isfunction(obj):
            raise AssertionError(f"task {task.id}: {name}() is not defined in this notebook: run the cell that "
                                 f"defines it (or Run All)")
        try:
            sources[f] = inspect.getsource(obj)
        except (OSError, TypeError) as err:
            raise AssertionError(f"task {task.id}: cannot read the source of {name}() ({err}): define it in a "
                                 f"cell of its own, with def") from None
        tree = ast.parse(sources[f])
        if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) \
                or tree.body[0].name != name:
            raise AssertionError(f"task {task.id}: the cell of {name}() must define exactly that function")
    return sources


def _with_messages(source, task, function):
    """nbgrader's bare stub -> the library's stub with the task's message (the grader then reports
    "not implemented yet: f()"; the points do not change)."""
    bare = "raise NotImplementedError()"
    lines = [line.replace(bare, f"raise NotImplementedError({task.message(function)!r})")
             if line.strip() == bare else line for line in source.split("\n")]
    return "\n".join(lines)


def make_edition(out, root=None, sources=None):
    """Write to ``out`` the library of ``root`` (default: the installed tqref's folder) as the student
    edition has it (solution regions stubbed; an edition is copied as it is) and its tests/course/,
    with the definitions in ``sources`` ({Function: source}) in place of the library's."""
    from tqref.course import release
    root = Path(root) if root is not None else release.source_root()
    if not (root / release.TESTS).is_dir():
        raise AssertionError(f"course: no course tests in {root / release.TESTS}: grade with the student edition "
                             f"installed in place (cd EDITION && pip install -e '.[course]')")
    out = Path(out)
    release._copy_tree(root / "tqref", out / "tqref")
    release._copy_tree(root / release.TESTS, out / release.TESTS)
    if (root / "pyproject.toml").is_file():  # the task markers are registered there
        (out / "pyproject.toml").write_text((root / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8")
    for path in markers.package_sources(root):
        text = path.read_text(encoding="utf-8")
        if markers.has_markers(text):
            rel = path.relative_to(root)
            stubbed, _ = markers.stub_source(text, markers.module_name(path, root), rel)
            (out / rel).write_text(stubbed, encoding="utf-8")
    for f, source in (sources or {}).items():
        task, _ = _owner(f)
        path = out / f.path
        text = path.read_text(encoding="utf-8")
        try:
            text = splice(text, f.qualname, _with_messages(source, task, f))
        except SyntaxError as err:
            raise AssertionError(f"task {task.id}: {f.qualname.split('.')[-1]}() is not valid Python in the "
                                 f"library ({err.msg}, line {err.lineno})") from None
        path.write_text(text, encoding="utf-8")
    return out


def _owner(function):
    for task in TASKS:
        if function in task.functions:
            return task, function
    raise ValueError(f"course: {function.target} belongs to no task")


def grade_edition(edition, task_ids=None, seed=None, timeout=GRADE_TIMEOUT):
    """``python -m tqref course grade --json`` on ``edition`` (a child process): the grade as a dict."""
    edition = Path(edition)
    command = [sys.executable, "-m", "tqref", "course", "grade", "--json", "--tests",
               str(edition / "tests" / "course"), "--timeout", str(timeout)]
    for task_id in task_ids or ():
        command += ["--task", str(task_id)]
    if seed is not None:
        command += ["--seed", str(int(seed))]
    env = dict(os.environ, PYTHONPATH=str(edition))
    proc = subprocess.run(command, cwd=edition, env=env, capture_output=True, text=True, timeout=timeout + 120)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"course grade failed (exit status {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr).strip()[-1500:]}") from None


def grade_task(task_id, namespace, seed=None, root=None):
    """The graded cell: grade the notebook's functions of ``task_id`` with the task's tests; print
    the result and return the task's row of the grade; raise AssertionError unless they all pass."""
    task = get_task(task_id)
    sources = notebook_sources(task, namespace)
    with tempfile.TemporaryDirectory(prefix=f"tqref-task{task.id}-") as scratch:
        make_edition(Path(scratch) / "edition", root, sources)
        result = grade_edition(Path(scratch) / "edition", [task.id], seed)
    row = next(r for r in result["tasks"] if r["id"] == task.id)
    print(f"task {task.id}: {row['earned']}/{row['points']} points; hidden inputs TQREF_GRADE_SEED={result['seed']}")
    if result.get("error"):
        raise AssertionError(f"task {task.id}: the tests could not run: {result['error']}")
    if row["earned"] != row["points"]:
        if row["status"] == "not implemented":
            raise AssertionError(f"task {task.id} is {row['message']}: write their bodies in the cells above, "
                                 f"run those cells, then this one")
        raise AssertionError(f"task {task.id} {row['status']}: {row['message']}")
    print(f"passed: {row['message']}")
    return row


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m tqref.course.notebook",
                                     description="Write the course notebooks, one per task (nbgrader's format).")
    parser.add_argument("out", metavar="DIR", help="the folder to write them to (e.g. an nbgrader course's "
                        "source/ASSIGNMENT)")
    parser.add_argument("--student", action="store_true", help="the student version: solution regions blanked")
    parser.add_argument("--source", metavar="DIR", default=None,
                        help="the folder holding tqref/ with its solutions (default: this package's)")
    args = parser.parse_args(argv)
    from tqref.course.release import source_root
    for path in write_notebooks(args.out, args.source or source_root(), student=args.student):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

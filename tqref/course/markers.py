"""Finding the solution regions of the library and turning them into stubs.

A solution region is the lines between two comment lines, inside the body
of one function, at that body's indentation:

    def scale(w, factor):
        \"\"\"...\"\"\"
        check_factor(factor)               # stays: the stub still validates its input
        ### BEGIN SOLUTION                 (nbgrader's markers, each a line of its own)
        return factor * w
        ### END SOLUTION                   (at the indentation of the body)

``find_regions`` locates them (and the enclosing function, with ``ast``);
``stub_source`` replaces each region by one ``raise NotImplementedError(...)``
line whose message comes from the task registry.  Both refuse anything
ambiguous (an unbalanced or nested marker, a region outside a function or
in a function no task names) with an error that points at the line.
"""

import ast
from pathlib import Path
from typing import NamedTuple

from tqref.course.tasks import BEGIN_SOLUTION, END_SOLUTION, TASKS, task_of_function


class MarkerError(ValueError):
    """A solution marker the release cannot use."""


class Region(NamedTuple):
    path: str          # as given to find_regions (for messages)
    begin: int         # 1-based line of "### BEGIN SOLUTION"
    end: int           # 1-based line of "### END SOLUTION"
    indent: str
    qualname: str      # of the innermost enclosing function, e.g. "TernaryMixin.accept_weight_gradient"


def _marker(line):
    stripped = line.strip()
    if stripped == BEGIN_SOLUTION:
        return "begin"
    if stripped == END_SOLUTION:
        return "end"
    # a near miss ("## BEGIN SOLUTION", "### BEGIN SOLUTION  # x") would silently ship the solution
    if "BEGIN SOLUTION" in stripped or "END SOLUTION" in stripped:
        return "bad"
    return None


def is_marker(line):
    """True for a line that is exactly a solution marker (any indentation)."""
    return _marker(line) in ("begin", "end")


def has_markers(text):
    return "BEGIN SOLUTION" in text or "END SOLUTION" in text


def _functions(tree):
    """[(first line, last line, qualname, body indentation column)] of every function in ``tree``."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((child.lineno, child.end_lineno, name, child.body[0].col_offset))
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def find_regions(text, path="<source>"):
    """The solution regions of one file's source text, in order."""
    lines = text.splitlines()
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise MarkerError(f"{path}:{err.lineno}: not valid Python ({err.msg})") from None
    functions = _functions(tree)
    regions, begin = [], None
    for number, line in enumerate(lines, start=1):
        kind = _marker(line)
        if kind is None:
            continue
        where = f"{path}:{number}"
        if kind == "bad":
            raise MarkerError(f"{where}: a solution marker must be a line of its own, exactly "
                              f"{BEGIN_SOLUTION!r} or {END_SOLUTION!r}; got {line.strip()!r}")
        indent = line[: len(line) - len(line.lstrip())]
        if kind == "begin":
            if begin is not None:
                raise MarkerError(f"{where}: {BEGIN_SOLUTION!r} inside the region opened at line {begin[0]}")
            begin = (number, indent)
            continue
        if begin is None:
            raise MarkerError(f"{where}: {END_SOLUTION!r} without a {BEGIN_SOLUTION!r} before it")
        if indent != begin[1]:
            raise MarkerError(f"{where}: {END_SOLUTION!r} is indented differently from its "
                              f"{BEGIN_SOLUTION!r} at line {begin[0]}")
        code = [k for k in range(begin[0] + 1, number)
                if lines[k - 1].strip() and not lines[k - 1].strip().startswith("#")]
        if not code:
            raise MarkerError(f"{path}:{begin[0]}: a solution region without code")
        # a function's end_lineno is its last statement: the END line may come after it
        enclosing = [f for f in functions if f[0] < begin[0] and code[-1] <= f[1]]
        if not enclosing:
            raise MarkerError(f"{path}:{begin[0]}: a solution region outside any function "
                              f"(or reaching past the end of one)")
        first, last, qualname, column = max(enclosing, key=lambda f: f[0])  # the innermost
        if len(begin[1]) != column:
            raise MarkerError(f"{path}:{begin[0]}: a solution region must be at the indentation of the body "
                              f"of {qualname}() ({column} spaces), got {len(begin[1])}")
        regions.append(Region(str(path), begin[0], number, begin[1], qualname))
        begin = None
    if begin is not None:
        raise MarkerError(f"{path}:{begin[0]}: {BEGIN_SOLUTION!r} is never closed by {END_SOLUTION!r}")
    return regions


def module_name(path, root):
    """"tqref/ternary/quantize.py" under ``root`` -> "tqref.ternary.quantize"."""
    rel = Path(path).resolve().relative_to(Path(root).resolve()).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def stub_source(text, module, path="<source>", replace=None):
    """``text`` with every solution region replaced.

    module:  the file's dotted module name (to look its functions up in the registry)
    replace: function (region, task, function) -> list of lines (without the region's
             indentation); default: the task's ``raise NotImplementedError(message)``.
    Returns (new text, [(region, task, function)]).
    """
    regions = find_regions(text, path)
    lines = text.splitlines(keepends=True)
    newline = "\n"
    done = []
    for region in reversed(regions):
        task, function = task_of_function(module, region.qualname)
        if task is None:
            raise MarkerError(f"{path}:{region.begin}: a solution region in {module}:{region.qualname}, "
                              f"which no task of tqref.course.tasks names")
        body = (replace or _raise_stub)(region, task, function)
        lines[region.begin - 1 : region.end] = [f"{region.indent}{line}{newline}" if line else newline
                                                for line in body]
        done.append((region, task, function))
    new = "".join(lines)
    ast.parse(new, filename=str(path))  # a replacement must leave valid Python
    return new, done[::-1]


def _raise_stub(region, task, function):
    message = task.message(function)
    quoted = f'"{message}"' if '"' not in message and "\\" not in message else repr(message)
    return [f"raise NotImplementedError({quoted})"]


def region_lines(text, region):
    """The lines of ``region`` between its markers, without the region's indentation
    (``stub_source``'s ``replace`` can return them to keep a solution)."""
    lines = text.splitlines()[region.begin : region.end - 1]
    return [line[len(region.indent):] if line.startswith(region.indent) else line.strip() for line in lines]


def package_sources(root):
    """The .py files of ``root``/tqref that may hold solution regions: all but
    tqref/course/ (whose code names the markers) and caches."""
    root = Path(root)
    course = root / "tqref" / "course"
    return [p for p in sorted((root / "tqref").rglob("*.py"))
            if "__pycache__" not in p.parts and course not in p.parents]


def scan_package(root):
    """{path: [Region]} of every .py file under ``root``/tqref with markers, and the
    registry checked against them: every task function has exactly one region,
    every region belongs to a task function.  ``root`` is the folder holding tqref/."""
    root = Path(root)
    found = {}
    for path in package_sources(root):
        text = path.read_text(encoding="utf-8")
        if has_markers(text):
            regions = find_regions(text, path.relative_to(root))
            if regions:
                found[path] = regions
    seen = {}
    for path, regions in found.items():
        module = module_name(path, root)
        for region in regions:
            task, function = task_of_function(module, region.qualname)
            if task is None:
                raise MarkerError(f"{region.path}:{region.begin}: a solution region in {module}:{region.qualname}, "
                                  f"which no task of tqref.course.tasks names")
            if function.target in seen:
                raise MarkerError(f"{region.path}:{region.begin}: a second solution region in {function.target} "
                                  f"(the first at line {seen[function.target].begin})")
            seen[function.target] = region
    missing = [f.target for t in TASKS for f in t.functions if f.target not in seen]
    if missing:
        raise MarkerError(f"no solution region in {', '.join(missing)} (named by tqref.course.tasks); "
                          f"mark the solution lines with {BEGIN_SOLUTION!r} / {END_SOLUTION!r}")
    return found


"""The ``python -m tqref course ...`` commands (the parser is in ``tqref.cli``)."""

import json

from tqref.course.tasks import TASKS, TOTAL_POINTS


def cmd_list(args):
    if args.json:
        print(json.dumps([{"id": t.id, "title": t.title, "points": t.points, "minutes": t.minutes,
                           "prerequisites": list(t.prerequisites), "marker": t.marker, "tests": t.tests,
                           "notebook": t.notebook, "teaches": t.teaches,
                           "functions": [{"target": f.target, "label": f.label, "path": f.path}
                                         for f in t.functions]} for t in TASKS], indent=2, ensure_ascii=False))
        return 0
    for t in TASKS:
        before = f"; after task {', '.join(t.prerequisites)}" if t.prerequisites else ""
        print(f"task {t.id}: {t.title} ({t.points} points, about {t.minutes} min{before})")
        for f in t.functions:
            print(f"    {f.path}: {f.qualname}()  [{f.label}]")
        print(f"    teaches: {t.teaches}")
    print(f"{TOTAL_POINTS} points in all; python -m tqref course test --task ID runs the tests of one task")
    return 0


def cmd_release(args):
    from tqref.course.release import release
    release(args.out, root=args.source)
    return 0


def cmd_grade(args):
    from tqref.course.grade import format_grade, run_tests
    result = run_tests(args.tests, args.seed, args.task, args.timeout)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_grade(result))
    return 2 if result.get("error") else 0


def cmd_test(args):
    from tqref.course.grade import format_grade, run_tests
    extra = list(args.pytest_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    result = run_tests(args.tests, args.seed, args.task, args.timeout, quiet=False, extra=extra)
    print()
    print(format_grade(result))
    return result["returncode"] if result["returncode"] is not None else 1

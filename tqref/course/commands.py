"""The ``python -m tqref course ...`` commands (the parser is in ``tqref.cli``)."""

import json

from tqref.course.tasks import CAPSTONES, TASKS, TOTAL_POINTS


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
    for c in CAPSTONES:
        print(f"capstone {c.id}: {c.title} (about {c.minutes} min; after tasks {', '.join(c.uses)})")
        print(f"    {c.command}: passes when {c.passes}")
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


# ---------------------------------------------------------------- the capstones
def add_capstone_parsers(actions, func):
    """``course capstone`` and ``course capstone2`` (tqref.course.capstone): added to the
    ``course`` subcommand's ``actions`` by ``tqref.cli``; ``func`` dispatches to ``cmd_<action>``."""
    import argparse

    from tqref.cli import _add_data_dir  # the --data-dir of every data command
    from tqref.course.capstone import SETTINGS, TARGET_TOP1
    c = actions.add_parser(
        "capstone", help="capstone I: train the small net ternary and full precision with your functions "
                         "(reference backend, a CIFAR-10 subset, at most about 10 minutes)",
        description="Capstone I: the small net trained ternary and full precision on a CIFAR-10 subset on the "
                    "reference backend, whose operations are your functions (tasks 1b-5), each wrapped in a call "
                    "counter. Passes when every function you wrote ran, from its own file, and the ternary "
                    "net's final test top-1 reaches the target; prints the gap to full precision. Writes "
                    "OUT/capstone.json and the two run folders OUT/ternary, OUT/full_precision.")
    _add_data_dir(c)
    c.add_argument("--out", metavar="DIR", default="runs/capstone", help="where to write (default runs/capstone)")
    c.add_argument("--train-images", type=int, default=None, metavar="N", help="first N training images "
                   f"(default {SETTINGS['train_images']}; the target is set for the default settings)")
    c.add_argument("--test-images", type=int, default=None, metavar="N",
                   help=f"first N test images (default {SETTINGS['test_images']})")
    c.add_argument("--epochs", type=int, default=None, metavar="E", help=f"epochs (default {SETTINGS['epochs']})")
    c.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help=f"batch size (default {SETTINGS['batch_size']})")
    c.add_argument("--lr", type=float, default=None,
                   help=f"learning rate, cosine-annealed to 0 (default {SETTINGS['lr']})")
    c.add_argument("--seed", type=int, default=None, help=f"seed of both runs (default {SETTINGS['seed']})")
    c.add_argument("--target", type=float, default=None, metavar="TOP1",
                   help=f"the ternary final top-1 to reach (default {TARGET_TOP1})")
    c.add_argument("--progress", action="store_true", help="progress bars")
    c.set_defaults(func=func)
    c2 = actions.add_parser(
        "capstone2", help="capstone II: your quantizer in the fast backend trains a ternary ResNet-20 on all of "
                          "CIFAR-10 (30 epochs, about an hour on 2 cores), compared with the library's",
        description="Capstone II: your quantizer (tasks 3-5) plugged into the fast backend, which keeps its own "
                    "convolutions, trains a ternary ResNet-20 on the full CIFAR-10 with the 30-epoch schedule "
                    "(lr 0.1, x0.1 at epoch 12, x0.1 at 18, x0.5 at 24) and seed 0. Passes when the final test "
                    "top-1 lies within 0.6 points of the library's own quantizer with the same recipe and seed. "
                    "OUT is an ordinary run folder (continue an interrupted run with --resume); the result is "
                    "OUT/capstone2.json.")
    _add_data_dir(c2)
    c2.add_argument("--out", metavar="DIR", default="runs/capstone2", help="the run folder (default runs/capstone2)")
    c2.add_argument("--resume", action="store_true", help="continue the run in OUT")
    c2.add_argument("--no-progress", action="store_true", help="no progress bars")
    # a test configuration (the tests shrink the run with these; the result then says it is not the recipe)
    for flag, kind in (("--epochs", int), ("--train-subset", int), ("--test-subset", int), ("--model", str),
                       ("--reference-top1", float)):
        c2.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    c2.set_defaults(func=func)


def cmd_capstone(args):
    from tqref.course.capstone import TARGET_TOP1, run_capstone
    result = run_capstone(args.out, data_dir=args.data_dir, progress=args.progress,
                          target=TARGET_TOP1 if args.target is None else args.target,
                          train_images=args.train_images, test_images=args.test_images, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    return 0 if result["passed"] else 1


def cmd_capstone2(args):
    from tqref.course.capstone import run_capstone2
    overrides = {key: value for key, value in (("epochs", args.epochs), ("train_subset", args.train_subset),
                                               ("test_subset", args.test_subset), ("model", args.model))
                 if value is not None}
    result = run_capstone2(args.out, data_dir=args.data_dir, resume=args.resume, progress=not args.no_progress,
                           overrides=overrides or None, reference_top1=args.reference_top1)
    return 0 if result["passed"] else 1

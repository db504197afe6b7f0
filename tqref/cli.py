"""Command line: ``python -m tqref COMMAND ...``  (``python -m tqref --help``).

    train     train a (ternary) network on CIFAR-10 into a run folder; --resume continues it
    evaluate  test top-1 / top-5 of a checkpoint
    summary   the per-layer table of a model or a checkpoint
    plot      PNG figures of a run: curves, learning rate, sparsity, weight histograms
    export    a checkpoint as an .npz a PyTorch CIFAR ResNet loads
    compare   several runs side by side; the paper's table filled in with them
    download  fetch the official CIFAR-10 archive into the cache
    subset    the first N images of CIFAR-10 as a small copy (for a class or a laptop)
    demo      a short run of a small net on a CIFAR-10 subset (writes nothing)
    course    the course edition: list the tasks, release the student edition, test and grade it

Heavy imports (NumPy kernels, Numba, matplotlib) happen inside the commands,
so that ``--help`` answers at once.  Errors of input (missing data, a bad
checkpoint, an unwritable folder, a bad setting) print one line starting
with ``error:`` and exit with status 2; a diverged training run exits with 1,
an interrupted one with 130.
"""

import argparse
import json
import shutil
import sys
import textwrap

MODEL_NAMES = ("resnet20", "resnet32", "resnet44", "resnet56", "small")  # tqref.models.MODELS

EPILOG = """\
examples:
  python -m tqref train --model resnet20 --ternary --epochs 2 --train-subset 5000 --test-subset 2000 --out runs/quickstart
  python -m tqref train --model resnet20 --ternary --out runs/resnet20-ternary      # the paper's full recipe
  python -m tqref train --out runs/resnet20-ternary --resume                        # continue after a stop
  python -m tqref evaluate runs/resnet20-ternary/best.npz
  python -m tqref plot runs/resnet20-ternary
  python -m tqref export runs/resnet20-ternary/best.npz resnet20_torch.npz --format torch
  python -m tqref compare results/*/ --paper-table --markdown

data: --data-dir DIR, else $TQREF_DATA, else ~/.cache/tqref (downloaded there when online);
DIR is the folder that contains cifar-10-batches-py/.
"""


def _add_data_dir(parser):
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="folder that contains cifar-10-batches-py/ (default: $TQREF_DATA, then the cache)")


def _add_backend(parser):
    parser.add_argument("--backend", choices=("fast", "reference"), default=None,
                        help="which implementation runs the layers: fast (Numba kernels; the default) or "
                             "reference (the readable NumPy of tqref.functional); default: $TQREF_BACKEND, "
                             "else fast")


class _Formatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description to the terminal; keeps lines that
    start with two spaces (examples) and the "examples:" blocks as written."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=min(100, shutil.get_terminal_size().columns))

    def _fill_text(self, text, width, indent):
        out = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith("  ") or line.endswith(":") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(out)


# Settings of ``train`` and the TrainConfig field each one sets.  Their
# argparse default is None ("not given"), so --resume can tell which were given.
TRAIN_FIELDS = ("model", "ternary", "t_ex", "variant", "keep_first", "keep_last", "epochs", "batch_size", "lr",
                "momentum", "nesterov", "weight_decay", "schedule", "milestones", "gammas",
                "warmup_epochs", "augment", "train_subset", "test_subset", "seed", "init_from", "data_dir")


def _add_train(sub):
    p = sub.add_parser(
        "train", formatter_class=_Formatter,
        help="train a network on CIFAR-10 (the paper's recipe by default)",
        description="Train a CIFAR ResNet (or the small demo net), full precision or ternarized, into a run "
                    "folder: config.json, log.jsonl (one line per epoch), last.npz and best.npz "
                    "(checkpoints written every epoch), result.json.\n\n"
                    "The defaults are the paper's recipe: 200 epochs, batch 128, SGD with Nesterov "
                    "momentum 0.9, weight decay 3e-4, lr 0.1 times 0.1 at epoch 80, 0.1 at 120 and "
                    "0.5 at 160, random crop + horizontal flip; the test set is evaluated after every epoch.",
        epilog="examples:\n"
               "  python -m tqref train --model resnet20 --ternary --out runs/r20t\n"
               "  python -m tqref train --model resnet20 --ternary --t-ex 2 --init-from runs/r20/best.npz "
               "--lr 0.01 --epochs 60 --milestones 30 45 --gammas 0.1 0.1 --out runs/r20-rel2\n"
               "  python -m tqref train --out runs/r20t --resume --epochs 250")
    model = p.add_argument_group("model")
    model.add_argument("--model", default=None, metavar="NAME",
                       help=f"one of {', '.join(MODEL_NAMES)} (default resnet20)")
    model.add_argument("--ternary", action="store_const", const=True, default=None,
                       help="ternarize every conv and the linear layer (Eqs. 1-4)")
    model.add_argument("--t-ex", type=int, default=None, metavar="K",
                       help="residual expansion layers per ternary layer (Eq. 5; default 1, try 2)")
    model.add_argument("--variant", default=None, metavar="NAME",
                       help="ternary variant: paper (default; Δ = 0.05·max|W|), twn (Δ = 0.7·mean|W|), "
                            "ttq (trained scales), binary (sign)")
    model.add_argument("--keep-first", action="store_const", const=True, default=None,
                       help="keep the first conv in full precision (the paper ternarizes it)")
    model.add_argument("--keep-last", action="store_const", const=True, default=None,
                       help="keep the last linear layer in full precision (the paper ternarizes it)")
    model.add_argument("--init-from", metavar="CKPT", default=None,
                       help="start from the weights of a checkpoint (e.g. full precision -> ternary fine-tuning)")

    opt = p.add_argument_group("optimisation (defaults: the paper's)")
    opt.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs to train (default 200)")
    opt.add_argument("--batch-size", type=int, default=None, metavar="B", help="mini-batch size (default 128)")
    opt.add_argument("--lr", type=float, default=None, help="initial learning rate (default 0.1)")
    opt.add_argument("--momentum", type=float, default=None, metavar="M", help="SGD momentum (default 0.9)")
    opt.add_argument("--no-nesterov", dest="nesterov", action="store_const", const=False, default=None,
                     help="plain momentum instead of Nesterov's")
    opt.add_argument("--weight-decay", type=float, default=None, metavar="WD",
                     help="L2 weight decay on all parameters (default 3e-4)")
    opt.add_argument("--schedule", choices=("multistep", "cosine"), default=None,
                     help="learning-rate schedule (default multistep)")
    opt.add_argument("--milestones", type=int, nargs="+", default=None, metavar="E",
                     help="multistep: epochs where the lr changes (default 80 120 160)")
    opt.add_argument("--gammas", type=float, nargs="+", default=None, metavar="G",
                     help="multistep: factor at each milestone (default 0.1 0.1 0.5)")
    opt.add_argument("--warmup-epochs", type=int, default=None, metavar="W",
                     help="linear warm-up over the first W epochs (default 0)")
    opt.add_argument("--no-augment", dest="augment", action="store_const", const=False, default=None,
                     help="no random crop / flip")
    opt.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the initial weights, shuffling and "
                                                            "augmentation (default 0)")

    data = p.add_argument_group("data")
    data.add_argument("--train-subset", type=int, default=None, metavar="N",
                      help="train on the first N of the 50,000 training images (default all)")
    data.add_argument("--test-subset", type=int, default=None, metavar="N",
                      help="evaluate on the first N of the 10,000 test images (default all)")
    _add_data_dir(data)

    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, metavar="RUN_DIR",
                     help="run folder; must be new or empty, unless --resume")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in RUN_DIR from its last.npz, exactly as if never stopped "
                          "(its own settings are used; --epochs may extend it)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines remain)")
    _add_backend(run)
    p.set_defaults(func=_cmd_train)


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter, help="test top-1 / top-5 accuracy of a checkpoint",
        description="Evaluate a checkpoint (last.npz, best.npz) on the CIFAR-10 test set in evaluation "
                    "mode (batch-norm running statistics) and print its test top-1 and top-5 accuracy.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a .npz checkpoint written by 'train', or a packed file written by 'export --format packed'")
    p.add_argument("--test-subset", type=int, default=None, metavar="N", help="first N test images only")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="evaluation batch (default 256)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_backend(p)
    _add_data_dir(p)
    p.set_defaults(func=_cmd_evaluate)


def _add_summary(sub):
    p = sub.add_parser(
        "summary", formatter_class=_Formatter, help="per-layer table of a model or checkpoint",
        description="Print the per-layer summary (parameters, bits, threshold and alpha, sparsity, sizes) "
                    "of a model built from its name, or of the model in a checkpoint.",
        epilog="examples:\n  python -m tqref summary --model resnet20 --ternary --t-ex 2\n"
               "  python -m tqref summary runs/r20t/best.npz")
    p.add_argument("checkpoint", metavar="CKPT", nargs="?", default=None, help="a checkpoint (instead of --model)")
    p.add_argument("--model", default=None, metavar="NAME", help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--ternary", action="store_true", help="ternarize the model")
    p.add_argument("--t-ex", type=int, default=1, metavar="K", help="residual expansions (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_summary)


def _add_plot(sub):
    p = sub.add_parser(
        "plot", formatter_class=_Formatter, help="PNG figures of a training run",
        description="Draw a run's curves from its log.jsonl and last.npz: curves.png (loss and accuracy), "
                    "lr.png (learning rate), and for ternary runs sparsity.png (per-layer sparsity over the "
                    "epochs); weights.png (histograms of the latent weights, ±threshold marked when ternary).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'train'")
    p.add_argument("--out", metavar="DIR", default=None, help="where to write the PNGs (default RUN_DIR)")
    p.set_defaults(func=_cmd_plot)


def _add_export(sub):
    p = sub.add_parser(
        "export", formatter_class=_Formatter, help="export a checkpoint for PyTorch or as packed ternary weights",
        description="Write the model of a checkpoint as an .npz whose keys and layouts are those of the usual "
                    "PyTorch CIFAR ResNet (conv1.weight, bn1.running_var, layer1.0.conv1.weight, linear.bias, "
                    "...). Ternary layers are written as their effective weights alpha*T (sum over the "
                    "expansions), so a plain PyTorch ResNet with option-A shortcuts reproduces tqref's outputs.",
        epilog="in PyTorch:\n"
               "  state = {k: torch.from_numpy(v) for k, v in np.load('resnet20_torch.npz').items()}\n"
               "  net.load_state_dict(state)\n"
               "packed ternary file (about 1/14 of the float32 checkpoint for ResNet-20):\n"
               "  python -m tqref export runs/r20t/best.npz r20t_packed.npz --format packed\n"
               "  python -m tqref evaluate r20t_packed.npz\n"
               "a finished run's checkpoint without the momentum buffers (as published in results/):\n"
               "  python -m tqref export runs/r20t/last.npz runs/r20t/last.npz --format weights\n"
               "a run still training as two files of half the size (last.npz, last.momentum.npz):\n"
               "  python -m tqref export runs/r20t/last.npz runs/r20t/last.npz --format split")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by 'train'")
    p.add_argument("output", metavar="OUT.npz", help="file to write")
    p.add_argument("--format", choices=("torch", "packed", "weights", "split"), default="torch",
                   help="torch: PyTorch state-dict naming, float32 (default); packed: ternary codes at "
                        "2 bits (or 1.6 with --packing base3), BN folded, for 'evaluate' and tqref.deploy; "
                        "weights: the tqref checkpoint without its momentum buffers (half the size; "
                        "everything reads it but --resume; OUT may be CKPT itself); "
                        "split: the same, plus its momentum buffers in OUT's NAME.momentum.npz, two files "
                        "of about half the size that --resume reads as one (a run still training, kept "
                        "under a file-size limit)")
    p.add_argument("--packing", choices=("2bit", "base3"), default="2bit",
                   help="code packing of --format packed: 4 codes per byte (default) or 5 per byte")
    p.set_defaults(func=_cmd_export)


def _add_compare(sub):
    p = sub.add_parser(
        "compare", formatter_class=_Formatter, help="several runs side by side; the paper's table filled in",
        description="Read run folders written by 'train' and print one row per run: model, quantization, "
                    "status (finished, or in progress at epoch k of N), schedule, final and best test top-1 "
                    "(with its epoch), wall time, training images/s, and for ternary runs the whole-model "
                    "compression and the share of zero ternary codes. Nothing is re-evaluated: the numbers "
                    "come from config.json, log.jsonl and last.npz.\n\n"
                    "--paper-table prints the paper's CIFAR-10 table instead, one row per ResNet depth: the "
                    "paper's full-precision and ternary top-1 beside tqref's full-precision, ternary and "
                    "t_ex=2 runs, placed by their settings (not by folder name); an empty cell shows '—'.",
        epilog="examples:\n"
               "  python -m tqref compare runs/r20 runs/r20t\n"
               "  python -m tqref compare results/*/ --paper-table --markdown")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by 'train'")
    p.add_argument("--paper-table", action="store_true",
                   help="the paper's table (one row per model) instead of one row per run")
    p.add_argument("--seeds", action="store_true",
                   help="one row per configuration (runs that differ only in their seed): mean ± std, "
                        "then each ternary - full precision gap with its paired test across seeds, "
                        "and whether it supports, contradicts or leaves undecided the paper's claim")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--markdown", action="store_true", help="print a markdown table")
    style.add_argument("--json", action="store_true",
                       help="print a JSON list (runs, or the rows of --paper-table); top-1 as fractions")
    p.set_defaults(func=_cmd_compare)


def _add_sweep(sub):
    p = sub.add_parser(
        "sweep", formatter_class=_Formatter, help="run a grid of training runs on Dask (skips finished, resumes others)",
        description="Read a TOML spec (a grid of model x quantization x schedule x seed x any train setting; "
                    "see tqref/sweep.py or results/*.toml), print each run's state (finished, started at epoch "
                    "k/N, new), then train every unfinished run as one Dask task: run folders are ordinary "
                    "'train' folders named from their settings. Re-running the command skips finished runs "
                    "and resumes the others from their last checkpoint. By default a local cluster of one "
                    "single-threaded worker per core starts and stops with the command; --scheduler sends "
                    "the runs to a running Dask cluster whose workers see the run folders at the same path.",
        epilog="examples:\n"
               "  python -m tqref sweep results/resnet20-short30.toml --dry-run\n"
               "  python -m tqref sweep results/resnet20-short30.toml\n"
               "  dask scheduler &  dask worker tcp://HOST:8786 --nworkers 2 --nthreads 1 &\n"
               "  python -m tqref sweep results/resnet20-short30.toml --scheduler tcp://HOST:8786")
    p.add_argument("specs", nargs="+", metavar="SPEC",
                   help="sweep spec(s) (TOML); several run as one queue, in the order given")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="put the run folders in DIR instead of the spec's 'out' (e.g. a scratch disk)")
    p.add_argument("--dry-run", action="store_true", help="print the runs, their state and train commands; train nothing")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a running Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local cluster: worker processes (default: one per core)")
    p.add_argument("--threads", type=int, default=1, metavar="T", help="threads per run (default 1)")
    p.add_argument("--publish", action="store_true",
                   help="train nothing; ready the run folders for a commit: finished runs' checkpoints weights "
                        "only (and final.packed.npz for ternary runs), unfinished runs' last.npz split in two "
                        "(see 'export --format split'); only while no sweep trains them")
    _add_data_dir(p)
    p.set_defaults(func=_cmd_sweep)


def _add_course(sub):
    p = sub.add_parser(
        "course", formatter_class=_Formatter,
        help="the course edition: list the tasks, release the student edition, test and grade it",
        description="The course edition of tqref: students write the bodies of the library's key functions "
                    "(tqref/course/tasks.py lists them) and the tests in tests/course/ grade them.",
        epilog="examples:\n"
               "  python -m tqref course list\n"
               "  python -m tqref course release ../tqref-student        # in this repository\n"
               "  python -m tqref course test --task 3                    # in the student edition\n"
               "  python -m tqref course grade [--json]")
    actions = p.add_subparsers(dest="course_command", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the tasks: points, functions, prerequisites")
    listing.add_argument("--json", action="store_true", help="as JSON")
    listing.set_defaults(func=_cmd_course)
    release = actions.add_parser(
        "release", help="write the student edition (solutions replaced by stubs) into a new folder",
        description="Write the student edition to OUT: the package with every marked solution region "
                    "replaced by raise NotImplementedError('task N: ...'), the student tests, pyproject.toml, "
                    "requirements.txt and README_STUDENT.md.  OUT must not exist or be empty.")
    release.add_argument("out", metavar="OUT", help="a new (or empty) folder")
    release.add_argument("--source", metavar="DIR", default=None,
                         help="the folder holding tqref/ with its solutions (default: this package's)")
    release.set_defaults(func=_cmd_course)
    for name, text in (("grade", "run the course tests; points per task and the first failing check of each"),
                       ("test", "run the course tests with pytest's output, then the per-task summary")):
        q = actions.add_parser(name, help=text, description=text + ".  The hidden inputs come from "
                               "$TQREF_GRADE_SEED (or --seed), else from a fresh seed, printed.")
        q.add_argument("--task", action="append", metavar="ID", default=None,
                       help="only this task (repeatable): 1a, 1b, 2, 3, 4, 5")
        q.add_argument("--seed", type=int, default=None, help="the seed of the hidden inputs")
        q.add_argument("--tests", metavar="DIR", default=None, help="the course tests (default: tests/course "
                       "beside the tqref package)")
        q.add_argument("--timeout", type=float, default=900, metavar="S",
                       help="stop the tests after S seconds (default 900)")
        if name == "grade":
            q.add_argument("--json", action="store_true", help="the grade as JSON")
        else:
            q.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="...",
                           help="more pytest arguments, e.g. -x -k threshold")
        q.set_defaults(func=_cmd_course)
    from tqref.course.commands import add_capstone_parsers
    add_capstone_parsers(actions, _cmd_course)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tqref", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="tqref: ternarized-weight CNNs (He, Gong, Fan, WACV 2019) in readable NumPy + Numba.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_evaluate(sub)
    _add_summary(sub)
    _add_plot(sub)
    _add_export(sub)
    _add_compare(sub)
    _add_sweep(sub)
    _add_course(sub)

    download = sub.add_parser(
        "download", help="download the official CIFAR-10 archive into the cache (MD5 checked)",
        description="Fetch cifar-10-python.tar.gz, check its MD5 and extract it into DIR "
                    "(default: the tqref cache directory).")
    download.add_argument("--root", metavar="DIR", default=None, help="where to put cifar-10-batches-py/")
    download.set_defaults(func=_cmd_download)
    subset = sub.add_parser(
        "subset", formatter_class=_Formatter, help="write the first N images of CIFAR-10 as a small copy",
        description="Write the first --train training and --test test images of CIFAR-10 into "
                    "OUT/cifar-10-batches-py/ in the same format, for a class or a laptop: tqref loads it "
                    "with --data-dir OUT like the full set.",
        epilog="example:\n  python -m tqref subset cifar10-small --train 5000 --test 1000")
    subset.add_argument("out", metavar="OUT", help="a new folder (or one without cifar-10-batches-py/)")
    subset.add_argument("--train", type=int, default=5000, metavar="N", help="training images (default 5000)")
    subset.add_argument("--test", type=int, default=1000, metavar="N", help="test images (default 1000)")
    _add_data_dir(subset)
    subset.set_defaults(func=_cmd_subset)

    demo = sub.add_parser(
        "demo", help="a short run of a small net on a CIFAR-10 subset (no files written)",
        description="Train a small network (or a ResNet) on a subset of CIFAR-10 for a few epochs, "
                    "printing the training loss per epoch and the accuracy on held-out test images. "
                    "Writes nothing; 'train' is the full trainer.")
    demo.add_argument("--model", default="small", help="small (default), resnet20, resnet32, resnet44, resnet56")
    demo.add_argument("--train-images", type=int, default=2048, metavar="N",
                      help="training images used (default 2048)")
    demo.add_argument("--test-images", type=int, default=1000, metavar="N",
                      help="test images evaluated (default 1000)")
    demo.add_argument("--epochs", type=int, default=8, help="passes over the subset (default 8)")
    demo.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    demo.add_argument("--lr", type=float, default=0.05, help="learning rate, cosine-decayed (default 0.05)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_data_dir(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


# ---------------------------------------------------------------- commands
def _given_train_settings(args):
    return {field: getattr(args, field) for field in TRAIN_FIELDS if getattr(args, field) is not None}


def _log(line):
    print(line, flush=True)


def _cmd_train(args):
    from tqref.train import TrainConfig, Trainer

    given = _given_train_settings(args)
    for key in ("milestones", "gammas"):
        if key in given:
            given[key] = tuple(given[key])
    if args.resume:
        trainer = Trainer(given, args.out, resume=True, progress=not args.no_progress, log=_log,
                          backend=args.backend)
        print(f"resuming {args.out} after epoch {trainer.start_epoch}" if trainer.start_epoch else
              f"resuming {args.out}: it stopped before its first epoch ended, so it starts again "
              f"from its saved settings", flush=True)
    else:
        trainer = Trainer(TrainConfig(**given), args.out, progress=not args.no_progress, log=_log,
                          backend=args.backend)
    print(trainer.describe(), flush=True)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.out}/last.npz holds the last finished epoch; "
              f"continue with: python -m tqref train --out {args.out} --resume", file=sys.stderr)
        return 130
    return 0


class _PackedInfo:
    """What ``evaluate`` reads of a checkpoint, for a packed file."""

    def __init__(self, epoch, config):
        self.epoch, self.config = epoch, config


def _cmd_evaluate(args):
    from tqref.data import load_cifar10
    from tqref.deploy import is_packed_file, load_packed
    from tqref.io import load_model
    from tqref.train import evaluate
    if is_packed_file(args.checkpoint):
        # a packed ternary file: evaluated by the add-only engine, BN folded
        model = load_packed(args.checkpoint)
        config = dict(model.metadata.get("config") or {})
        config.setdefault("model", model.architecture.get("model"))
        ckpt = _PackedInfo(model.metadata.get("epoch"), config)
    else:
        model, ckpt = load_model(args.checkpoint)
    data = load_cifar10(args.data_dir or ckpt.config.get("data_dir"), download=True, verbose=not args.json)
    images, labels = data["test_images"], data["test_labels"]
    if args.test_subset is not None:
        if args.test_subset <= 0:
            raise ValueError(f"--test-subset: expected a positive integer, got {args.test_subset}")
        images, labels = images[:args.test_subset], labels[:args.test_subset]
    from tqref.backend import current_backend, use_backend
    with use_backend(args.backend or current_backend()) as backend:
        result = evaluate(model, images, labels, args.batch_size, progress=not (args.no_progress or args.json))
    c = ckpt.config
    out = {"checkpoint": str(args.checkpoint), "model": c.get("model"), "ternary": bool(c.get("ternary")),
           "t_ex": c.get("t_ex", 1), "epoch": ckpt.epoch, "top1": result["top1"], "top5": result["top5"],
           "loss": result["loss"], "test_images": int(len(images)), "data_root": str(data["root"]),
           "backend": "packed engine" if isinstance(ckpt, _PackedInfo) else backend.name}
    if args.json:
        print(json.dumps(out))
    else:
        kind = f"ternary t_ex={out['t_ex']}" if out["ternary"] else "full precision"
        print(f"{args.checkpoint}: {out['model']} ({kind}), epoch {out['epoch']}: test top-1 {out['top1']:.4f}, "
              f"top-5 {out['top5']:.4f}, loss {out['loss']:.4f} on {out['test_images']:,} images")
    return 0


def _cmd_summary(args):
    if (args.checkpoint is None) == (args.model is None):
        raise ValueError("summary: give either a checkpoint or --model NAME (not both)")
    try:
        from tqref.summary import model_summary
    except ImportError as err:
        raise ImportError(f"summary: tqref.summary is not available in this installation ({err})") from None
    if args.checkpoint is not None:
        from tqref.io import load_model
        model, _ = load_model(args.checkpoint)
    else:
        from tqref.io import model_from_config
        from tqref.train import TrainConfig
        config = TrainConfig(model=args.model, ternary=args.ternary, t_ex=args.t_ex).validate()
        model = model_from_config(config.to_dict())
    summary = model_summary(model)
    print(json.dumps(summary.to_dict(), indent=2, default=float) if args.json else summary.to_text())
    return 0


def _cmd_plot(args):
    from tqref.plot import plot_run
    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def _cmd_export(args):
    if args.format == "packed":
        import os

        from tqref.deploy import export_packed
        from tqref.io import load_model
        model, ckpt = load_model(args.checkpoint)
        n = export_packed(model, args.output, packing=args.packing,
                          metadata={"checkpoint": os.path.basename(str(args.checkpoint)), "epoch": ckpt.epoch,
                                    "config": ckpt.config})
        size = os.path.getsize(args.checkpoint)
        holds = "weights only" if ckpt.weights_only else "includes optimiser state"
        print(f"wrote {args.output}: {n:,} bytes ({args.packing} codes, BN folded); "
              f"checkpoint {size:,} bytes ({size / n:.1f}x larger, {holds})")
        return 0
    if args.format == "weights":
        from pathlib import Path

        from tqref.io import save_weights_only
        path, before, after = save_weights_only(args.checkpoint, args.output)
        if before == after and path.resolve() == Path(args.checkpoint).resolve():  # nothing to drop: untouched
            print(f"{path} already holds the weights only: left as it is ({after:,} bytes)")
        else:
            print(f"wrote {path}: {after:,} bytes, the weights of {args.checkpoint} ({before:,} bytes) "
                  f"without its momentum buffers; it cannot be resumed, but --init-from, evaluate and "
                  f"the other exports read it")
        return 0
    if args.format == "split":
        from tqref.io import split_checkpoint
        path, side, before, after = split_checkpoint(args.checkpoint, args.output)
        print(f"wrote {path} (weights only) and {side} (its momentum buffers): {after:,} bytes in all, "
              f"from {args.checkpoint} ({before:,} bytes); --resume reads the two as one checkpoint")
        return 0
    from tqref.io import export_torch
    path, n, model = export_torch(args.checkpoint, args.output)
    print(f"wrote {path}: {n} arrays of {model} in PyTorch naming (ternary layers as alpha*T)")
    return 0


def _cmd_compare(args):
    from tqref.compare import (
        claim_verdicts,
        format_paper_table,
        format_runs,
        format_seeds,
        paper_table,
        read_run,
        seed_gaps,
        seed_groups,
        to_json,
    )

    runs = [read_run(run_dir) for run_dir in args.run_dirs]  # every folder checked before printing
    style = "markdown" if args.markdown else "text"
    if args.paper_table and args.seeds:
        raise ValueError("compare: --paper-table and --seeds are two views; choose one")
    if args.seeds:
        groups = seed_groups(runs)
        gaps = seed_gaps(groups)
        print(json.dumps({"groups": groups, "gaps": gaps, "claims": claim_verdicts(gaps)}, indent=2,
                         ensure_ascii=False) if args.json
              else format_seeds(groups, gaps, style))
    elif args.paper_table:
        rows, left_out = paper_table(runs)
        print(to_json(rows) if args.json else format_paper_table(rows, style, left_out=left_out))
    else:
        print(to_json(runs) if args.json else format_runs(runs, style))
    return 0


def _cmd_sweep(args):
    for name in ("workers", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name}: expected a positive integer, got {value}")
    from tqref.sweep import main_sweep
    return main_sweep(args)


def _cmd_demo(args):
    from tqref.demo import run_demo
    run_demo(model=args.model, train_images=args.train_images, test_images=args.test_images,
             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
             data_dir=args.data_dir)
    return 0


def _cmd_course(args):
    from tqref.course import commands
    return getattr(commands, f"cmd_{args.course_command}")(args)


def _cmd_subset(args):
    from tqref.data import load_cifar10, write_cifar10_subset
    data = load_cifar10(args.data_dir, download=True, verbose=True)
    root = write_cifar10_subset(args.out, data, args.train, args.test)
    print(f"wrote the first {args.train:,} training and {args.test:,} test images of {data['root']} to "
          f"{root}/cifar-10-batches-py/; use it with --data-dir {root}")
    return 0


def _cmd_download(args):
    from tqref.data import default_cache_dir, download_cifar10
    root = download_cifar10(args.root or default_cache_dir())
    print(f"CIFAR-10 ready in {root}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError) as err:
        # errors of input reach the user as one readable line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if type(err).__name__ != "TrainingDiverged":
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

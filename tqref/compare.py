"""Training runs side by side, and the paper's CIFAR-10 table filled in with them.

    python -m tqref compare RUN_DIR [RUN_DIR ...] [--markdown | --json] [--paper-table]

    from tqref.compare import read_run, paper_table, format_runs, format_paper_table
    runs = [read_run(d) for d in ("results/resnet20-fp", "results/resnet20-ternary")]
    print(format_runs(runs))                                # one row per run
    rows, left_out = paper_table(runs)                      # one row per model
    print(format_paper_table(rows, "markdown", left_out=left_out))
    paired_difference(correct_fp, correct_ternary)          # is a gap more than test-set noise?

Every number comes from the files ``python -m tqref train`` writes into a run
folder; nothing is re-evaluated.  Per run (``read_run``):

    config.json   model, ternary, t_ex, variant, epochs planned (N), the schedule
    log.jsonl     one record per finished epoch, records r_1 ... r_k:
                    epochs done        k = r_k.epoch
                    final top-1        r_k.test_top1
                    best top-1         max_i r_i.test_top1, at the first epoch that reached it
                                       (the trainer's best.npz is that epoch too)
                    wall time          Σ_i r_i.epoch_seconds  (training + test evaluation,
                                       summed over every session of a resumed run)
                    images/s           mean_i r_i.images_per_s  (training images per second,
                                       as result.json computes it)
                    sparsity           r_k.sparsity: the share of ternary codes T = 0 over all
                                       ternary layers (first expansion), ternary runs only
    last.npz      its model, for the whole-model compression of ternary runs:
                    compression        fp32 size / ternary size, from
                                       tqref.summary.model_summary(model).totals["compression_ratio"]
                                       (codes at 2·t_ex bits and α per layer; BN γ/β and biases
                                       stay fp32, so it is below 16× for t_ex = 1)
    result.json   written by the trainer once all epochs are done

A run is *finished* when result.json exists and its log holds all N planned
epochs; any other run is shown as "in progress (epoch k/N)", because its
numbers will still change.  A folder with config.json but no log.jsonl yet (a
run that has not finished its first epoch) is "in progress (epoch 0/N)".

Test top-1 is shown as a percentage with two decimals, like the paper's table.
Best-of-epochs picks the epoch on the test set itself, which flatters it, so
the final epoch comes first and the best follows in parentheses.

``paper_table`` puts the runs into the table of ``../shared/docs/method.md``:
one row per ResNet depth with the paper's full-precision and ternary top-1
and tqref's full-precision, ternary (t_ex = 1) and t_ex = 2 runs.  A run is
placed by its config (model, ternary, t_ex; the paper's quantizer only: variant
"paper", no layer kept in full precision), never by its folder name.  The
full-precision and t_ex = 1 cells take only runs trained from scratch, as the
paper's were; a t_ex = 1 run fine-tuned from a checkpoint is listed under the
table instead.  The t_ex = 2 cell (the paper has no CIFAR-10 number for it)
takes either.  Under the table, per depth with a full-precision and a
ternary run: ternary minus full precision in points of top-1, at the final
epochs and (in parentheses) the best ones, next to the paper's (best
epochs); while a run is in progress the epochs it compares are named.
"""

import json
import math
import textwrap
from pathlib import Path

import numpy as np

# The paper's CIFAR-10 table (He, Gong & Fan, WACV 2019), as copied into
# ../shared/docs/method.md, "Results to reproduce": test top-1 in %, full
# precision and ternarized (t_ex = 1, 16x), best over the training epochs.
PAPER_TOP1 = {
    "resnet20": (91.70, 91.65),
    "resnet32": (92.36, 92.48),
    "resnet44": (92.47, 92.71),
    "resnet56": (92.68, 92.86),
}

# The columns of tqref runs in the paper table: (ternary, t_ex) -> JSON key
PAPER_TABLE_CELLS = {(False, 1): "fp", (True, 1): "ternary", (True, 2): "ternary_tex2"}

MISSING = "—"  # what a cell without a run shows

_LOG_KEYS = ("epoch", "test_top1", "images_per_s", "epoch_seconds")


# ---------------------------------------------------------------- one run
def read_run(run_dir):
    """Everything ``compare`` shows of one run folder, as a plain dict.

    run_dir:  a folder written by ``python -m tqref train`` (config.json, and
              log.jsonl once an epoch is done)

    Returns a dict (``json.dumps`` takes it) with
        run             the folder (as given, without a trailing "/")
        model, ternary, t_ex, variant, keep_first, keep_last   from config.json
        quantization    "full precision", "ternary t_ex=1", "ternary t_ex=1, twn", ...
        init_from       the checkpoint a fine-tuned run started from (config.json), else None
        schedule        the learning-rate schedule in words (TrainConfig.describe_schedule),
                        after "fine-tuned from FOLDER/FILE; " for a fine-tuned run
        epochs_done, epochs_planned, finished (bool), status ("finished" or
                        "in progress (epoch k/N)")
        final_top1      test top-1 of the last logged epoch (a fraction, as in the log)
        best_top1, best_epoch
        wall_seconds    Σ epoch_seconds;  images_per_s  mean of the epochs' images_per_s
        compression     whole-model fp32 size / ternary size (ternary runs with a
                        last.npz), else None
        sparsity        the last record's share of zero ternary codes (ternary runs), else None
    The accuracy and time fields are None for a run with no finished epoch.

    Raises FileNotFoundError for a missing folder or one without config.json,
    ValueError for a config.json or log.jsonl that cannot be read, naming the file.
    """
    from tqref.train import TrainConfig, read_log

    folder = Path(run_dir)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"compare: {run_dir} {what}: expected a run folder written by "
                                f"'python -m tqref train --out RUN_DIR'")
    config_path = folder / "config.json"
    if not config_path.is_file():
        inside = sorted(d.name for d in folder.iterdir() if (d / "config.json").is_file())
        hint = f"; it holds run folders ({', '.join(inside)}): pass those, e.g. {folder}/*/" if inside else ""
        raise FileNotFoundError(f"compare: {run_dir} is not a run folder: it has no config.json "
                                f"(expected config.json and log.jsonl, as 'python -m tqref train' writes){hint}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"compare: {config_path}: not valid JSON: {err}") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"compare: {config_path}: expected the settings of a run (a JSON object with "
                         f"'model', 'epochs', ...), found {str(config)[:80]!r}")
    try:
        c = TrainConfig.from_dict(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"compare: {config_path}: not the settings of a tqref run: {err}") from None

    records = read_log(folder)
    for record in records:
        missing = [key for key in _LOG_KEYS if key not in record]
        if missing:
            raise ValueError(f"compare: {folder / 'log.jsonl'}: the record of epoch {record.get('epoch', '?')} "
                             f"lacks {', '.join(missing)} (expected the per-epoch records of 'train')")

    run = {"run": str(folder), "model": c.model, "ternary": bool(c.ternary), "t_ex": int(c.t_ex),
           "variant": c.variant, "keep_first": bool(c.keep_first), "keep_last": bool(c.keep_last),
           "quantization": _quantization(c), "init_from": c.init_from, "schedule": _schedule(c)}

    done, planned = (records[-1]["epoch"] if records else 0), int(c.epochs)
    finished = (folder / "result.json").is_file() and done >= planned
    run.update(epochs_done=done, epochs_planned=planned, finished=finished,
               status="finished" if finished else f"in progress (epoch {done}/{planned})")

    if records:
        # max() keeps the first of equal values: the epoch whose checkpoint is best.npz
        best = max(records, key=lambda r: r["test_top1"])
        run.update(final_top1=records[-1]["test_top1"], best_top1=best["test_top1"], best_epoch=best["epoch"],
                   wall_seconds=sum(r["epoch_seconds"] for r in records),
                   images_per_s=sum(r["images_per_s"] for r in records) / len(records))
    else:
        run.update(final_top1=None, best_top1=None, best_epoch=None, wall_seconds=None, images_per_s=None)
    run["compression"] = _compression(folder / "last.npz") if c.ternary else None
    run["sparsity"] = records[-1].get("sparsity") if (c.ternary and records) else None
    return run


def _quantization(c):
    """The weights of a run in words: "full precision", "ternary t_ex=2", "ternary t_ex=1, twn"."""
    if not c.ternary:
        return "full precision"
    extras = [c.variant] if c.variant != "paper" else []
    extras += ["first layer fp"] if c.keep_first else []
    extras += ["last layer fp"] if c.keep_last else []
    return ", ".join([f"ternary t_ex={c.t_ex}"] + extras)


def _schedule(c):
    """The schedule in words, saying first where a fine-tuned run started."""
    if c.init_from is None:
        return c.describe_schedule()
    start = Path(c.init_from)
    return f"fine-tuned from {start.parent.name}/{start.name}; {c.describe_schedule()}"


def _compression(checkpoint):
    """Whole-model compression of the model in ``checkpoint`` (None when the
    run has written no checkpoint yet).  It depends on the layer shapes and
    bits only, not on the trained values, but it is read from the run's own
    model so that it describes exactly what was trained."""
    if not checkpoint.is_file():
        return None
    from tqref.io import load_model
    from tqref.summary import model_summary
    model, _ = load_model(checkpoint)
    return float(model_summary(model).totals["compression_ratio"])


# ---------------------------------------------------------------- the paper's table
def paper_table(runs):
    """Place runs (dicts of ``read_run``) in the paper's table.

    Returns (rows, left_out):
        rows      one dict per model of ``PAPER_TOP1``, in depth order:
                  {"model", "paper_top1_percent": {"fp", "ternary"},
                   "fp", "ternary", "ternary_tex2": the run dict or None}
        left_out  the runs that fit no cell (another model, t_ex, variant, a
                  layer kept in full precision, or a t_ex = 1 or full-precision
                  run fine-tuned from a checkpoint: the paper's started from scratch)

    Raises ValueError when two runs fit the same cell (say which one to show
    by passing only it)."""
    rows = {model: {"model": model, "paper_top1_percent": {"fp": fp, "ternary": ternary},
                    **{key: None for key in PAPER_TABLE_CELLS.values()}}
            for model, (fp, ternary) in PAPER_TOP1.items()}
    left_out = []
    for run in runs:
        key = PAPER_TABLE_CELLS.get((run["ternary"], run["t_ex"]))
        the_papers_method = (run["variant"] == "paper" and not (run["keep_first"] or run["keep_last"])
                             and (run["init_from"] is None or key == "ternary_tex2"))
        if run["model"] not in rows or key is None or not the_papers_method:
            left_out.append(run)
            continue
        row = rows[run["model"]]
        if row[key] is not None:
            raise ValueError(f"compare --paper-table: {row[key]['run']} and {run['run']} are both a "
                             f"{run['model']} {run['quantization']} run; pass only the one to show")
        row[key] = run
    return list(rows.values()), left_out


# ---------------------------------------------------------------- two models, one test set
def paired_difference(correct_a, correct_b):
    """How far apart two models' accuracies are, and whether that is more than
    the test set's noise: a paired comparison on the same test images.

    correct_a, correct_b: (n,) bool, image i classified correctly by model a / b.

    Only the images where the two models disagree carry information about
    which one is better (McNemar's test):

        only_a = #{i: a right, b wrong}      only_b = #{i: a wrong, b right}
        difference = acc_b − acc_a = (only_b − only_a) / n
        standard_error = sqrt(((only_a + only_b) / n − difference²) / n)

    (the standard error of the mean of d_i = b_i − a_i ∈ {−1, 0, 1}), far
    smaller than that of either accuracy alone when the models mostly agree.
    If the two models were equally accurate, each image they disagree on
    would favour b like a fair coin: only_b ~ Binomial(only_a + only_b, ½), and

        p_value = min(1, 2 · P(X ≤ min(only_a, only_b))),  X ~ Binomial(only_a + only_b, ½)

    (exact two-sided).  This is the noise of *this test set* only: a second
    training run with another seed moves the accuracies further.

    Returns {"n", "only_a", "only_b", "difference", "standard_error", "p_value"}
    (difference and standard_error as fractions, like test_top1)."""
    a = _correct_vector(correct_a, "paired_difference: correct_a")
    b = _correct_vector(correct_b, "paired_difference: correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: correct_a and correct_b must be the same test images, "
                         f"got shapes {a.shape} and {b.shape}")
    n = a.size
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    difference = (only_b - only_a) / n
    standard_error = math.sqrt(max((only_a + only_b) / n - difference ** 2, 0.0) / n)
    disagree = only_a + only_b
    tail = sum(math.comb(disagree, k) for k in range(min(only_a, only_b) + 1))  # exact integers
    p_value = min(1.0, 2 * tail / 2 ** disagree)
    return {"n": n, "only_a": only_a, "only_b": only_b, "difference": difference,
            "standard_error": standard_error, "p_value": p_value}


def _correct_vector(x, who):
    if not isinstance(x, np.ndarray) or x.dtype != np.bool_ or x.ndim != 1 or x.size == 0:
        found = (f"{x.ndim}-D {x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
                 else type(x).__name__)
        raise ValueError(f"{who}: expected a non-empty 1-D bool array (image i classified correctly), "
                         f"got {found}")
    return x


# ---------------------------------------------------------------- formatting
def _percent(fraction, decimals=2):
    return MISSING if fraction is None else f"{100 * fraction:.{decimals}f}"


def duration(seconds):
    """Seconds in words for a table: "42 s", "12 min 05 s", "3 h 07 min" (rounded down)."""
    if seconds is None:
        return MISSING
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _ratio(value):
    return MISSING if value is None else f"{value:.2f}×"


def _top1_with_best(run):
    """"78.65 (best 79.10, epoch 20)", with the in-progress mark when the run is not finished."""
    if run is None:
        return MISSING
    if run["final_top1"] is None:
        return run["status"]
    text = f"{_percent(run['final_top1'])} (best {_percent(run['best_top1'])}, epoch {run['best_epoch']})"
    return text if run["finished"] else f"{text}; {run['status']}"


RUN_COLUMNS = ("run", "model", "quantization", "status", "schedule", "final top-1 %", "best top-1 % (epoch)",
               "wall time", "images/s", "compression", "sparsity")
_RUN_NUMERIC = {5, 6, 7, 8, 9, 10}


def _run_cells(run):
    best = MISSING if run["best_top1"] is None else f"{_percent(run['best_top1'])} ({run['best_epoch']})"
    return [run["run"], run["model"], run["quantization"], run["status"], run["schedule"],
            _percent(run["final_top1"]), best, duration(run["wall_seconds"]),
            MISSING if run["images_per_s"] is None else f"{run['images_per_s']:.0f}",
            _ratio(run["compression"]),
            MISSING if run["sparsity"] is None else f"{_percent(run['sparsity'], 1)} %"]


def format_runs(runs, style="text"):
    """One row per run (dicts of ``read_run``) as an aligned text table
    (style "text") or a markdown table (style "markdown")."""
    table = _render([_run_cells(run) for run in runs], RUN_COLUMNS, _RUN_NUMERIC, style)
    note = ("Test top-1 on the CIFAR-10 test set at the last logged epoch, and the best epoch's; wall time: "
            "the epochs' training and test time summed over all sessions; images/s: training, mean over the "
            "epochs; compression: whole model, fp32 size / ternary size; sparsity: share of zero ternary "
            "codes at the last logged epoch.")
    return table + "\n\n" + _paragraph(note, style)


PAPER_COLUMNS = ("model", "paper FP", "paper ternary", "tqref FP", "tqref ternary", "tqref t_ex=2",
                 "compression", "sparsity")


def _with_tex2(ternary, tex2, show):
    """A cell of the ternary run, with the t_ex = 2 run's value after it when there is one."""
    text = MISSING if ternary is None else show(ternary)
    return text if tex2 is None else f"{text} (t_ex=2: {show(tex2)})"


def _points(difference):
    return f"{100 * difference:+.2f}"


def _gaps(row):
    """"ResNet-20: t_ex=1 -0.64 (-0.31), t_ex=2 +0.05 (+0.10), paper -0.05" for a row with
    a full-precision run and a ternary one; "" otherwise.  Marked when a run is in
    progress, with the epochs reached (full precision, t_ex=1, t_ex=2): the gap
    then compares different epochs."""
    fp = row["fp"]
    if fp is None or fp["final_top1"] is None:
        return ""
    parts = []
    for label, key in (("t_ex=1", "ternary"), ("t_ex=2", "ternary_tex2")):
        run = row[key]
        if run is not None and run["final_top1"] is not None:
            parts.append(f"{label} {_points(run['final_top1'] - fp['final_top1'])} "
                         f"({_points(run['best_top1'] - fp['best_top1'])})")
    if not parts:
        return ""
    paper = row["paper_top1_percent"]
    parts.append(f"paper {paper['ternary'] - paper['fp']:+.2f} (best epochs)")
    runs = [r for r in (fp, row["ternary"], row["ternary_tex2"]) if r is not None]
    in_progress = "" if all(r["finished"] for r in runs) else \
        " — in progress, at epochs " + ", ".join(str(r["epochs_done"]) for r in runs)
    return f"ResNet-{row['model'][len('resnet'):]}: " + ", ".join(parts) + in_progress


def format_paper_table(rows, style="text", *, left_out=()):
    """The rows of ``paper_table`` as the paper's table, text or markdown,
    followed by what the cells mean and the runs that fit no cell."""
    def sparsity(run):
        return MISSING if run["sparsity"] is None else f"{_percent(run['sparsity'], 1)} %"

    cells = []
    for row in rows:
        paper = row["paper_top1_percent"]
        cells.append([f"ResNet-{row['model'][len('resnet'):]}", f"{paper['fp']:.2f}", f"{paper['ternary']:.2f}",
                      _top1_with_best(row["fp"]), _top1_with_best(row["ternary"]),
                      _top1_with_best(row["ternary_tex2"]),
                      _with_tex2(row["ternary"], row["ternary_tex2"], lambda r: _ratio(r["compression"])),
                      _with_tex2(row["ternary"], row["ternary_tex2"], sparsity)])
    text = _render(cells, PAPER_COLUMNS, {1, 2}, style)
    gaps = [gap for gap in map(_gaps, rows) if gap]
    notes = ["CIFAR-10 test top-1 in %. Paper: He, Gong & Fan (WACV 2019), best over the epochs. "
             "tqref: the last logged epoch, then the best epoch's top-1 and that epoch in parentheses. "
             "Compression: whole model, fp32 size / ternary size; sparsity: share of zero ternary codes "
             "at the last logged epoch (ternary t_ex=1 run, then the t_ex=2 run)."]
    if gaps:
        notes.append("Ternary minus full precision, in points of top-1, final epochs (best epochs in "
                     "parentheses): " + "; ".join(gaps) + ".")
    if left_out:
        notes.append("Not in the table (another model, t_ex, variant, full-precision layers, or fine-tuned "
                     "where the paper trained from scratch): "
                     + "; ".join(f"{r['run']} ({r['model']}, {r['quantization']}"
                                 + (", fine-tuned" if r["init_from"] else "") + ")" for r in left_out) + ".")
    return text + "\n\n" + "\n\n".join(_paragraph(note, style) for note in notes)


def _paragraph(text, style):
    """A note under a table: wrapped for a terminal, one line for markdown (which wraps it itself)."""
    return textwrap.fill(text, 100, break_long_words=False, break_on_hyphens=False) if style == "text" else text


def _render(rows, headers, numeric, style):
    if style == "markdown":
        def line(cells):
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
        rule = "|" + "|".join("---:" if i in numeric else "---" for i in range(len(headers))) + "|"
        return "\n".join([line(headers), rule] + [line(r) for r in rows])
    if style == "text":
        from tqref.summary import _table  # the aligned layout of 'python -m tqref summary'
        return "\n".join(_table(list(headers), rows, right=numeric))
    raise ValueError(f"compare: style: expected 'text' or 'markdown', got {style!r}")


def to_json(items):
    """Runs (dicts of ``read_run``) or paper-table rows as JSON text: a list.
    Top-1 and sparsity are fractions, as in log.jsonl; the paper's numbers
    are in % (``paper_top1_percent``), as the paper prints them."""
    return json.dumps(list(items), indent=2, ensure_ascii=False)

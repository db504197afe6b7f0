"""Training runs side by side, and the paper's CIFAR-10 table filled in with them.

    python -m tqref compare RUN_DIR [RUN_DIR ...] [--markdown | --json] [--paper-table]

    from tqref.compare import read_run, paper_table, format_runs, format_paper_table
    runs = [read_run(d) for d in ("results/resnet20-fp", "results/resnet20-ternary")]
    print(format_runs(runs))                                # one row per run
    rows, left_out = paper_table(runs)                      # one row per model
    print(format_paper_table(rows, "markdown", left_out=left_out))
    paired_difference(correct_fp, correct_ternary)          # is a gap more than test-set noise?
    groups = seed_groups(runs); gaps = seed_gaps(groups)    # seeds of one configuration, gaps per seed
    claim_verdicts(gaps)                                    # the paper's claims: supported, contradicted, undecided

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

``paper_table`` puts the runs into the paper's table (``docs/method.md``,
"The paper's claims and what tqref can check"):
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

# The paper's CIFAR-10 table (He, Gong & Fan, WACV 2019), as given in
# docs/method.md, "The paper's claims and what tqref can check": test top-1
# in %, full precision and ternarized (t_ex = 1, 16x), best over the epochs.
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
           "quantization": _quantization(c), "init_from": c.init_from, "schedule": _schedule(c),
           "seed": int(c.seed), "settings_key": _settings_key(c)}

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


def _settings_key(c):
    """Every setting of a run but its seed (and where its data lay), as JSON:
    runs with the same key are seeds of one configuration."""
    d = c.to_dict()
    for key in ("seed", "data_dir"):
        d.pop(key, None)
    return json.dumps(d, sort_keys=True)


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
        rows      one dict per model of ``PAPER_TOP1``, in depth order (one per
                  model and schedule when a model's runs have several schedules):
                  {"model", "schedule" (None unless rows were split by schedule),
                   "paper_top1_percent": {"fp", "ternary"},
                   "fp", "ternary", "ternary_tex2": a run dict, a seed group
                   (``seed_groups``) when several seeds share the cell, or None}
        left_out  the runs that fit no cell (another model, t_ex, variant, a
                  layer kept in full precision, or a t_ex = 1 or full-precision
                  run fine-tuned from a checkpoint: the paper's started from scratch)

    Raises ValueError when two runs of one configuration have the same seed
    (copies of one run: pass only one)."""
    placed, left_out = {}, []
    for run in runs:
        key = PAPER_TABLE_CELLS.get((run["ternary"], run["t_ex"]))
        the_papers_method = (run["variant"] == "paper" and not (run["keep_first"] or run["keep_last"])
                             and (run["init_from"] is None or key == "ternary_tex2"))
        if run["model"] not in PAPER_TOP1 or key is None or not the_papers_method:
            left_out.append(run)
            continue
        placed.setdefault(run["model"], []).append((key, run))
    rows = []
    for model, (fp, ternary) in PAPER_TOP1.items():
        mine = placed.get(model, [])
        # rows by the schedules of the full-precision and t_ex = 1 runs; a t_ex = 2 run joins the
        # row of its schedule, or the only row (it may be fine-tuned, with a schedule of its own)
        schedules = list(dict.fromkeys(run["schedule"] for key, run in mine if key != "ternary_tex2"))
        for i, (key, run) in enumerate(mine):
            if key == "ternary_tex2" and run["schedule"] not in schedules:
                if len(schedules) == 1 and len({r["schedule"] for k, r in mine if k == key}) == 1:
                    mine[i] = (key, {**run, "schedule": schedules[0]})
                else:
                    schedules.append(run["schedule"])
        schedules = schedules or [None]
        for schedule in schedules:
            row = {"model": model, "schedule": schedule if len(schedules) > 1 else None,
                   "paper_top1_percent": {"fp": fp, "ternary": ternary},
                   **{key: None for key in PAPER_TABLE_CELLS.values()}}
            for key in PAPER_TABLE_CELLS.values():
                cell = [run for k, run in mine if k == key and run["schedule"] == schedule]
                if cell:
                    groups = seed_groups(cell)
                    if len(groups) > 1:  # same schedule, other settings (lr, weight decay, ...)
                        raise ValueError(
                            f"compare --paper-table: {', '.join(r['run'] for r in cell)} are {model} "
                            f"{cell[0]['quantization']} runs with the same schedule but other settings; "
                            f"pass only the ones to show")
                    row[key] = cell[0] if len(cell) == 1 else groups[0]
            rows.append(row)
    return rows, left_out


# ---------------------------------------------------------------- seeds of one configuration
def seed_groups(runs):
    """Group runs (dicts of ``read_run``) that differ only in their seed.

    Returns one dict per configuration, in the order first met, with the keys
    of a run that describe the configuration (model, quantization, schedule,
    ternary, t_ex, variant, keep_first, keep_last, init_from, epochs_planned)
    and
        runs            the runs, by seed;  seeds;  n (runs);  n_finished
        finished        every run finished;  status "finished" or "k of n finished ..."
        epochs_done     the fewest epochs any run has done
        final_top1, best_top1      mean over the finished runs once one has finished (an
                        accuracy in the middle of a schedule is not a final one), else over
                        the runs with a logged epoch;  n_averaged: how many
        final_top1_std, best_top1_std   sample standard deviation (ddof 1; None for one run)
        sparsity, compression      mean over the same runs as final_top1 (ternary), else None
                        (a run early in its schedule is far less sparse than a finished one)
        best_epoch      None (each seed has its own)
    Raises ValueError when two runs of one configuration have the same seed."""
    groups = {}
    for run in runs:
        groups.setdefault(run["settings_key"], []).append(run)
    out = []
    for members in groups.values():
        members = sorted(members, key=lambda r: r["seed"])
        seeds = [r["seed"] for r in members]
        if len(set(seeds)) != len(seeds):
            twins = [r["run"] for r in members if seeds.count(r["seed"]) > 1]
            raise ValueError(f"compare: {' and '.join(twins)} are the same configuration with the same seed "
                             f"(copies of one run?); pass only the one to show")
        first = members[0]
        logged = [r for r in members if r["final_top1"] is not None]
        done = sum(r["finished"] for r in members)
        group = {k: first[k] for k in ("model", "quantization", "schedule", "ternary", "t_ex", "variant",
                                       "keep_first", "keep_last", "init_from", "epochs_planned")}
        group.update(runs=members, seeds=seeds, n=len(members), n_finished=done,
                     finished=done == len(members), epochs_done=min(r["epochs_done"] for r in members),
                     run=", ".join(r["run"] for r in members), best_epoch=None,
                     status="finished" if done == len(members) else first["status"] if len(members) == 1 else
                     f"{done} of {len(members)} finished{' (the mean is theirs)' if done else ''}, the others "
                     f"at epochs " + ", ".join(f"{r['epochs_done']}/{r['epochs_planned']}"
                                               for r in members if not r["finished"]))
        averaged = [r for r in logged if r["finished"]] or logged
        group["n_averaged"] = len(averaged)
        for key in ("final_top1", "best_top1"):
            values = [r[key] for r in averaged]
            group[key] = float(np.mean(values)) if values else None
            group[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        for key in ("sparsity", "compression"):
            values = [r[key] for r in (averaged or members) if r[key] is not None]
            group[key] = float(np.mean(values)) if values else None
        out.append(group)
    return out


def seed_gaps(groups):
    """Differences between configurations that differ only in quantization, seed by seed.

    For each model and schedule: ternary (t_ex = 1) − full precision, t_ex = 2 − full
    precision and t_ex = 2 − t_ex = 1, over the seeds both have *finished*
    (final epochs).  With d_s the difference for seed s, over n seeds:

        mean = Σ d_s / n      standard_error = std(d_s, ddof=1) / √n
        t = mean / standard_error,  p_value = two-sided Student-t with n − 1 degrees of freedom

    (a paired test across seeds: the same seed draws the same initial weights
    and batches, so pairing removes part of the seed-to-seed noise; with n = 1
    there is no spread and standard_error, t and p_value are None).

    Returns a list of {"model", "schedule", "a", "b" (quantization in words),
    "seeds", "differences" (fractions), "n", "mean", "standard_error", "t", "p_value"}."""
    labels = {(False, 1): "full precision", (True, 1): "ternary t_ex=1", (True, 2): "ternary t_ex=2"}
    by_config = {}
    for g in groups:
        if g["variant"] != "paper" or g["keep_first"] or g["keep_last"] or g["init_from"] is not None:
            continue
        kind = (g["ternary"], g["t_ex"])
        if kind in labels:
            by_config[(g["model"], g["schedule"], kind)] = g
    out = []
    for (model, schedule, kind_b), b in by_config.items():
        for kind_a in [(False, 1)] + ([(True, 1)] if kind_b == (True, 2) else []):
            a = by_config.get((model, schedule, kind_a))
            if a is None or kind_a == kind_b:
                continue
            fa = {r["seed"]: r["final_top1"] for r in a["runs"] if r["finished"]}
            fb = {r["seed"]: r["final_top1"] for r in b["runs"] if r["finished"]}
            seeds = sorted(set(fa) & set(fb))
            if not seeds:
                continue
            d = np.array([fb[s] - fa[s] for s in seeds])
            n = len(d)
            se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else None
            t = float(d.mean() / se) if se else None
            out.append({"model": model, "schedule": schedule, "a": labels[kind_a], "b": labels[kind_b],
                        "seeds": seeds, "differences": d.tolist(), "n": n, "mean": float(d.mean()),
                        "standard_error": se, "t": t,
                        "p_value": student_t_two_sided_p(t, n - 1) if t is not None else None})
    return out


# The paper's claims that a seed sweep can test, as a bound on a gap b − a
# (docs/method.md, "The paper's claims and what tqref can check").  From the
# paper's table: where its ternary net is below full precision (ResNet-20,
# −0.05) the claim is "ternarizing costs at most that much": b − a ≥ the
# paper's gap; where it is above (ResNet-32/44/56) the claim is "ternary
# beats full precision": b − a > 0.  Residual expansion: t_ex = 2 beats
# t_ex = 1 (the paper shows it on ImageNet; it states no CIFAR-10 number).
def paper_claim(gap):
    """The paper's claim about a gap of ``seed_gaps`` as (bound, words), or None
    when the paper claims nothing about it.  The claim is b − a ≥ bound
    (bound a fraction, like the gaps)."""
    if gap["a"] == "full precision" and gap["b"] == "ternary t_ex=1" and gap["model"] in PAPER_TOP1:
        fp, ternary = PAPER_TOP1[gap["model"]]
        if ternary < fp:
            return ((ternary - fp) / 100,
                    f"ternarizing costs at most {fp - ternary:.2f} points (paper: {fp:.2f} → {ternary:.2f})")
        return 0.0, f"ternary beats full precision (paper: {fp:.2f} → {ternary:.2f})"
    if gap["a"] == "ternary t_ex=1" and gap["b"] == "ternary t_ex=2":
        return 0.0, "residual expansion (t_ex = 2) beats t_ex = 1"
    return None


def claim_verdicts(gaps, confidence=0.95):
    """Whether each gap (``seed_gaps``) supports the paper's claim about it.

    With n seeds, mean gap m and its standard error se, the two-sided
    ``confidence`` interval of the mean gap is m ± q·se, q the Student-t
    quantile with n − 1 degrees of freedom.  Against the claim b − a ≥ bound:

        supported      the whole interval is at or above the bound
        contradicted   the whole interval is below it
        undecided      the interval contains the bound (the seeds' noise is too
                       large to tell), or one seed only (no spread to judge by)

    The interval measures seed-to-seed noise on this test set: every seed's
    accuracy is measured on the same 10,000 images.

    Returns, per gap the paper makes a claim about, the gap's dict with
    "claim" (words), "bound", "confidence", "interval" ((low, high) or None),
    "verdict" ("supported" | "contradicted" | "undecided") and "reason" (words)."""
    if not 0 < confidence < 1:
        raise ValueError(f"claim_verdicts: confidence: expected a number between 0 and 1, got {confidence!r}")
    out = []
    for gap in gaps:
        claim = paper_claim(gap)
        if claim is None:
            continue
        bound, words = claim
        mean, se, n = gap["mean"], gap["standard_error"], gap["n"]
        level = f"{100 * confidence:g} %"
        if se is None:
            interval, verdict = None, "undecided"
            reason = f"one seed ({_points(mean)} points) gives no spread to judge a gap by"
        else:
            q = student_t_quantile(confidence, n - 1)
            interval = (mean - q * se, mean + q * se)
            span = f"the {level} interval of the mean gap, {_points(interval[0])} to {_points(interval[1])} points,"
            if interval[0] >= bound:
                verdict, reason = "supported", f"{span} lies at or above {_points(bound)}"
            elif interval[1] < bound:
                verdict, reason = "contradicted", f"{span} lies below {_points(bound)}"
            else:
                verdict, reason = "undecided", f"{span} contains {_points(bound)}: more seeds would be needed"
        out.append({**gap, "claim": words, "bound": bound, "confidence": confidence, "interval": interval,
                    "verdict": verdict, "reason": reason})
    return out


def student_t_quantile(confidence, df):
    """q such that P(|T| ≤ q) = ``confidence`` for Student's t with ``df`` degrees of
    freedom (q = 3.182 for 95 % and 3 d.f.): ``student_t_two_sided_p`` inverted by
    bisection, as it falls from 1 at t = 0 towards 0."""
    if not 0 < confidence < 1:
        raise ValueError(f"student_t_quantile: confidence: expected a number between 0 and 1, got {confidence!r}")
    low, high = 0.0, 1.0
    while student_t_two_sided_p(high, df) > 1 - confidence:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_two_sided_p(middle, df) > 1 - confidence:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def student_t_two_sided_p(t, df):
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom.

    P(|T| ≥ |t|) = I_x(df/2, 1/2) with x = df / (df + t²), the regularised
    incomplete beta function, evaluated by its continued fraction (Lentz's
    method); no SciPy needed."""
    if not (isinstance(df, (int, np.integer)) and df >= 1):
        raise ValueError(f"student_t_two_sided_p: df: expected a positive integer, got {df!r}")
    if not math.isfinite(t):
        return 0.0
    return _incomplete_beta(df / (df + t * t), df / 2, 0.5)


def _incomplete_beta(x, a, b):
    """The regularised incomplete beta function I_x(a, b), 0 ≤ x ≤ 1."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):  # the continued fraction converges fast on this side only
        return 1.0 - _incomplete_beta(1 - x, b, a)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h / a


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
    if "n" in run:  # a seed group: mean ± standard deviation over the seeds
        text = (f"{_mean_std(run['final_top1'], run['final_top1_std'])} (best "
                f"{_mean_std(run['best_top1'], run['best_top1_std'])}; n={run['n_averaged']})")
    else:
        text = f"{_percent(run['final_top1'])} (best {_percent(run['best_top1'])}, epoch {run['best_epoch']})"
    return text if run["finished"] else f"{text}; {run['status']}"


def _mean_std(mean, std):
    return _percent(mean) if std is None else f"{_percent(mean)} ± {_percent(std)}"


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
    return f"{_row_label(row)}: " + ", ".join(parts) + in_progress


def _row_label(row):
    label = f"ResNet-{row['model'][len('resnet'):]}"
    return label if not row.get("schedule") else f"{label} ({row['schedule']})"


def format_paper_table(rows, style="text", *, left_out=()):
    """The rows of ``paper_table`` as the paper's table, text or markdown,
    followed by what the cells mean and the runs that fit no cell."""
    def sparsity(run):
        return MISSING if run["sparsity"] is None else f"{_percent(run['sparsity'], 1)} %"

    cells = []
    for row in rows:
        paper = row["paper_top1_percent"]
        cells.append([_row_label(row), f"{paper['fp']:.2f}", f"{paper['ternary']:.2f}",
                      _top1_with_best(row["fp"]), _top1_with_best(row["ternary"]),
                      _top1_with_best(row["ternary_tex2"]),
                      _with_tex2(row["ternary"], row["ternary_tex2"], lambda r: _ratio(r["compression"])),
                      _with_tex2(row["ternary"], row["ternary_tex2"], sparsity)])
    text = _render(cells, PAPER_COLUMNS, {1, 2}, style)
    gaps = [gap for gap in map(_gaps, rows) if gap]
    notes = ["CIFAR-10 test top-1 in %. Paper: He, Gong & Fan (WACV 2019), best over the epochs. "
             "tqref: the last logged epoch, then the best epoch's top-1 and that epoch in parentheses; "
             "where several seeds share a cell, mean ± standard deviation over the seeds (n runs). "
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


SEED_COLUMNS = ("model", "quantization", "schedule", "n", "seeds", "final top-1 %", "best top-1 %", "status")


def format_seeds(groups, gaps, style="text"):
    """The seed groups (``seed_groups``) as a table, then the gaps (``seed_gaps``) in words,
    then the verdict on each of the paper's claims (``claim_verdicts``)."""
    cells = [[g["model"], g["quantization"], g["schedule"], str(g["n"]), " ".join(map(str, g["seeds"])),
              MISSING if g["final_top1"] is None else _mean_std(g["final_top1"], g["final_top1_std"]),
              MISSING if g["best_top1"] is None else _mean_std(g["best_top1"], g["best_top1_std"]),
              g["status"]] for g in groups]
    text = _render(cells, SEED_COLUMNS, {3, 5, 6}, style)
    notes = ["Test top-1 in %: mean ± sample standard deviation over the seeds (final epoch; best epoch "
             "of each run, averaged). Runs that have not logged an epoch are left out of the means."]
    for g in gaps:
        seeds = ", ".join(f"{s}: {_points(d)}" for s, d in zip(g["seeds"], g["differences"]))
        if g["standard_error"] is None:
            spread = "one seed: no spread to compare it with"
        else:
            spread = (f"standard error {100 * g['standard_error']:.2f}, paired t = {g['t']:.2f}, "
                      f"p = {g['p_value']:.3f} ({g['n'] - 1} d.f.)")
        notes.append(f"ResNet-{g['model'][len('resnet'):]}, {g['schedule']}: {g['b']} − {g['a']} = "
                     f"{_points(g['mean'])} points (mean of {g['n']} seed(s), finished runs; {spread}; "
                     f"per seed {seeds}).")
    for c in claim_verdicts(gaps):
        notes.append(f"The paper's claim for ResNet-{c['model'][len('resnet'):]}, {c['claim']}: "
                     f"{c['verdict'].upper()} with the schedule {c['schedule']} — {c['reason']}.")
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

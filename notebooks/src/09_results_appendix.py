# %% [markdown]
# # 9. Appendix to the results: bookkeeping and statistics (optional)
#
# **Optional reading.** Nothing later in the course depends on this notebook.
# It holds what notebook 08 leaves out to keep the results story short: how
# the runs in `results/` were made and how their files are checked against
# each other, what the JPEG-rebuilt test images do to the accuracy, the paired
# test in detail, the paired comparisons of the deeper networks, and the codes
# of the final ternary model.
#
# **Learning objectives.** After this notebook you can
# - check that a run folder is consistent: the learning rate of every logged
#   epoch, the logged Δ, α and sparsity against the quantizer, and the
#   checkpoint's re-evaluated top-1;
# - say why a re-evaluated checkpoint may differ from its logged top-1 by an
#   image or two on another machine;
# - split a test accuracy between the exact and the JPEG-rebuilt images of
#   the CIFAR-10 copy used for the runs, each part with its sampling error;
# - derive the paired standard error and the exact p-value of
#   `paired_difference`, and read a 95 % interval against an aim;
# - measure how balanced the trained ternary codes are between −1 and +1.
#
# **Prerequisites.** Notebook 08 (the runs, the table and the paired gap).
# **Reading time:** about 20 minutes.
# **Method:** `docs/method.md`, Eqs. (1)–(4), "Training recipe" and "The data";
# `results/README.md` for each run's command, code versions and caveats.
#
# **Idea.** A result is only as good as its bookkeeping. Each run folder holds
# the settings (`config.json`), one log record per epoch (`log.jsonl`), the
# checkpoint of the last epoch (`last.npz`) and of the best (`best.npz`), and
# `result.json` once the run has finished. These files were written at
# different times by a trainer that was stopped and resumed many times, so we
# check that they tell one story, then look at the data and the statistics.

# %%
import hashlib
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from tqref.compare import format_runs, paired_difference, paper_table, read_run
from tqref.data import FOLDER, TEST_FILE, load_cifar10, normalize
from tqref.io import load_checkpoint, load_model, ternary_layers
from tqref.nn import no_grad
from tqref.sweep import load_spec
from tqref.ternary import PAPER_DELTA, alpha, ternary_codes, threshold
from tqref.train import TrainConfig, read_log

RESULTS = Path("../results")  # the notebook runs in notebooks/
runs = []
for folder in sorted(d for d in RESULTS.iterdir() if (d / "config.json").is_file()):
    run = read_run(folder)
    run["run"] = f"results/{folder.name}"  # named from the repository root, as `compare results/*/` does
    run.update(folder=folder, config=TrainConfig.from_dict(json.loads((folder / "config.json").read_text())),
               log=read_log(folder))
    runs.append(run)
# as in 08: the table holds the finished seed-0 runs outside the seed sweep
seed_sweep = {run.name for run in load_spec(RESULTS / "resnet20-short30.toml", out=RESULTS).runs}
story = [run for run in runs if run["finished"] and run["seed"] == 0 and run["folder"].name not in seed_sweep]
rows, left_out = paper_table(story)
table = [row for row in rows if row["fp"] and row["ternary"]]  # the depths with both runs
# one finished run per cell, as notebook 08 checks (a cell with several seeds is a seed group with "runs")
assert not any("runs" in row[key] for row in table for key in ("fp", "ternary"))
resnet20 = next(row for row in table if row["model"] == "resnet20" and row["fp"]["epochs_planned"] == 200)
deeper_rows = [row for row in table if row["model"] != "resnet20"]

# %% [markdown]
# ## The runs, one row each
#
# Each run trained on one thread, so that two runs share the two cores of the
# machine (`results/README.md` gives the commands). A run of 200 epochs takes about ten hours: it was stopped at the
# end of a working session and continued with `--resume` at the next one, from
# `last.npz`, which then holds everything the next epoch depends on (weights,
# batch-norm statistics, momentum buffers, the random state). The code was made
# faster between sessions (`results/README.md` lists the code version of every
# stretch of epochs); the arithmetic is the same up to float32 rounding, so a
# resumed run is not bit-identical to an uninterrupted one. Wall time below is
# the epochs' seconds summed over all sessions.

# %%
display(Markdown(format_runs(runs, "markdown")))

# %% [markdown]
# Once a run has finished, the trainer writes `result.json`, and its `last.npz`
# and `best.npz` are published *weights only* (`python -m tqref export …
# --format weights`): without the momentum buffers (one per parameter, as
# large as the weights), which only resuming needs. A check for every
# finished run: `result.json` repeats what the log says, and both checkpoints
# are weights only, at the epochs the log names; and the 200-epoch runs took
# about ten hours each.

# %%
for run in runs:
    if not run["finished"]:
        print(f"{run['run']:28s} {run['status']}: not checked")
        continue
    result = json.loads((run["folder"] / "result.json").read_text())
    last, best = (load_checkpoint(run["folder"] / name) for name in ("last.npz", "best.npz"))
    assert result["epochs"] == run["epochs_done"] == last.epoch == len(run["log"])
    assert (result["final_top1"], result["best_top1"], result["best_epoch"]) == \
        (run["final_top1"], run["best_top1"], run["best_epoch"])
    assert best.epoch == run["best_epoch"] and last.weights_only and best.weights_only
    assert not any(key.startswith("momentum.") for c in (last, best) for key in c.optim_state)
    if run["epochs_planned"] == 200:
        assert 9 * 3600 < run["wall_seconds"] < 10.5 * 3600
    print(f"{run['run']:28s} result.json = log; last.npz epoch {last.epoch}, best.npz epoch {best.epoch}; "
          f"both weights only; best − final {100 * (run['best_top1'] - run['final_top1']):+.2f} points")

# %% [markdown]
# ## The log: the learning rate of every epoch
#
# The trainer counts epochs from 0 and logs them from 1: logged epoch $e$ was
# trained with the schedule's learning rate at $e - 1$. So a milestone $m$
# (the rate is multiplied by its factor from epoch $m$ on, counting from 0)
# makes logged epoch $m + 1$ the first at the new rate. Every logged rate
# should be the one the schedule in `config.json` gives.

# %%
for run in runs:
    schedule = run["config"].make_schedule()
    logged = np.array([r["lr"] for r in run["log"]])
    planned = np.array([schedule.lr_at(r["epoch"] - 1) for r in run["log"]])
    assert np.allclose(logged, planned, rtol=1e-12, atol=0)
    print(f"{run['run']:28s} {len(logged):3d} epochs at the rates of: {run['config'].describe_schedule()}")

# %% [markdown]
# ## The log: Δ, α and sparsity are what the quantizer computes
#
# After each epoch the trainer logs, per ternary layer and expansion, Δ (the
# key `threshold`), α and the sparsity that Eqs. (1)–(3) give on the latent
# weights of that moment; the last record was written from the weights that
# `last.npz` holds. First one layer by hand, then every layer of every
# ternary run against its quantizer (`layer.quantize()`, what the forward pass
# uses). The log stores floats as JSON, so they must agree to float precision,
# the counts of zero codes exactly.

# %%
ternary_runs = [run for run in runs if run["ternary"]]
models = {run["run"]: load_model(run["folder"] / "last.npz")[0] for run in runs}
scratch = resnet20["ternary"]
layers = dict(ternary_layers(models[scratch["run"]]))
logged = scratch["log"][-1]["layers"]["layer2.0.conv1"]
w = layers["layer2.0.conv1"].params["weight"]
layer_threshold = threshold(w)                          # Eq. (1)
codes = ternary_codes(w, layer_threshold)               # Eq. (3)
layer_alpha = alpha(w, layer_threshold)                 # Eq. (2)
magnitude = np.abs(w.astype(np.float64))
assert layer_threshold == PAPER_DELTA * magnitude.max()
assert np.isclose(layer_alpha, magnitude[magnitude >= layer_threshold].mean(), rtol=1e-12, atol=0)
print(f"{scratch['run']}, layer2.0.conv1: Δ = {layer_threshold:.6f} (log {logged['threshold'][0]:.6f}), "
      f"α = {layer_alpha:.6f} (log {logged['alpha'][0]:.6f}), zeros {np.mean(codes == 0):.4%} "
      f"(log {logged['sparsity'][0]:.4%})")

for run in ternary_runs:
    record, worst = run["log"][-1]["layers"], 0.0
    for name, layer in ternary_layers(models[run["run"]]):
        for k, q in enumerate(layer.quantize()):  # one entry per expansion
            for key, value in (("threshold", q.threshold), ("alpha", q.alpha)):
                worst = max(worst, abs(value - record[name][key][k]) / abs(value))
            assert int(np.sum(q.codes == 0)) == round(record[name]["sparsity"][k] * q.codes.size)
    assert worst < 1e-6
    print(f"{run['run']:28s} {len(record)} layers × {run['t_ex']} expansion(s): largest relative difference "
          f"{worst:.1e}; zero-code counts identical")

# %% [markdown]
# ## The checkpoints give the logged accuracy
#
# We evaluate the last checkpoint of the ResNet-20 runs from scratch and of
# the six deeper runs on the whole test set (the fine-tunes are evaluated in
# notebook 08), with the forward pass that the trainer's `evaluate` uses
# (evaluation mode, batches of 256), and compare with the top-1 logged for
# that epoch. The two should be equal; on
# another machine they may differ by an image or two (0.0001 each): another
# BLAS or convolution kernel sums the same products in another order, which
# changes the logits in their last float32 bits, and an image whose two
# largest logits are nearly tied can then change its predicted class. We
# allow at most 3 images and count the near-ties, the candidates for such a
# flip. This is the slow cell: eight passes over the test set.

# %%
data = load_cifar10(verbose=False)
test_images, test_labels = data["test_images"], data["test_labels"]


def test_logits(model):
    """The model's logits for the whole test set, (10000, 10), with nothing kept for a backward pass."""
    with no_grad():
        return np.concatenate([model.forward(normalize(test_images[i:i + 256]))
                               for i in range(0, len(test_images), 256)])


evaluated = [row[key] for row in [resnet20] + deeper_rows for key in ("fp", "ternary")]
correct = {}
print(f"{'run':28s} {'evaluated':>9s} {'logged':>7s} {'images':>6s}   near-ties: top two logits within 1e-3, 1e-4")
for run in evaluated:
    logits = test_logits(models[run["run"]])
    correct[run["run"]] = logits.argmax(axis=1) == test_labels
    top1, difference = correct[run["run"]].mean(), round((correct[run["run"]].mean() - run["final_top1"]) * 10_000)
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    print(f"{run['run']:28s} {top1:9.4f} {run['final_top1']:7.4f} {difference:+6d}   "
          f"{np.sum(margin < 1e-3):4d} {np.sum(margin < 1e-4):4d}")
    assert abs(difference) <= 3

# %% [markdown]
# ## The data: exact and JPEG-rebuilt test images
#
# tqref's full-precision ResNet-20 ends some 3.6 points below the paper's
# 91.70 (notebook 08). Two suspects: tqref, or the data. For tqref,
# `tests/test_torch_training.py` runs the trainer's step (forward, loss,
# backward, SGD with Nesterov momentum and weight decay, batch-norm
# statistics; full precision and ternary) next to an independent PyTorch
# version on the same batches in float64, and all parameters agree to 1e-9.
# For the data: the copy used for the runs has exact pixels only for test
# images 0–999 (and training images 0–3,999); the other 55,000 images were
# rebuilt from a JPEG copy (quality 75, chroma at half resolution), which
# blurs fine detail (`docs/method.md`, "The data"). So we split the test set
# at image 1,000.
#
# The networks were *trained* on JPEG-rebuilt images too, so the exact images
# are not what they are used to: the split says whether the rebuilt test
# images are harder, not what the official files would give. With 1,000
# images, the standard error of an accuracy $p$ is $\sqrt{p(1-p)/1000}$, about
# one point. The split means something only for that copy, which we recognise
# by the MD5 of its `test_batch` (the official file is exact throughout, and
# the cell then says so and skips).

# %%
REBUILT_TEST_BATCH_MD5 = "a0583532c3045f79ecc9153dcf8f3dd3"  # test_batch of the partly rebuilt copy
EXACT_TEST_IMAGES = 1000  # test rows 0-999 kept their original pixels
test_batch = Path(data["root"]) / FOLDER / TEST_FILE
rebuilt = hashlib.md5(test_batch.read_bytes()).hexdigest() == REBUILT_TEST_BATCH_MD5
if not rebuilt:
    print(f"{TEST_FILE} here is not the partly rebuilt copy: all its images are the originals, nothing to split")
below_paper = resnet20["paper_top1_percent"]["fp"] - 100 * resnet20["fp"]["final_top1"]
print(f"full-precision ResNet-20: {below_paper:.2f} points below the paper's {resnet20['paper_top1_percent']['fp']:.2f}")
assert round(below_paper, 1) == 3.6
split = {}
for run in (evaluated[:2] if rebuilt else []):  # the ResNet-20 runs from scratch
    right = correct[run["run"]]
    parts = [right[:EXACT_TEST_IMAGES], right[EXACT_TEST_IMAGES:]]
    (p_exact, se_exact), (p_jpeg, se_jpeg) = [(v.mean(), np.sqrt(v.mean() * (1 - v.mean()) / len(v))) for v in parts]
    split[run["quantization"]] = (p_exact - p_jpeg, np.hypot(se_exact, se_jpeg))
    print(f"{run['run']:26s} exact (0–999) {100 * p_exact:.2f} ± {100 * se_exact:.2f} %, "
          f"JPEG-rebuilt (1000–9999) {100 * p_jpeg:.2f} ± {100 * se_jpeg:.2f} %; "
          f"difference {100 * (p_exact - p_jpeg):+.2f} ± {100 * np.hypot(se_exact, se_jpeg):.2f} points")

# %% [markdown]
# Both networks score higher on the exact images, full precision by more than
# two standard errors of the difference, ternary by less. That fits the data
# being part of the gap to the paper, but 1,000 images cannot say how large
# that part is.

# %%
if rebuilt:
    (d_fp, se_fp), (d_ternary, se_ternary) = split["full precision"], split["ternary t_ex=1"]
    assert d_fp > 2 * se_fp and 0 < d_ternary < 2 * se_ternary
    print(f"full precision: {d_fp / se_fp:.1f} standard errors; ternary: {d_ternary / se_ternary:.1f}")

# %% [markdown]
# ## The paired test in detail
#
# Let $a_i, b_i \in \{0, 1\}$ say whether networks A and B classify test image
# $i$ correctly, and $d_i = b_i - a_i \in \{-1, 0, +1\}$. The gap is the mean
# of the $d_i$. With $n_{10}$ images only A gets right and $n_{01}$ only B
# (08 called them $b$ and $c$),
#
# $$\bar d = \frac{n_{01} - n_{10}}{n}, \qquad
# \overline{d^2} = \frac{n_{01} + n_{10}}{n}, \qquad
# \text{SE}(\bar d) = \sqrt{\frac{\overline{d^2} - \bar d^{\,2}}{n}}:$$
#
# the standard error of a mean, with the variance of the $d_i$ written in
# counts. The images both networks get right or both get wrong have $d_i = 0$,
# so the variance is about $(n_{01} + n_{10})/n$, the share of disagreements.
# Two accuracies measured on separate test sets would add their variances,
# $p_A(1-p_A) + p_B(1-p_B)$: twice as large here (printed below), which is why
# pairing pays. For a p-value:
# if A and B were equally accurate, each of the $n_{01} + n_{10}$ images they
# disagree on would favour B like a fair coin, so $n_{01} \sim
# \text{Binomial}(n_{01} + n_{10}, \tfrac12)$, and the exact two-sided
# p-value is twice the smaller tail (McNemar's test in its exact form). The
# cell recomputes all of it for the ResNet-20 pair and compares with
# `paired_difference`, and with the normal approximation
# $z = (n_{01} - n_{10})/\sqrt{n_{01} + n_{10}}$.

# %%
a, b = correct[resnet20["fp"]["run"]], correct[resnet20["ternary"]["run"]]
d = b.astype(int) - a.astype(int)
n01, n10, n = int(np.sum(d == 1)), int(np.sum(d == -1)), len(d)
se_by_hand = np.sqrt(((n01 + n10) / n - d.mean() ** 2) / n)
tail = sum(math.comb(n01 + n10, k) for k in range(min(n01, n10) + 1)) / 2 ** (n01 + n10)
z = (n01 - n10) / math.sqrt(n01 + n10)
out = paired_difference(a, b)
print(f"n10 = {n10} (only full precision right), n01 = {n01} (only ternary right), n = {n}")
print(f"gap {100 * d.mean():+.2f} points; SE by hand {100 * se_by_hand:.3f}, as the std of d / √n "
      f"{100 * d.std() / np.sqrt(n):.3f}, paired_difference {100 * out['standard_error']:.3f}")
print(f"exact p {min(1, 2 * tail):.4f} (paired_difference {out['p_value']:.4f}); normal approximation: "
      f"z = {z:.2f}, p ≈ {math.erfc(abs(z) / math.sqrt(2)):.4f}")
assert (out["only_a"], out["only_b"]) == (n10, n01) and np.isclose(d.mean(), out["difference"], rtol=0, atol=1e-15)
assert np.isclose(se_by_hand, out["standard_error"]) and np.isclose(se_by_hand, d.std() / np.sqrt(n))
assert np.isclose(min(1, 2 * tail), out["p_value"], rtol=1e-12)
paired_var, unpaired_var = d.var(), a.mean() * (1 - a.mean()) + b.mean() * (1 - b.mean())
print(f"variance of d: {paired_var:.4f} (share of disagreements {(n01 + n10) / n:.4f}); "
      f"two separate accuracies: {unpaired_var:.4f}, {unpaired_var / paired_var:.2f} times as large")
assert 1.8 < unpaired_var / paired_var < 2.2

# %% [markdown]
# **Reading an interval against an aim.** The 95 % interval is gap ± 1.96 SE.
# Against an aim "at most $x$ points below the reference", an interval wholly
# below $-x$ misses the aim beyond the test set's noise; one wholly above
# $-x$ meets it beyond that noise; one that holds $-x$ leaves the question
# open. The p-value answers another question: whether the two networks differ
# at all.

# %%
def paired_report(reference, candidates):
    """Each candidate run against the reference run on the same test images.

    candidates: [(run, aim), ...], aim the largest loss of top-1 allowed, as a fraction
    (0.002 for 0.2 points). Prints one row per candidate and its verdict; returns the verdicts."""
    ref_right = correct[reference["run"]]
    print(f"reference: {reference['run']}, top-1 {ref_right.mean():.2%}")
    print(f"{'run':26s} {'top-1':>7s} {'only ref.':>9s} {'only it':>8s} {'gap ± SE':>14s} {'95 % interval':>16s} "
          f"{'p':>7s}")
    verdicts = {}
    for run, aim in candidates:
        right = correct[run["run"]]
        out = paired_difference(ref_right, right)
        gap, se = 100 * out["difference"], 100 * out["standard_error"]
        low, high = gap - 1.96 * se, gap + 1.96 * se
        print(f"{run['run']:26s} {right.mean():7.2%} {out['only_a']:9d} {out['only_b']:8d} {gap:+7.2f} ± {se:.2f} "
              f"{f'[{low:+.2f}, {high:+.2f}]':>16s} {out['p_value']:7.3g}")
        limit = -100 * aim
        verdicts[run["run"]] = ("missed beyond the noise" if high < limit else
                                "met beyond the noise" if low > limit else "open: the interval holds the aim")
        print(f"  aim: at most {100 * aim:.1f} points below: {verdicts[run['run']]}")
    return verdicts


verdict20 = paired_report(resnet20["fp"], [(resnet20["ternary"], 0.002)])
assert verdict20[resnet20["ternary"]["run"]].startswith("open")

# %% [markdown]
# ## The deeper networks, paired
#
# ResNet-32, -44 and -56 were trained for 30 epochs (full precision and
# ternary alike), not 200, and the aim set for them was ternary within 0.3
# points of full precision at the final epoch (`results/README.md`). A short schedule was expected
# to favour full precision: in the 200-epoch ResNet-20 runs, ternary trails by
# far more averaged over all epochs than over the last 40 (printed below).
# Each depth against its own full-precision run:

# %%
gap20 = 100 * np.array([t["test_top1"] - f["test_top1"] for f, t in zip(resnet20["fp"]["log"],
                                                                          resnet20["ternary"]["log"])])
print(f"ResNet-20, ternary − full precision: mean over all {len(gap20)} epochs {gap20.mean():+.2f}, "
      f"over the last 40 {gap20[-40:].mean():+.2f}\n")
assert gap20.mean() < 2 * gap20[-40:].mean() < 0
deeper = {}
for row in deeper_rows:
    deeper.update(paired_report(row["fp"], [(row["ternary"], 0.003)]))
    print()

# %% [markdown]
# All three intervals hold −0.3: the ResNet-32 miss and the ResNet-44 and -56
# successes are what was measured, and the test set alone can certify none of
# them. ResNet-32 is the only depth whose ternary network differs from full
# precision beyond the noise (p < 0.05). Whether each depth fits the
# expectation of the short schedule, one run per depth cannot settle.

# %%
assert all(v.startswith("open") for v in deeper.values())
p_deeper = {row["model"]: paired_difference(correct[row["fp"]["run"]], correct[row["ternary"]["run"]])["p_value"]
            for row in deeper_rows}
print(p_deeper)
assert [m for m, p in p_deeper.items() if p < 0.05] == ["resnet32"]

# %% [markdown]
# ## The codes of the final ternary model
#
# Eq. (3) is symmetric: a weight and its negative get opposite codes. Whether
# the *trained* codes are balanced between −1 and +1 is a property of the
# latent weights. Per layer of the from-scratch ternary ResNet-20: the share of
# each code, and how far $n_+$ and $n_-$ differ, as
# $(n_+ - n_-)/\sqrt{n_+ + n_-}$. For signs drawn like fair coins this is
# about standard normal, so values far beyond ±3 mean that a layer's weights
# lean to one sign. (Every layer but the first sees inputs that have passed a
# ReLU and are never negative, so nothing in the network asks for balanced
# signs.)

# %%
counts = {}
for name, layer in ternary_layers(models[scratch["run"]]):
    q = layer.quantize()[0].codes
    counts[name] = np.array([np.sum(q == value) for value in (-1, 0, 1)])
total = sum(counts.values())
print(f"{'layer':16s} {'weights':>7s} {'−1':>6s} {'0':>6s} {'+1':>6s} {'(n+ − n−)/√(n+ + n−)':>21s}")
for name, (minus, zero, plus) in list(counts.items()) + [("whole model", total)]:
    m = minus + zero + plus
    print(f"{name:16s} {m:7,} {minus / m:6.1%} {zero / m:6.1%} {plus / m:6.1%} "
          f"{(plus - minus) / np.sqrt(plus + minus):+21.1f}")
assert np.isclose(total[1] / total.sum(), scratch["sparsity"], rtol=1e-12, atol=0)

names = list(counts)
shares = np.array([c / c.sum() for c in counts.values()])
fig, ax = plt.subplots(figsize=(10, 3.2), layout="constrained")
bottom = np.zeros(len(names))
for k, (label, color) in enumerate([("−1", "C3"), ("0", "0.8"), ("+1", "C0")]):
    ax.bar(range(len(names)), shares[:, k], bottom=bottom, color=color, label=label)
    bottom += shares[:, k]
ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
ax.set(ylabel="share of the codes", ylim=(0, 1), title=f"ternary codes of each layer, epoch {scratch['epochs_done']}")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
plt.show()

# %% [markdown]
# The codes lean to −1: the whole model has more −1 than +1 codes, by far
# more than fair coins would give, and so does every layer whose imbalance
# lies beyond ±3.

# %%
z_layers = {name: (c[2] - c[0]) / np.sqrt(c[2] + c[0]) for name, c in counts.items()}
z_total = (total[2] - total[0]) / np.sqrt(total[2] + total[0])
beyond = [name for name, v in z_layers.items() if abs(v) > 3]
print(f"whole model {z_total:+.1f}; {len(beyond)} of {len(z_layers)} layers beyond ±3, all of them negative: "
      f"{all(z_layers[n] < 0 for n in beyond)}")
assert z_total < -3 and all(z_layers[n] < 0 for n in beyond)

# %% [markdown]
# ## Summary
#
# - A run folder tells one story: `result.json` repeats the log, the
#   checkpoints sit at the epochs the log names, every logged learning rate is
#   the schedule's, and the logged Δ, α and sparsity are what the quantizer
#   computes from the checkpoint's weights.
# - A checkpoint re-evaluates to its logged top-1, up to the near-ties that
#   another machine's float32 rounding may flip (at most 3 images allowed).
# - On the partly rebuilt CIFAR-10 copy, both ResNet-20s score higher on the
#   1,000 exact test images than on the 9,000 rebuilt ones; 1,000 images
#   cannot say by how much.
# - The paired test uses only the images two networks disagree on: the gap
#   is the mean of $d_i = b_i - a_i$, its error that of a mean, the exact
#   p-value a binomial tail. An interval is read against the aim, the p-value
#   against "no difference".
# - The deeper networks' gaps are measured, not certified: each interval holds
#   the aim of −0.3 points.
# - The trained codes are not balanced: they lean to −1.
#
# ## Exercises
#
# 1. *(code)* Reproduce the compression column of the paper's table by hand
#    from the ternary ResNet-20 in `results/resnet20-ternary/last.npz`: 2 bits
#    per ternary weight, one float32 α per layer, every other parameter
#    (batch-norm γ and β, the linear bias) in float32. Why is it below 16×?
# 2. *(code)* With the paper's schedule, which logged epochs are the first at
#    each new learning rate, and what rate do the last 40 epochs use? Check
#    your answer against the log.
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)

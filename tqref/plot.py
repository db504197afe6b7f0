"""Figures of a training run (matplotlib, Agg: no display needed).

    plot_run(run_dir)  ->  list of PNG paths written into run_dir:
        curves.png    train / test loss and train / test top-1 (and test top-5) per epoch
        lr.png        the learning rate of each epoch
        sparsity.png  ternary runs: fraction of zero weights of every layer per epoch,
                      one panel per expansion
        weights.png   histogram of each layer's latent (full-precision) weights from
                      last.npz; for ternary layers the thresholds ±Δ_k are marked

Each function takes plain data (the records of log.jsonl, a model) so a
notebook can call it too.  The figures are built on ``matplotlib.figure.Figure``
with the Agg canvas, never through pyplot's global state.
"""

import io
import math
from pathlib import Path

import numpy as np


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _integer_epochs(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path):
    from tqref.io import atomic_write_bytes
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_curves(records, path, title=""):
    """Loss and accuracy per epoch (records: the dicts of log.jsonl)."""
    epochs = [r["epoch"] for r in records]
    fig = _figure(11, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in records], "o-", ms=3, label="train (augmented)")
    ax_loss.plot(epochs, [r["test_loss"] for r in records], "o-", ms=3, label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [r["train_acc"] for r in records], "o-", ms=3, label="train top-1 (augmented)")
    ax_acc.plot(epochs, [r["test_top1"] for r in records], "o-", ms=3, label="test top-1")
    ax_acc.plot(epochs, [r["test_top5"] for r in records], "--", lw=1, label="test top-5")
    best = max(records, key=lambda r: r["test_top1"])
    ax_acc.plot([best["epoch"]], [best["test_top1"]], "k*", ms=10,
                label=f"best test top-1 {best['test_top1']:.4f} (epoch {best['epoch']})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_lr(records, path):
    """The learning rate used in each epoch (log scale)."""
    fig = _figure(6, 3.5)
    ax = fig.subplots()
    ax.step([r["epoch"] for r in records], [r["lr"] for r in records], where="mid")
    ax.set(xlabel="epoch", ylabel="learning rate", yscale="log", title="learning rate")
    ax.grid(alpha=0.3, which="both")
    _integer_epochs(ax)
    return _save(fig, path)


def plot_sparsity(records, path):
    """Per-layer sparsity (fraction of T = 0) over the epochs, one panel per
    expansion; the thick black line is the whole network's (first expansion)."""
    import matplotlib
    layer_names = list(records[-1]["layers"])
    n_exp = max(len(records[-1]["layers"][name]["sparsity"]) for name in layer_names)
    fig = _figure(6 * n_exp + 2, 4.5)
    axes = np.atleast_1d(fig.subplots(1, n_exp))
    cmap = matplotlib.colormaps["viridis"]
    epochs = [r["epoch"] for r in records]
    for k, ax in enumerate(axes):
        for i, name in enumerate(layer_names):
            values = [r["layers"].get(name, {}).get("sparsity", [math.nan] * n_exp)[k] for r in records]
            ax.plot(epochs, values, color=cmap(i / max(1, len(layer_names) - 1)), lw=1, label=name)
        if k == 0:
            ax.plot(epochs, [r.get("sparsity") for r in records], "k-", lw=2.5, label="whole network")
        ax.set(xlabel="epoch", ylabel="fraction of zero weights", ylim=(0, 1),
               title=f"sparsity, expansion {k + 1}" if n_exp > 1 else "sparsity per layer")
        ax.grid(alpha=0.3)
        _integer_epochs(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5),
                    ncol=1 + len(labels) // 25)
    return _save(fig, path)


def plot_weight_histograms(model, path, bins=80):
    """Histogram of every conv / linear layer's latent weights; for ternary
    layers, dashed lines at ±Δ_k of each expansion and α_k in the title."""
    from tqref.io import ternary_layers
    ternary = dict(ternary_layers(model))
    layers = [(name, m) for name, m in model.named_modules()
              if name in ternary or (type(m).__name__ in ("Conv2d", "Linear") and "weight" in m.params)]
    cols = min(6, len(layers))
    rows = -(-len(layers) // cols)
    fig = _figure(2.8 * cols, 2.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (name, layer) in zip(axes, layers):
        w = layer.params["weight"].ravel()
        ax.hist(w, bins=bins, color="0.55")
        title = name
        if name in ternary:
            quantized = layer.quantize()
            colors = ("C3", "C0", "C2", "C1")
            for k, q in enumerate(quantized):
                if q.threshold is not None and np.ndim(q.threshold) == 0 and float(q.threshold) > 0:
                    for sign in (-1, 1):
                        ax.axvline(sign * float(q.threshold), color=colors[k % 4], ls="--", lw=1)
            title += "\nα = " + ", ".join(_short(q.alpha) for q in quantized)
            title += f", zeros {np.mean(quantized[0].codes == 0):.0%}"
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in axes[len(layers):]:
        ax.set_axis_off()
    what = "latent weights, dashed: ±Δ (Eq. 1)" if ternary else "weights"
    fig.suptitle(f"histograms of {what}")
    return _save(fig, path)


def _short(value):
    if np.ndim(value) == 0:
        return f"{float(value):.3g}"
    values = np.asarray(value, dtype=float).ravel()
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")" if values.size <= 2 else \
        f"{values.mean():.3g} (mean of {values.size})"


def plot_run(run_dir, out_dir=None):
    """All figures of a run folder; returns the paths written."""
    from tqref.io import load_model
    from tqref.train import read_log
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"plot: {run_dir} is not a folder")
    records = read_log(run_dir)
    if not records:
        raise FileNotFoundError(f"plot: {run_dir / 'log.jsonl'} is missing or empty: not a run folder, "
                                f"or the run has not finished an epoch yet")
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(records, out / "curves.png", title=str(run_dir)),
               plot_lr(records, out / "lr.png")]
    if records[-1].get("layers"):
        written.append(plot_sparsity(records, out / "sparsity.png"))
    if (run_dir / "last.npz").is_file():
        model, _ = load_model(run_dir / "last.npz")
        written.append(plot_weight_histograms(model, out / "weights.png"))
    return written

"""What the student tests (tests/course/) check with: hidden inputs, independent
references and one-line messages.

* Hidden inputs.  ``rng_for(key)`` draws from the seed in the environment
  variable TQREF_GRADE_SEED when it is set, else from a fresh random seed
  (one per process, printed by ``course grade`` and ``course test``), so an
  answer hard-coded for one input fails the next run.
* References that are not the student's code: the convolution through the
  FFT (the convolution theorem; ``conv_reference``), numeric gradients of
  that reference or of the library's batch-norm forward
  (``tqref.gradcheck``), and quantizer inputs built so that Δ, α and T are
  known by construction (``planted_weights``).
* Messages: every failed check raises AssertionError with one line that
  names the function, the inputs, the quantity, the error and the worst
  entry (expected vs got).
"""

import os
import secrets
import sys
import zlib
from typing import NamedTuple

import numpy as np

from tqref.gradcheck import numeric_gradient

SEED_ENV = "TQREF_GRADE_SEED"
_SEED = []


def grade_seed():
    """The seed of this run's hidden inputs: $TQREF_GRADE_SEED, else a fresh one."""
    if not _SEED:
        text = os.environ.get(SEED_ENV, "").strip()
        if text:
            try:
                seed = int(text)
            except ValueError:
                raise ValueError(f"environment variable {SEED_ENV}: expected an integer, got {text!r}") from None
            if seed < 0:
                raise ValueError(f"environment variable {SEED_ENV}: expected a non-negative integer, got {seed}")
        else:
            seed = secrets.randbelow(2**31)
        _SEED.append(seed)
    return _SEED[0]


def rng_for(key):
    """A generator for one test: the run's seed and the test's name (``key``), so
    each test draws the same inputs whatever else runs, and other ones next run."""
    return np.random.default_rng([grade_seed(), zlib.crc32(str(key).encode())])


# ---------------------------------------------------------------- messages
def fail(message):
    __tracebackhide__ = True
    raise AssertionError(message)


def shape_of(a):
    return f"{tuple(a.shape)} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__


def _index(idx):
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def check_array(what, got, expected, tol=1e-9, dtype=None, floor=0.0):
    """``got`` must be an array of ``expected``'s shape and dtype (or ``dtype``)
    whose largest deviation is at most ``tol`` times the largest |expected|
    (integer arrays: equal).  ``floor``: a least scale, for results that can be
    all (nearly) zero, e.g. max|x|·max|w| for a convolution.  ``what`` starts the
    message, e.g. "conv2d_forward(x (2, 3, 5, 5), ...): out"."""
    __tracebackhide__ = True
    expected = np.asarray(expected)
    dtype = np.dtype(dtype or expected.dtype)
    if not isinstance(got, np.ndarray):
        fail(f"{what}: expected a numpy array of shape {expected.shape}, got {type(got).__name__}"
             + (" (is the function finished? it returns nothing)" if got is None else ""))
    if got.shape != expected.shape:
        fail(f"{what}: expected shape {expected.shape}, got {got.shape}")
    if got.dtype != dtype:
        fail(f"{what}: expected dtype {dtype}, got {got.dtype}")
    if dtype.kind in "iub":
        wrong = np.argwhere(got != expected)
        if len(wrong):
            idx = tuple(wrong[0])
            fail(f"{what}: {len(wrong)} of {got.size} entries wrong; at {_index(idx)} expected "
                 f"{expected[idx]}, got {got[idx]}")
        return
    bad = np.argwhere(~np.isfinite(got))
    if len(bad):
        fail(f"{what}: NaN or inf at {_index(bad[0])}")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    scale = max(float(np.max(np.abs(expected), initial=0.0)), float(floor))
    err = float(np.max(diff, initial=0.0)) / max(scale, 1e-300)
    if err > tol:
        idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
        fail(f"{what}: relative error {err:.1e} > {tol:.0e} (to the scale {scale:.3g}); "
             f"at {_index(idx)} expected {float(expected[idx]):.6g}, got {float(got[idx]):.6g}")


def check_number(what, got, expected, rtol=1e-9):
    """``got`` must be one number (a float, or a 0-d array) within ``rtol`` of ``expected``."""
    __tracebackhide__ = True
    if isinstance(got, np.ndarray) and got.ndim == 0:
        got = got[()]
    if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
        fail(f"{what}: expected one number, got {shape_of(got)}"
             + (" (is the function finished? it returns nothing)" if got is None else ""))
    if not np.isfinite(got):
        fail(f"{what}: expected {expected:.6g}, got {got}")
    if abs(float(got) - float(expected)) > rtol * abs(float(expected)):
        fail(f"{what}: expected {float(expected):.8g}, got {float(got):.8g}")


def check_unchanged(what, before, after):
    __tracebackhide__ = True
    if not np.array_equal(before, after, equal_nan=True):
        fail(f"{what} was changed in place; a forward or backward function must not modify its inputs")


def check_tuple(what, result, size, names):
    __tracebackhide__ = True
    if not isinstance(result, tuple) or len(result) != size:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        fail(f"{what}: expected a tuple ({', '.join(names)}), got {got}")
    return result


def python_lines_executed(fn, *args, **kwargs):
    """(result, the number of Python lines run by ``fn(*args)``, NumPy's own included):
    a measure of how much the code loops in Python, independent of the machine's speed."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.settrace(previous)
    return result, count


# ---------------------------------------------------------------- convolution
class ConvCase(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    b: object        # (F,) or None
    stride: int
    padding: int
    dout: np.ndarray  # an upstream gradient of the output's shape

    def describe(self):
        b = "None" if self.b is None else f"{self.b.shape}"
        return (f"x {self.x.shape} {self.x.dtype}, w {self.w.shape}, b {b}, stride {self.stride}, "
                f"padding {self.padding}")


def output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def conv_case(rng, N, C, H, W, F, HH, WW, stride=1, padding=0, bias=True, dtype=np.float64):
    Ho, Wo = output_size(H, HH, stride, padding), output_size(W, WW, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv_case: kernel {HH}x{WW} does not fit {H}x{W} with padding {padding}")
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if bias else None
    dout = rng.standard_normal((N, F, Ho, Wo)).astype(dtype)
    return ConvCase(x, w, b, int(stride), int(padding), dout)


def random_conv_cases(rng, count, max_batch=3, max_channels=3, max_size=7, max_filters=4, max_kernel=3,
                      dtype=np.float64):
    """``count`` convolutions of random sizes, kernels, strides (1-3) and paddings (0-2);
    the first has a batch of at least 2 and overlapping windows."""
    cases = []
    while len(cases) < count:
        first = not cases
        N = int(rng.integers(2 if first else 1, max_batch + 1))
        C, F = int(rng.integers(1, max_channels + 1)), int(rng.integers(1, max_filters + 1))
        H, W = (int(v) for v in rng.integers(3, max_size + 1, 2))
        HH, WW = (int(v) for v in rng.integers(2 if first else 1, max_kernel + 1, 2))
        stride = 1 if first else int(rng.integers(1, 4))
        padding = int(rng.integers(0, 3))
        if output_size(H, HH, stride, padding) < 1 or output_size(W, WW, stride, padding) < 1:
            continue
        cases.append(conv_case(rng, N, C, H, W, F, HH, WW, stride, padding, bool(rng.integers(0, 2)) or first,
                               dtype))
    return cases


def conv_reference(x, w, b=None, stride=1, padding=0):
    """The convolution (cross-correlation) through the FFT, in float64: an
    independent reference.  For each image and filter, the circular
    cross-correlation of the padded image with the kernel is
    irfft2(X · conj(K)); where the kernel does not wrap around (the first
    Hp − HH + 1 rows and Wp − WW + 1 columns) it is the convolution at stride
    1, and every stride-th of those entries is the output."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    F, C, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Hp, Wp = xp.shape[2:]
    X = np.fft.rfft2(xp, s=(Hp, Wp))
    K = np.fft.rfft2(w, s=(Hp, Wp))
    full = np.fft.irfft2(np.einsum("nchw,fchw->nfhw", X, K.conj()), s=(Hp, Wp))
    out = full[:, :, : Hp - HH + 1 : stride, : Wp - WW + 1 : stride]
    if b is not None:
        out = out + np.asarray(b, np.float64)[None, :, None, None]
    return np.ascontiguousarray(out)


def check_conv_forward(name, forward, case, tol=None):
    """``forward`` against the FFT reference on ``case``; returns (out, cache)."""
    __tracebackhide__ = True
    x0, w0 = case.x.copy(), case.w.copy()
    what = f"{name}({case.describe()})"
    result = check_tuple(what, forward(case.x, case.w, case.b, case.stride, case.padding), 2, ("out", "cache"))
    out, cache = result
    expected = conv_reference(case.x, case.w, case.b, case.stride, case.padding)
    tol = tol or (1e-9 if case.x.dtype == np.float64 else 2e-5)
    check_array(f"{what}: out", out, expected.astype(case.x.dtype), tol, floor=_peak(case.x) * _peak(case.w))
    check_unchanged(f"{name}: x", x0, case.x)
    check_unchanged(f"{name}: w", w0, case.w)
    return out, cache


def _peak(a):
    return float(np.max(np.abs(a), initial=0.0))


def conv_numeric_gradients(case):
    """∂L/∂x, ∂L/∂w, ∂L/∂b of L = Σ conv_reference(x, w, b) · dout by central differences
    (tqref.gradcheck) in float64.  The convolution is linear in each, so a large
    step (1e-3) is exact up to rounding."""
    x, w = case.x.astype(np.float64), case.w.astype(np.float64)
    b = None if case.b is None else case.b.astype(np.float64)
    dout = case.dout.astype(np.float64)

    def f():
        return conv_reference(x, w, b, case.stride, case.padding)

    grads = {"dx": numeric_gradient(f, x, dout, h=1e-3), "dw": numeric_gradient(f, w, dout, h=1e-3)}
    grads["db"] = None if b is None else numeric_gradient(f, b, dout, h=1e-3)
    return grads


def check_conv_backward(names, forward, backward, case, tol=None):
    """``backward`` (given ``forward``'s cache) against numeric gradients of the reference."""
    __tracebackhide__ = True
    out, cache = forward(case.x, case.w, case.b, case.stride, case.padding)
    dout0 = case.dout.copy()
    what = f"{names[1]}(dout {case.dout.shape}) after {names[0]}({case.describe()})"
    dx, dw, db = check_tuple(what, backward(case.dout, cache), 3, ("dx", "dw", "db"))
    numeric = conv_numeric_gradients(case)
    tol = tol or (1e-7 if case.x.dtype == np.float64 else 2e-5)
    g = _peak(case.dout)
    check_array(f"{what}: dx (against the numeric gradient)", dx, numeric["dx"].astype(case.x.dtype), tol,
                floor=g * _peak(case.w))
    check_array(f"{what}: dw (against the numeric gradient)", dw, numeric["dw"].astype(case.x.dtype), tol,
                floor=g * _peak(case.x))
    if case.b is None:
        if db is not None:
            fail(f"{what}: db: expected None (the forward had no bias), got {shape_of(db)}")
    else:
        check_array(f"{what}: db (against the numeric gradient)", db, numeric["db"].astype(case.x.dtype), tol,
                    floor=g)
    check_unchanged(f"{names[1]}: dout", dout0, case.dout)
    return dx, dw, db


# ---------------------------------------------------------------- batch norm
def bn_inputs(rng, shape, dtype=np.float64):
    """x with a per-channel mean and spread, γ, β, running statistics; all of ``dtype``."""
    C = shape[1]
    x = rng.normal(0, 1, shape) * rng.uniform(0.5, 3.0, (1, C, 1, 1)) + rng.normal(0, 2, (1, C, 1, 1))
    gamma = rng.uniform(0.5, 2.0, C) * rng.choice([-1, 1], C)
    beta = rng.normal(0, 1, C)
    running_mean, running_var = rng.normal(0, 1, C), rng.uniform(0.5, 2.0, C)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, running_mean, running_var))


def bn_numeric_gradients(forward, x, gamma, beta, running_mean, running_var, training, eps, dout):
    """∂L/∂x, ∂L/∂γ, ∂L/∂β of L = Σ forward(x, γ, β, ...) · dout by central differences in
    float64 (``forward``: the library's batchnorm_forward; the running statistics are copied
    for every call, so they do not drift)."""
    x, gamma, beta = (a.astype(np.float64) for a in (x, gamma, beta))
    rm, rv = running_mean.astype(np.float64), running_var.astype(np.float64)

    def f():
        return forward(x, gamma, beta, rm.copy(), rv.copy(), training, 0.1, eps)[0]

    d = dout.astype(np.float64)
    return (numeric_gradient(f, x, d, h=1e-5), numeric_gradient(f, gamma, d, h=1e-5),
            numeric_gradient(f, beta, d, h=1e-5))


# ---------------------------------------------------------------- quantizer
class Planted(NamedTuple):
    """A weight tensor whose ternarization is known by construction.

    w:         the latent weight (``dtype``)
    factors:   δ_1 < δ_2 < ... (one per expansion)
    thresholds: Δ_k = δ_k · max|W| (float, or (F,) per channel)
    alphas:    α_k = mean of the magnitudes in bands ≥ k (float or (F,))
    codes:     T_k = sign(W) where |W| ≥ Δ_k, else 0 (int8)
    band:      for every weight, how many thresholds its magnitude reaches (0 .. t_ex)
    """

    w: np.ndarray
    factors: tuple
    thresholds: list
    alphas: list
    codes: list
    band: np.ndarray


def planted_weights(rng, shape, factors=(0.05,), dtype=np.float64, per_channel=False, ties=False,
                    zero_channels=0):
    """A weight of ``shape`` built band by band: each weight draws a band b (how many
    of the thresholds Δ_k = δ_k·M its magnitude reaches) and a magnitude inside it
    (away from the edges by 0.1 % of the band), one weight per tensor (or row, with
    ``per_channel``) is exactly ±M, some of band 0 are exactly 0.  ``ties``: some
    weights exactly at ±Δ_k (float64 only; Δ_k as δ_k·M in float64).
    ``zero_channels``: that many rows all zero (their Δ = α = 0, T = 0)."""
    dtype = np.dtype(dtype)
    rows = shape[0] if per_channel else 1
    flat = np.zeros((rows, int(np.prod(shape)) // rows))
    band = np.zeros(flat.shape, dtype=np.int64)
    t_ex = len(factors)
    maxima, deltas = np.zeros(rows), np.zeros((t_ex, rows))
    zero_rows = set(rng.choice(rows, zero_channels, replace=False).tolist()) if zero_channels else set()
    for r in range(rows):
        if r in zero_rows:
            continue
        M = float(dtype.type(rng.uniform(0.2, 3.0)))
        maxima[r] = M
        edges = [0.0] + [d * M for d in factors] + [M]
        deltas[:, r] = edges[1:-1]
        b = rng.integers(0, t_ex + 1, flat.shape[1])
        lo, hi = np.array(edges)[b], np.array(edges)[b + 1]
        mags = lo + (hi - lo) * rng.uniform(1e-3, 1 - 1e-3, b.size)
        mags[(b == 0) & (rng.uniform(size=b.size) < 0.1)] = 0.0
        top = int(rng.integers(flat.shape[1]))
        mags[top], b[top] = M, t_ex
        if ties and dtype == np.float64:
            for k in range(t_ex):
                spots = rng.choice(np.flatnonzero(np.arange(b.size) != top), min(2, b.size - 1), replace=False)
                mags[spots], b[spots] = edges[k + 1], k + 1
        flat[r] = np.where(rng.uniform(size=b.size) < 0.5, -1.0, 1.0) * mags
        band[r] = b
    w = flat.reshape(shape).astype(dtype)
    stored = np.abs(w.astype(np.float64)).reshape(rows, -1)
    signs = np.sign(w).astype(np.int8).reshape(rows, -1)
    band = band.reshape(rows, -1)
    thresholds, alphas, codes = [], [], []
    for k in range(t_ex):
        live = band >= k + 1
        count = live.sum(axis=1)
        alpha = np.where(count > 0, np.where(live, stored, 0).sum(axis=1) / np.maximum(count, 1), 0.0)
        codes.append((signs * live).astype(np.int8).reshape(shape))
        thresholds.append(deltas[k].copy() if per_channel else float(deltas[k, 0]))
        alphas.append(alpha if per_channel else float(alpha[0]))
    return Planted(w, tuple(factors), thresholds, alphas, codes, band.reshape(shape))


def random_weight_shape(rng):
    """A conv (F, C, HH, WW) or linear (F, D) weight shape, small."""
    if rng.integers(0, 2):
        return (int(rng.integers(2, 9)), int(rng.integers(1, 5)), 3, 3)
    return (int(rng.integers(2, 9)), int(rng.integers(4, 40)))

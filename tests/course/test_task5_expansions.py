"""Task 5: Eq. (5), ternarize_expansions and effective_weight in
tqref/ternary/quantize.py.

Task 3's functions are replaced here by stand-ins that answer from weights
built with a known ternarization (``tqref.course.checks.planted_weights``),
so this task is graded on its own; the stand-ins also notice when an
expansion ternarizes something other than the latent W itself.
"""

import numpy as np
import pytest

from tqref.course import checks
from tqref.ternary import quantize
from tqref.ternary.quantize import Ternarized, delta_factors_for, effective_weight, ternarize_expansions

pytestmark = pytest.mark.task5


class StandIns:
    """threshold, alpha, ternary_codes and ternarize for one planted weight."""

    def __init__(self, planted):
        self.p = planted
        self.calls = []

    def _k(self, who, w, delta_factor=None, threshold=None):
        if not (w is self.p.w or (isinstance(w, np.ndarray) and w.shape == self.p.w.shape
                                  and np.array_equal(w, self.p.w))):
            checks.fail(f"ternarize_expansions: {who} was called with an array other than the latent W; every "
                        f"expansion ternarizes the same W at its own threshold (Eq. 5), not a residual")
        for k, (d, t) in enumerate(zip(self.p.factors, self.p.thresholds)):
            if (delta_factor is not None and d == delta_factor) or \
                    (threshold is not None and np.array_equal(np.asarray(t), np.asarray(threshold))):
                return k
        checks.fail(f"ternarize_expansions: {who} was called with delta_factor={delta_factor!r} "
                    f"threshold={threshold!r}; expected one of the delta_factors {self.p.factors}")

    def ternarize(self, latent_weight, delta_factor=quantize.PAPER_DELTA, threshold_rule="max", per_channel=False):
        k = self._k("ternarize", latent_weight, delta_factor=delta_factor)
        self.calls.append(("ternarize", k, threshold_rule, per_channel))
        return Ternarized(self.p.codes[k].copy(), self.p.alphas[k], self.p.thresholds[k])

    def threshold(self, latent_weight, delta_factor=quantize.PAPER_DELTA, threshold_rule="max", per_channel=False):
        k = self._k("threshold", latent_weight, delta_factor=delta_factor)
        self.calls.append(("threshold", k, threshold_rule, per_channel))
        return self.p.thresholds[k]

    def ternary_codes(self, latent_weight, threshold):
        return self.p.codes[self._k("ternary_codes", latent_weight, threshold=threshold)].copy()

    def alpha(self, latent_weight, threshold, per_channel=False):
        k = self._k("alpha", latent_weight, threshold=threshold)
        self.calls.append(("alpha", k, None, per_channel))
        return self.p.alphas[k]


@pytest.fixture
def plant(rng, monkeypatch):
    def make(factors, per_channel=False, dtype=np.float64):
        p = checks.planted_weights(rng, checks.random_weight_shape(rng), factors, dtype, per_channel=per_channel)
        stand_ins = StandIns(p)
        for name in ("ternarize", "threshold", "ternary_codes", "alpha"):
            monkeypatch.setattr(quantize, name, getattr(stand_ins, name))
        return p, stand_ins
    return make


def _check_expansions(what, got, p):
    __tracebackhide__ = True
    try:
        items = list(got)
    except TypeError:
        checks.fail(f"{what}: expected a list of Ternarized, got {type(got).__name__}")
    if len(items) != len(p.factors):
        checks.fail(f"{what}: expected {len(p.factors)} expansions (one per delta factor), got {len(items)}")
    for k, q in enumerate(items):
        if not all(hasattr(q, name) for name in ("codes", "alpha", "threshold")):
            checks.fail(f"{what}: expansion {k}: expected a Ternarized(codes, alpha, threshold), got {q!r:.60}")
        checks.check_array(f"{what}: expansion {k} (δ = {p.factors[k]}): codes", q.codes, p.codes[k])
        checks.check_array(f"{what}: expansion {k} (δ = {p.factors[k]}): alpha", np.asarray(q.alpha, np.float64),
                           np.asarray(p.alphas[k], np.float64), 1e-15)
        checks.check_array(f"{what}: expansion {k} (δ = {p.factors[k]}): threshold",
                           np.asarray(q.threshold, np.float64), np.asarray(p.thresholds[k], np.float64), 1e-15)


def test_one_ternarization_of_the_same_w_per_delta(rng, plant):
    for t_ex in (2, 4, 1):
        p, _ = plant(delta_factors_for(t_ex))
        _check_expansions(f"ternarize_expansions(W {p.w.shape}, {p.factors})",
                          ternarize_expansions(p.w, p.factors), p)


def test_custom_nested_deltas(rng, plant):
    factors = tuple(np.round(np.sort(rng.uniform(0.01, 0.6, 3)), 4))
    if len(set(factors)) < 3:
        factors = (0.02, 0.2, 0.5)
    p, _ = plant(tuple(float(f) for f in factors))
    _check_expansions(f"ternarize_expansions(W {p.w.shape}, {p.factors})", ternarize_expansions(p.w, p.factors), p)


def test_the_default_is_one_expansion_at_the_papers_delta(rng, plant):
    p, _ = plant((0.05,))
    _check_expansions(f"ternarize_expansions(W {p.w.shape}) (default delta_factors)", ternarize_expansions(p.w), p)


def test_the_rule_and_the_granularity_are_passed_on(rng, plant):
    p, stand_ins = plant((0.05, 0.1), per_channel=True)
    got = ternarize_expansions(p.w, p.factors, "twn", True)
    _check_expansions(f"ternarize_expansions(W {p.w.shape}, {p.factors}, 'twn', per_channel=True)", got, p)
    for name, k, rule, per_channel in stand_ins.calls:
        if (rule is not None and rule != "twn") or per_channel is not True:
            checks.fail(f"ternarize_expansions(W, {p.factors}, 'twn', per_channel=True) called {name} with "
                        f"threshold_rule={rule!r}, per_channel={per_channel!r}; pass both on")


# ---------------------------------------------------------------- effective_weight
def _planted_expansions(rng, t_ex, per_channel=False):
    p = checks.planted_weights(rng, checks.random_weight_shape(rng), delta_factors_for(t_ex), per_channel=per_channel)
    expansions = [Ternarized(c.copy(), a, t) for c, a, t in zip(p.codes, p.alphas, p.thresholds)]
    # by construction: a weight in band b is sign(W)·(α_1 + ... + α_b)
    rows = p.w.shape[0] if per_channel else 1
    cumulative = np.concatenate([np.zeros((rows, 1)), np.cumsum(np.reshape(p.alphas, (t_ex, rows)).T, axis=1)], 1)
    band = p.band.reshape(rows, -1)
    expected = (np.sign(p.w).reshape(rows, -1) * np.take_along_axis(cumulative, band, axis=1)).reshape(p.w.shape)
    return p, expansions, expected


@pytest.mark.parametrize("t_ex", [1, 2, 4])
def test_effective_weight_is_the_sum_of_the_expansions(rng, t_ex):
    p, expansions, expected = _planted_expansions(rng, t_ex)
    codes0 = [q.codes.copy() for q in expansions]
    got = effective_weight(expansions)
    checks.check_array(f"effective_weight({t_ex} expansions of W {p.w.shape}) (float32 by default)", got,
                       expected.astype(np.float32), 1e-6)
    got64 = effective_weight(expansions, np.float64)
    checks.check_array(f"effective_weight({t_ex} expansions of W {p.w.shape}, dtype=float64)", got64, expected, 1e-15)
    for k, (before, q) in enumerate(zip(codes0, expansions)):
        checks.check_unchanged(f"effective_weight: the codes of expansion {k}", before, q.codes)


def test_effective_weight_with_per_channel_scales(rng):
    p, expansions, expected = _planted_expansions(rng, 2, per_channel=True)
    checks.check_array(f"effective_weight(2 expansions of W {p.w.shape} with per-channel α of shape "
                       f"{p.alphas[0].shape}, dtype=float64)", effective_weight(expansions, np.float64), expected,
                       1e-15)


def test_effective_weight_levels(rng):
    """W_eff takes at most 2·t_ex + 1 values and is zero exactly where T_1 is (nested thresholds)."""
    p, expansions, _ = _planted_expansions(rng, 4)
    got = np.asarray(effective_weight(expansions, np.float64))
    levels = np.unique(got)
    if len(levels) > 9:
        checks.fail(f"effective_weight(4 expansions): {len(levels)} distinct values, expected at most 9")
    if not np.array_equal(got == 0, p.codes[0] == 0):
        checks.fail("effective_weight(4 expansions): W_eff must be 0 exactly where the first expansion's code is 0")

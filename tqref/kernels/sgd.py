"""The SGD update (``tqref.optim.SGD``) in one pass over each parameter.

    d = g + λ·p                  weight decay λ
    v = μ·v + (1 − τ)·d          momentum μ, dampening τ; v = d at the first step
    s = d + μ·v  (Nesterov)  or  s = v
    p = p − η·s

Written with NumPy (``tqref.optim.sgd_update``, the reference twin) this is up to
six passes over p, g and v with temporaries; here each element is read and
written once.  Same float32 operations in the same order, so the two agree
bit for bit (tests/test_optim.py).  It is a small share of a step (≈ 0.7 ms
of ≈ 230 ms for ResNet-20 on two cores with NumPy), so this is about not
wasting passes, not about the step's speed.
"""

import numba


@numba.njit(cache=True, nogil=True)
def sgd_update(p, g, v, lr, momentum, one_minus_dampening, weight_decay, nesterov, first):
    """One SGD step on p in place (and on the momentum buffer v, p's shape).

    p, g, v: C-contiguous, one dtype; the scalars arrive as that dtype
    (1 − τ too: computed by the caller, because here ``1 - τ`` with a
    float32 τ would be computed in float64 and round differently).
    ``first``: v holds nothing yet and becomes d (PyTorch's first-step rule).
    With ``momentum == 0`` v is not touched."""
    pf, gf, vf = p.reshape(p.size), g.reshape(g.size), v.reshape(v.size)
    for i in range(pf.size):
        d = gf[i]
        if weight_decay != 0:
            d = d + weight_decay * pf[i]
        s = d
        if momentum != 0:
            if first:
                vi = d
            elif one_minus_dampening != 1:
                vi = momentum * vf[i] + one_minus_dampening * d
            else:
                vi = momentum * vf[i] + d
            vf[i] = vi
            s = d + momentum * vi if nesterov else vi
        pf[i] = pf[i] - lr * s

"""The estimators' inner sums over all weights, block by block in float64.

Kept in one place so every family's hot loop is visible together. Fused numba loops
were measured against these (numba 0.68 on the 2-core build machine) and lost 2-4×: numpy's SIMD
exp/log/log1p beat scalar compiled loops, so there is no compiled path to maintain.
"""
from __future__ import annotations

import numpy as np


# OpenBLAS, numpy's bundled BLAS, computes a dot product of up to 10,000 values on one thread: the same
# rounding whatever its thread setting, so the same numbers in the driver and in single-threaded workers.
DOT_CHUNK = 8192


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b, by BLAS ddot in chunks of DOT_CHUNK values, added in order: a third of einsum's cost, and never
    threaded (a threaded ddot spins its pool on every call, costs more than the sum on short vectors, and
    rounds differently from one thread). The whole chunks go to one stacked matmul, which calls ddot per
    chunk from C: the same sums as a Python loop over the chunks, without its per-chunk overhead."""
    if a.size <= DOT_CHUNK:
        return float(np.dot(a, b))
    k = a.size // DOT_CHUNK
    whole = k * DOT_CHUNK
    parts = np.matmul(a[:whole].reshape(k, 1, DOT_CHUNK), b[:whole].reshape(k, DOT_CHUNK, 1)).ravel().tolist()
    if whole < a.size:
        parts.append(float(np.dot(a[whole:], b[whole:])))
    return float(sum(parts))


BLOCK = 1 << 16  # element-wise work is done this many values at a time: memory stays O(block), not O(n)


def blocks(x: np.ndarray, size: int = BLOCK):
    """Consecutive views of ``x`` (no copies), for sums that would otherwise need n-sized temporaries."""
    for start in range(0, x.size, size):
        yield x[start : start + size]


ZERO_LOG = -1e300  # log|r| stored for r = 0: exp(β·ZERO_LOG) = 0 and 0·ZERO_LOG = 0, so zeros drop out of every sum


def log_abs_dev(x: np.ndarray, mu: float, out: np.ndarray) -> float:
    """out = max(log|x − μ|, ZERO_LOG); returns max(out)."""
    with np.errstate(divide="ignore"):
        for o, block in zip(blocks(out), blocks(x)):
            np.subtract(block, mu, out=o)
            np.abs(o, out=o)
            np.log(o, out=o)
    np.maximum(out, ZERO_LOG, out=out)
    return float(out.max())


def exp_sums(log_r: np.ndarray, beta: float, order: int) -> tuple[float, float, float]:
    """Σe, Σe·l, Σe·l² with e = exp(β·l), l = log_r."""
    s = s1 = s2 = 0.0
    for block in blocks(log_r):
        e = np.exp(beta * block)
        s += float(e.sum())
        if order > 0:
            el = e * block
            s1 += float(el.sum())
            if order > 1:
                s2 += dot(el, block)
    return s, s1, s2


def sign_pow_sums(x: np.ndarray, m: float, p: float) -> tuple[float, float]:
    """(Σ sign(r)|r|^p, Σ_{r≠0} |r|^(p−1)) with r = x − m and 0 ≤ p ≤ 1: a function and (up to −p) its
    derivative in m, in one pass, as Σ r·a and Σ a with a = exp((p − 1)·log|r|) (numpy's SIMD
    exp and log beat its pow). Values equal to m are left out of Σ a, where |r|^(p−1) is infinite
    (|r| is floored at 1e-300 so that a stays finite and r·a is 0 there). At p = 0 the first sum is
    the exact count Σ sign(r)."""
    total = total_a = 0.0
    for block in blocks(x):
        r = block - m
        if p == 0:
            total += float(np.count_nonzero(r > 0) - np.count_nonzero(r < 0))
            continue
        a = np.abs(r)
        np.maximum(a, 1e-300, out=a)
        np.log(a, out=a)
        a *= p - 1
        np.exp(a, out=a)
        a[r == 0] = 0.0
        total += dot(r, a)
        total_a += float(a.sum())
    return total, total_a


def t_moment_sums(x: np.ndarray, mu: float, sigma: float, nu: float) -> np.ndarray:
    """The eight sums Student-t's likelihood, gradient and Hessian need."""
    sums = np.zeros(8)
    for block in blocks(x):
        u = (block - mu) / sigma
        q = u * u
        inv = 1.0 / (nu + q)
        inv2 = inv * inv
        qinv2 = q * inv2
        sums += (float(np.sum(np.log1p(q / nu))), dot(u, inv), dot(q, inv), float(inv2.sum()), dot(q, inv2),
                 dot(u, inv2), dot(q, qinv2), dot(u, qinv2))
    return sums


def t_log1p_sum(x: np.ndarray, mu: float, sigma: float, nu: float) -> float:
    """Σ log1p(((x − μ)/σ)² / ν)."""
    total = 0.0
    for block in blocks(x):
        q = (block - mu) / sigma
        q *= q
        q /= nu
        total += float(np.sum(np.log1p(q)))
    return total


def gennorm_sums(parts, mu: float, m: float, beta: float) -> np.ndarray:
    """With r = (x − μ)/m over the values of ``parts`` (none equal to μ; m ≥ max|x − μ|, so |r| ≤ 1 and nothing
    overflows), l = log|r| and q = |r|^(β−2), p = q·r = sign(r)|r|^(β−1), e = p·r = |r|^β:
    [Σe, Σe·l, Σe·l², Σp, Σq, Σp·l], everything the joint (μ, β) Newton step of the gennorm profile needs, from
    one log and one exp per value."""
    sums = np.zeros(6)
    inv_m = 1.0 / m
    for part in parts:
        for block in blocks(part):
            r = (block - mu) * inv_m
            l = np.abs(r)
            np.log(l, out=l)
            q = np.exp((beta - 2.0) * l)
            p = q * r
            e = p * r
            el = e * l
            sums += (float(e.sum()), float(el.sum()), dot(el, l), float(p.sum()), float(q.sum()), dot(p, l))
    return sums

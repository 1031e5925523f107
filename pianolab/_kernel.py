"""Fast-WaveNet's inner loop compiled with numba (the performance appendix of chapter 05_fast_wavenet).

Chapter 05 teaches one fast step in numpy: each dilated layer keeps its last ``d`` inputs in a
queue and computes ``y = act(x[t - d] @ W0 + x[t] @ W1 + b)`` for the newest position only.
:func:`run` is that loop written out with plain loops for numba, the libfmp way, on this layout:

* the queues are ring buffers in one float32 row per stream: layer ``l`` owns
  ``Q[s, qoff[l]:qoff[l + 1]]``, ``dil[l]`` rows of ``cin[l]`` floats; position ``t`` lives in row
  ``t % d`` (``t & (d - 1)``, ``d`` being a power of two): the row is read as ``x[t - d]``, then
  ``x[t]`` overwrites it;
* a layer's weights are one matrix ``[c_out, 2 c_in]`` (row ``j``: output ``j``'s weights on
  ``[x[t - d], x[t]]``), channels padded with zeros to multiples of 8 (padded channels stay 0).

Three places are written by hand because measurements on the book's CPU (2-core Xeon, AVX-512;
micro_1 preset, key states per CPU-second) showed they pay: ELU's ``expm1`` as a polynomial that
vectorizes (numba's ``np.expm1`` is one libm call per channel: 41,000 -> 80,000 for one stream);
four weight rows per pass over the input (one row at a time: 59,000 -> 78,000); four streams x
four rows in 16 registers when four streams advance together (four one-stream passes: 75,000 ->
124,000 for 32 streams). :func:`run_numpy` is the same algorithm with one numpy call per layer
per key state, the baseline of ``benchmarks/generation.py``.
"""

from collections import namedtuple

import numba
import numpy as np
from numba import njit, prange

from .model import HIDDEN_ACTIVATIONS  # an activation's code in the kernel is its index there

#: A model laid out for the kernel (see the module docstring); ``b_out`` is a float32 scalar.
Net = namedtuple("Net", "W woff B cin cout dil act qoff w_out b_out")

_F0, _F1 = np.float32(0.0), np.float32(1.0)


def pack(layers, w_out, b_out, pad=8):
    """``read_layers``' output -> a :class:`Net` with channels padded to multiples of ``pad``."""
    L = len(layers)
    ceil = lambda c: -(-int(c) // pad) * pad  # noqa: E731
    cout = np.array([ceil(lay.kernel.shape[2]) for lay in layers], np.int64)
    cin = np.array([ceil(1)] + list(cout[:-1]), np.int64)
    woff = np.concatenate([[0], np.cumsum(2 * cin * cout)]).astype(np.int64)
    W, B = np.zeros(woff[-1], np.float32), np.zeros((L, max(cout.max(), cin.max())), np.float32)
    for l, lay in enumerate(layers):
        k = np.zeros((2, cin[l], cout[l]), np.float32)
        k[:, :lay.kernel.shape[1], :lay.kernel.shape[2]] = lay.kernel
        W[woff[l]:woff[l + 1]] = np.concatenate([k[0], k[1]]).T.ravel()
        B[l, :lay.bias.size] = lay.bias
    dil = np.array([lay.dilation for lay in layers], np.int64)
    act = np.array([HIDDEN_ACTIVATIONS.index(lay.activation) for lay in layers], np.int64)
    qoff = np.concatenate([[0], np.cumsum(dil * cin)]).astype(np.int64)
    wo = np.zeros(cout[-1], np.float32)
    wo[:w_out.size] = w_out
    return Net(W, woff, B, cin, cout, dil, act, qoff, wo, np.float32(b_out))


@njit(cache=True, fastmath=True, inline="always")
def _activate(h, n, act, ibuf, fbuf):
    """In place on ``h[:n]``: elu (0; ``expm1`` by range reduction and a polynomial, float32
    accurate), relu (1) or nothing (2)."""
    if act == 0:
        for j in range(n):
            v = max(min(h[j], _F0), np.float32(-87.0))
            nf = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
            r = v - nf * np.float32(0.693359375) - nf * np.float32(-2.12194440e-4)  # v - nf ln 2
            p = np.float32(1.0 / 5040.0)
            p = p * r + np.float32(1.0 / 720.0)
            p = p * r + np.float32(1.0 / 120.0)
            p = p * r + np.float32(1.0 / 24.0)
            p = p * r + np.float32(1.0 / 6.0)
            p = p * r + np.float32(0.5)
            fbuf[j] = r + r * r * p  # expm1(r), |r| <= ln(2) / 2
            ibuf[j] = (np.int32(nf) + np.int32(127)) << 23  # the bits of the float 2**nf
        scale = ibuf.view(np.float32)
        for j in range(n):
            e = scale[j] * fbuf[j] + (scale[j] - _F1)  # expm1(v) = 2**nf (expm1(r) + 1) - 1
            h[j] = h[j] if h[j] > _F0 else e
    elif act == 1:
        for j in range(n):
            h[j] = max(h[j], _F0)


@njit(cache=True, fastmath=True, inline="always")
def _dense(w, b, k2, co, xs, h, s):
    """``h[s][:co] = b + W xs[s]`` for one stream; ``W`` is ``[co, k2]``, four rows at a time."""
    xv, hv = xs[s], h[s]
    for j in range(0, co, 4):
        w0, w1, w2, w3 = w[j * k2:(j + 1) * k2], w[(j + 1) * k2:(j + 2) * k2], w[(j + 2) * k2:(j + 3) * k2], \
            w[(j + 3) * k2:(j + 4) * k2]
        a0, a1, a2, a3 = b[j], b[j + 1], b[j + 2], b[j + 3]
        for k in range(k2):
            y = xv[k]
            a0, a1, a2, a3 = a0 + y * w0[k], a1 + y * w1[k], a2 + y * w2[k], a3 + y * w3[k]
        hv[j], hv[j + 1], hv[j + 2], hv[j + 3] = a0, a1, a2, a3


@njit(cache=True, fastmath=True, inline="always")
def _dense4(w, b, k2, co, xs, h):
    """:func:`_dense` for four streams at once, 4 rows x 4 streams in 16 registers: each weight and
    input loaded serves four multiply-adds."""
    x0, x1, x2, x3 = xs[0], xs[1], xs[2], xs[3]
    for j in range(0, co, 4):
        w0, w1, w2, w3 = w[j * k2:(j + 1) * k2], w[(j + 1) * k2:(j + 2) * k2], w[(j + 2) * k2:(j + 3) * k2], \
            w[(j + 3) * k2:(j + 4) * k2]
        a00 = a10 = a20 = a30 = b[j]
        a01 = a11 = a21 = a31 = b[j + 1]
        a02 = a12 = a22 = a32 = b[j + 2]
        a03 = a13 = a23 = a33 = b[j + 3]
        for k in range(k2):
            v0, v1, v2, v3 = w0[k], w1[k], w2[k], w3[k]
            y = x0[k]
            a00, a01, a02, a03 = a00 + y * v0, a01 + y * v1, a02 + y * v2, a03 + y * v3
            y = x1[k]
            a10, a11, a12, a13 = a10 + y * v0, a11 + y * v1, a12 + y * v2, a13 + y * v3
            y = x2[k]
            a20, a21, a22, a23 = a20 + y * v0, a21 + y * v1, a22 + y * v2, a23 + y * v3
            y = x3[k]
            a30, a31, a32, a33 = a30 + y * v0, a31 + y * v1, a32 + y * v2, a33 + y * v3
        h[0, j], h[0, j + 1], h[0, j + 2], h[0, j + 3] = a00, a01, a02, a03
        h[1, j], h[1, j + 1], h[1, j + 2], h[1, j + 3] = a10, a11, a12, a13
        h[2, j], h[2, j + 1], h[2, j + 2], h[2, j + 3] = a20, a21, a22, a23
        h[3, j], h[3, j + 1], h[3, j + 2], h[3, j + 3] = a30, a31, a32, a33


@njit(cache=True, fastmath=True)
def _run_group(net, Q, xlast, s0, s1, t0, n, forced, u, n_keys, inv_temp, thr, probs, states):
    """Streams ``s0 .. s1 - 1`` (at most four) by ``n`` key states (see :func:`run`)."""
    W, woff, B, cin, cout, dil, act, qoff, w_out, b_out = net
    G, cmax = s1 - s0, B.shape[1]
    h, xs = np.zeros((G, cmax), np.float32), np.zeros((G, 2 * cmax), np.float32)
    ibuf, fbuf = np.zeros(cmax, np.int32), np.zeros(cmax, np.float32)
    x = xlast[s0:s1].copy()
    for i in range(n):
        t = t0 + i
        for s in range(G):
            h[s, 0] = x[s]
            for k in range(1, cin[0]):
                h[s, k] = _F0
        for l in range(cin.shape[0]):
            ci, co = cin[l], cout[l]
            row = qoff[l] + (t & (dil[l] - 1)) * ci  # holds x[t - d]; gets x[t]
            for s in range(G):
                q, xv, hv = Q[s0 + s, row:row + ci], xs[s], h[s]
                for k in range(ci):
                    xv[k], xv[ci + k], q[k] = q[k], hv[k], hv[k]
            w = W[woff[l]:woff[l + 1]]
            if G == 4:
                _dense4(w, B[l], 2 * ci, co, xs, h)
            else:
                for s in range(G):
                    _dense(w, B[l], 2 * ci, co, xs, h, s)
            for s in range(G):
                _activate(h[s], co, act[l], ibuf, fbuf)
        key = (t + 1) % n_keys  # the key of the state being drawn
        dist = min(key, n_keys - 1 - key)
        for s in range(G):
            hv, z = h[s], b_out
            for k in range(w_out.shape[0]):
                z += hv[k] * w_out[k]
            p = _F1 / (_F1 + np.exp(min(-z, np.float32(80.0))))
            probs[s0 + s, i] = p
            if forced.shape[1]:
                x[s] = np.float32(forced[s0 + s, i])
            else:
                if inv_temp != _F1:
                    p = _F1 / (_F1 + np.exp(min(-z * inv_temp, np.float32(80.0))))
                if dist < thr.shape[0] and p < thr[dist]:
                    p = _F0
                x[s] = _F1 if u[s0 + s, i] < p else _F0
            states[s0 + s, i] = np.uint8(x[s])
    xlast[s0:s1] = x


@njit(cache=True, parallel=True)
def _run_parallel(net, Q, xlast, t0, n, forced, u, n_keys, inv_temp, thr, probs, states):
    S = Q.shape[0]
    for g in prange((S + 3) // 4):
        _run_group(net, Q, xlast, 4 * g, min(S, 4 * g + 4), t0, n, forced, u, n_keys, inv_temp, thr,
                   probs, states)


def run(net, Q, xlast, t0, n, forced, u, n_keys, inv_temp, thr, probs, states):
    """Advance every stream ``s`` by ``n`` key states; groups of four streams run on numba's threads.

    ``xlast[s]`` is the newest state (position ``t0``) and ``Q[s]`` its queues; both are updated.
    Step ``i`` writes the model's probability of position ``t0 + 1 + i`` to ``probs[s, i]`` and
    that position's state to ``states[s, i]``: ``forced[s, i]`` when ``forced`` has columns
    (teacher forcing), else drawn with the uniform ``u[s, i]`` after temperature and the edge
    thresholds ``thr``. One group runs in the calling thread (starting the pool costs about 10%);
    more are handed to the threads one at a time, so a thread the machine slows down takes fewer.
    """
    if Q.shape[0] <= 4:
        _run_group(net, Q, xlast, 0, Q.shape[0], t0, n, forced, u, n_keys, inv_temp, thr, probs, states)
    else:
        with numba.parallel_chunksize(1):
            _run_parallel(net, Q, xlast, t0, n, forced, u, n_keys, inv_temp, thr, probs, states)


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


_NP_ACT = (_elu, lambda x: np.maximum(x, 0), lambda x: x)


def silence_queues(net):
    """One stream's queues when all of the history is silence: each layer's constant input, d times."""
    h, rows = np.zeros(net.cin[0], np.float32), []
    for l, d in enumerate(net.dil):
        rows.append(np.tile(h, d))
        w = net.W[net.woff[l]:net.woff[l + 1]].reshape(net.cout[l], -1)
        h = _NP_ACT[net.act[l]](w @ np.concatenate([h, h]) + net.B[l, :net.cout[l]]).astype(np.float32)
    return np.concatenate(rows)


def run_numpy(net, Q, xlast, t0, n, forced, u, n_keys, inv_temp, thr, probs, states):
    """:func:`run` with one numpy call per layer per key state (all streams at once)."""
    S = Q.shape[0]
    layers = [(net.W[net.woff[l]:net.woff[l + 1]].reshape(net.cout[l], 2 * ci).T, net.B[l, :net.cout[l]],
               Q[:, net.qoff[l]:net.qoff[l + 1]].reshape(S, net.dil[l], ci), _NP_ACT[net.act[l]])
              for l, ci in enumerate(net.cin)]
    x = xlast.copy()
    for i in range(n):
        t = t0 + i
        h = np.zeros((S, net.cin[0]), np.float32)
        h[:, 0] = x
        for w, b, q, act in layers:
            slot = t % q.shape[1]
            older = q[:, slot].copy()  # the layer's input d positions ago
            q[:, slot] = h  # replaced by today's
            h = act(np.concatenate([older, h], axis=1) @ w + b)
        z = h @ net.w_out + net.b_out
        probs[:, i] = 1 / (1 + np.exp(-z))
        if forced.shape[1]:
            x = forced[:, i].astype(np.float32)
        else:
            p = 1 / (1 + np.exp(-z * inv_temp))
            key = (t + 1) % n_keys
            dist = min(key, n_keys - 1 - key)
            if dist < thr.size:
                p = np.where(p < thr[dist], 0, p)
            x = (u[:, i] < p).astype(np.float32)
        states[:, i] = x
    xlast[:] = x

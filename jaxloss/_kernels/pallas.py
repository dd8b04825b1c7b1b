"""The GPU row kernel behind ``entropy_from_logits``: one pass over each row, in Pallas (Triton backend).

``row_stats(x2d)`` returns, for every row of a 2-D array of logits (float32, bfloat16 or float16), the three
numbers the entropy and its gradient are made of, exactly as :func:`.rows.softmax_parts` defines them:

* ``m``  - the row maximum (NaN when the row holds a NaN, whatever the other entries),
* ``s1`` - sum(e) - 1 with e = exp(l - m), the top class(es) counted exactly,
* ``t``  - sum(e * (m - l)).

The kernel reads each row from memory once (rows of up to ``_CHUNK`` classes are kept in registers; wider rows
are read twice, a first pass for the maximum and a second for the sums, chunk by chunk), widens 16-bit inputs
in registers, and runs the same exact arithmetic as the XLA path (TwoSum shift, top class left out of the
normaliser). Only values come from it: where the entropy is differentiated again (second derivatives) the XLA
formulation is differentiated instead (see ``jaxloss._kernels``).

Which path runs is decided in ``jaxloss._kernels`` (``implementation=``), not here. The call is lowered per platform
(``jax.lax.platform_dependent``): CUDA runs the kernel natively; on a machine without CUDA (where ``"pallas"`` was
asked for explicitly, e.g. by the tests) the other platforms run it through Pallas' interpreter, and on a machine
with CUDA they lower the XLA formulation.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from . import backend, rows, twofloat

__all__: list[str] = []

# Launch shape: _CHUNK classes per load; rows per program so that a block holds about _BLOCK_ELEMENTS values.
# A power of two each, as Triton requires. Chosen on an H200 (`python -m benchmarks.probes.tune_entropy`,
# benchmarks/NOTES.md "GPU"): at 2^20 x 256 blocks of 4096 with 4 warps were fastest, one block per program (a
# persistent grid with Triton's software pipelining was no faster and was removed; its code is in commit fc1d0ab);
# for 8192 x 32768 chunks of 4096, 8 warps, 2 stages.
_CHUNK = 4096
_BLOCK_ELEMENTS = 4096
_NUM_WARPS = 4
_NUM_WARPS_WIDE = 8
_NUM_STAGES = 1
_NUM_STAGES_WIDE = 2
# Row sums: on a GPU Triton reduces a block as a tree (each thread adds its few elements, then a butterfly across
# threads), so the rounding error grows like log(n). The interpreter runs the kernel as XLA:CPU code, whose
# reduction inside a loop adds one element after another (up to 16 ulp at 4096 classes); there the sum is taken in
# levels of _SUM_GROUP, a tree like the GPU's. (Its last bit still depends on the launch shape: XLA:CPU
# vectorises the same code differently for 1 and for 4 rows per program.)
_SUM_GROUP = 16

pl: Any
plgpu: Any
try:  # Pallas and its Triton backend are part of jax, but an older or trimmed install may lack them.
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu
except Exception:  # pragma: no cover - depends on the jax build
    pl = plgpu = None


def importable() -> bool:
    """Whether Pallas and its Triton backend imported (an older or trimmed jax may lack them)."""
    return pl is not None


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def launch_shape(n_rows: int, n_cols: int) -> tuple[int, int, int, int]:
    """(rows per program, columns per chunk, chunks, warps) for an ``n_rows x n_cols`` input."""
    chunk = min(_pow2_at_least(n_cols), _CHUNK)
    chunks = -(-n_cols // chunk)
    rows = 1 if chunks > 1 else max(1, min(_BLOCK_ELEMENTS // chunk, _pow2_at_least(n_rows)))
    warps = _NUM_WARPS_WIDE if chunks > 1 else _NUM_WARPS
    return rows, chunk, chunks, warps


def _row_sum(a, interpret: bool):
    if interpret:
        rows, width = a.shape
        while width > _SUM_GROUP:
            width //= _SUM_GROUP
            a = jnp.sum(a.reshape(rows, width, _SUM_GROUP), axis=2)
            # An exact identity that XLA's simplifier cannot see through (a == a is False for NaN): without it,
            # reduce(reduce(.)) is merged back into one reduction of the whole row.
            a = jnp.where(a == a, a, jnp.nan)
    return jnp.sum(a, axis=1, keepdims=True)


def _kernel(x_ref, m_ref, s1_ref, t_ref, *, n_rows, n_cols, rows, chunk, chunks, interpret, rows_ragged):
    """One program: the statistics of its block of ``rows`` rows."""
    f32 = jnp.float32
    row0 = pl.program_id(0) * rows
    cols_ragged = n_cols % chunk != 0

    def load(c):
        # Columns past the end (the padding up to a power of two) and rows past the end read as -inf: a class
        # that is out. It adds nothing to any sum; the class count below includes it, so it cancels. Masks only
        # where the shape needs them (static): an unmasked load can be a vector load.
        block = x_ref.at[pl.ds(row0, rows), pl.ds(c * chunk, chunk)]
        if not (rows_ragged or cols_ragged):
            return plgpu.load(block).astype(f32)
        ok = jnp.ones((rows, chunk), jnp.bool_)
        if rows_ragged:
            ok = ok & (row0 + jax.lax.broadcasted_iota(jnp.int32, (rows, chunk), 0) < n_rows)
        if cols_ragged:
            ok = ok & (jax.lax.broadcasted_iota(jnp.int32, (rows, chunk), 1) + c * chunk < n_cols)
        return plgpu.load(block, mask=ok, other=-jnp.inf).astype(f32)

    # Pass 1: the row maximum. Triton's max skips NaN; a NaN then reaches the sums, which it makes NaN.
    if chunks == 1:
        x = load(0)
        top = x
    else:
        top = jax.lax.fori_loop(
            0, chunks, lambda c, top: jnp.maximum(top, load(c)), jnp.full((rows, chunk), -jnp.inf, f32)
        )
    m_raw = jnp.max(top, axis=1, keepdims=True)
    m = jnp.where(m_raw == -jnp.inf, 0.0, m_raw)  # a row with every class out: shift by 0 (result overwritten)

    # Pass 2: the sums of rows.row_sums. The top classes are those equal to the maximum: d = 0 there,
    # also for classes at +inf (where l - max would be inf - inf); every other class at a +inf maximum gets
    # d = -inf, e = 0. A class that is out (e = 0) gets u = 1, so that e u = 0, never 0 * inf.
    def terms(x):
        is_top = x == m_raw
        d_hi, d_lo = twofloat.two_diff(x, m)
        d_hi = jnp.where(is_top, 0.0, d_hi)
        e = jnp.exp(d_hi)
        e = e + e * d_lo
        u = jnp.where(e == 0, 1.0, -d_hi - d_lo)
        not_top = jnp.where(is_top, 0.0, 1.0)
        return e * not_top, not_top, e * u

    if chunks == 1:
        acc = terms(x)
    else:

        def second(c, acc):
            return tuple(a + b for a, b in zip(acc, terms(load(c)), strict=True))

        acc = jax.lax.fori_loop(0, chunks, second, tuple(jnp.zeros((rows, chunk), f32) for _ in range(3)))
    e_rest, not_top, eu = (_row_sum(a, interpret) for a in acc)
    n = f32(chunks * chunk - 1)  # every column read, padding included
    s1 = e_rest + (n - not_top)
    nan = jnp.isnan(s1) | jnp.isnan(eu)  # the row holds a NaN (nothing else makes these sums NaN)
    none = (m_raw == -jnp.inf) & ~nan
    s1 = jnp.where(none, 0.0, s1)
    t = jnp.where(none, 0.0, eu)
    m_out = jnp.where(nan, jnp.nan, m_raw)  # NaN for a row with a NaN, as jnp.max gives

    out_ok = (row0 + jax.lax.broadcasted_iota(jnp.int32, (rows, 1), 0)) < n_rows if rows_ragged else None
    for ref, value in ((m_ref, m_out), (s1_ref, s1), (t_ref, t)):
        plgpu.store(ref.at[pl.ds(row0, rows), :], value, mask=out_ok)


def _pallas_stats(x2d, *, interpret: bool):
    n_rows, n_cols = x2d.shape
    rows, chunk, chunks, warps = launch_shape(n_rows, n_cols)
    stages = _NUM_STAGES_WIDE if chunks > 1 else _NUM_STAGES
    blocks = -(-n_rows // rows)
    kernel = functools.partial(
        _kernel,
        n_rows=n_rows,
        n_cols=n_cols,
        rows=rows,
        chunk=chunk,
        chunks=chunks,
        interpret=interpret,
        rows_ragged=blocks * rows != n_rows,
    )
    out = jax.ShapeDtypeStruct((n_rows, 1), jnp.float32)
    m, s1, t = pl.pallas_call(
        kernel,
        out_shape=(out, out, out),
        grid=(blocks,),
        interpret=interpret,
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=warps, num_stages=stages),
        name="jaxloss_entropy_row_stats",
    )(x2d)
    return m, s1, t


def _xla_stats(x2d):
    return rows.softmax_row_stats(x2d.astype(jnp.float32))


def row_stats(x2d):
    """(m, s1, t), each ``[rows, 1]`` float32: the kernel on CUDA; on other platforms the XLA formulation where
    CUDA is present, else the interpreted kernel. Values only: nothing differentiates it."""
    interpreted = functools.partial(_pallas_stats, interpret=True)
    return jax.lax.platform_dependent(
        x2d,
        cuda=functools.partial(_pallas_stats, interpret=False),
        default=_xla_stats if backend.cuda_present() else interpreted,
    )

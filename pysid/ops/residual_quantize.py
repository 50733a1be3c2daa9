"""``pysid::residual_quantize``: fused residual codeword search as a PyTorch op.

Implementations (reference, C++ ``cpu``, ``triton``, CUDA C++ ``cuda``) register with
``pysid.ops.registry``, which picks one per call under the backend in force; run
``pysid.backends()`` for what each accepts (devices, dtypes, beam widths) and what runs
on this machine. float64 input runs on the reference (no kernel computes in float64).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import torch
from torch import Tensor

from .. import _native, _status
from .._checks import check_int, check_precision, check_tensor, nonfinite_rows
from .registry import KERNEL_DTYPES, FLOAT_DTYPES, Inputs, direct_call_ok, register, select
from ..reference.residual_quantize import better_of, residual_quantize_ref, rq_vae_loss_ref

__all__ = ["ResidualQuantizeOutput", "residual_quantize", "rq_vae_loss"]

Codebooks = Union[Tensor, Sequence[Tensor]]

_DTYPE_CODE = _status.DTYPE_CODES


class ResidualQuantizeOutput(NamedTuple):
    """Result of :func:`residual_quantize`.

    quantized: [N, D], dtype of x - the sum of the chosen codewords (straight-through to x).
    distances: [N, L] float32 (float64 for float64 input) - squared distance left after each level.
    codes:     [N, L] int32 - chosen row of each level's codebook.
    """

    quantized: Tensor
    distances: Tensor
    codes: Tensor


# --------------------------------------------------------------------------- validation


def _as_list(codebooks: Codebooks) -> list[Tensor]:
    if isinstance(codebooks, Tensor):
        if codebooks.dim() != 3:
            raise ValueError(
                f"codebooks must be a [L, K, D] tensor or a list of [K_l, D] tensors, got a tensor of shape {tuple(codebooks.shape)}"
            )
        return list(codebooks.unbind(0))
    if not isinstance(codebooks, (list, tuple)) or not all(isinstance(c, Tensor) for c in codebooks):
        raise TypeError("codebooks must be a [L, K, D] tensor or a list/tuple of [K_l, D] tensors")
    return list(codebooks)


def _check_inputs(x: Tensor, cbs: list[Tensor], beam_width: int) -> None:
    """Static checks (shapes, dtypes, devices): trace-safe, no host sync."""
    check_tensor(x, "x")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point (float32, float16 or bfloat16), got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError("x must have D >= 1 columns")
    if len(cbs) == 0:
        raise ValueError("codebooks is empty: need at least one level")
    for level, c in enumerate(cbs):
        if not c.is_floating_point():
            raise TypeError(f"codebooks[{level}] must be floating point, got {c.dtype}")
        if c.dim() != 2:
            raise ValueError(f"codebooks[{level}] must be 2-D [K, D], got shape {tuple(c.shape)}")
        if c.shape[0] < 1:
            raise ValueError(f"codebooks[{level}] is empty (K = 0)")
        if c.shape[1] != x.shape[1]:
            raise ValueError(f"codebooks[{level}] has D = {c.shape[1]} but x has D = {x.shape[1]}")
        if c.device != x.device:
            raise ValueError(f"codebooks[{level}] is on {c.device} but x is on {x.device}")
    check_int("beam_width", beam_width, 1, what="an integer")


def _raise_non_finite(x: Tensor, cbs: list[Tensor], distances: Tensor) -> None:
    for level, c in enumerate(cbs):
        bad = nonfinite_rows(c)
        if bad is not None:
            raise ValueError(f"codebooks[{level}] has NaN/Inf in rows {bad[:10].tolist()}")
    bad = nonfinite_rows(x)
    if bad is not None:
        raise ValueError(f"x has NaN/Inf in {bad.numel()} rows, e.g. rows {bad[:10].tolist()}")
    bad = (~torch.isfinite(distances)).any(1).nonzero().flatten()
    raise ValueError(
        f"residual distances overflow float32 in {bad.numel()} rows, e.g. rows {bad[:10].tolist()}: rescale x and codebooks"
    )


def _check_finite(x: Tensor, cbs: list[Tensor], distances: Tensor) -> None:
    """NaN/Inf anywhere in x makes that row's distance non-finite; codebooks are checked directly.
    One host sync on small tensors; skipped while a CUDA graph is being captured."""
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    ok = torch.isfinite(distances).all()
    for c in cbs:
        ok = ok & torch.isfinite(c).all()
    if not bool(ok):
        _raise_non_finite(x, cbs, distances)


# --------------------------------------------------------------------------- backends


def _pack(cbs: list[Tensor]) -> tuple[Tensor, list[int]]:
    """Codebooks as one contiguous float32 [sum K_l, D] tensor and the row offsets of each level."""
    offsets = [0]
    for c in cbs:
        offsets.append(offsets[-1] + c.shape[0])
    if len(cbs) == 1:
        packed = cbs[0]
    else:
        packed = torch.cat([c.to(torch.float32) for c in cbs])
    return packed.to(torch.float32).contiguous(), offsets


_TRITON_MAX_BEAM = 16  # the Triton beam kernel keeps the beams on chip


def _beam(limit: str, ok):
    return lambda inp: [] if ok(inp.params.get("beam_width", 1)) else [f"{limit}, got beam_width {inp.params.get('beam_width')}"]


@register("residual_quantize", "reference", devices=None, dtypes=FLOAT_DTYPES, limits="float64 computes in float64",
          traits=("keeps_greedy_rows",))
def _run_reference(x: Tensor, cbs: list[Tensor], beam_width: int) -> tuple[Tensor, Tensor, Tensor]:
    return residual_quantize_ref(x, cbs, beam_width)


@register("residual_quantize", "cpu", devices=("cpu",), dtypes=KERNEL_DTYPES, traits=("keeps_greedy_rows",))
def _run_cpu(x: Tensor, cbs: list[Tensor], beam_width: int) -> tuple[Tensor, Tensor, Tensor]:
    ext = _native.cpu()
    xf = x.to(torch.float32).contiguous()
    packed, offsets = _pack(cbs)
    n, d = xf.shape
    off = torch.tensor(offsets, dtype=torch.int64)
    q = torch.empty((n, d), dtype=torch.float32)
    dist = torch.empty((n, len(cbs)), dtype=torch.float32)
    codes = torch.empty((n, len(cbs)), dtype=torch.int32)
    if n:
        ext.rq_encode(xf.data_ptr(), n, d, packed.data_ptr(), off.data_ptr(), len(cbs), beam_width,
                      q.data_ptr(), dist.data_ptr(), codes.data_ptr())
    return q, dist, codes


@register("residual_quantize", "cuda", devices=("cuda",), dtypes=KERNEL_DTYPES, limits="greedy only (beam_width 1)",
          check=_beam("the CUDA kernel encodes greedily only (beam_width 1; 'triton' runs beams)", lambda b: b == 1))
def _run_cuda(x: Tensor, cbs: list[Tensor], beam_width: int) -> tuple[Tensor, Tensor, Tensor]:
    ext = _native.cuda()
    xc = x.contiguous()
    packed, offsets = _pack(cbs)
    n, d = xc.shape
    q = torch.empty((n, d), dtype=torch.float32, device=x.device)
    dist = torch.empty((n, len(cbs)), dtype=torch.float32, device=x.device)
    codes = torch.empty((n, len(cbs)), dtype=torch.int32, device=x.device)
    off = torch.tensor(offsets, dtype=torch.int64)  # host: the kernel reads the level sizes on the CPU
    if n:
        with torch.cuda.device(x.device):
            stream = torch.cuda.current_stream().cuda_stream
            ext.rq_encode(xc.data_ptr(), _DTYPE_CODE[xc.dtype], n, d, packed.data_ptr(), off.data_ptr(), len(cbs),
                          beam_width, q.data_ptr(), dist.data_ptr(), codes.data_ptr(), stream)
    return q, dist, codes


def _triton_encode(x: Tensor, cbs: list[Tensor], beam_width: int, precision: str = "exact") -> tuple[Tensor, Tensor, Tensor]:
    from ..kernels.residual_quantize import residual_quantize_triton

    packed, offsets = _pack(cbs)
    return residual_quantize_triton(x.contiguous(), packed, offsets, beam_width, precision=precision)


@register("residual_quantize", "triton", devices=("cuda",), dtypes=KERNEL_DTYPES,
          limits=f"beam_width <= {_TRITON_MAX_BEAM}",
          check=_beam(f"the Triton kernel keeps at most {_TRITON_MAX_BEAM} beams on chip", lambda b: b <= _TRITON_MAX_BEAM),
          traits=("precision",))
def _run_triton(x: Tensor, cbs: list[Tensor], beam_width: int, precision: str = "exact") -> tuple[Tensor, Tensor, Tensor]:
    return _triton_encode(x, cbs, beam_width, precision)


# --------------------------------------------------------------------------- the custom op


def _residual_quantize(x: Tensor, codebooks: list[Tensor], beam_width: int,
                       precision: str = "exact") -> tuple[Tensor, Tensor, Tensor]:
    """The op's body: validate, run the selected implementation, check finiteness."""
    _check_inputs(x, codebooks, beam_width)
    check_precision(precision)
    impl = select("residual_quantize", Inputs.of(x, beam_width=beam_width))
    # an implementation with the trait "precision" takes it as a fourth argument; the others are exact
    extra = (precision,) if "precision" in impl.traits else ()
    q, dist, codes = impl.fn(x, codebooks, beam_width, *extra)
    if beam_width > 1 and "keeps_greedy_rows" not in impl.traits:
        # "never worse than greedy" (better_of, the reference's rule) for a kernel that searches
        # beams only; the C++ kernel applies it in its own pass (cheaper: no second output)
        q, dist, codes = better_of((q, dist, codes), impl.fn(x, codebooks, 1, *extra))
    _check_finite(x, codebooks, dist)
    return q.to(x.dtype).contiguous(), dist.to(_dist_dtype(x)).contiguous(), codes.contiguous()


@torch.library.custom_op("pysid::residual_quantize", mutates_args=())
def _residual_quantize_op(x: Tensor, codebooks: list[Tensor], beam_width: int,
                          precision: str = "exact") -> tuple[Tensor, Tensor, Tensor]:
    return _residual_quantize(x, codebooks, beam_width, precision)


def _dist_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@_residual_quantize_op.register_fake
def _(x: Tensor, codebooks: list[Tensor], beam_width: int, precision: str = "exact") -> tuple[Tensor, Tensor, Tensor]:
    n, levels = x.shape[0], len(codebooks)
    return (
        x.new_empty(x.shape),
        x.new_empty((n, levels), dtype=_dist_dtype(x)),
        x.new_empty((n, levels), dtype=torch.int32),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, codebooks, *_ = inputs
    _, _, codes = output
    ctx.save_for_backward(x, codes, *codebooks)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_q: Tensor | None, grad_dist: Tensor | None, _grad_codes):
    """quantized = sum_l e_l, straight-through to x: dq/dx = I, dq/de_l = I (scatter-add into chosen rows).
    distances_l = ||x - sum_{j<=l} e_j||^2: d/dx = 2 r_{l+1}, d/de_j = -2 r_{l+1} for every j <= l."""
    x, codes, *cbs = ctx.saved_tensors
    levels = len(cbs)
    gx = None
    g_rows = [None] * levels  # gradient w.r.t. the chosen codeword of each level, [N, D]
    if grad_q is not None:
        gx = grad_q
        g_rows = [grad_q] * levels
    if grad_dist is not None:
        acc = x.dtype if x.dtype == torch.float64 else torch.float32
        r = x.to(acc)
        s = []  # 2 g_l r_{l+1}
        for level, c in enumerate(cbs):
            r = r - c.to(acc)[codes[:, level].long()]
            s.append(2.0 * grad_dist[:, level : level + 1].to(acc) * r)
        total = torch.stack(s).sum(0)
        gx = total if gx is None else gx.to(acc) + total
        tail = torch.stack(s).flip(0).cumsum(0).flip(0)  # tail[j] = sum_{l>=j} 2 g_l r_{l+1}
        g_rows = [(-tail[j]) if g_rows[j] is None else g_rows[j].to(acc) - tail[j] for j in range(levels)]
    grad_cbs = []
    for level, c in enumerate(cbs):
        if not ctx.needs_input_grad[1] or g_rows[level] is None:
            grad_cbs.append(None)
            continue
        acc = torch.promote_types(c.dtype, torch.float32)  # sums over many rows: never in half
        g = torch.zeros(c.shape, dtype=acc, device=c.device)
        g.index_add_(0, codes[:, level].long(), g_rows[level].to(acc))
        grad_cbs.append(g.to(c.dtype))
    if gx is not None:
        gx = gx.to(x.dtype)
    # beam_width and precision: no gradient (precision counts only when the call passed it:
    # needs_input_grad has the call's arguments, setup_context's inputs the schema defaults too)
    return (gx, grad_cbs) + (None,) * (len(ctx.needs_input_grad) - 2)


_residual_quantize_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public API


def residual_quantize(x: Tensor, codebooks: Codebooks, *, beam_width: int = 1,
                      precision: str = "exact") -> ResidualQuantizeOutput:
    """Encode vectors with residual codebooks, level by level (RQ / RQ-VAE forward).

    Args:
        x: [N, D] float32, float16 or bfloat16 (float64 runs on the reference);
            any strides. Accumulation is float32.
        codebooks: [L, K, D] tensor, or a list of L tensors [K_l, D] whose sizes may
            differ per level; floating point, on x's device.
        beam_width: 1 (default) = greedy: at each level the nearest codeword of the
            current residual, exact ties to the lowest index. B > 1 = beam-search
            encoding (faiss's ``max_beam_size``): the best B partial encodings are
            kept per vector. Beam search alone can end above greedy (e.g. when a later
            level has few codewords), so rows where greedy ends strictly lower take the
            greedy encoding: total distortion is never worse than greedy.
        precision: ``"exact"`` (default): the codes of the float32 score on every backend and
            path (a tensor-core pass on CUDA only proposes; a proof or an exact re-scan decides).
            ``"fast"``: on the Triton kernel, codes straight from the tensor-core pass (greedy:
            fp16 with exact power-of-two scaling per row and level, its nearest codeword; beam
            search: the same fp16 proposal, its B best candidates), without the proof
            or the exact re-score: faster, and codes may differ from ``"exact"`` on near-ties
            (about 0.1 % of rows on random data). The C++ (CPU), CUDA C++ and reference backends
            are exact either way (equal results). torch's global tf32 settings
            (``torch.backends.cuda.matmul.allow_tf32``, ``torch.set_float32_matmul_precision``)
            never change the codes of the kernels (the reference, the test oracle, computes
            with ``torch.addmm`` and follows them).

    Returns:
        :class:`ResidualQuantizeOutput` ``(quantized [N, D] x.dtype, distances [N, L] float32,
        codes [N, L] int32)``.

    Autograd: ``quantized`` passes its gradient straight through to ``x`` and
    scatter-adds it into the chosen rows of each codebook; ``distances`` has
    its exact gradient (codes held fixed); see :func:`rq_vae_loss` for TIGER's loss.

    Raises:
        TypeError: non-floating x or codebooks. ValueError: wrong ranks, D
        mismatch, empty codebook, device mismatch, beam_width < 1, precision not
        "exact" / "fast", NaN/Inf in x or codebooks (rows named).
    """
    cbs = _as_list(codebooks)
    _check_inputs(x, cbs, beam_width)
    check_precision(precision)
    # a beam wider than every possible tuple changes nothing: cap it (also keeps it an int64)
    tuples = 1
    for c in cbs:
        tuples = min(tuples * c.shape[0], beam_width)
    beam_width = min(beam_width, tuples)
    # the custom op serves torch.compile, autograd and opcheck; a plain call skips it (its
    # first call imports torch._dynamo, ~2 s) and runs the same body
    run = _residual_quantize if direct_call_ok([x, *cbs]) else _residual_quantize_op
    q, dist, codes = run(x, cbs, beam_width, precision)
    return ResidualQuantizeOutput(q, dist, codes)


def rq_vae_loss(x: Tensor, codebooks: Codebooks, codes: Tensor, *, beta: float = 0.25) -> Tensor:
    """TIGER's RQ-VAE quantization loss for the codes of a :func:`residual_quantize` pass
    (gathers the chosen codewords; no second search)::

        sum_l  mean ||sg(r_l) - e_l||^2  +  beta * mean ||r_l - sg(e_l)||^2

    with r_0 = x, r_{l+1} = r_l - sg(e_l), means over the N x D elements. The first term
    trains the codebooks, the second (commitment) trains the encoder that produced x.

    Args:
        x: [N, D]; codebooks: as for :func:`residual_quantize`; codes: [N, L] integer.
    Returns:
        scalar tensor.
    """
    cbs = _as_list(codebooks)
    if codes.dim() != 2 or codes.shape != (x.shape[0], len(cbs)):
        raise ValueError(f"codes must be [N, L] = [{x.shape[0]}, {len(cbs)}], got {tuple(codes.shape)}")
    if codes.is_floating_point():
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    return rq_vae_loss_ref(x, cbs, codes, beta)

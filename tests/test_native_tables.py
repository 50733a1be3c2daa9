"""The tables the Python code shares with the native kernels agree exactly in both languages
(pysid/_status.py against csrc/status.h), and the bindings turn every status into the
exception and message the table names."""

from __future__ import annotations

import pytest
import torch

from pysid import _native, _native_kmeans, _status

C = _native.cpu()


def _modules():
    mods = [C]
    if _native.has_cuda():
        mods.append(_native.cuda())
    return mods


@pytest.mark.parametrize("mod", _modules(), ids=lambda m: m.__name__)
def test_status_table_agrees_with_cpp(mod):
    assert mod.status_codes() == [tuple(s) for s in _status.STATUS_CODES]


@pytest.mark.parametrize("mod", _modules(), ids=lambda m: m.__name__)
def test_dtype_table_agrees_with_cpp(mod):
    cpp = mod.dtype_codes()
    assert [(getattr(torch, name), value) for _, value, name in cpp] == list(_status.DTYPE_CODES.items())
    assert [name for name, _, _ in cpp] == ["kFloat32", "kFloat16", "kBFloat16"]


def test_status_constants_name_the_table():
    """OK, BAD_ARGUMENT, ... are the table's values under the enumerators' names."""
    for s in _status.STATUS_CODES:
        const = "".join("_" + c if c.isupper() else c.upper() for c in s.name[1:]).lstrip("_")
        assert getattr(_status, const) == s.value, s.name
    assert len({s.value for s in _status.STATUS_CODES}) == len(_status.STATUS_CODES)
    assert _status.message(_status.NON_FINITE) == "NaN in the log-probs or beam scores of a live beam"
    assert _status.message(99) == "status 99"


def test_statuses_raise_the_tables_exception():
    """kBadArgument from a kernel: the table's ValueError and message (raise_for_status)."""
    x, c = torch.randn(4, 3), torch.randn(2, 3)
    off = torch.tensor([0, 2], dtype=torch.int64)
    out = [torch.empty(4, 3), torch.empty(4, 1), torch.empty(4, 1, dtype=torch.int32)]
    with pytest.raises(ValueError, match="pysid native rq_encode failed: bad argument"):
        C.rq_encode(x.data_ptr(), 4, 3, c.data_ptr(), off.data_ptr(), 1, 0, *(t.data_ptr() for t in out))
    codes = torch.tensor([0, 5], dtype=torch.int32)  # kCodeOutOfRange: the binding names the row
    sums, counts = torch.empty(2, 3, dtype=torch.float64), torch.empty(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"pysid native kmeans_update failed: codes\[1\] = 5 is out of range \[0, 2\)"):
        C.kmeans_update(x.data_ptr(), _status.DTYPE_CODES[torch.float32], 2, 3, codes.data_ptr(), 0, 2,
                        sums.data_ptr(), counts.data_ptr())


def test_kmeans_constants_agree_with_cpp():
    assert _native_kmeans.MAX_CANDIDATES == C.kmeanspp_max_candidates
    for n in (1, 15, 16, 31, 32, 33, 100):
        assert _native_kmeans._panel_count(n) * 16 * 7 == C.kmeanspp_panel_floats(n, 7)


@pytest.mark.skipif(not _native.has_cuda(), reason="the CUDA extension was not built")
def test_cuda_binding_takes_host_offsets_pointer():
    """_cuda.rq_encode takes the level offsets as a host int64 pointer + levels, like _C's: the
    kernel checks them before any launch (N = 0 launches nothing, so no GPU is needed)."""
    ext = _native.cuda()
    f32 = _status.DTYPE_CODES[torch.float32]
    good = torch.tensor([0, 3, 5], dtype=torch.int64)
    ext.rq_encode(0, f32, 0, 4, 0, good.data_ptr(), 2, 1, 0, 0, 0, 0)  # valid: nothing to do
    bad = torch.tensor([0, 3, 3], dtype=torch.int64)  # an empty level
    with pytest.raises(ValueError, match="pysid native CUDA rq_encode failed: bad argument"):
        ext.rq_encode(0, f32, 0, 4, 0, bad.data_ptr(), 2, 1, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="bad argument"):  # beams: Triton's, not this kernel's
        ext.rq_encode(0, f32, 0, 4, 0, good.data_ptr(), 2, 2, 0, 0, 0, 0)

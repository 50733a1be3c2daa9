"""pysid.nn.hybrid: fuse, FusedEncoder, alignment_loss, and train_rqvae(align_with=...)."""

import math

import pytest
import torch
import torch.nn.functional as F

from pysid.nn import RQVAE, FusedEncoder, alignment_loss, fuse, train_rqvae

# ----------------------------------------------------------------------------- fuse


def test_fuse_hand_computed_weights():
    a = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    out = fuse([a, b], weights=[1, 3])
    h, t = math.sqrt(0.25), math.sqrt(0.75)
    expected = torch.tensor([[0.6 * h, 0.8 * h, 0.0, t, 0.0], [0.0, h, t, 0.0, 0.0]])
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, expected)
    # each input holds its weight share of every row's squared norm
    torch.testing.assert_close((out[:, :2] ** 2).sum(1), torch.full((2,), 0.25))
    torch.testing.assert_close((out[:, 2:] ** 2).sum(1), torch.full((2,), 0.75))


def test_fuse_default_equal_weights_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(7, 4, generator=g), torch.randn(7, 6, generator=g), torch.randn(7, 2, generator=g)
    out = fuse([a, 10 * b, c])
    assert out.shape == (7, 12)
    torch.testing.assert_close(out[:, :4], F.normalize(a, dim=1) / math.sqrt(3))
    torch.testing.assert_close(out[:, 4:10], F.normalize(b, dim=1) / math.sqrt(3))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(fuse([a, b], weights=[2, 2]), fuse([a, b]))
    # a zero weight zeroes that input's block
    assert torch.equal(fuse([a, b], weights=[0, 1])[:, :4], torch.zeros(7, 4))


def test_fuse_any_finite_scale():
    """Rows whose float32 norm overflows (1e20) or falls under F.normalize's eps (1e-30, 1e-40
    subnormal) are still unit rows in the same direction; zero rows stay zero."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
    ref = fuse([a, b])
    for scale in (1e20, 1e30, 1e-13, 1e-30, 1e-40):
        out = fuse([a * scale, b])
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(6))
    mixed = torch.cat([a[:3] * 1e20, torch.zeros(1, 5), a[4:] * 1e-30])
    out = fuse([mixed, b])
    assert torch.equal(out[3, :5], torch.zeros(5))
    torch.testing.assert_close(out[[0, 1, 2, 4, 5], :5], ref[[0, 1, 2, 4, 5], :5], atol=1e-5, rtol=0)


def test_fuse_errors():
    a = torch.randn(4, 3)
    with pytest.raises(ValueError, match="rows"):
        fuse([a, torch.randn(5, 3)])
    with pytest.raises(ValueError, match="2-D"):
        fuse([a, torch.randn(4)])
    nan = torch.randn(4, 2)
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN.*rows \[2\]"):
        fuse([a, nan])
    inf = torch.randn(4, 2)
    inf[1, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"NaN/Inf.*rows \[1\]"):
        fuse([a, inf])
    with pytest.raises(ValueError, match="weights"):
        fuse([a, a], weights=[1])
    with pytest.raises(ValueError, match="weights"):
        fuse([a, a], weights=[1, -1])
    with pytest.raises(ValueError, match="empty"):
        fuse([])
    with pytest.raises(TypeError):
        fuse(a)


# ----------------------------------------------------------------------------- FusedEncoder


@pytest.mark.parametrize("mode", ["projection", "concat"])
def test_fused_encoder_shapes_and_gradients(mode):
    torch.manual_seed(0)
    enc = FusedEncoder([5, 3, 8], 6, mode=mode)
    xs = [torch.randn(10, d, requires_grad=True) for d in (5, 3, 8)]
    out = enc(*xs)
    assert out.shape == (10, 6)
    assert enc(xs).shape == (10, 6)  # a list is accepted too
    (out**2).sum().backward()
    for x in xs:
        assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if mode == "projection":
        assert len(enc.projections) == 3 and len(enc.norms) == 3
        # every input has its own projection layer, each receiving gradient
        for proj in enc.projections:
            assert proj.weight.grad.abs().sum() > 0
    else:
        assert enc.projection.in_features == 16


def test_fused_encoder_errors():
    with pytest.raises(ValueError, match="mode"):
        FusedEncoder([3], 2, mode="sum")
    with pytest.raises(ValueError, match="dims"):
        FusedEncoder([], 2)
    enc = FusedEncoder([3, 4], 2)
    with pytest.raises(ValueError, match="expected 2 inputs"):
        enc(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        enc(torch.randn(2, 3), torch.randn(2, 5))


# ----------------------------------------------------------------------------- alignment_loss


def test_alignment_loss_aligned_lower_than_shuffled():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 8, generator=g)
    aligned = alignment_loss(a, a.clone())
    shuffled = alignment_loss(a, a[torch.randperm(32, generator=g)])
    assert aligned < shuffled
    assert aligned < 0.5


def test_alignment_loss_2x2_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    s = 1 / math.sqrt(2)
    # cosine matrix S = [[1, s], [0, s]] at temperature 1
    rows = -math.log(math.e / (math.e + math.exp(s))) - math.log(math.exp(s) / (1 + math.exp(s)))
    cols = -math.log(math.e / (math.e + 1)) + math.log(2)
    expected = 0.5 * (rows / 2 + cols / 2)
    assert alignment_loss(a, b, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # temperature divides the similarities
    rows2 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2 * s))) - math.log(math.exp(2 * s) / (1 + math.exp(2 * s)))
    cols2 = -math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)
    assert alignment_loss(a, b, temperature=0.5).item() == pytest.approx(0.25 * (rows2 + cols2), rel=1e-6)


def test_alignment_loss_projection_and_errors():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 3)
    with pytest.raises(ValueError, match="projection"):
        alignment_loss(a, b)
    proj = torch.nn.Linear(4, 3)
    loss = alignment_loss(a, b, projection=proj)
    assert loss.dim() == 0
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same number of rows"):
        alignment_loss(a, torch.randn(5, 4))
    with pytest.raises(ValueError, match="temperature"):
        alignment_loss(a, a, temperature=0)
    assert alignment_loss(a[:1], a[:1]).item() == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- train_rqvae(align_with=)


def _synthetic(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 8, generator=g)
    c = x @ w + 0.5 * torch.randn(n, 8, generator=g)  # collaborative vectors: noisy linear in x
    return x, c


def _model():
    return RQVAE(16, hidden=(32,), latent=8, levels=2, codebook_size=16, seed=0)


def _probe(model, x, c):
    """Linear (least-squares) probe from the quantized latents to c; returns (R^2, InfoNCE, top-1)."""
    with torch.no_grad():
        z = model.quantizer.decode(model.encode(x))
    z1 = torch.cat([z, torch.ones(len(z), 1)], 1)
    pred = z1 @ torch.linalg.lstsq(z1, c).solution
    r2 = 1 - ((pred - c) ** 2).sum() / ((c - c.mean(0)) ** 2).sum()
    sims = F.normalize(pred, dim=1) @ F.normalize(c, dim=1).T
    top1 = (sims.argmax(1) == torch.arange(len(c))).float().mean()
    return r2.item(), alignment_loss(pred, c).item(), top1.item()


def test_train_rqvae_alignment_improves_alignment():
    x, c = _synthetic()
    kw = dict(epochs=30, batch_size=64, lr=3e-3, seed=0)
    plain = _model()
    train_rqvae(plain, x, **kw)
    aligned = _model()
    losses = train_rqvae(aligned, x, align_with=c, align_weight=0.1, **kw)
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert not hasattr(plain, "align_head")
    r2_p, nce_p, top1_p = _probe(plain, x, c)
    r2_a, nce_a, top1_a = _probe(aligned, x, c)
    assert r2_a > r2_p + 0.1
    assert nce_a < nce_p - 0.5
    assert top1_a > top1_p
    # the learned head itself aligns the quantized latents with c
    with torch.no_grad():
        z = aligned.quantizer.decode(aligned.encode(x))
        head_loss = alignment_loss(aligned.align_head(z), c).item()
    assert head_loss < math.log(len(x)) - 1


def test_train_rqvae_align_head_state_dict_and_reuse():
    x, c = _synthetic(64)
    m = _model()
    train_rqvae(m, x, epochs=2, batch_size=32, align_with=c)
    assert isinstance(m.align_head, torch.nn.Linear)
    assert (m.align_head.in_features, m.align_head.out_features) == (8, 8)
    sd = m.state_dict()
    assert "align_head.weight" in sd and "align_head.bias" in sd
    head = m.align_head
    before = head.weight.detach().clone()
    train_rqvae(m, x, epochs=1, batch_size=32, align_with=c)
    assert m.align_head is head and not torch.equal(head.weight, before)  # reused and trained
    fresh = _model()
    fresh.align_head = torch.nn.Linear(8, 8)
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh.align_head.weight, sd["align_head.weight"])
    # a different width replaces the head
    train_rqvae(m, x, epochs=1, batch_size=32, align_with=c[:, :3])
    assert m.align_head.out_features == 3


def test_train_rqvae_align_errors():
    x, c = _synthetic(64)
    m = _model()
    with pytest.raises(ValueError, match="align_with"):
        train_rqvae(m, x, epochs=1, align_with=c[:10])
    with pytest.raises(ValueError, match="align_with"):
        train_rqvae(m, x, epochs=1, align_with=c[:, 0])
    bad = c.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        train_rqvae(m, x, epochs=1, align_with=bad)
    with pytest.raises(ValueError, match="align_temperature"):
        train_rqvae(m, x, epochs=1, align_with=c, align_temperature=0.0)
    with pytest.raises(ValueError, match="align_weight"):
        train_rqvae(m, x, epochs=1, align_with=c, align_weight=-1.0)
    with pytest.raises(TypeError, match="align_with"):
        train_rqvae(m, x, epochs=1, align_with=c.numpy())


def test_train_rqvae_default_unchanged():
    x, _ = _synthetic(128)
    kw = dict(epochs=3, batch_size=32, lr=3e-3, seed=1)
    m1, m2 = _model(), _model()
    l1 = train_rqvae(m1, x, **kw)
    l2 = train_rqvae(m2, x, align_with=None, align_weight=5.0, align_temperature=1.0, **kw)
    assert l1 == l2
    assert not hasattr(m1, "align_head") and not hasattr(m2, "align_head")
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k

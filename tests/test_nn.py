"""pysid.nn: ResidualQuantizer (k-means init, EMA, dead-code reset, Sinkhorn levels,
progressive masking, gradient training, eval mode), RQVAE + train_rqvae, determinism,
errors, and 2-process agreement under torch.distributed / DDP."""

from __future__ import annotations

import math

import pytest
import torch

import pysid
from conftest import run_two_processes
from pysid.nn import RQVAE, ResidualQuantizer, sinkhorn_codes, train_rqvae


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster and immune to other jobs on a shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def blobs(n: int, d: int, centers: int, seed: int = 0, spread: float = 4.0, data_seed: int | None = None) -> torch.Tensor:
    """n rows around `centers` Gaussian centres (centres from `seed`, rows from `data_seed`)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * spread
    if data_seed is not None:
        g = torch.Generator().manual_seed(data_seed)
    return c[torch.randint(0, centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


def rel_err(rec: torch.Tensor, x: torch.Tensor) -> float:
    return float(((rec - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_shapes_and_dtypes(update):
    x = blobs(300, 6, 10)
    rq = ResidualQuantizer(6, 3, [8, 4, 6], update=update, kmeans_iters=3)
    rq.init_from(x)
    before = rq.get_codebooks()  # EMA mode updates the codebooks after the output is computed
    out = rq(x)
    assert out.quantized.shape == (300, 6) and out.quantized.dtype == torch.float32
    assert out.codes.shape == (300, 3) and out.codes.dtype == torch.int64
    for lvl, k in enumerate([8, 4, 6]):
        assert int(out.codes[:, lvl].min()) >= 0 and int(out.codes[:, lvl].max()) < k
    for t in (out.loss, out.codebook_loss, out.commitment_loss):
        assert t.shape == () and math.isfinite(float(t.detach()))
    assert out.distances.shape == (300, 3) and out.distances.dtype == torch.float32
    assert out.usage.shape == (3,) and out.perplexity.shape == (3,)
    assert bool((out.usage > 0).all()) and bool((out.usage <= 1).all())
    assert bool((out.perplexity >= 1).all()) and bool((out.perplexity <= torch.tensor([8.0, 4.0, 6.0]) + 1e-4).all())
    assert torch.equal(out.depth, torch.full((300,), 3)) and out.dead_codes.tolist() == [0, 0, 0]
    assert isinstance(rq.get_codebooks(), list) and [c.shape for c in rq.codebooks] == [(8, 6), (4, 6), (6, 6)]
    assert len(list(rq.parameters())) == (3 if update == "gradient" else 0)
    # the codes decode to the quantized vectors; distances are the residual norms
    q = sum(before[lvl][out.codes[:, lvl]] for lvl in range(3))
    torch.testing.assert_close(q, out.quantized.detach())
    if update == "gradient":
        torch.testing.assert_close(rq.decode(out.codes), out.quantized.detach())
    torch.testing.assert_close(out.distances[:, -1], ((x - out.quantized.detach()) ** 2).sum(1), rtol=1e-4, atol=1e-4)
    # perplexity / usage from the histogram
    h = torch.bincount(out.codes[:, 0], minlength=8).float() / 300
    assert float(out.usage[0]) == pytest.approx(float((h > 0).float().mean()))
    assert float(out.perplexity[0]) == pytest.approx(math.exp(-float((h[h > 0] * h[h > 0].log()).sum())), rel=1e-5)
    # bfloat16 in, bfloat16 out; empty batch in eval mode
    rq.eval()
    assert rq(x.bfloat16()).quantized.dtype == torch.bfloat16
    assert rq(x[:0]).codes.shape == (0, 3)
    assert rq.encode(x).dtype == torch.int64

    model = RQVAE(12, hidden=(16, 8), latent=4, levels=2, codebook_size=5, kmeans_iters=2)
    xb = blobs(64, 12, 4)
    o = model(xb)
    assert o.reconstruction.shape == (64, 12) and o.codes.shape == (64, 2) and o.latent.shape == (64, 4)
    assert o.loss.shape == () and float(o.loss.detach()) == pytest.approx(float((o.reconstruction_loss + o.rq_loss).detach()))
    assert o.quantizer.quantized.shape == (64, 4)
    codes = model.encode(xb, batch_size=10)
    assert codes.shape == (64, 2) and codes.dtype == torch.int64 and model.training  # mode restored
    assert model.decode(codes).shape == (64, 12)
    assert model.encode(xb[:0]).shape == (0, 2)


def test_default_rqvae_is_tigers():
    m = RQVAE(768)
    lin = [mod for mod in m.encoder if isinstance(mod, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lin] == [(768, 512), (512, 256), (256, 128), (128, 32)]
    lin = [mod for mod in m.decoder if isinstance(mod, torch.nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lin] == [(32, 128), (128, 256), (256, 512), (512, 768)]
    q = m.quantizer
    assert (q.levels, q.codebook_sizes, q.commitment, q.update, q.init) == (3, [256] * 3, 0.25, "gradient", "kmeans")


# --------------------------------------------------------------------------- init
def test_kmeans_init_on_first_batch_and_loss_is_tigers():
    x = blobs(400, 8, 12, seed=3)
    rq = ResidualQuantizer(8, 2, 16, kmeans_iters=4, seed=7)
    assert not bool(rq.initialized)
    with pytest.raises(RuntimeError, match="not initialised"):
        rq.eval()(x)
    rq.train()
    out = rq(x)
    assert bool(rq.initialized)
    expect = pysid.residual_kmeans(x, 2, 16, iters=4, seed=7)
    assert torch.equal(rq.get_codebooks(), expect)
    assert torch.equal(out.codes, pysid.residual_quantize(x, expect).codes.long())
    # gradient-mode loss = pysid.rq_vae_loss (TIGER)
    torch.testing.assert_close(out.loss, pysid.rq_vae_loss(x, rq.codebooks, out.codes, beta=0.25))
    torch.testing.assert_close(out.codebook_loss, out.commitment_loss)
    # the second batch does not re-initialise; init_from(data) does the same as the first batch
    rq(blobs(400, 8, 12, seed=3, data_seed=9))
    assert torch.equal(rq.get_codebooks(), expect)
    rq2 = ResidualQuantizer(8, 2, 16, kmeans_iters=4, seed=7)
    rq2.init_from(x)
    assert torch.equal(rq2.get_codebooks(), expect)
    # the first batch must hold max(K) rows
    with pytest.raises(ValueError, match="at least max"):
        ResidualQuantizer(8, 2, 16)(x[:10])


def test_straight_through_and_gradients():
    x = blobs(200, 5, 6).requires_grad_(True)
    rq = ResidualQuantizer(5, 2, 8, kmeans_iters=2)
    out = rq(x)
    out.quantized.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through
    assert all(c.grad is None for c in rq.codebooks)  # codebooks learn from the loss only
    x.grad = None
    out = rq(x)
    out.loss.backward()
    assert all(c.grad is not None and float(c.grad.abs().sum()) > 0 for c in rq.codebooks)
    assert float(x.grad.abs().sum()) > 0  # commitment term reaches the input


# --------------------------------------------------------------------------- EMA
def test_ema_update_matches_hand_computation():
    decay, eps, beta = 0.5, 1e-3, 0.25
    rq = ResidualQuantizer(2, 2, 2, update="ema", ema_decay=decay, ema_epsilon=eps, commitment=beta,
                           init="random", dead_code_window=0)
    c0 = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    c1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    rq.set_codebooks([c0, c1])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 10.0], [11.0, 11.0], [10.0, 12.0]])
    out = rq(x)
    # level 0: rows 0,1 -> code 0; rows 2,3,4 -> code 1
    assert out.codes[:, 0].tolist() == [0, 0, 1, 1, 1]
    # level-1 residuals: (1,0) (0,1) (-1,0) (1,1) (0,2): codes 0 0 0 1 1
    assert out.codes[:, 1].tolist() == [0, 0, 0, 1, 1]

    def expected(c, n, s):  # N = 1, S = c before the step (set_codebooks)
        N = decay * 1.0 + (1 - decay) * torch.tensor(n)
        S = decay * c + (1 - decay) * torch.tensor(s)
        tot = N.sum()
        return S / ((N + eps) / (tot + 2 * eps) * tot)[:, None], N, S

    e0, n0, s0 = expected(c0, [2.0, 3.0], [[1.0, 1.0], [30.0, 33.0]])
    e1, n1, s1 = expected(c1, [3.0, 2.0], [[0.0, 1.0], [1.0, 3.0]])
    torch.testing.assert_close(rq.codebook_0, e0)
    torch.testing.assert_close(rq.codebook_1, e1)
    torch.testing.assert_close(rq.ema_count_0, n0)
    torch.testing.assert_close(rq.ema_sum_1, s1)
    # the codebooks moved toward the assigned means: (0.5, 0.5) and (10, 11)
    assert float((rq.codebook_0[1] - torch.tensor([10.0, 11.0])).norm()) < float((c0[1] - torch.tensor([10.0, 11.0])).norm())
    # EMA mode: loss = commitment term only, computed with the codebooks of the step's start
    q = c0[out.codes[:, 0]] + c1[out.codes[:, 1]]
    torch.testing.assert_close(out.quantized, q)
    commit = ((x - c0[out.codes[:, 0]]) ** 2).mean() + ((x - q) ** 2).mean()
    torch.testing.assert_close(out.commitment_loss, commit)
    torch.testing.assert_close(out.loss, beta * commit)
    assert not out.codebook_loss.requires_grad


def test_eval_mode_is_greedy_and_updates_nothing():
    x = blobs(300, 6, 10)
    rq = ResidualQuantizer(6, 2, 8, update="ema", balanced_levels=(0, 1), progressive=True, dead_code_window=1,
                           kmeans_iters=3)
    rq(x)
    state = {k: v.clone() for k, v in rq.state_dict().items()}
    rq.eval()
    y = blobs(300, 6, 10, data_seed=4) * 3
    for _ in range(3):
        out = rq(y)
    for k, v in rq.state_dict().items():
        assert torch.equal(v, state[k]), k
    ref = pysid.residual_quantize(y, rq.codebooks)
    assert torch.equal(out.codes, ref.codes.long()) and torch.equal(out.quantized, ref.quantized)
    assert torch.equal(out.depth, torch.full((300,), 2)) and out.dead_codes.tolist() == [0, 0]


# --------------------------------------------------------------------------- dead codes
def test_dead_code_reset_reseeds_only_unused_codes():
    c0 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [100.0, 100.0], [-100.0, 100.0]])
    c1 = torch.tensor([[0.0, 0.0], [0.5, 0.0], [50.0, 50.0], [-50.0, -50.0]])

    def run():
        rq = ResidualQuantizer(2, 2, 4, init="random", dead_code_window=3, dead_code_threshold=1)
        rq.set_codebooks([c0, c1])
        seen0, seen1, outs = [], [], []
        for step in range(4):
            g = torch.Generator().manual_seed(step)
            x = torch.tensor([[0.0, 0.0], [10.0, 0.0]])[torch.arange(64) % 2] + 0.5 * torch.randn(64, 2, generator=g)
            out = rq(x)
            seen0.append(x)
            seen1.append(x - c0[out.codes[:, 0]])
            outs.append((out.dead_codes.tolist(), rq.get_codebooks()))
        return outs, torch.cat(seen0), torch.cat(seen1)

    outs, seen0, seen1 = run()
    assert [o[0] for o in outs] == [[0, 0], [0, 0], [2, 2], [0, 0]]  # unused for 3 steps -> reset at step 3
    assert torch.equal(outs[1][1][0], c0) and torch.equal(outs[1][1][1], c1)
    cb = outs[2][1]
    assert torch.equal(cb[0, :2], c0[:2]) and torch.equal(cb[1, :2], c1[:2])  # used codes untouched
    for lvl, seen in ((0, seen0), (1, seen1)):
        new = cb[lvl, 2:]
        assert not torch.equal(new[0], new[1])  # drawn without replacement
        for row in new:  # each new codeword is a recent residual row of its own level
            assert bool(((seen - row).abs().max(1).values < 1e-6).any())
    again, _, _ = run()
    assert all(torch.equal(a[1], b[1]) for a, b in zip(outs, again))  # deterministic for the seed


# --------------------------------------------------------------------------- balanced levels
def test_balanced_levels_even_out_usage_on_skewed_data():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(900, 8, generator=g) * 0.3, torch.randn(100, 8, generator=g) * 3 + 2])
    x = x[torch.randperm(1000, generator=g)]
    init = pysid.residual_kmeans(x, 2, 16, iters=10, seed=0)
    res = {}
    for bl in ((), (0,)):
        rq = ResidualQuantizer(8, 2, 16, balanced_levels=bl, init="random", dead_code_window=0)
        rq.set_codebooks(init)
        res[bl] = rq(x)
    plain, bal = res[()], res[(0,)]
    cp = torch.bincount(plain.codes[:, 0], minlength=16)
    cb = torch.bincount(bal.codes[:, 0], minlength=16)
    assert float(bal.perplexity[0]) > float(plain.perplexity[0]) + 4
    assert int(cb.max()) < int(cp.max()) // 2
    assert not torch.equal(bal.codes[:, 1], plain.codes[:, 1])  # level 1 sees other residuals
    # the distances and quantized output follow the balanced codes
    q = init[0][bal.codes[:, 0]] + init[1][bal.codes[:, 1]]
    torch.testing.assert_close(bal.quantized, q)
    torch.testing.assert_close(bal.distances[:, 1], ((x - q) ** 2).sum(1), rtol=1e-4, atol=1e-4)
    # Sinkhorn where the nearest codes already form a permutation: that permutation
    perm = torch.randperm(6, generator=g)
    assert torch.equal(sinkhorn_codes(1.0 - torch.eye(6)[perm] + 0.01 * torch.rand(6, 6, generator=g)), perm)
    # 12 rows that all prefer code 0 of 3: Sinkhorn spreads them (exactly 4/4/4 once converged;
    # LETTER's 50 iterations at epsilon 0.003 only part of the way), cheapest-to-move rows first
    d = torch.tensor([[0.0, 1.0, 2.0]]).repeat(12, 1) + torch.linspace(0, 0.5, 12)[:, None] * torch.tensor([[0.0, -1.0, -2.0]])
    assert torch.bincount(sinkhorn_codes(d), minlength=3).tolist() == [7, 3, 2]
    codes = sinkhorn_codes(d, iters=200)
    assert torch.bincount(codes, minlength=3).tolist() == [4, 4, 4]
    assert codes[:4].tolist() == [0] * 4


# --------------------------------------------------------------------------- progressive masking
def test_progressive_masking_uses_random_prefixes():
    x = blobs(600, 6, 10).requires_grad_(True)
    rq = ResidualQuantizer(6, 3, 8, progressive=True, kmeans_iters=3)
    out = rq(x)
    assert set(out.depth.tolist()) == {1, 2, 3}
    for d in (1, 2, 3):  # roughly uniform
        assert 120 < int((out.depth == d).sum()) < 280
    cbs = rq.codebooks
    full = torch.stack([cbs[lvl][out.codes[:, lvl]] for lvl in range(3)], 1)  # [B, L, D]
    mask = (torch.arange(3)[None, :] < out.depth[:, None]).float()
    torch.testing.assert_close(out.quantized, (full * mask[:, :, None]).sum(1).detach(), rtol=1e-5, atol=1e-5)
    out.quantized.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # still straight-through
    # codes/loss cover all levels; eval uses the full depth
    assert out.codes.shape == (600, 3)
    rq.eval()
    ev = rq(x)
    assert torch.equal(ev.depth, torch.full((600,), 3))
    torch.testing.assert_close(ev.quantized, full.sum(1).detach(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- training
def test_gradient_mode_trains_toy_problem():
    x = blobs(512, 8, 8, seed=2)
    rq = ResidualQuantizer(8, 2, 8, init="random", dead_code_window=0, seed=1)
    opt = torch.optim.Adam(rq.parameters(), lr=0.1)
    losses = []
    for _ in range(60):
        out = rq(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.3 * losses[0]
    assert float(out.usage[0]) * 8 > 1 and float(out.usage[1]) * 8 > 1


def test_rqvae_trains_and_beats_random_codebooks():
    x = blobs(1200, 32, 30, seed=5)
    model = RQVAE(32, hidden=(64, 32), latent=8, levels=3, codebook_size=16, kmeans_iters=10)
    losses = train_rqvae(model, x, epochs=40, batch_size=200, lr=3e-3, seed=0)
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert model.training  # the mode it had before the call
    codes = model.encode(x)
    err = rel_err(model.decode(codes).detach(), x)
    # baseline: residual codebooks of random data rows (no training) on the raw embeddings,
    # averaged over draws (one draw's error varies by +-10 % here)
    base = sum(rel_err(pysid.residual_quantize(x, pysid.residual_kmeans(x, 3, 16, iters=0, init="random",
                                                                        seed=s)).quantized, x)
               for s in range(4)) / 4
    assert err < 0.5 * base, (err, base)
    assert err < 0.3
    assert len(set(map(tuple, codes.tolist()))) > 60  # the codes separate the items


def test_determinism_for_a_seed():
    x = blobs(400, 16, 10, seed=1)

    def run(seed):
        m = RQVAE(16, hidden=(24,), latent=6, levels=2, codebook_size=8, seed=seed, kmeans_iters=3,
                  update="ema", balanced_levels=(1,), progressive=True, dead_code_window=2)
        losses = train_rqvae(m, x, epochs=3, batch_size=100, seed=seed)
        return losses, m.state_dict(), m.encode(x)

    l1, s1, c1 = run(0)
    l2, s2, c2 = run(0)
    assert l1 == l2 and torch.equal(c1, c2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    l3, _, _ = run(1)
    assert l3 != l1


def test_errors():
    with pytest.raises(ValueError, match="levels"):
        ResidualQuantizer(4, 0, 8)
    with pytest.raises(ValueError, match="dim"):
        ResidualQuantizer(0, 2, 8)
    for bad in (0, -3, [8, 0], [8], 2.5, "8", True):
        with pytest.raises(ValueError, match="codebook_size"):
            ResidualQuantizer(4, 2, bad)
    with pytest.raises(ValueError, match="update"):
        ResidualQuantizer(4, 2, 8, update="adam")
    with pytest.raises(ValueError, match="init"):
        ResidualQuantizer(4, 2, 8, init="zeros")
    with pytest.raises(ValueError, match="ema_decay"):
        ResidualQuantizer(4, 2, 8, update="ema", ema_decay=1.0)
    with pytest.raises(ValueError, match="balanced_levels"):
        ResidualQuantizer(4, 2, 8, balanced_levels=(2,))
    with pytest.raises(ValueError, match="dead_code_window"):
        ResidualQuantizer(4, 2, 8, dead_code_window=-1)
    rq = ResidualQuantizer(4, 2, 8, init="random")
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        rq(torch.randn(10, 5))
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        rq(torch.randn(10))
    with pytest.raises(TypeError, match="floating"):
        rq(torch.ones(10, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        rq(torch.full((10, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\[8, 4\]"):
        rq.set_codebooks(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match="codes"):
        rq.decode(torch.full((3, 2), 8))
    with pytest.raises(ValueError, match="levels"):
        rq.decode(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="in_dim"):
        RQVAE(8, hidden=(4,), latent=2, levels=1, codebook_size=2)(torch.randn(3, 9))
    with pytest.raises(ValueError, match="levels"):
        RQVAE(8, levels=0)
    with pytest.raises(ValueError, match="NaN"):
        m = RQVAE(8, hidden=(4,), latent=2, levels=1, codebook_size=2)
        train_rqvae(m, torch.full((5, 8), float("inf")), epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        train_rqvae(m, torch.randn(5, 8), epochs=0)


# --------------------------------------------------------------------------- 2 processes
def _ddp_worker(rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    res = {}
    # (a) EMA quantizer, k-means init on the union, then data that leaves codes unused
    rq = ResidualQuantizer(4, 2, 8, update="ema", kmeans_iters=3, dead_code_window=2, seed=3)
    dead = []
    for step in range(5):
        x = blobs(96 + 16 * rank, 4, 10, seed=1, data_seed=100 * rank + step)
        if step:
            x = x * 0.2 + rank  # concentrated, different per rank
        dead.append(rq(x).dead_codes)
    res["a"] = {k: v.clone() for k, v in rq.state_dict().items()}
    res["a_dead"] = torch.stack(dead)
    # (b) EMA quantizer without resets: equals one process on the concatenated batches
    rq = ResidualQuantizer(4, 2, 8, update="ema", kmeans_iters=3, dead_code_window=0, seed=3)
    for step in range(3):
        rq(blobs(128, 4, 10, seed=1, data_seed=10 * rank + step))
    res["b"] = rq.get_codebooks()
    # (c) RQVAE in DDP, gradient mode, k-means init inside the first forward, dead codes
    model = RQVAE(12, hidden=(16,), latent=4, levels=2, codebook_size=8, kmeans_iters=3,
                  dead_code_window=2, balanced_levels=(1,), progressive=True, seed=5)
    ddp = DDP(model, broadcast_buffers=False)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    cdead = 0
    for step in range(4):
        x = blobs(64, 12, 6, seed=2, data_seed=50 * rank + step) * (1 + rank)
        out = ddp(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        cdead += int(out.quantizer.dead_codes.sum())
    res["c"] = {k: v.clone() for k, v in model.state_dict().items()}
    res["c_dead"] = cdead
    return res


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_two_processes_agree(tmp_path):
    r0, r1 = run_two_processes(_ddp_worker, tmp_path)
    for key in ("a", "c"):
        assert r0[key].keys() == r1[key].keys()
        for k in r0[key]:
            assert torch.equal(r0[key][k], r1[key][k]), (key, k)
    assert torch.equal(r0["a_dead"], r1["a_dead"]) and int(r0["a_dead"].sum()) > 0  # resets happened
    assert r0["c_dead"] == r1["c_dead"]
    # (b) = one process on the union of the ranks' batches
    one = ResidualQuantizer(4, 2, 8, update="ema", kmeans_iters=3, dead_code_window=0, seed=3)
    for step in range(3):
        one(torch.cat([blobs(128, 4, 10, seed=1, data_seed=10 * r + step) for r in range(2)]))
    assert torch.equal(r0["b"], r1["b"])
    torch.testing.assert_close(r0["b"], one.get_codebooks(), rtol=1e-4, atol=1e-4)

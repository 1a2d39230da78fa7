"""One test per model parameter of the guide: each changes the model in a visible way."""

from __future__ import annotations

import pytest
import torch
from model_batches import make_batch, make_meta
from vqatune.engine import config
from vqatune.engine.model import ban as ban_mod
from vqatune.engine.model import build_model
from vqatune.engine.model.graph import GATLayer, MGATLayer
from vqatune.engine.model.samplers import gumbel_topk, imle_topk, topk_khot


def tiny(**changes):
    base = dict(question_len=6, max_boxes=8, num_stat_word=4)
    base.update(changes)
    return config.load("smoke").replace(**base)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def twin_outputs(meta, change: dict, key="ban", base: dict | None = None):
    """Same weights, one parameter changed: the two models' logits (eval mode)."""
    cfg = tiny(**(base or {}))
    torch.manual_seed(0)
    a = build_model(cfg, meta).eval()
    b = build_model(cfg.replace(**change), meta).eval()
    b.load_state_dict(a.state_dict())
    batch = make_batch(cfg, meta)
    with torch.no_grad():
        return a(batch)["logits"], b(batch)["logits"]


# ---- BAN ------------------------------------------------------------------------------------


def test_gamma_sets_glimpses():
    meta = make_meta("pixels")
    for g in (1, 3):
        model = build_model(tiny(gamma=g), meta)
        assert len(model.ban.b_net) == g and len(model.ban.q_prj) == g
        assert model.ban.v_att.h_mat.shape[0] == g


def test_use_counter_adds_the_counting_module():
    meta = make_meta("regions")
    assert build_model(tiny(use_counter=False), meta).ban.counter is None
    model = build_model(tiny(use_counter=True), meta)
    assert isinstance(model.ban.counter, ban_mod.Counter)
    a, b = twin_outputs(meta, {}, base={"use_counter": True})
    assert torch.equal(a["ban"], b["ban"])  # twins agree; the counter's effect is tested below
    cfg = tiny(use_counter=True)
    with torch.no_grad():
        model.eval()
        batch = make_batch(cfg, meta)
        before = model(batch)["logits"]["ban"]
        for proj in model.ban.c_prj:
            proj[0].bias.add_(1.0)
        assert not torch.allclose(before, model(batch)["logits"]["ban"])


@pytest.mark.parametrize(
    "act,cls",
    [("zhang", ban_mod.PiecewiseLin), ("sigmoid", ban_mod.SigmoidFn), ("relu", ban_mod.RampFn)],
)
def test_counter_act_selects_the_counter_functions(act, cls):
    model = build_model(tiny(use_counter=True, counter_act=act), make_meta("regions"))
    assert all(isinstance(f, cls) for f in model.ban.counter.f)
    x = torch.linspace(0, 1, 11)
    y = cls()(x)
    assert (y.diff() >= 0).all() and y.min() >= 0 and y.max() <= 1  # monotone on [0, 1]


def test_counter_counts_separate_confident_boxes():
    counter = ban_mod.Counter(objects=10, act="zhang")
    boxes = torch.tensor(
        [[[0.0, 0, 0.1, 0.1], [0.3, 0.3, 0.4, 0.4], [0.6, 0.6, 0.7, 0.7], [0.8, 0.0, 0.9, 0.1]]]
    )
    counts = []
    for relevant in range(1, 5):
        att = torch.full((1, 4), -20.0)
        att[0, :relevant] = 20.0
        counts.append(counter(boxes, att).argmax(1).item())
    assert counts == [1, 2, 3, 4]
    # a duplicate of one box is not counted twice
    dup = torch.cat([boxes[:, :1], boxes[:, :1]], 1)
    assert counter(dup, torch.full((1, 2), 20.0)).argmax(1).item() == 1


def test_counter_activations_differ():
    torch.manual_seed(0)
    boxes = torch.rand(2, 6, 2)
    boxes = torch.cat([boxes, boxes + 0.2], -1)
    att = torch.randn(2, 6)
    outs = {a: ban_mod.Counter(objects=4, act=a)(boxes, att) for a in ("zhang", "sigmoid", "relu")}
    assert not torch.allclose(outs["zhang"], outs["sigmoid"])
    assert not torch.allclose(outs["zhang"], outs["relu"]) or not torch.allclose(
        outs["sigmoid"], outs["relu"]
    )


# ---- AoA, sizes, activation, dropout -----------------------------------------------------------


def test_aoa_layers_sets_block_count():
    meta = make_meta("pixels")
    one, three = build_model(tiny(AOA_layers=1), meta), build_model(tiny(AOA_layers=3), meta)
    assert len(one.ban.aoa.blocks) == 1 and len(three.ban.aoa.blocks) == 3
    assert count(three.ban.aoa) == 3 * count(one.ban.aoa)


def test_num_hid_sets_joint_width():
    meta = make_meta("pixels")
    for h in (16, 48):
        model = build_model(tiny(num_hid=h), meta)
        assert model.gru.hidden_size == h
        assert model.ban.aoa.blocks[0].q_self.norm_x.normalized_shape == (h,)
        first = model.ban.classifier.net[0]
        assert (first.in_features, first.out_features) == (h, 2 * h)


@pytest.mark.parametrize(
    "act,cls",
    [
        ("swish", torch.nn.SiLU),
        ("relu", torch.nn.ReLU),
        ("gelu", torch.nn.GELU),
        ("tanh", torch.nn.Tanh),
    ],
)
def test_activation_is_used_in_classifiers_and_feed_forwards(act, cls):
    model = build_model(tiny(activation=act), make_meta("pixels"))
    assert isinstance(model.ban.classifier.net[1], cls)
    assert isinstance(model.xvlm_head.net[1], cls)
    assert isinstance(model.graph.classifier.net[1], cls)
    assert isinstance(model.ban.aoa.blocks[0].v_ff.net[2], cls)


def test_dropout_rate_reaches_the_heads():
    meta = make_meta("pixels")
    model = build_model(tiny(dropout=0.3), meta)
    rates = {
        m.p
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Dropout) and not n.startswith("backbone")
    }
    assert rates == {0.3}
    cfg = tiny(dropout=0.5)
    model = build_model(cfg, meta)
    batch = make_batch(cfg, meta)
    torch.manual_seed(1)
    a = model(batch)["logits"]["ban"]
    torch.manual_seed(2)
    b = model(batch)["logits"]["ban"]
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(batch)["logits"]["ban"], model(batch)["logits"]["ban"])


def test_tfidf_initialises_word_embeddings_from_meta():
    meta = make_meta("pixels", word_init=True)
    model = build_model(tiny(tfidf=True), meta)
    assert torch.equal(model.word_tfidf.weight, torch.as_tensor(meta.word_init))
    assert model.gru.input_size == 600  # [own ; TF-IDF], ban-vqa's op "c"
    model = build_model(tiny(tfidf=False), meta)
    assert not hasattr(model, "word_tfidf") and model.gru.input_size == 300


def test_words_with_the_same_tfidf_vector_keep_apart():
    """Words seen in the same contexts (easy-VQA's colours) get the same TF-IDF vector; their own
    vectors beside it must still tell them apart."""
    meta = make_meta("pixels", word_init=True)
    meta.word_init[3] = meta.word_init[4]
    model = build_model(tiny(tfidf=True), meta)
    words = model.embed_words(torch.tensor([[3, 4]]))[0]  # [2, 600]
    assert torch.equal(words[0, 300:], words[1, 300:])
    assert (words[0] - words[1]).norm() > 0.5 * words[0].norm()


# ---- CFRF fusion weights, fusion ratio -----------------------------------------------------------


def test_omega_q_weights_the_question_entity_fusion():
    meta = make_meta("regions")
    a, b = twin_outputs(meta, {"omega_q": 0.5})
    assert not torch.allclose(a["ban"], b["ban"])
    assert torch.equal(a["xvlm"], b["xvlm"])  # only the BAN branch reads it
    a, b = twin_outputs(meta, {"omega_q": 0.0}, base={"omega_q": 0.0})
    assert torch.equal(a["ban"], b["ban"])


def test_omega_v_weights_the_statistics_words_fusion():
    meta = make_meta("regions")
    a, b = twin_outputs(meta, {"omega_v": 0.5})
    assert not torch.allclose(a["ban"], b["ban"])
    assert torch.equal(a["graph"], b["graph"])


def test_fusion_ratio_scales_the_fused_loss():
    meta = make_meta("pixels")
    cfg = tiny(fusion_ratio=0.1)
    torch.manual_seed(0)
    model = build_model(cfg, meta).eval()
    batch = make_batch(cfg, meta)
    out = model(batch)
    low, parts = model.loss(out, batch)
    model.cfg = cfg.replace(fusion_ratio=0.2)
    high, _ = model.loss(out, batch)
    assert torch.allclose(high - low, 0.1 * parts["fused"])


# ---- ISubGVQA ----------------------------------------------------------------------------------


def test_general_hidden_dim_sets_graph_width():
    meta = make_meta("regions")
    for d in (8, 24):
        model = build_model(tiny(general_hidden_dim=d), meta)
        assert model.graph.name_emb.embedding_dim == d
        assert model.graph.instr_queries.shape[1] == d


def test_mgat_layers_sets_message_passing_depth():
    meta = make_meta("regions")
    for n in (1, 5):  # MGHR capped this at 4; vqatune does not
        model = build_model(tiny(mgat_layers=n), meta)
        assert len(model.graph.layers) == n and model.graph.instr_queries.shape[0] == n


def test_use_mgat_selects_the_layer_type():
    meta = make_meta("regions")
    assert all(
        isinstance(layer, GATLayer) for layer in build_model(tiny(use_mgat=0), meta).graph.layers
    )
    assert all(
        isinstance(layer, MGATLayer) for layer in build_model(tiny(use_mgat=1), meta).graph.layers
    )


def test_use_instruction_gates_node_states():
    meta = make_meta("regions")
    assert build_model(tiny(use_instruction=0), meta).graph.instr_gates is None
    model = build_model(tiny(use_instruction=1, mgat_layers=3), meta)
    assert len(model.graph.instr_gates) == 3
    with torch.no_grad():
        cfg = tiny(use_instruction=1, mgat_layers=3)
        batch = make_batch(cfg, meta)
        model.eval()
        before = model(batch)["logits"]["graph"]
        model.graph.instr_gates[0].bias.fill_(-30.0)  # close the first layer's gate
        assert not torch.allclose(before, model(batch)["logits"]["graph"])


@pytest.mark.parametrize("k", [1, 3])
def test_use_masking_keeps_sample_k_nodes(k):
    meta = make_meta("regions")
    cfg = tiny(use_masking=1, sample_k=k)
    model = build_model(cfg, meta).eval()
    batch = make_batch(cfg, meta)
    kept = model(batch)["node_weights"]
    assert torch.equal(kept.sum(1), torch.full((4,), float(k)))
    assert ((kept == 0) | (kept == 1)).all() and not (kept.bool() & ~batch["node_mask"]).any()
    cfg = tiny(use_masking=0)
    model = build_model(cfg, meta).eval()
    assert model.graph.node_score is None
    assert torch.equal(model(batch)["node_weights"], batch["node_mask"].float())


def test_sampler_type_imle_is_exact_gumbel_is_relaxed():
    meta = make_meta("regions")
    out = {}
    for kind in ("imle", "gumbel"):
        cfg = tiny(sampler_type=kind, sample_k=2)
        torch.manual_seed(0)
        model = build_model(cfg, meta).train()
        out[kind] = model(make_batch(cfg, meta))["node_weights"]
    assert ((out["imle"] == 0) | (out["imle"] == 1)).all()
    assert ((out["gumbel"] > 0) & (out["gumbel"] < 1)).any()
    for w in out.values():
        assert torch.allclose(w.sum(1), torch.full((4,), 2.0), atol=1e-4)


def test_nb_samples_averages_samples():
    torch.manual_seed(0)
    theta, mask = torch.zeros(1, 6), torch.ones(1, 6, dtype=torch.bool)
    one = imle_topk(theta, mask, 2, tau=1.0, nb_samples=1, alpha=1, beta=1, training=True)
    many = imle_topk(theta, mask, 2, tau=1.0, nb_samples=4, alpha=1, beta=1, training=True)
    assert set(one.flatten().tolist()) <= {0.0, 1.0}
    assert set((many * 4).flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert many.sum().item() == pytest.approx(2.0)
    assert ((many > 0) & (many < 1)).any()  # with equal scores, draws disagree


def test_imle_gradient_matches_its_formula():
    """dL/dtheta = mean_s[topk(theta + e_s) - topk(alpha*theta - beta*dL/dz + e_s)] / beta: a
    finite difference of step beta (torch-imle's scaling). Without the 1/beta every flipped node
    got a gradient of 1 whatever the loss scale, and the graph branch's sampler swamped the
    backbone's gradients (easy-VQA colour accuracy 19% instead of 83% after 300 steps)."""
    theta = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]], requires_grad=True)
    mask = torch.ones(1, 5, dtype=torch.bool)
    noise = torch.tensor([[[0.1, -0.2, 0.3, 0.0, 0.05]], [[-0.5, 0.4, 0.0, 0.2, 0.1]]])  # S=2
    w = torch.tensor([[1.0, 0.5, -2.0, 3.0, -0.5]])  # L = sum(w * z), dL/dz = w / ... (mean)
    for alpha, beta in ((1.0, 10.0), (0.5, 2.0), (2.0, 0.7)):
        theta.grad = None
        z = imle_topk(
            theta,
            mask,
            2,
            tau=1.0,
            nb_samples=2,
            alpha=alpha,
            beta=beta,
            training=True,
            noise=noise,
        )
        (z * w).sum().backward()
        with torch.no_grad():
            sample = topk_khot(theta + noise, 2)
            target = topk_khot(alpha * theta - beta * w + noise, 2)
            expected = (sample - target).mean(0) / beta
        assert torch.allclose(theta.grad, expected), (alpha, beta)
        assert theta.grad.abs().max() <= 1 / beta + 1e-6  # bounded by the step, not by 1
    # alpha and beta change the gradient
    grads = []
    for alpha, beta in ((1.0, 0.1), (1.0, 10.0), (0.0, 0.1)):
        theta.grad = None
        z = imle_topk(
            theta,
            mask,
            2,
            tau=1.0,
            nb_samples=2,
            alpha=alpha,
            beta=beta,
            training=True,
            noise=noise,
        )
        (z * w).sum().backward()
        grads.append(theta.grad.clone())
    assert not torch.equal(grads[0], grads[1]) and not torch.equal(grads[0], grads[2])


def test_alpha_beta_reach_the_graph_sampler():
    meta = make_meta("regions")
    grads = {}
    for alpha, beta in ((1.0, 1e4), (1.0, 0.0)):
        cfg = tiny(alpha=alpha, beta=beta, sample_k=2)
        torch.manual_seed(0)
        model = build_model(cfg, meta).train()
        batch = make_batch(cfg, meta)
        torch.manual_seed(5)
        out = model(batch)
        model.loss(out, batch)[0].backward()
        grads[beta] = model.graph.node_score[0].weight.grad.clone()
    assert grads[0.0].abs().sum() == 0  # beta = 0, alpha = 1: target = theta, no signal
    assert grads[1e4].abs().sum() > 0  # a large step along -dL/dz changes the top-k


def test_tau_sets_the_gumbel_relaxation_temperature():
    torch.manual_seed(0)
    theta = torch.randn(8, 10)
    mask = torch.ones(8, 10, dtype=torch.bool)
    noise = -torch.log(-torch.log(torch.rand(1, 8, 10)))
    gaps = []
    for tau in (5.0, 1.0, 0.001):
        soft = gumbel_topk(theta, mask, 3, tau=tau, nb_samples=1, training=True, noise=noise)
        hard = topk_khot(theta + noise[0], 3)
        gaps.append((soft - hard).abs().sum().item())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01  # colder -> closer to the exact k-hot


def test_tau_scales_the_imle_noise():
    theta = torch.arange(10.0).repeat(4, 1)  # top-2 = the last two
    mask = torch.ones(4, 10, dtype=torch.bool)
    torch.manual_seed(0)
    cold = imle_topk(theta, mask, 2, tau=1e-3, nb_samples=8, alpha=1, beta=1, training=True)
    assert torch.equal(cold, topk_khot(theta, 2))
    torch.manual_seed(0)
    hot = imle_topk(theta, mask, 2, tau=20.0, nb_samples=8, alpha=1, beta=1, training=True)
    assert not torch.equal(hot, topk_khot(theta, 2))


def test_sample_k_is_capped_by_real_nodes():
    theta = torch.randn(2, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    z = imle_topk(theta, mask, 3, tau=1.0, nb_samples=1, alpha=1, beta=1, training=False)
    assert z.sum(1).tolist() == [2.0, 3.0]

"""DET's training step: the patch geometry matches inference, the loss goes down, ORI and DESC stay fixed."""
from __future__ import annotations

import numpy as np
import torch

from lift_localizer.training.det_phase import LEVEL, SOURCE, det_loss, det_terms, score_maps, to_patch_pixels
from lift_localizer.training.losses import softargmax
from lift_localizer.training.train_lift import _fixed, default_conf
from lift_localizer.nets.det import DET, analytic_init
from lift_localizer.weights import LoadedNetwork, load_network

CONF = {**default_conf, "softmax_beta": 100.0, "softargmax_beta": 100.0}


def _blob_patch(x: float, y: float, sigma: float = 2 * 64 / 12 / 2) -> torch.Tensor:
    """A dark Gaussian blob on grey at patch pixel (x, y), of the scale the patch was cut for
    (support 64 px = 12 sigma → sigma 5.3 px)."""
    r = np.arange(SOURCE, dtype=np.float32)
    g = np.exp(-((r[None, :] - x) ** 2 + (r[:, None] - y) ** 2) / (2 * sigma**2))
    return torch.from_numpy(128 - 100 * g)[None, None]


def test_training_level_is_the_inference_level_for_the_patch_scale():
    from lift_localizer.nets.scale_space import resize_ratio

    # The patch's descriptor support (64 px) is 12 sigma: sigma = 64 / 12 in patch pixels.
    assert LEVEL == round(SOURCE * resize_ratio(64 / 12))


def test_softargmax_of_the_analytic_det_finds_an_off_centre_blob():
    det = load_network("det")  # the |LoG| blob detector: its maximum is the blob's centre
    for x, y in ((63.5, 63.5), (80.0, 50.0), (45.0, 75.0)):
        with torch.no_grad():
            xy = to_patch_pixels(softargmax(score_maps(det, _blob_patch(x, y)), 1000.0), det.module.margin)
        assert np.allclose(xy[0].numpy(), (x, y), atol=1.0), (x, y, xy)


def _batch(seed: int = 0, n: int = 8) -> dict:
    from lift_localizer.synthetic import make_texture

    tex = torch.from_numpy(make_texture(384, seed=seed).astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, 384 - SOURCE, (2 * n, 2), generator=g)
    crops = torch.stack([tex[y:y + SOURCE, x:x + SOURCE] for x, y in corners.tolist()])[:, None]
    p1 = crops[:n]
    return {"p1": p1, "p2": (p1 + torch.randn(p1.shape, generator=g) * 3).clamp(0, 255), "p3": crops[n:],
            "p4": torch.full_like(p1, 128.0) + torch.randn(p1.shape, generator=g)}


def _nets():
    # DET from the analytic |LoG| start, whatever DET ships, so that the step sizes below keep their meaning.
    shipped = load_network("det")
    det = LoadedNetwork("det", analytic_init(DET()), shipped.card, shipped.path)
    return {"desc": _fixed(load_network("desc")), "ori": _fixed(load_network("ori")), "det": det}


def test_a_few_steps_on_a_fixed_batch_lower_the_det_loss():
    torch.manual_seed(0)
    nets, batch = _nets(), _batch()
    opt = torch.optim.Adam(nets["det"].module.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        loss = det_loss(det_terms(nets, batch, CONF), CONF)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(det_loss(det_terms(nets, batch, CONF), CONF)) < first


def test_det_gradient_comes_from_both_terms_and_never_reaches_ori_or_desc():
    nets, batch = _nets(), _batch(1)
    terms = det_terms(nets, batch, CONF)
    grads = {}
    for name in ("class", "pair"):
        nets["det"].module.zero_grad()
        terms = det_terms(nets, batch, CONF)
        terms[name].backward()
        grads[name] = nets["det"].module.conv.weight.grad.abs().sum().item()
    assert grads["class"] > 0 and grads["pair"] > 0
    assert all(p.grad is None for k in ("ori", "desc") for p in nets[k].module.parameters())


def _joint_nets():
    # The joint phase trains all three: none of them fixed.
    return {k: load_network(k) for k in ("desc", "ori", "det")}


def test_the_joint_loss_reaches_det_ori_and_desc():
    from lift_localizer.training.train_lift import joint_loss

    nets, batch = _joint_nets(), _batch(2)
    joint_loss(det_terms(nets, batch, CONF, with_p3=True), CONF).backward()
    for kind, net in nets.items():
        grads = [p.grad.abs().sum().item() for p in net.module.parameters() if p.grad is not None]
        assert grads and sum(grads) > 0, kind


def test_the_joint_loss_is_the_det_loss_plus_desc_negative_term():
    from lift_localizer.training.losses import desc_loss
    from lift_localizer.training.train_lift import joint_loss

    nets, batch = _joint_nets(), _batch(3)
    with torch.no_grad():
        terms = det_terms(nets, batch, CONF, with_p3=True)
        d1, d2, d3 = terms["keypoint_descriptors"].chunk(3)
        negative = desc_loss(d1, d2, d3) - terms["pair"]
        assert float(negative) > 0  # hard negatives within the margin: the term is active
        torch.testing.assert_close(joint_loss(terms, CONF), det_loss(terms, CONF) + negative)
        # P3's rows do not change DET's own terms.
        torch.testing.assert_close(terms["pair"], det_terms(nets, batch, CONF)["pair"])


def test_a_few_steps_on_a_fixed_batch_lower_the_joint_loss():
    from lift_localizer.training.train_lift import joint_loss

    torch.manual_seed(0)
    nets, batch = _joint_nets(), _batch(4)
    opt = torch.optim.Adam([p for net in nets.values() for p in net.module.parameters()], lr=1e-4)
    first = None
    for _ in range(5):
        loss = joint_loss(det_terms(nets, batch, CONF, with_p3=True), CONF)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(joint_loss(det_terms(nets, batch, CONF, with_p3=True), CONF)) < first

"""Loss functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from edgedepth.train.losses import DepthLoss, gradient_matching, laplacian_nll, masked_mean


def test_laplacian_nll_hand_value_and_mask():
    log_pred = torch.tensor([0.0, 1.0, 2.0, 5.0]).view(1, 1, 2, 2)
    log_gt = torch.tensor([0.5, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    u = torch.tensor([0.0, -1.0, math.log(2.0), 3.0]).view(1, 1, 2, 2)
    mask = torch.tensor([True, True, True, False]).view(1, 1, 2, 2)
    expected = ((0.5 * 1 + 0) + (0 + -1) + (1.0 / 2 + math.log(2.0))) / 3
    assert float(laplacian_nll(log_pred, log_gt, u, mask)) == pytest.approx(expected, rel=1e-6)


def test_nll_is_minimised_where_exp_u_equals_the_error():
    err = 0.3
    us = torch.linspace(-4, 1, 501)
    vals = [float(laplacian_nll(torch.zeros(1), torch.full((1,), err), u.view(1), torch.ones(1))) for u in us]
    best = float(us[int(torch.tensor(vals).argmin())])
    assert best == pytest.approx(math.log(err), abs=0.02)


def test_gradient_matching_is_scale_invariant_and_hand_checked():
    log_gt = torch.rand(1, 1, 8, 8)
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    assert float(gradient_matching(log_gt + 0.7, log_gt, mask)) == pytest.approx(0.0, abs=1e-6)
    # R = [[0, 1], [0, 1]] on one scale: x-gradients |1| twice, y-gradients 0 twice -> 2 / 4
    r = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    val = gradient_matching(r, torch.zeros_like(r), torch.ones(1, 1, 2, 2, dtype=torch.bool), scales=1)
    assert float(val) == pytest.approx(0.5)


def test_masked_mean_of_empty_mask_is_zero_and_depth_loss_parts():
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    assert float(masked_mean(x, torch.zeros(1, 1, 2, 2)).detach()) == 0.0
    depth = torch.full((1, 1, 4, 4), 2.0)
    gt = torch.full((1, 1, 4, 4), 2.0)
    loss, parts = DepthLoss(grad_weight=0.5)(depth, torch.zeros_like(depth), gt, gt > 0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert set(parts) == {"nll", "grad", "l1_log"}


def test_decoupled_mode_trains_depth_by_l1_and_uncertainty_by_detached_nll():
    depth = torch.full((1, 1, 4, 4), 2.0, requires_grad=True)
    unc = torch.full((1, 1, 4, 4), 1.0, requires_grad=True)  # exp(-u) < 1 would damp an NLL gradient
    gt = torch.full((1, 1, 4, 4), 4.0)
    loss, _ = DepthLoss(grad_weight=0.0, mode="decoupled")(depth, unc, gt, gt > 0)
    loss.backward()
    # d/d depth of mean |log gt - log d| is -1/(d * 16) per pixel, undamped by the uncertainty
    assert float(depth.grad[0, 0, 0, 0]) == pytest.approx(-1.0 / (2.0 * 16), rel=1e-5)
    # d/du of (|err| exp(-u) + u) / 16 with err = log 2
    assert float(unc.grad[0, 0, 0, 0]) == pytest.approx((1 - math.log(2.0) * math.exp(-1.0)) / 16, rel=1e-5)
    with pytest.raises(ValueError, match="loss mode"):
        DepthLoss(mode="bogus")(depth, unc, gt, gt > 0)


def test_frame_uncertainty_nll_is_minimised_at_the_frame_mean_error():
    import torch

    from edgedepth.train.losses import frame_uncertainty_nll

    log_gt = torch.zeros(2, 1, 4, 4)
    log_pred = torch.full((2, 1, 4, 4), 0.1)
    log_pred[1] = 0.3  # the second frame is three times worse
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    u = torch.zeros(2, 1, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        frame_uncertainty_nll(log_pred, log_gt, u, mask).backward()
        opt.step()
    b = torch.exp(u.detach()).mean(dim=(1, 2, 3))
    assert b[0].item() == pytest.approx(0.1, rel=0.05) and b[1].item() == pytest.approx(0.3, rel=0.05)
    # the error is detached: the term never moves the depth prediction
    lp = log_pred.clone().requires_grad_(True)
    frame_uncertainty_nll(lp, log_gt, torch.zeros(2, 1, 4, 4, requires_grad=True), mask).backward()
    assert lp.grad is None or float(lp.grad.abs().sum()) == 0.0

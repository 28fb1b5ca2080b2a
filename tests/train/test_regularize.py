"""Fine-tuning without forgetting: L2-SP, frozen parts, WiSE-FT interpolation and the gate-aware merge."""

from __future__ import annotations

import pytest
import torch

from edgedepth.checkpoint import load_checkpoint, model_from_checkpoint
from edgedepth.errors import ConfigError
from edgedepth.models import build_model
from edgedepth.train.config import TrainConfig
from edgedepth.train.loop import train
from edgedepth.train.merge import MergePoint, choose_alpha, limits, wise_merge
from edgedepth.train.regularize import L2SP, freeze_parameters, interpolate_state


def test_interpolation_hits_both_ends_and_the_middle():
    torch.manual_seed(0)
    a, b = build_model("tiny").state_dict(), build_model("tiny").state_dict()
    b = {k: (v + 1.0 if torch.is_floating_point(v) else v + 3) for k, v in b.items()}
    for k, v in interpolate_state(a, b, 0.0).items():
        assert torch.equal(v, a[k] if torch.is_floating_point(v) else b[k]), k
    for k, v in interpolate_state(a, b, 1.0).items():
        assert torch.allclose(v, b[k]), k
    mid = interpolate_state(a, b, 0.25)
    w = next(k for k, v in a.items() if v.ndim == 4)
    assert torch.allclose(mid[w], 0.75 * a[w] + 0.25 * b[w])
    counts = next(k for k in a if k.endswith("num_batches_tracked"))
    assert torch.equal(mid[counts], b[counts])  # integer buffers are not interpolated


def test_interpolation_refuses_different_networks():
    with pytest.raises(ConfigError):
        interpolate_state(build_model("tiny").state_dict(), build_model("small").state_dict(), 0.5)


def test_l2sp_is_zero_at_the_anchor_and_pulls_back():
    model = build_model("tiny")
    reg = L2SP(model, weight=2.0)
    assert float(reg().detach()) == 0.0
    p = next(model.parameters())
    with torch.no_grad():
        p.add_(0.5)
    expected = 0.5 * 2.0 * (0.5 ** 2) * p.numel()
    assert float(reg().detach()) == pytest.approx(expected, rel=1e-5)
    reg().backward()
    assert torch.allclose(p.grad, torch.full_like(p, 2.0 * 0.5))  # d/dp = weight * (p - p0)
    with pytest.raises(ConfigError):
        L2SP(model, -1.0)


def test_freeze_encoder_and_stem():
    model = build_model("tiny")
    total = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for p in model.encoder.parameters())
    assert freeze_parameters(model, "none") == 0
    assert freeze_parameters(model, "encoder") == enc
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total - enc
    fresh = build_model("tiny")
    n = freeze_parameters(fresh, "stem")
    assert 0 < n < enc and fresh.encoder[0][0].weight.requires_grad is False
    assert fresh.encoder[-1][0][0].weight.requires_grad is True
    with pytest.raises(ConfigError):
        freeze_parameters(fresh, "decoder")


def test_train_config_checks_the_new_options(tmp_path):
    (tmp_path / "d" / "rgb").mkdir(parents=True)  # a folder-format dataset, as far as the spec check looks
    with pytest.raises(ConfigError, match="init-from"):
        TrainConfig(data=[str(tmp_path / "d")], out=str(tmp_path / "o"), epochs=1, l2sp=1.0).validate()
    with pytest.raises(ConfigError, match="freeze"):
        TrainConfig(data=[str(tmp_path / "d")], out=str(tmp_path / "o"), epochs=1, freeze="all").validate()


@pytest.fixture
def base_run(tmp_path, folder_dataset):
    data = folder_dataset("train", n=24, h=64, w=96, seed=1)
    val = folder_dataset("val", n=8, h=64, w=96, seed=2)
    # frame_weight 0: the weights these merge tests were written against (the merge does not depend on it)
    cfg = dict(data=[str(data)], val=[str(val)], model="tiny", size=(64, 96), batch_size=8,
               progress=False, workers=1, threads=1, seed=3, frame_weight=0.0)
    res = train(TrainConfig(out=str(tmp_path / "base"), epochs=6, lr=3e-3, **cfg))
    return res, cfg, val


def test_frozen_encoder_and_l2sp_fine_tune(tmp_path, base_run):
    res, cfg, _ = base_run
    init = load_checkpoint(res.last_checkpoint)["state_dict"]
    ft = train(TrainConfig(out=str(tmp_path / "dec"), epochs=2, lr=3e-3, init_from=str(res.last_checkpoint),
                           freeze="encoder", **cfg))
    after = load_checkpoint(ft.last_checkpoint)["state_dict"]
    enc = [k for k in init if k.startswith("encoder.") and torch.is_floating_point(init[k])
           and "running" not in k]
    dec = [k for k in init if k.startswith("decoder.") and k.endswith("weight")]
    assert all(torch.equal(init[k], after[k]) for k in enc)
    assert any(not torch.equal(init[k], after[k]) for k in dec)

    def moved(l2sp: float) -> float:
        out = train(TrainConfig(out=str(tmp_path / f"l2sp{l2sp}"), epochs=2, lr=3e-3,
                                init_from=str(res.last_checkpoint), l2sp=l2sp, **cfg))
        w = load_checkpoint(out.last_checkpoint)["state_dict"]
        return sum(float((w[k] - init[k]).pow(2).sum()) for k in init if torch.is_floating_point(init[k])
                   and "running" not in k)

    assert moved(1000.0) < 0.5 * moved(0.0)


def test_choose_alpha_and_limits():
    pts = [MergePoint(0.0, 1.0, 0.9, True), MergePoint(0.5, 1.01, 0.9, True),
           MergePoint(1.0, 1.2, 0.8, False)]
    assert choose_alpha(pts) == 0.5
    assert choose_alpha([MergePoint(0.5, 9, 0, False)]) == 0.0
    max_abs, min_d1 = limits([{"abs_rel": 0.2, "d1": 0.8}, {"abs_rel": 0.1, "d1": 0.9}], 0.02, margin=0.5)
    assert max_abs == pytest.approx(0.101) and min_d1 == pytest.approx(0.891)
    with pytest.raises(ConfigError):
        limits([], 0.02)


def _perturbed(ck, scale: float, seed: int, path):
    """A copy of checkpoint `ck` with Gaussian noise of `scale` on every conv kernel, saved at `path`."""
    torch.manual_seed(seed)
    broken = dict(ck)
    broken["state_dict"] = {k: (v + scale * torch.randn_like(v) if v.ndim == 4 else v)
                            for k, v in ck["state_dict"].items()}
    torch.save(broken, path)
    return path, broken


def test_wise_merge_keeps_the_regression_set_within_tolerance(tmp_path, base_run):
    res, _, val = base_run
    # a "fine-tune" that broke the network: the merge must walk back to (nearly) the initial weights
    ck = load_checkpoint(res.last_checkpoint)
    bad, broken = _perturbed(ck, 0.5, 0, tmp_path / "broken.pt")
    m = wise_merge(res.last_checkpoint, bad, val, tmp_path / "merged.pt", tolerance=0.02)
    assert m.alpha < 1.0 and m.checkpoint.is_file()
    chosen = next(p for p in m.points if p.alpha == m.alpha)
    assert chosen.ok and chosen.abs_rel <= m.limit_abs_rel
    assert not next(p for p in m.points if p.alpha == 1.0).ok
    model, merged = model_from_checkpoint(m.checkpoint)
    assert merged["lineage"]["merge"]["alpha"] == m.alpha
    expected = interpolate_state(ck["state_dict"], broken["state_dict"], m.alpha)
    assert all(torch.allclose(merged["state_dict"][k], expected[k]) for k in expected)
    # merging a checkpoint with itself changes nothing: every alpha passes, the largest is kept
    same = wise_merge(res.last_checkpoint, res.last_checkpoint, val, tmp_path / "same.pt", tolerance=0.0)
    assert same.alpha == 1.0 and all(p.ok for p in same.points)
    with pytest.raises(ConfigError):
        wise_merge(res.last_checkpoint, bad, val, tmp_path / "x.pt", alphas=[1.5])


def test_wise_merge_also_keeps_every_protected_set_within_its_tolerance(tmp_path, base_run, folder_dataset):
    res, _, val = base_run
    bad, _ = _perturbed(load_checkpoint(res.last_checkpoint), 0.3, 1, tmp_path / "broken.pt")
    other = folder_dataset("protected", n=8, h=64, w=96, seed=21)
    loose = wise_merge(res.last_checkpoint, bad, val, tmp_path / "loose.pt", tolerance=0.5)
    guarded = wise_merge(res.last_checkpoint, bad, val, tmp_path / "guarded.pt", tolerance=0.5,
                         protect=[other], protect_tolerance=0.0)
    # the regression set alone lets the merge go further than the protected set does
    assert guarded.alpha < loose.alpha
    start = next(p for p in guarded.points if p.alpha == 0.0).protected_abs_rel[0]
    assert all(len(p.protected_abs_rel) == 1 for p in guarded.points)
    assert all(p.protected_abs_rel[0] <= start * (1 + 1e-9) for p in guarded.points if p.ok)
    assert load_checkpoint(guarded.checkpoint)["lineage"]["merge"]["protect"] == [str(other)]
    with pytest.raises(ConfigError, match="protect tolerance"):
        wise_merge(res.last_checkpoint, bad, val, tmp_path / "x.pt", protect=[other], protect_tolerance=1.0)


def test_frame_weights_give_each_directory_its_share():
    import numpy as np

    from edgedepth.train.regularize import frame_weights

    sources = ["old"] * 90 + ["new"] * 10
    assert frame_weights(sources, ["old", "new"], []) is None
    w = frame_weights(sources, ["old", "new"], [3, 1])
    assert w.sum() == pytest.approx(1.0)
    assert w[90:].sum() == pytest.approx(0.25) and w[:90].sum() == pytest.approx(0.75)
    assert np.allclose(w[:90], w[0]) and np.allclose(w[90:], w[90])
    # a directory with no frame left gives its share to the others
    w = frame_weights(["old"] * 4, ["old", "new"], [0.75, 0.25])
    assert np.allclose(w, 0.25)
    with pytest.raises(ConfigError):
        frame_weights(sources, ["old", "new"], [1.0])
    with pytest.raises(ConfigError):
        frame_weights(sources, ["old", "new"], [0.0, 0.0])


def test_data_shares_set_the_batch_mix(tmp_path, folder_dataset, monkeypatch):
    """A 1:4 share over 24 + 6 frames: the 6 'new' frames fill ~80% of the draws, not 20%."""
    import numpy as np

    import edgedepth.train.loop as loop

    old = folder_dataset("old", n=24, h=64, w=96, seed=1)
    new = folder_dataset("new", n=6, h=64, w=96, seed=5, domain="night")
    val = folder_dataset("val", n=4, h=64, w=96, seed=2)
    seen = []
    real = loop.batch_tensors

    def spy(frames, index, device="cpu"):
        seen.extend(frames.sources[i] for i in np.asarray(index))
        return real(frames, index, device)

    monkeypatch.setattr(loop, "batch_tensors", spy)
    cfg = dict(data=[str(old), str(new)], val=[str(val)], model="tiny", size=(64, 96), batch_size=6,
               progress=False, workers=1, threads=1, seed=3, epochs=4, lr=1e-3)
    train(TrainConfig(out=str(tmp_path / "shares"), data_shares=[1, 4], **cfg))
    drawn = [s for s in seen if s in (str(old), str(new))]
    share = drawn.count(str(new)) / len(drawn)
    assert 0.65 < share < 0.95, share
    seen.clear()
    train(TrainConfig(out=str(tmp_path / "plain"), **cfg))
    drawn = [s for s in seen if s in (str(old), str(new))]
    assert drawn.count(str(new)) / len(drawn) == pytest.approx(6 / 30, abs=0.02)
    with pytest.raises(ConfigError, match="data-shares"):
        TrainConfig(out=str(tmp_path / "x"), data_shares=[1.0], **cfg).validate()


def test_train_cli_fine_tunes_with_shares_and_merges(tmp_path, base_run, folder_dataset):
    from click.testing import CliRunner

    from edgedepth.cli.main import cli

    res, cfg, val = base_run
    new = folder_dataset("new", n=6, h=64, w=96, seed=9, domain="night")
    out = tmp_path / "ft"
    args = ["train", "--data", f"{cfg['data'][0]},{new}", "--val", str(val), "--init-from",
            str(res.last_checkpoint), "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--workers", "1",
            "--data-shares", "0.75,0.25", "--freeze-bn", "--l2sp", "0.1", "--merge-set", str(val),
            "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "WiSE-FT merge: alpha" in r.output and (out / "merged.pt").is_file()
    ck = load_checkpoint(out / "last.pt")
    assert ck["train_config"]["data_shares"] == [0.75, 0.25] and ck["train_config"]["l2sp"] == 0.1
    bad = CliRunner().invoke(cli, args[:-3] + ["--data-shares", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "data-shares" in bad.output

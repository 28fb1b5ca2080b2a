"""Learnability check: train FastDepth-small on 3000 indoor frames (96x128), test on unseen seeds."""
import os, sys, time, json
sys.path.insert(0, os.getcwd())
import numpy as np
from multiprocessing import Pool

H, W = 96, 128


def render(args):
    from edgedepth.data import synth
    domain, seed = args
    f = synth.render_frame(domain, seed, H, W)
    return f.rgb, f.depth


def make(domain, base, n, pool):
    from edgedepth.data.synth import _derive
    out = pool.map(render, [(domain, _derive(base, i, 71)) for i in range(n)], chunksize=16)
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def metrics(pred, gt):
    v = gt > 0
    p, g = pred[v], gt[v]
    ratio = np.maximum(p / g, g / p)
    return {"delta1": float((ratio < 1.25).mean()), "absrel": float((np.abs(p - g) / g).mean()),
            "rmse": float(np.sqrt(((p - g) ** 2).mean())), "n_frames": int(len(gt))}


def main():
    import torch
    torch.manual_seed(0)
    t0 = time.time()
    with Pool(15) as pool:
        xtr, ytr = make("indoor", 0, int(os.environ.get("NTRAIN", 3000)), pool)
        tests = {d: make(d, 777, 300, pool) for d in ("indoor", "clutter", "night", "fog", "outdoor")}
    print(f"data {time.time() - t0:.1f}s train {xtr.shape} depth {ytr[ytr > 0].min():.2f}..{ytr.max():.2f} m",
          flush=True)
    from edgedepth.models import build_model
    from edgedepth.models.registry import model_config
    dev = "cuda"
    model = build_model(model_config("small", 0.1, 40.0)).to(dev)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
    X = torch.from_numpy(xtr).to(dev).permute(0, 3, 1, 2).contiguous()
    Y = torch.from_numpy(ytr).to(dev).unsqueeze(1)
    epochs, bs = int(os.environ.get("EPOCHS", 60)), 32
    steps = epochs * (len(X) // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    t1 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(X), device=dev)
        for k in range(len(X) // bs):
            idx = perm[k * bs:(k + 1) * bs]
            x = X[idx].float() / 255
            y = Y[idx]
            flip = torch.rand(bs, device=dev) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            y = torch.where(flip.view(-1, 1, 1, 1), y.flip(3), y)
            x = x * (0.8 + 0.4 * torch.rand(bs, 1, 1, 1, device=dev)) * (0.9 + 0.2 * torch.rand(bs, 3, 1, 1, device=dev))
            x = (x.clamp(0, 1) - mean) / std
            d, u = model(x)
            m = y > 0
            diff = (torch.log(d.clamp_min(1e-3)) - torch.log(y.clamp_min(1e-3)))[m]
            loss = diff.abs().mean() + 0.5 * diff.var()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if ep % 10 == 9 or ep == epochs - 1:
            print(f"epoch {ep + 1} loss {loss.item():.4f} {time.time() - t1:.0f}s", flush=True)
    model.eval()
    for dname, (xt, yt) in tests.items():
        preds = []
        with torch.no_grad():
            for k in range(0, len(xt), 100):
                x = torch.from_numpy(xt[k:k + 100]).to(dev).permute(0, 3, 1, 2).float() / 255
                preds.append(model((x - mean) / std)[0][:, 0].cpu().numpy())
        r = metrics(np.concatenate(preds), yt)
        print(dname, json.dumps({k: round(v, 4) for k, v in r.items()}), flush=True)


if __name__ == "__main__":
    main()

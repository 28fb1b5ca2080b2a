"""Model sizes as data and a factory; the config dict is what checkpoints store."""

from __future__ import annotations

from typing import Tuple

from edgedepth.errors import ConfigError

MODEL_SIZES = {
    "tiny": dict(arch="fastdepth", width=0.25, decoder=(128, 64, 32, 16, 16)),
    "small": dict(arch="fastdepth", width=0.5, decoder=(256, 128, 64, 32, 16)),
    "base": dict(arch="fastdepth", width=1.0, decoder=(512, 256, 128, 64, 32)),
}


def model_config(size: str, min_depth: float = 0.1, max_depth: float = 40.0) -> dict:
    if size not in MODEL_SIZES:
        raise ConfigError(f"unknown model size '{size}'; choose one of {', '.join(MODEL_SIZES)}")
    cfg = dict(MODEL_SIZES[size], size=size, min_depth=min_depth, max_depth=max_depth)
    cfg["decoder"] = list(cfg["decoder"])
    return cfg


def build_model(config: "dict | str"):
    """Build a network from a size name or a stored config dict."""
    if isinstance(config, str):
        config = model_config(config)
    if config.get("arch") != "fastdepth":
        raise ConfigError(f"unknown architecture {config.get('arch')!r} in model config")
    from edgedepth.models.fastdepth import FastDepth

    return FastDepth(width=config["width"], decoder=tuple(config["decoder"]),
                     min_depth=config["min_depth"], max_depth=config["max_depth"])


def count_macs(model, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass at HxW (convolutions only; they dominate)."""
    import torch

    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        k = module.kernel_size[0] * module.kernel_size[1]
        macs += output.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    model.train(was_training)
    for h in handles:
        h.remove()
    return macs


def describe_model(model, height: int, width: int) -> Tuple[int, float]:
    """(parameter count, GMACs at HxW)."""
    params = sum(p.numel() for p in model.parameters())
    return params, count_macs(model, height, width) / 1e9

"""Training-curve PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List


def plot_history(history: List[Dict[str, float]], path: Path) -> Path:
    """Loss, validation AbsRel/RMSE-log and delta<1.25 per epoch, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h.get("train_loss", float("nan")) for h in history], "o-", label="train loss")
    axes[0].plot(epochs, [h.get("train_l1_log", float("nan")) for h in history], "s--",
                 label="train |log err|")
    axes[0].set_title("training")
    axes[1].plot(epochs, [h.get("val_abs_rel", float("nan")) for h in history], "o-", label="AbsRel")
    axes[1].plot(epochs, [h.get("val_rmse_log", float("nan")) for h in history], "s--", label="RMSE log")
    axes[1].set_title("validation error")
    axes[2].plot(epochs, [h.get("val_d1", float("nan")) for h in history], "o-", label="delta<1.25")
    spear = [h.get("val_frame_spearman", h.get("val_unc_spearman", float("nan"))) for h in history]
    axes[2].plot(epochs, spear, "s--", label="Spearman(frame uncertainty, AbsRel)")
    axes[2].set_title("validation accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

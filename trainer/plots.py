"""The figures logged with every run (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve


def pr_curve(path: Path, targets: np.ndarray, scores: np.ndarray, threshold: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if 0 < targets.sum() < targets.size:
        precision, recall, _ = precision_recall_curve(targets, scores)
        ax.plot(recall, precision, lw=1.5)
        alerts = scores >= threshold
        if alerts.any():
            hit = (alerts & (targets == 1)).sum()
            ax.scatter(
                [hit / targets.sum()],
                [hit / alerts.sum()],
                color="red",
                zorder=3,
                label=f"threshold {threshold:.4f}",
            )
            ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no labelled fraud in the holdout", ha="center", va="center")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="precision-recall on the holdout",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_histogram(path: Path, targets: np.ndarray, scores: np.ndarray, threshold: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = [i / 50 for i in range(51)]
    ax.hist(scores[targets == 0], bins=bins, alpha=0.6, label="legit / unlabelled", log=True)
    if targets.any():
        ax.hist(scores[targets == 1], bins=bins, alpha=0.6, label="fraud", log=True)
    ax.axvline(threshold, color="red", lw=1, label="threshold")
    ax.set(xlabel="score", ylabel="transactions (log)", title="scores on the holdout")
    ax.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

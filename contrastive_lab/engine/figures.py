"""The figures of a run folder (``figures/``): the loss curve, the kNN curve on h and z, the nearest
neighbours of test images and a 2-D map of h. Drawn with the primitives of ``contrastive_lab.plots``;
every title names the data that was used (e.g. "cifar10-mini test").
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ..config import Config
from ..plots import curve, embedding_plot, retrieval_grid
from .logging import read_metrics
from .setup import encode


def run_figures(out: Path, encoder, train_ds, test_ds, device, cfg: Config) -> list[Path]:
    """Loss curve, kNN curve, nearest-neighbour retrieval grid and 2-D embedding of a run."""
    fig_dir = Path(out) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = read_metrics(Path(out) / "metrics.csv")
    data = f"{getattr(test_ds, 'name', cfg.dataset)} {cfg.test_split}"
    saved = []

    def save(fig, name: str) -> None:
        fig.savefig(fig_dir / name, dpi=110)
        plt.close(fig)
        saved.append(fig_dir / name)

    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if loss:
        save(curve(*zip(*loss), "step", "training loss", f"{cfg.method} loss ({getattr(train_ds, 'name', cfg.dataset)})"),
             "loss.png")
    knn = [(r["epoch"], r["knn_top1"]) for r in rows if "knn_top1" in r]
    knn_z = [(r["epoch"], r["knn_top1_z"]) for r in rows if "knn_top1_z" in r]
    if knn:
        title = f"kNN monitor ({data})"
        fig = curve(*zip(*knn), "epoch", "kNN top-1", title, label="h = f(x)" if knn_z else None)
        if knn_z:
            curve(*zip(*knn_z), "epoch", "kNN top-1", title, label="z = g(h)", ax=fig.axes[0])
        save(fig, "knn.png")
    if test_ds is not None and hasattr(test_ds, "images"):
        n = min(len(test_ds), 2000)
        test_images, test_labels = test_ds.images[:n], test_ds.labels[:n]
        f_test = encode(encoder, test_images, cfg, device)
        gallery = train_ds.images[: min(len(train_ds), 5000)]
        f_gallery = encode(encoder, gallery, cfg, device)
        save(retrieval_grid(test_images, f_test, gallery, f_gallery, title=f"nearest neighbours of h ({data})"),
             "retrieval.png")
        save(embedding_plot(f_test, test_labels, test_ds.classes, f"{data} features h (PCA)"), "embedding.png")
    return saved

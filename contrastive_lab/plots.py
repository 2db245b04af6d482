"""Figures the chapters and the run folder share: image grids, curves, retrieval and embeddings
(``neighbour_grid`` and ``map_plot`` are chapter 10's query grid and 2-D map).

Every function draws onto a matplotlib Figure and returns it; ``engine.figures.run_figures`` saves
the four figures of a training run into ``<run>/figures/`` with them. Nothing here trains or
evaluates: these are drawing primitives, below the engine in the import order.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # headless machines fall back to the Agg backend by themselves
import torch
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from torch import Tensor


def to_display(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """(N,3,H,W) uint8, [0,1] float, or normalised float (give mean/std) -> (N,H,W,3) float in [0,1]."""
    x = images.detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif mean is not None and std is not None:
        x = x.float() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return x.float().clamp(0, 1).permute(0, 2, 3, 1)


def image_grid(images: Tensor, nrow: int, titles: Sequence[str] | None = None, scale: float = 1.2, **norm):
    """A grid of images with optional titles; ``norm`` = mean=..., std=... for normalised input."""
    pics = to_display(images, **norm)
    ncol = nrow
    rows = (len(pics) + ncol - 1) // ncol
    fig, axes = plt.subplots(rows, ncol, figsize=(scale * ncol, scale * rows + (0.3 if titles else 0)))
    for i, ax in enumerate(axes.flat if hasattr(axes, "flat") else [axes]):
        ax.axis("off")
        if i < len(pics):
            ax.imshow(pics[i].numpy(), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def curve(xs, ys, xlabel: str, ylabel: str, title: str, label: str | None = None, ax=None):
    """A single line plot (returns the figure)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
    else:
        fig = ax.figure
    ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if label:
        ax.legend()
    fig.tight_layout()
    return fig


def pca_2d(features: Tensor) -> Tensor:
    """Project L2-normalised features on their top-2 principal components (N, 2)."""
    f = torch.nn.functional.normalize(features.float(), dim=1)
    f = f - f.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(f, full_matrices=False)
    return f @ v[:2].T


def embedding_plot(features: Tensor, labels: Tensor, classes: Sequence[str], title: str):
    """Scatter of the 2-D PCA projection, coloured by class."""
    xy = pca_2d(features).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        m = (labels == c).numpy()
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(c % cmap.N), label=name, alpha=0.7)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    if len(classes) <= 10:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    fig.tight_layout()
    return fig


def retrieval_grid(query_images, query_feats, gallery_images, gallery_feats, n_queries=6, k=7, title=""):
    """Each row: a query image, then its k nearest gallery images by cosine similarity."""
    q = torch.nn.functional.normalize(query_feats[:n_queries].float(), dim=1)
    g = torch.nn.functional.normalize(gallery_feats.float(), dim=1)
    nearest = (q @ g.T).topk(k, dim=1).indices
    rows = [torch.cat([query_images[i : i + 1], gallery_images[nearest[i]]]) for i in range(len(q))]
    fig = image_grid(torch.cat(rows), nrow=k + 1, scale=1.0)
    fig.suptitle(title or "query (left) and its nearest neighbours", fontsize=9)
    fig.tight_layout()
    return fig


def neighbour_grid(query_images: Tensor, neighbour_images: Tensor, correct: Tensor | None = None,
                   titles: Sequence[str] | None = None, title: str = "", scale: float = 1.0):
    """Row q: query q, then its k neighbours (``neighbour_images`` (Q, k, 3, H, W)), best first. With
    ``correct`` (Q, k) bool each neighbour gets a green (right class) or red (wrong) frame.
    ``titles``: Q * (k + 1) captions in row order."""
    q, k = neighbour_images.shape[:2]
    rows = torch.cat([torch.cat([query_images[i : i + 1], neighbour_images[i]]) for i in range(q)])
    fig = image_grid(rows, nrow=k + 1, titles=titles, scale=scale)
    for i, ax in enumerate(fig.axes[: len(rows)]):
        row, col = divmod(i, k + 1)
        if col == 0 or correct is not None:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            color = "black" if col == 0 else ("tab:green" if bool(correct[row, col - 1]) else "tab:red")
            for spine in ax.spines.values():
                spine.set(color=color, linewidth=1.5 if col == 0 else 3)
    fig.suptitle(title or "query (left) and its nearest neighbours", fontsize=9)
    fig.tight_layout()
    return fig


def map_plot(xy: Tensor, labels: Tensor, classes: Sequence[str], title: str, images: Tensor | None = None,
             n_thumbnails: int = 0, ax=None, seed: int = 0):
    """Scatter of 2-D map coordinates ``xy`` (N, 2) coloured by class; with ``images`` (N, 3, H, W),
    ``n_thumbnails`` random points also show their image."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.8))
    xy, labels = torch.as_tensor(xy).float().numpy(), torch.as_tensor(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        m = (labels == c).numpy()
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(c % cmap.N), label=name, alpha=0.7)
    if images is not None and n_thumbnails:
        pics = to_display(images)
        for i in torch.randperm(len(xy), generator=torch.Generator().manual_seed(seed))[:n_thumbnails].tolist():
            box = AnnotationBbox(OffsetImage(pics[i].numpy(), zoom=0.8), xy[i], frameon=True, pad=0.1,
                                 bboxprops={"edgecolor": cmap(int(labels[i]) % cmap.N), "linewidth": 1.5})
            ax.add_artist(box)
    ax.set(title=title, xticks=[], yticks=[])
    if len(classes) <= 10:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.figure.tight_layout()
    return ax.figure

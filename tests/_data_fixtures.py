"""Tiny fabricated datasets in the official on-disk layouts, written independently of
contrastive_lab.data (explicit index formulas instead of the loader's reshapes), for test_data.py."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """(n, 3, 32, 32) -> (n, 3072) by the CIFAR definition: value at c*1024 + y*32 + x, by explicit loops."""
    n = len(images)
    rows = np.zeros((n, 3072), np.uint8)
    for c in range(3):
        for y in range(32):
            for x in range(32):
                rows[:, c * 1024 + y * 32 + x] = images[:, c, y, x]
    return rows


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def fake_cifar10(root: Path, train_sizes=(3, 2, 4, 1, 2), n_test: int = 3, seed: int = 0) -> dict:
    """Write root/cifar-10-batches-py; return {split: (images (n,3,32,32) uint8, labels (n,) int64)}."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    write_pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_vis": 3072})
    files = [(f"data_batch_{i + 1}", n, "train") for i, n in enumerate(train_sizes)] + [
        ("test_batch", n_test, "test")
    ]
    out: dict = {"train": ([], []), "test": ([], [])}
    for name, n, split in files:
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        write_pickle(folder / name, {"batch_label": name, "data": cifar_rows(images), "labels": labels})
        out[split][0].append(images)
        out[split][1].append(np.array(labels, np.int64))
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items()}


def fake_cifar100(root: Path, n_train: int = 5, n_test: int = 4, seed: int = 1) -> dict:
    """Write root/cifar-100-python; return {split: (images, fine labels, coarse labels)}."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    write_pickle(folder / "meta", meta)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        batch = {"data": cifar_rows(images), "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist()}
        write_pickle(folder / split, batch)
        out[split] = (images, fine, coarse)
    return out


def stl10_pattern(n: int, offset: int = 0) -> np.ndarray:
    """(n, 3, 96, 96) images with a known orientation: R = row index, G = column index, B = image number."""
    images = np.zeros((n, 3, 96, 96), np.uint8)
    images[:, 0] = np.arange(96)[:, None]
    images[:, 1] = np.arange(96)[None, :]
    images[:, 2] = (offset + np.arange(n))[:, None, None]
    return images


def write_stl10_images(path: Path, images: np.ndarray) -> None:
    """STL-10 layout: per image, channel after channel, each channel in column-major (Fortran) order."""
    with open(path, "wb") as f:
        for img in images:
            for c in range(3):
                f.write(img[c].ravel(order="F").tobytes())


def fake_stl10(root: Path, n_train: int = 2, n_test: int = 3, n_unlabeled: int = 2) -> dict:
    """Write root/stl10_binary; return {part: (images, labels 0..9 or None)}."""
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    out, offset = {}, 0
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = stl10_pattern(n, offset)
        offset += n
        write_stl10_images(folder / f"{part}_X.bin", images)
        labels = None
        if part != "unlabeled":
            labels = (9 - 9 * np.arange(n)) % 10  # 9, 0, 1, ...: covers 9 (10 on disk) and 0 (1 on disk)
            (labels + 1).astype(np.uint8).tofile(folder / f"{part}_y.bin")
        out[part] = (images, labels)
    return out


def write_image_folder(
    root: Path, counts: dict[str, int], size=(5, 7), seed: int = 0
) -> dict[Path, np.ndarray]:
    """root/<class>/<k>.png with random pixels (PNG is lossless); return {path: HxWx3 array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in counts.items():
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            path = Path(root) / name / f"{k}.png"
            Image.fromarray(pixels).save(path)
            written[path] = pixels
    return written


def make_targz(src_root: Path, folder: str, out: Path) -> Path:
    """A tar.gz of src_root/folder (member names start with ``folder/``), like the official archives."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(Path(src_root) / folder, arcname=folder)
    return out


def png_bytes(size=(4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()

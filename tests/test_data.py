"""Tests for contrastive_lab.data: loaders against independently written files, error messages,
the download path (file:// URLs), and the synthetic dataset's determinism and learnability."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive_lab import data
from contrastive_lab.data import DatasetCorruptError, DatasetNotFoundError
from tests._data_fixtures import (
    CIFAR10_NAMES,
    fake_cifar10,
    fake_cifar100,
    fake_stl10,
    make_targz,
    png_bytes,
    write_image_folder,
    write_pickle,
    write_stl10_images,
)

REPO = Path(__file__).resolve().parents[1]  # the data root's default is <repo>/data, whatever module holds it

# ---------------------------------------------------------------------------------------------- root


def test_data_root_prefers_argument_then_environment_then_repo(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.data_root() == REPO / "data"
    monkeypatch.setenv(data.DATA_ENV, "  ")  # set but empty counts as unset
    assert data.data_root() == REPO / "data"
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root(str(tmp_path / "arg")) == tmp_path / "arg"


def test_loaders_use_the_environment_variable(monkeypatch, tmp_path):
    expected = fake_cifar10(tmp_path)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert len(data.load_cifar10("test", download=False)) == len(expected["test"][1])


# ------------------------------------------------------------------------------- ImageTensorDataset


def test_image_tensor_dataset_items_len_and_repr():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5)
    ds = data.ImageTensorDataset(images, torch.tensor([1, -1]), ["a", "b"], "toy", "train")
    assert len(ds) == 2
    image, label = ds[1]
    assert torch.equal(image, images[1]) and label == -1 and isinstance(label, int)
    assert ds[-2][1] == 1
    assert "2 images" in repr(ds) and "'toy'" in repr(ds) and "3x4x5" in repr(ds)
    with pytest.raises(IndexError, match="index 2 out of range for a dataset of 2 images"):
        ds[2]


def test_image_tensor_dataset_makes_images_contiguous():
    images = torch.zeros(2, 4, 4, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
    assert not images.is_contiguous()
    ds = data.ImageTensorDataset(images, torch.zeros(2, dtype=torch.int64), ["a"], "toy", "train")
    assert ds.images.is_contiguous() and torch.equal(ds.images, images)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (
            torch.zeros(2, 3, 4, 4),
            torch.zeros(2, dtype=torch.int64),
            "images must be a uint8 tensor N x 3 x H x W",
        ),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "N x 3 x H x W"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), r"shape \(2,\)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), "int64"),
        (
            torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
            torch.tensor([0, 2]),
            r"labels must lie in -1..1 \(2 classes\)",
        ),
    ],
)
def test_image_tensor_dataset_rejects_bad_tensors(images, labels, match):
    with pytest.raises(ValueError, match=match):
        data.ImageTensorDataset(images, labels, ["a", "b"], "toy", "train")


# ------------------------------------------------------------------------------- CIFAR-10 (real data)


def _independent_cifar_read(folder: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    datas, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        datas.append(batch["data"])
        labels += list(batch["labels"])
    return np.concatenate(datas).reshape(-1, 3, 32, 32), np.array(labels)


@pytest.mark.parametrize("split, count", [("train", 5085), ("test", 1017)])
def test_cifar10_mini_loads_exactly_the_pickled_bytes(cifar10_mini_root, split, count):
    ds = data.load_cifar10(split, root=cifar10_mini_root, download=False)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = _independent_cifar_read(cifar10_mini_root / "cifar-10-batches-py", files)
    assert len(ds) == count == len(images)
    assert (
        ds.images.dtype == torch.uint8 and ds.images.shape == (count, 3, 32, 32) and ds.images.is_contiguous()
    )
    assert ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert ds.classes == CIFAR10_NAMES and ds.name == "cifar10-mini" and ds.split == split
    assert f"{count} images" in repr(ds)


# ---------------------------------------------------------------------------- CIFAR (fabricated files)


def test_cifar10_fabricated_files_load_with_the_documented_pixel_layout(tmp_path):
    expected = fake_cifar10(tmp_path)  # rows written as c*1024 + y*32 + x by explicit loops
    for split in ("train", "test"):
        ds = data.load_cifar10(split, root=tmp_path, download=False)
        np.testing.assert_array_equal(ds.images.numpy(), expected[split][0])
        np.testing.assert_array_equal(ds.labels.numpy(), expected[split][1])
        assert ds[0][1] == expected[split][1][0]


@pytest.mark.parametrize("label_type, num_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse_labels(tmp_path, label_type, num_classes):
    expected = fake_cifar100(tmp_path)
    for split in ("train", "test"):
        ds = data.load_cifar100(split, root=tmp_path, download=False, label_type=label_type)
        images, fine, coarse = expected[split]
        np.testing.assert_array_equal(ds.images.numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), fine if label_type == "fine" else coarse)
        assert len(ds.classes) == num_classes and ds.classes[0] == f"{label_type}0"


def test_cifar100_rejects_unknown_label_type(tmp_path):
    with pytest.raises(ValueError, match="unknown label_type 'medium'; valid: fine, coarse"):
        data.load_cifar100("train", root=tmp_path, label_type="medium")


@pytest.mark.parametrize(
    "loader, split, valid",
    [
        (data.load_cifar10, "val", "train, test"),
        (data.load_cifar100, "validation", "train, test"),
        (data.load_stl10, "labeled", "train, test, unlabeled, train\\+unlabeled"),
    ],
)
def test_unknown_split_lists_the_valid_ones(tmp_path, loader, split, valid):
    with pytest.raises(ValueError, match=f"unknown split '{split}' for .*; valid splits: {valid}"):
        loader(split, root=tmp_path)


# ------------------------------------------------------------------------------- missing data messages


def _assert_helpful_missing_message(message: str, root: Path, spec: data.ArchiveSpec) -> None:
    assert str(root / spec.folder) in message  # the expected path
    assert spec.url in message and spec.md5 in message and f"tar -xzf {spec.filename} -C {root}" in message
    assert "CONTRASTIVE_LAB_DATA" in message
    assert 'load_dataset("synthetic")' in message and "dataset=synthetic" in message


@pytest.mark.parametrize(
    "name, loader",
    [("cifar10", data.load_cifar10), ("cifar100", data.load_cifar100), ("stl10", data.load_stl10)],
)
def test_missing_dataset_without_download_says_where_and_how(tmp_path, name, loader):
    with pytest.raises(DatasetNotFoundError, match="not found: expected the folder") as info:
        loader("train", root=tmp_path, download=False)
    assert isinstance(info.value, FileNotFoundError)
    assert "download=False" in str(info.value)
    _assert_helpful_missing_message(str(info.value), tmp_path, data.ARCHIVES[name])


def test_missing_dataset_when_the_download_fails(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(
        DatasetNotFoundError, match="the download failed: <urlopen error no network here>"
    ) as info:
        data.load_cifar10("train", root=tmp_path / "root")
    _assert_helpful_missing_message(str(info.value), tmp_path / "root", data.ARCHIVES["cifar10"])
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert list((tmp_path / "root").iterdir()) == []  # no temp file left behind


def test_interrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, size):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return b"x" * 100

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken())
    with pytest.raises(DatasetNotFoundError, match="the download failed: connection reset by peer"):
        data.load_cifar10("test", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_folder_names_the_missing_files(tmp_path):
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="exists but lacks data_batch_3"):
        data.load_cifar10("train", root=tmp_path)
    assert len(data.load_cifar10("test", root=tmp_path)) == 3  # the test split is complete


# -------------------------------------------------------------------------------- corrupt / structure


def _batch(tmp_path: Path) -> Path:
    fake_cifar10(tmp_path)
    return tmp_path / "cifar-10-batches-py" / "test_batch"


def test_truncated_batch_names_the_file(tmp_path):
    path = _batch(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetCorruptError, match=f"cannot read {path}: .*truncated") as info:
        data.load_cifar10("test", root=tmp_path)
    assert info.value.__cause__ is not None


def test_random_bytes_batch_names_the_file(tmp_path):
    path = _batch(tmp_path)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetCorruptError, match=f"cannot read {path}"):
        data.load_cifar10("test", root=tmp_path)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = _batch(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    write_pickle(path, {"data": Evil(), "labels": []})
    with pytest.raises(
        DatasetCorruptError,
        match=r"refusing to load (__builtin__|builtins).print \(only numpy arrays allowed\)",
    ):
        data.load_cifar10("test", root=tmp_path)


@pytest.mark.parametrize(
    "batch, match",
    [
        ({"labels": [0]}, r"lacks the key\(s\) \['data'\]"),
        ({"data": np.zeros((2, 3072), np.uint8)}, r"lacks the key\(s\) \['labels'\]"),
        (
            {"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]},
            r"'data' must be a uint8 array of shape \(n, 3072\)",
        ),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "dtype float32"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "1 labels for 2 images"),
        (
            {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]},
            r"labels range 0..10, expected 0..9 \(10 classes\)",
        ),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [-1, 0]}, "labels range -1..0"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "1-D integer list"),
        ([1, 2, 3], "holds a list, expected a dict"),
    ],
)
def test_wrong_structure_is_reported_with_the_file(tmp_path, batch, match):
    path = _batch(tmp_path)
    write_pickle(path, batch)
    with pytest.raises(DatasetCorruptError, match=match) as info:
        data.load_cifar10("test", root=tmp_path)
    assert str(path) in str(info.value)


def test_meta_without_class_names_is_reported(tmp_path):
    fake_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    write_pickle(meta, {"num_vis": 3072})
    with pytest.raises(DatasetCorruptError, match=rf"{meta} lacks the key\(s\) \['label_names'\]"):
        data.load_cifar10("test", root=tmp_path)


# ----------------------------------------------------------------------------------------- download


def _serve_cifar10(tmp_path: Path, monkeypatch, md5: str | None = None) -> tuple[dict, Path]:
    """Build a CIFAR-10-like tar.gz and point the cifar10 archive spec at it with a file:// URL."""
    expected = fake_cifar10(tmp_path / "src")
    archive = make_targz(tmp_path / "src", "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    real_md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = replace(data.ARCHIVES["cifar10"], url=archive.as_uri(), md5=md5 or real_md5)
    monkeypatch.setitem(data.ARCHIVES, "cifar10", spec)
    return expected, tmp_path / "root"


def test_download_with_the_right_md5_extracts_and_loads(tmp_path, monkeypatch):
    expected, root = _serve_cifar10(tmp_path, monkeypatch)
    ds = data.load_cifar10("train", root=root)
    np.testing.assert_array_equal(ds.images.numpy(), expected["train"][0])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert len(data.load_cifar10("test", root=root, download=False)) == 3  # second call: no download


def test_download_with_a_wrong_md5_fails_and_leaves_nothing(tmp_path, monkeypatch):
    _, root = _serve_cifar10(tmp_path, monkeypatch, md5="0" * 32)
    with pytest.raises(
        DatasetCorruptError, match=r"checksum mismatch for file://.*: md5 [0-9a-f]{32}, expected 0{32}"
    ):
        data.load_cifar10("train", root=root)
    assert list(root.iterdir()) == []


def test_archive_placed_by_hand_is_extracted_without_download(tmp_path, monkeypatch):
    expected, root = _serve_cifar10(tmp_path, monkeypatch)
    root.mkdir()
    (tmp_path / "cifar-10-python.tar.gz").rename(root / "cifar-10-python.tar.gz")
    ds = data.load_cifar10("test", root=root, download=False)
    np.testing.assert_array_equal(ds.labels.numpy(), expected["test"][1])


def test_archive_placed_by_hand_with_a_wrong_md5_is_refused(tmp_path, monkeypatch):
    _, root = _serve_cifar10(tmp_path, monkeypatch, md5="f" * 32)
    root.mkdir()
    (tmp_path / "cifar-10-python.tar.gz").rename(root / "cifar-10-python.tar.gz")
    with pytest.raises(
        DatasetCorruptError, match=rf"{root}/cifar-10-python.tar.gz has md5 .*, expected f{{32}}"
    ):
        data.load_cifar10("test", root=root, download=False)


def test_corrupt_archive_leaves_no_staging_folder(tmp_path, monkeypatch):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b this is not gzip data" * 10)
    spec = replace(
        data.ARCHIVES["cifar10"], url=junk.as_uri(), md5=hashlib.md5(junk.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(data.ARCHIVES, "cifar10", spec)
    root = tmp_path / "root"
    with pytest.raises(DatasetCorruptError, match=rf"cannot extract {root}/cifar-10-python.tar.gz"):
        data.load_cifar10("test", root=root)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]


def test_archive_without_the_expected_folder_is_reported(tmp_path, monkeypatch):
    fake_cifar10(tmp_path / "src")
    (tmp_path / "src" / "cifar-10-batches-py").rename(tmp_path / "src" / "other")
    archive = make_targz(tmp_path / "src", "other", tmp_path / "a.tar.gz")
    spec = replace(
        data.ARCHIVES["cifar10"], url=archive.as_uri(), md5=hashlib.md5(archive.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(data.ARCHIVES, "cifar10", spec)
    with pytest.raises(DatasetCorruptError, match="does not contain the folder cifar-10-batches-py/"):
        data.load_cifar10("test", root=tmp_path / "root")
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("with_filter", [True, False])
def test_extraction_refuses_members_that_leave_the_folder(tmp_path, monkeypatch, with_filter):
    if not with_filter:  # the hand-written check used on Pythons without tarfile.data_filter
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DatasetCorruptError, match="escaped.txt"):
        data.extract_archive(archive, root, "cifar-10-batches-py")
    assert list(root.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("with_filter", [True, False])
def test_extraction_of_a_good_archive(tmp_path, monkeypatch, with_filter):
    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    expected = fake_cifar10(tmp_path / "src")
    archive = make_targz(tmp_path / "src", "cifar-10-batches-py", tmp_path / "a.tar.gz")
    (tmp_path / "root").mkdir()
    folder = data.extract_archive(archive, tmp_path / "root", "cifar-10-batches-py")
    assert folder == tmp_path / "root" / "cifar-10-batches-py"
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["cifar-10-batches-py"]
    ds = data.load_cifar10("test", root=tmp_path / "root", download=False)
    np.testing.assert_array_equal(ds.images.numpy(), expected["test"][0])


def test_archive_md5s_match_torchvision():
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    stl = pytest.importorskip("torchvision.datasets.stl10")
    for key, tv in (("cifar10", cifar.CIFAR10), ("cifar100", cifar.CIFAR100), ("stl10", stl.STL10)):
        assert (data.ARCHIVES[key].url, data.ARCHIVES[key].md5, data.ARCHIVES[key].filename) == (
            tv.url,
            tv.tgz_md5,
            tv.filename,
        )
        assert data.ARCHIVES[key].folder == tv.base_folder


# ------------------------------------------------------------------------------------------- STL-10


def test_stl10_orientation_and_labels(tmp_path):
    expected = fake_stl10(tmp_path)
    train = data.load_stl10("train", root=tmp_path, download=False)
    assert train.images.shape == (2, 3, 96, 96) and train.images.is_contiguous()
    rows, cols = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    assert torch.equal(train.images[1, 0].long(), rows) and torch.equal(train.images[1, 1].long(), cols)
    np.testing.assert_array_equal(train.images.numpy(), expected["train"][0])
    np.testing.assert_array_equal(train.labels.numpy(), expected["train"][1])
    assert set(expected["train"][1]) | set(expected["test"][1]) >= {0, 9}
    assert train.classes == [f"class{i}" for i in range(10)]
    test = data.load_stl10("test", root=tmp_path, download=False)
    np.testing.assert_array_equal(test.labels.numpy(), expected["test"][1])


def test_stl10_unlabeled_and_train_plus_unlabeled(tmp_path):
    expected = fake_stl10(tmp_path)
    unl = data.load_stl10("unlabeled", root=tmp_path, download=False)
    assert unl.labels.tolist() == [-1, -1] and unl[0][1] == -1
    np.testing.assert_array_equal(unl.images.numpy(), expected["unlabeled"][0])
    both = data.load_stl10("train+unlabeled", root=tmp_path, download=False)
    np.testing.assert_array_equal(
        both.images.numpy(), np.concatenate([expected["train"][0], expected["unlabeled"][0]])
    )
    assert both.labels.tolist() == expected["train"][1].tolist() + [-1, -1]


def test_stl10_truncated_image_file_names_the_file(tmp_path):
    fake_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "train_X.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        DatasetCorruptError, match=rf"{path} has 55196 bytes, not a positive multiple of 3\*96\*96 = 27648"
    ):
        data.load_stl10("train", root=tmp_path)


def test_stl10_bad_labels_are_reported(tmp_path):
    fake_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "train_y.bin"
    path.write_bytes(bytes([1, 11]))
    with pytest.raises(DatasetCorruptError, match=r"labels range 1..11, expected 1..10 \(10 classes\)"):
        data.load_stl10("train", root=tmp_path)
    path.write_bytes(bytes([1, 2, 3]))
    with pytest.raises(DatasetCorruptError, match=rf"{path} has 3 bytes, expected 2 \(one label per image\)"):
        data.load_stl10("train", root=tmp_path)


def test_stl10_missing_file_for_the_split(tmp_path):
    fake_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    assert len(data.load_stl10("train", root=tmp_path)) == 2
    with pytest.raises(DatasetNotFoundError, match="exists but lacks unlabeled_X.bin"):
        data.load_stl10("train+unlabeled", root=tmp_path)


def test_stl10_writer_is_column_major(tmp_path):
    """The fixture's layout itself, checked by hand: byte c*9216 + x*96 + y holds pixel (c, y, x)."""
    images = np.random.default_rng(0).integers(0, 256, (1, 3, 96, 96), dtype=np.uint8)
    write_stl10_images(tmp_path / "x.bin", images)
    raw = (tmp_path / "x.bin").read_bytes()
    for c, y, x in [(0, 0, 1), (1, 5, 2), (2, 95, 0), (0, 17, 80)]:
        assert raw[c * 9216 + x * 96 + y] == images[0, c, y, x]


# -------------------------------------------------------------------------------------- ImageFolder


def test_image_folder_reads_lazily_and_exactly(tmp_path):
    written = write_image_folder(tmp_path, {"dog": 3, "cat": 2})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = data.ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 5 and ds.labels.tolist() == [0, 0, 1, 1, 1]
    for i, (path, label) in enumerate(ds.samples):
        image, lab = ds[i]
        assert lab == label == ds.classes.index(path.parent.name)
        assert image.dtype == torch.uint8 and image.shape == (3, 5, 7)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), written[path])
    assert "5 images" in repr(ds)


def test_image_folder_applies_the_transform_and_converts_to_rgb(tmp_path):
    (tmp_path / "gray").mkdir()
    Image.fromarray(np.full((4, 6), 77, np.uint8), mode="L").save(tmp_path / "gray" / "g.JPG")
    ds = data.ImageFolderDataset(tmp_path, transform=lambda x: x.float().mean())
    value, label = ds[0]
    assert label == 0 and abs(float(value) - 77) < 2  # JPEG: nearly lossless on a flat image


def test_image_folder_corrupt_image_names_the_file(tmp_path):
    write_image_folder(tmp_path, {"a": 1})
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(png_bytes()[:30])
    ds = data.ImageFolderDataset(tmp_path)
    index = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(DatasetCorruptError, match=f"cannot read image {bad}") as info:
        ds[index]
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda root: None, "does not exist; expected .*/<class>/<image>.jpg"),
        (lambda root: root.mkdir(), "has no class sub-folders"),
        (
            lambda root: (root / "a").mkdir(parents=True),
            r"no images \(.jpg.*\) in the class folder\(s\) \['a'\]",
        ),
    ],
)
def test_image_folder_missing_or_empty(tmp_path, setup, match):
    root = tmp_path / "photos"
    setup(root)
    with pytest.raises(DatasetNotFoundError, match=match):
        data.ImageFolderDataset(root)


def test_image_folder_rejects_bad_arguments(tmp_path):
    write_image_folder(tmp_path, {"a": 1})
    with pytest.raises(ValueError, match="extensions must be a non-empty list"):
        data.ImageFolderDataset(tmp_path, extensions="jpg")
    with pytest.raises(TypeError, match="transform must be callable or None"):
        data.ImageFolderDataset(tmp_path, transform=3)


def test_load_dataset_imagefolder_uses_root_split(tmp_path):
    write_image_folder(tmp_path / "train", {"a": 2, "b": 1})
    write_image_folder(tmp_path / "val", {"a": 1, "b": 1})
    ds = data.load_dataset("imagefolder", split="val", root=tmp_path)
    assert isinstance(ds, data.ImageFolderDataset) and len(ds) == 2 and ds.split == "val"
    with pytest.raises(ValueError, match="unknown split 'test' for imagefolder .*; valid splits: train, val"):
        data.load_dataset("imagefolder", split="test", root=tmp_path)


# ---------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_seeded():
    a, b = data.make_synthetic(200, seed=3), data.make_synthetic(200, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = data.make_synthetic(200, seed=4)
    assert not torch.equal(a.images, c.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32) and a.name == "synthetic"


def test_synthetic_train_and_test_are_different_samples():
    train, test = data.make_synthetic(100, split="train"), data.make_synthetic(100, split="test")
    flat_train = {bytes(x.numpy()) for x in train.images}
    assert not any(bytes(x.numpy()) in flat_train for x in test.images)
    assert train.classes == test.classes


@pytest.mark.parametrize("n, num_classes, size", [(100, 10, 32), (103, 10, 17), (30, 3, 64)])
def test_synthetic_is_class_balanced_at_any_size(n, num_classes, size):
    ds = data.make_synthetic(n, image_size=size, num_classes=num_classes)
    counts = torch.bincount(ds.labels, minlength=num_classes)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert ds.images.shape == (n, 3, size, size) and len(ds.classes) == num_classes


def _orientation_histogram(images: torch.Tensor, bins: int = 8) -> np.ndarray:
    """Magnitude-weighted histogram of gradient orientations (mod pi) on the grayscale image."""
    gray = images.numpy().astype(np.float64).mean(1)
    gx = gray[:, 1:-1, 2:] - gray[:, 1:-1, :-2]
    gy = gray[:, 2:, 1:-1] - gray[:, :-2, 1:-1]
    which = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins).astype(int), bins - 1)
    hist = np.stack([(np.hypot(gx, gy) * (which == b)).sum((1, 2)) for b in range(bins)], 1)
    return hist / (hist.sum(1, keepdims=True) + 1e-9)


def _radial_spectrum(images: torch.Tensor, bins: int = 8) -> np.ndarray:
    """Share of the grayscale power spectrum in each ring of spatial frequency."""
    gray = images.numpy().astype(np.float64).mean(1)
    power = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True))) ** 2
    f = np.fft.fftfreq(gray.shape[-1])
    radius = np.hypot(f[:, None], f[None, :])
    which = np.minimum((radius / radius.max() * bins).astype(int), bins - 1)
    hist = np.stack([(power * (which == b)).sum((1, 2)) for b in range(bins)], 1)
    return hist / (hist.sum(1, keepdims=True) + 1e-9)


def _nearest_class_mean_accuracy(f_train, y_train, f_test, y_test) -> float:
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-9
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
    means = np.stack([f_train[y_train == c].mean(0) for c in range(y_train.max() + 1)])
    pred = ((f_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y_test).mean())


def test_synthetic_class_is_carried_by_texture_not_colour():
    train, test = data.make_synthetic(600, split="train"), data.make_synthetic(300, split="test")
    y_train, y_test = train.labels.numpy(), test.labels.numpy()

    def texture(ds):
        return np.concatenate([_orientation_histogram(ds.images), _radial_spectrum(ds.images)], 1)

    def colour(ds):
        return ds.images.numpy().astype(np.float64).mean((2, 3))

    texture_acc = _nearest_class_mean_accuracy(texture(train), y_train, texture(test), y_test)
    colour_acc = _nearest_class_mean_accuracy(colour(train), y_train, colour(test), y_test)
    assert texture_acc > 0.6, (
        f"held-out accuracy {texture_acc:.2f} from grayscale texture features (chance 0.10)"
    )
    assert colour_acc < 0.25, f"mean colour predicts the class ({colour_acc:.2f}): colour must not carry it"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"split": "dev"}, ValueError, "unknown split 'dev' for synthetic; valid splits: train, val, test"),
        ({"n": 0}, ValueError, "n must be an int >= 1, got 0"),
        ({"image_size": 4}, ValueError, "image_size must be an int >= 8, got 4"),
        ({"num_classes": 11}, ValueError, r"num_classes must be <= 10 \(texture families\), got 11"),
        ({"num_classes": 1}, ValueError, "num_classes must be an int >= 2, got 1"),
        ({"n": 2.5}, ValueError, "n must be an int >= 1, got 2.5"),
        ({"seed": "0"}, TypeError, "seed must be an int, got '0'"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.make_synthetic(**kwargs)


# -------------------------------------------------------------------------------------------- names


def test_load_dataset_dispatches_by_name(tmp_path):
    synthetic = data.load_dataset("synthetic", split="test", n=20, image_size=8)
    assert torch.equal(synthetic.images, data.make_synthetic(20, image_size=8, split="test").images)
    fake_cifar10(tmp_path)
    assert len(data.load_dataset("cifar10", split="test", root=tmp_path, download=False)) == 3


def test_load_dataset_rejects_unknown_names_and_roots_for_synthetic(tmp_path):
    with pytest.raises(
        ValueError,
        match="unknown dataset 'imagenet'; valid names: cifar10, cifar10_captions, cifar100, stl10, synthetic, imagefolder",
    ):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="the synthetic dataset is generated in memory and reads no files"):
        data.load_dataset("synthetic", root=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'dev' for cifar10; valid splits: train, test"):
        data.load_dataset("cifar10", split="dev", root=tmp_path)


def test_cifar10_mini_is_named_as_a_subset(cifar10_mini_root):
    from contrastive_lab.data import cifar10_name, load_book_data, load_cifar10

    assert load_cifar10("test", root=cifar10_mini_root).name == "cifar10-mini"
    assert cifar10_name(50_000, "train", Path("/x/cifar-10-batches-py")) == "cifar10"
    assert cifar10_name(123, "train", Path("/x/cifar-10-batches-py")) == "cifar10-partial"
    assert load_book_data("test", root=cifar10_mini_root).name == "cifar10-mini"


def test_book_data_falls_back_to_synthetic_when_offline(tmp_path, monkeypatch, capsys):
    import urllib.error
    import urllib.request

    from contrastive_lab.data import load_book_data

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    ds = load_book_data("train", root=tmp_path, synthetic_size=40)
    assert ds.name == "synthetic" and len(ds) == 40
    assert "using the synthetic dataset instead" in capsys.readouterr().out


def test_every_public_name_of_the_former_module_is_still_importable():
    """The names ``contrastive_lab.data`` offered as one module stay importable from the package."""
    before_the_split = """ARCHIVES ArchiveSpec CIFAR10_FILES CIFAR10_SIZES CIFAR100_FILES CIFAR100_LABEL_TYPES DATASETS
        DATA_ENV DOWNLOAD_TIMEOUT_S DatasetCorruptError DatasetNotFoundError IMAGE_EXTENSIONS ImageFolderDataset
        ImageTensorDataset STL10_PARTS STL10_SIZE SYNTHETIC_CLASSES SYNTHETIC_SPLITS cifar10_name data_root
        download_url extract_archive file_md5 load_book_data load_cifar10 load_cifar100 load_dataset load_stl10
        make_synthetic read_image""".split()
    missing = [name for name in before_the_split if name not in data.__all__ or not hasattr(data, name)]
    assert missing == []
    assert all(hasattr(data, name) for name in data.__all__)


# ----------------------------------------------------------------------------------- labelled subsets


def _named_image_folder(root: Path, per_class: int = 6) -> Path:
    """root/train/{ant,bee}/<class>_train_<i>.png (unique file names, as SimCLR's lists need)."""
    rng = np.random.default_rng(0)
    for name in ("ant", "bee"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{name}_train_{i:03d}.png")
    return root


def test_select_labelled_by_fraction_is_the_class_balanced_label_subset():
    ds = data.make_synthetic(203, image_size=8, num_classes=4)
    subset = data.select_labelled(ds, fraction=0.1, seed=3)
    expected = data.label_subset(ds.labels, 0.1, seed=3)
    assert isinstance(subset, data.ImageTensorDataset) and subset.classes == ds.classes
    assert torch.equal(subset.images, ds.images[expected]) and torch.equal(subset.labels, ds.labels[expected])
    counts = torch.bincount(subset.labels, minlength=4).tolist()
    assert counts == [max(1, int(0.1 * n + 0.5)) for n in torch.bincount(ds.labels, minlength=4).tolist()]
    assert not torch.equal(data.select_labelled(ds, fraction=0.1, seed=4).images, subset.images)
    assert data.select_labelled(ds) is ds and data.select_labelled(ds, fraction=1.0, seed=5) is ds


def test_select_labelled_by_subset_file_picks_images_by_file_name(tmp_path, monkeypatch):
    folder = _named_image_folder(tmp_path / "imagenet")
    names = [f"{c}_train_{i:03d}.png" for c in ("ant", "bee") for i in range(4)]
    (folder / "subset.txt").write_text("# 4 labelled images per class\n" + "\n".join(names) + "\n\n")
    assert data.read_subset_file(folder / "subset.txt") == names
    ds = data.ImageFolderDataset(folder / "train")
    subset = data.select_labelled(ds, subset_file=str(folder / "subset.txt"))
    assert isinstance(subset, data.LabelledSubset) and len(subset) == 8
    assert sorted(Path(p).name for p, _ in subset.samples) == sorted(names)
    assert subset.labels.tolist() == [0] * 4 + [1] * 4 and subset.classes == ["ant", "bee"]
    image, label = subset[5]
    assert label == 1 and image.dtype == torch.uint8
    # relative to the data root when not found from the working directory
    monkeypatch.chdir(tmp_path)
    rel = data.select_labelled(ds, subset_file="subset.txt", data_root=str(folder))
    assert len(rel) == 8 and data.resolve_subset_file("subset.txt", folder) == folder / "subset.txt"


def test_select_labelled_errors(tmp_path, monkeypatch):
    folder = _named_image_folder(tmp_path / "imagenet", per_class=2)
    ds = data.ImageFolderDataset(folder / "train")
    bad = tmp_path / "bad.txt"
    bad.write_text("ant_train_000.png\nn01440764_10026.JPEG\n")
    with pytest.raises(ValueError, match=r"1 of the 2 names in .*bad.txt are not in the train images .*n01440764_10026"):
        data.select_labelled(ds, subset_file=str(bad))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="label_subset_file 'missing.txt' not found"):
        data.select_labelled(ds, subset_file="missing.txt", data_root=folder)
    with pytest.raises(ValueError, match="not both"):
        data.select_labelled(ds, subset_file=str(bad), fraction=0.5)
    with pytest.raises(ValueError, match="needs dataset=imagefolder; for synthetic use label_fraction"):
        data.select_labelled(data.make_synthetic(n=20, image_size=8), subset_file=str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="lists no image file names"):
        data.read_subset_file(empty)
    with pytest.raises(FileNotFoundError, match="no label subset file at"):
        data.read_subset_file(tmp_path / "none.txt")
    write_image_folder(tmp_path / "same", {"a": 1, "b": 1})  # 0.png in both class folders
    (tmp_path / "same.txt").write_text("0.png\n")
    with pytest.raises(ValueError, match=r"file names \['0.png'\] occur in several class folders"):
        data.select_labelled(data.ImageFolderDataset(tmp_path / "same"), subset_file=str(tmp_path / "same.txt"))


# ------------------------------------------------------------------------------------ check_dataset


def test_check_dataset_lists_every_unreadable_image_and_goes_on(tmp_path):
    write_image_folder(tmp_path / "train", {"ant": 3, "bee": 2}, size=(32, 32))
    (tmp_path / "train" / "empty").mkdir()
    (tmp_path / "train" / "bee" / "notes.txt").write_text("not an image, not an image file name")
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(whole, "PNG")
    truncated = tmp_path / "train" / "ant" / "truncated.png"
    truncated.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    renamed = tmp_path / "train" / "bee" / "renamed.jpg"
    renamed.write_text("a text file renamed .jpg")

    report = data.check_dataset("imagefolder", "train", root=tmp_path)
    assert (report.name, report.split, report.root) == ("imagefolder", "train", tmp_path / "train")
    assert report.count == 7 and report.class_counts == {"ant": 4, "bee": 3, "empty": 0}
    assert [file for file, _ in report.bad] == [str(truncated), str(renamed)]
    errors = dict(report.bad)
    assert errors[str(truncated)] == "OSError: image file is truncated"
    assert errors[str(renamed)] == f"UnidentifiedImageError: cannot identify image file '{renamed}'"
    assert not report.ok and len(report.warnings) == 1 and "['empty']" in report.warnings[0]
    text = report.summary()
    assert f"{truncated}: OSError: image file is truncated" in text and str(renamed) in text
    assert "2 bad file(s)" in text and "warning: class folder(s) ['empty']" in text and "NOT OK" in text


def test_check_dataset_of_a_clean_folder_reports_no_bad_files(tmp_path):
    write_image_folder(tmp_path / "val", {"a": 2, "b": 3})
    report = data.check_dataset("imagefolder", "val", root=tmp_path)
    assert report.ok and report.bad == [] and report.warnings == []
    assert report.count == 5 and report.class_counts == {"a": 2, "b": 3}
    assert report.summary().endswith("OK") and "a 2, b 3" in report.summary()
    with pytest.raises(ValueError, match="unknown split 'test' for imagefolder .*; valid splits: val"):
        data.check_dataset("imagefolder", "test", root=tmp_path)


def test_check_dataset_counts_cifar10_mini(cifar10_mini_root):
    for split, count in (("train", 5085), ("test", 1017)):
        report = data.check_dataset("cifar10", split, root=cifar10_mini_root)
        assert report.ok and report.name == "cifar10-mini" and report.count == count
        assert len(report.class_counts) == 10 and sum(report.class_counts.values()) == count
        assert report.root == cifar10_mini_root and f"{count} images, 10 classes" in report.summary()


def test_check_dataset_of_in_memory_sets_reports_corrupt_and_missing_files(tmp_path):
    fake_cifar10(tmp_path)
    assert data.check_dataset("cifar10", "test", root=tmp_path).count == 3
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    report = data.check_dataset("cifar10", "test", root=tmp_path)
    assert not report.ok and report.count == 0
    [(file, error)] = report.bad
    assert file == str(tmp_path / "cifar-10-batches-py") and f"cannot read {batch}" in error
    with pytest.raises(DatasetNotFoundError, match="download=False"):  # a check never downloads
        data.check_dataset("cifar100", "train", root=tmp_path)
    synthetic = data.check_dataset("synthetic", "val")
    assert synthetic.ok and synthetic.root is None and synthetic.count == 2000
    assert set(synthetic.class_counts.values()) == {200}
    fake_stl10(tmp_path)
    unlabeled = data.check_dataset("stl10", "train+unlabeled", root=tmp_path)
    assert unlabeled.count == 4 and unlabeled.unlabeled == 2 and sum(unlabeled.class_counts.values()) == 2


def test_extras_travel_with_the_images_through_subsets_and_batches():
    """Per-image tensors beside the images (e.g. caption tokens) stay row-aligned in subsets and batches."""
    from contrastive_lab.data import ImageTensorDataset, select_labelled
    from contrastive_lab.engine import TensorBatches
    from contrastive_lab.presets import get_preset
    from contrastive_lab.views import get_recipe

    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    ds = ImageTensorDataset(images, labels, ["a", "b", "c"], "toy", "train", {"tokens": torch.arange(12) * 10})
    sub = ds.subset([5, 1, 7])
    assert sub.extras["tokens"].tolist() == [50, 10, 70] and torch.equal(sub.images, images[[5, 1, 7]])
    picked = select_labelled(ds, fraction=0.5, seed=0)
    assert all(int(t) // 10 < 12 and torch.equal(ds.images[int(t) // 10], img)
               for t, img in zip(picked.extras["tokens"], picked.images))
    cfg = get_preset("simclr-cifar10-cpu").replace(batch_size=4, image_size=8, eval_size=0)
    batch = next(TensorBatches(ds, [get_recipe("simclr_cifar", size=8)] * 2, cfg, "cpu", 0, 1).epoch(0))
    assert torch.equal(batch.extras["tokens"], batch.index * 10)
    with pytest.raises(ValueError, match=r"extras\['tokens'\] must be a tensor with one row per image \(12\)"):
        ImageTensorDataset(images, labels, ["a", "b", "c"], "toy", "train", {"tokens": torch.zeros(5)})

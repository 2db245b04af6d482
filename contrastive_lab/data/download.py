"""Where the datasets live, and how their official archives get there: download, checksum, extraction.

Holds :func:`data_root` (an explicit ``root``, else ``$CONTRASTIVE_LAB_DATA`` through
:func:`contrastive_lab.runtime.env_data_root`, else ``<repo>/data``), the table of official archives
(:data:`ARCHIVES`, URLs and md5 sums as in torchvision), :func:`download_url` (md5-checked, atomically
renamed), :func:`extract_archive` (staged, refusing unsafe members) and :func:`_ensure_folder`, which
every file-backed loader calls and whose error says where to put the files by hand. Chapter 00
introduces the data root and the first download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..runtime import DATA_ENV, env_data_root
from .tensor import DatasetCorruptError, DatasetNotFoundError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0  # seconds without a byte from the server before we give up
_CHUNK = 1 << 20
# <repo> is the folder above the contrastive_lab package: contrastive_lab/data/download.py -> parents[2]
_REPO = Path(__file__).resolve().parents[2]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The datasets' folder: ``root`` if given, else ``$CONTRASTIVE_LAB_DATA``, else ``<repo>/data``.

    ``<repo>`` is the parent of the ``contrastive_lab`` package directory. CI points the variable at
    ``shared/data/cifar10-mini``, which holds ``cifar-10-batches-py/`` like the official archive.
    """
    if root is not None:
        return Path(root).expanduser()
    env = env_data_root()
    if env is not None:
        return env
    return _REPO / "data"


@dataclass(frozen=True)
class ArchiveSpec:
    """Where an official archive comes from and what it unpacks to (``folder`` under the data root)."""

    title: str
    url: str
    filename: str
    md5: str
    folder: str
    size: str


# URLs and md5 sums as in torchvision.datasets (cifar.py, stl10.py), checked against torchvision 0.29.
ARCHIVES: dict[str, ArchiveSpec] = {
    "cifar10": ArchiveSpec(
        "CIFAR-10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        "170 MB",
    ),
    "cifar100": ArchiveSpec(
        "CIFAR-100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        "169 MB",
    ),
    "stl10": ArchiveSpec(
        "STL-10",
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb",
        "stl10_binary",
        "2.6 GB",
    ),
}


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: str | os.PathLike, md5: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` and check its md5; ``dest`` appears only when complete and correct.

    The bytes stream into a temporary file beside ``dest`` and are renamed over it atomically after
    the checksum matched, so an interrupted or corrupted download never leaves a half-written file.
    Network errors propagate (``urllib.error.URLError``/``OSError``); a wrong checksum raises
    :class:`DatasetCorruptError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
        if digest.hexdigest() != md5:
            raise DatasetCorruptError(
                f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; "
                f"nothing was saved to {dest}. Try again later, or download it by hand (see data/README.md)."
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract with the tar "data" filter; on Pythons without it (< 3.10.12 / 3.11.4) refuse the same
    dangerous members by hand: absolute paths, ``..``, links and device files."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():
        if (
            member.name.startswith("/")
            or ".." in Path(member.name).parts
            or not (member.isfile() or member.isdir())
        ):
            raise DatasetCorruptError(f"refusing to extract the unsafe archive member {member.name!r}")
    tar.extractall(dest)


def extract_archive(archive: Path, root: Path, folder: str) -> Path:
    """Unpack ``folder/`` from the tar archive into ``root``; nothing appears unless it all worked.

    Extraction goes to a staging directory in ``root`` that is renamed to ``root/folder`` at the end.
    Unsafe members (absolute paths, ``..``, links that leave the archive) are refused.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extracting", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                _safe_extractall(tar, staging)
        except Exception as err:  # tarfile/gzip/zlib raise many types for a damaged archive
            raise DatasetCorruptError(
                f"cannot extract {archive} ({type(err).__name__}: {err}); delete it and download it again"
            ) from err
        if not (staging / folder).is_dir():
            raise DatasetCorruptError(
                f"{archive} does not contain the folder {folder}/ (is it the right archive?)"
            )
        os.replace(staging / folder, root / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / folder


def _missing_message(spec: ArchiveSpec, root: Path, reason: str) -> str:
    """The one message for 'dataset not here': expected path, manual step, alternative."""
    folder = root / spec.folder
    return (
        f"{spec.title} not found: expected the folder {folder}/ ({reason}).\n"
        f"  By hand: download {spec.url} ({spec.size}, md5 {spec.md5}) and either put the archive "
        f"into {root}/ (it is extracted on the next call) or extract it there yourself: "
        f"tar -xzf {spec.filename} -C {root}\n"
        f"  Data stored elsewhere: set {DATA_ENV}=<folder that contains {spec.folder}/> or pass root=...\n"
        f"  No data at all: use the offline synthetic dataset instead (dataset=synthetic, "
        f'i.e. load_dataset("synthetic")).'
    )


def _ensure_folder(spec: ArchiveSpec, root: Path, required: Sequence[str], download: bool) -> Path:
    """``root/spec.folder`` with all ``required`` files; extracts (and downloads) the archive if needed."""
    folder = root / spec.folder
    if not folder.is_dir():
        archive = root / spec.filename
        if archive.is_file():  # placed by hand: check it before trusting it
            if (got := file_md5(archive)) != spec.md5:
                raise DatasetCorruptError(
                    f"{archive} has md5 {got}, expected {spec.md5}; delete it and download again"
                )
        elif not download:
            raise DatasetNotFoundError(_missing_message(spec, root, "download=False"))
        else:
            try:
                log.info("downloading %s (%s) to %s", spec.url, spec.size, archive)
                download_url(spec.url, archive, spec.md5)
            except OSError as err:  # URLError, timeouts, refused connections, no disk space
                raise DatasetNotFoundError(
                    _missing_message(spec, root, f"the download failed: {err}")
                ) from err
        extract_archive(archive, root, spec.folder)
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{folder}/ exists but lacks {', '.join(missing)}. Put the missing files there, or delete the "
            f"folder to extract/download {spec.filename} again.\n"
            + _missing_message(spec, root, "incomplete")
        )
    return folder


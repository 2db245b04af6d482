"""Datasets as uint8 image tensors: CIFAR-10/100, STL-10, image folders and an offline synthetic set.

Every loader hands out ``(image, label)`` pairs where ``image`` is a ``uint8`` tensor of shape
``3 x H x W`` and ``label`` an ``int`` (``-1`` = unlabeled). Turning one image into two augmented
views is the job of ``contrastive_lab.augment``; the engine's batches carry each sample's index as
well, which the memory bank of InstDisc needs (Wu et al. 2018, Sec. 3.1, "Learning with a memory
bank").

Where the files live (:func:`data_root`): an explicit ``root`` argument, else the environment
variable ``CONTRASTIVE_LAB_DATA`` (read by :func:`contrastive_lab.runtime.env_data_root`), else
``<repo>/data``. Each dataset sits in its official archive layout below that root
(``cifar-10-batches-py/``, ``cifar-100-python/``, ``stl10_binary/``), see ``data/README.md``. Missing
archives are downloaded (md5-checked, atomically renamed); when that is impossible the error says
where to put the files by hand, or to use ``load_dataset("synthetic")``.

Chapter 00 introduces the data. The modules, one concept each:

==================  ==================================================================================
``tensor``          :class:`ImageTensorDataset`, the data errors, the shared input checks
``download``        :func:`data_root`, the archive table, md5-checked download, safe extraction
``cifar``           CIFAR-10/100 readers, :func:`cifar10_name`, :func:`load_book_data` (the chapters' data)
``captions``        generated captions, :class:`CaptionTokenizer`, :func:`load_cifar10_captions` (ch. 12)
``stl10``           the STL-10 binaries
``folder``          :class:`ImageFolderDataset`, :func:`read_image`
``synthetic``       :func:`make_synthetic`, the offline texture dataset
``registry``        :data:`DATASETS` and :func:`load_dataset`, every dataset by name
``subsets``         labelled subsets for fine-tuning: :func:`label_subset`, :func:`select_labelled`
``check``           :func:`check_dataset`: decode or load a split before training, list what is broken
==================  ==================================================================================
"""

from __future__ import annotations

from ..runtime import DATA_ENV
from .captions import (
    CIFAR10_SYNONYMS,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    CaptionTokenizer,
    caption_tokens,
    fill_template,
    generate_captions,
    image_attributes,
    load_cifar10_captions,
)
from .check import DatasetReport, check_dataset
from .cifar import (
    CIFAR10_FILES,
    CIFAR10_SIZES,
    CIFAR100_FILES,
    CIFAR100_LABEL_TYPES,
    cifar10_name,
    load_book_data,
    load_cifar10,
    load_cifar100,
)
from .download import (
    ARCHIVES,
    DOWNLOAD_TIMEOUT_S,
    ArchiveSpec,
    data_root,
    download_url,
    extract_archive,
    file_md5,
)
from .folder import IMAGE_EXTENSIONS, ImageFolderDataset, read_image
from .registry import DATASETS, load_dataset
from .stl10 import STL10_PARTS, STL10_SIZE, load_stl10
from .subsets import LabelledSubset, label_subset, read_subset_file, resolve_subset_file, select_labelled
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_SPLITS, make_synthetic
from .tensor import DatasetCorruptError, DatasetNotFoundError, ImageTensorDataset

__all__ = [
    "ARCHIVES",
    "CIFAR10_FILES",
    "CIFAR10_SIZES",
    "CIFAR100_FILES",
    "CIFAR100_LABEL_TYPES",
    "CIFAR10_SYNONYMS",
    "HELDOUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "CaptionTokenizer",
    "caption_tokens",
    "fill_template",
    "generate_captions",
    "image_attributes",
    "load_cifar10_captions",
    "DATASETS",
    "DATA_ENV",
    "DOWNLOAD_TIMEOUT_S",
    "IMAGE_EXTENSIONS",
    "STL10_PARTS",
    "STL10_SIZE",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_SPLITS",
    "ArchiveSpec",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DatasetReport",
    "ImageFolderDataset",
    "ImageTensorDataset",
    "LabelledSubset",
    "check_dataset",
    "cifar10_name",
    "data_root",
    "download_url",
    "extract_archive",
    "file_md5",
    "label_subset",
    "load_book_data",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_stl10",
    "make_synthetic",
    "read_image",
    "read_subset_file",
    "resolve_subset_file",
    "select_labelled",
]

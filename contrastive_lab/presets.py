"""Named configurations: ``python -m contrastive_lab train --preset NAME``, or ``get_preset(NAME)``.

A preset is a small, readable function returning a :class:`~contrastive_lab.config.Config`; each
lives in its method's file (``methods/simclr.py`` holds SimCLR's CPU, CIFAR-10 and ImageNet presets)
and cites where every number comes from. This module gathers them: importing it imports every
method. The CLI resolves ``--preset NAME`` and then applies ``key=value`` overrides
(:func:`~contrastive_lab.config.apply_overrides`), so any field can be changed from the command line
(``epochs=1 batch_size=64 queue_size=1024``). The resolved config is saved into the run folder as
``config.json`` and inside every checkpoint. Chapter 05 reads one preset line by line.
"""

from __future__ import annotations

from . import methods  # noqa: F401  (registers every method and its presets)
from .config import PRESETS, Config, apply_overrides, config_from_dict, validate

__all__ = ["PRESETS", "Config", "apply_overrides", "config_from_dict", "get_preset", "preset_summary"]


def get_preset(name: str) -> Config:
    """The named preset as a validated :class:`Config`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return validate(PRESETS[name]())


def preset_summary(name: str) -> str:
    """The first line of the preset's docstring (``python -m contrastive_lab presets``)."""
    return (PRESETS[name].__doc__ or "").strip().split("\n")[0]

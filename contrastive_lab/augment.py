"""Renamed to contrastive_lab.views; this module keeps old imports working.

``from contrastive_lab.augment import BatchedViews`` (and every other public name of the old
module) still works; new code imports from :mod:`contrastive_lab.views`, which chapter 01 teaches.
"""

from .views import *  # noqa: F403
from .views import __all__  # noqa: F401

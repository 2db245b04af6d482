"""contrastive_lab: the library behind the contrastive-lab textbook.

Modules, in the order the chapters teach them (data flows one way):

    data -> augment -> encoders -> heads -> losses -> memory -> methods
         -> engine -> evaluate      (plus runtime, native, distributed, optim, plots, cli)
"""

__version__ = "0.1.0"

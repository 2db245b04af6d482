"""``python -m contrastive_lab``: see contrastive_lab.cli."""

import sys

from .cli import main

sys.exit(main())

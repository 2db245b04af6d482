"""``python -m contrastive_lab``: see contrastive_lab.cli. A Ctrl-C while the libraries load ends with
one line, not a traceback (exit code 130, as every interrupted run)."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:
    print("interrupted (Ctrl-C) during start-up; nothing was saved", file=sys.stderr)
    sys.exit(130)

sys.exit(main())

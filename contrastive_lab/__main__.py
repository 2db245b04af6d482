"""``python -m contrastive_lab``: see contrastive_lab.cli. A Ctrl-C while the libraries load ends with
one line, not a traceback (exit code 130, as every interrupted run).

The Ctrl-C is noted, not raised, while the libraries load: a KeyboardInterrupt raised inside a
library's import can be swallowed (the run then trains on: exit 0), leave the library half
imported (a RecursionError or ValueError later), or end the process by SIGINT instead of with 130.
"""

import signal
import sys

_ctrl_c: list[int] = []
_default = signal.signal(signal.SIGINT, lambda signum, frame: _ctrl_c.append(signum))
from .cli import main  # noqa: E402  (after the handler: a Ctrl-C during the imports is only noted)

signal.signal(signal.SIGINT, _default)
if _ctrl_c:
    print("interrupted (Ctrl-C) during start-up; nothing was saved", file=sys.stderr)
    sys.exit(130)
sys.exit(main())

"""``python -m contrastive_lab`` and the ``contrastive-lab`` command (:func:`run`): see
contrastive_lab.cli. A Ctrl-C while the libraries load ends with one line, not a traceback (exit
code 130, as every interrupted run).

The Ctrl-C is noted, not raised, while the libraries load: a KeyboardInterrupt raised inside a
library's import can be swallowed (the run then trains on: exit 0), leave the library half
imported (a RecursionError or ValueError later), or end the process by SIGINT instead of with 130.
"""

import signal
import sys
import threading

_ctrl_c: list[int] = []
_noting = threading.current_thread() is threading.main_thread()  # (signal handlers: main thread only)
_default = signal.signal(signal.SIGINT, lambda signum, frame: _ctrl_c.append(signum)) if _noting else None
try:
    from .cli import main
finally:
    if _noting:
        signal.signal(signal.SIGINT, _default)


def run() -> int:
    """The CLI's exit code; 130 and one line if a Ctrl-C came while the libraries loaded."""
    if _ctrl_c:
        print("interrupted (Ctrl-C) during start-up; nothing was saved", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())

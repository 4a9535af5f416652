"""The one log format of every ad-detector process: the CLI's, and Ray workers' and replicas'.

A cluster run has processes Ray starts (channel workers, backbone replicas); they configure
logging with this too, so their lines in the journal read like the daemon's own.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(verbose: bool = False) -> None:
    """One line per event, key=value style, to stderr (journald picks it up)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z")

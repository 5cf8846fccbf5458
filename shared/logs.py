"""Logging set-up shared by every process: one line per record, tagged with the process role."""
from __future__ import annotations

import logging
import os
import sys


def setup_logging(role: str) -> None:
    level = os.environ.get("FINOPS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), stream=sys.stderr,
        format=f"%(asctime)s {role}[{os.getpid()}] %(levelname)s %(name)s: %(message)s")

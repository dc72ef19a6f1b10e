"""``python -m worker``: every worker role in this process (``rea worker`` is the usual way)."""

import asyncio
import logging

from settings import Settings
from worker import run_workers

logging.basicConfig(level=logging.INFO)
asyncio.run(run_workers(Settings()))

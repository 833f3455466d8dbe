"""Moved to ``tests/helpers/faultserver.py``; this alias keeps imports written before the move
working (the same module object, so its state is shared). Remove it once nothing imports
``_faultserver``."""

import sys

from helpers import faultserver

sys.modules[__name__] = faultserver

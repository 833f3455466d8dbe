"""The body lives in ``tests/_faultserver.py`` until the branches that edit it have merged; then it
moves here and the alias turns around. Import it as ``helpers.faultserver`` (the same module
object, so its state is shared)."""

import sys

import _faultserver

sys.modules[__name__] = _faultserver

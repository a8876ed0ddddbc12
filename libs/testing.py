"""Moved to `tests/support` (test support is not shipped). This shim goes once no test imports it."""
from tests.support import *  # noqa: F401,F403
from tests.support import TokenMint as _TokenMint
from tests.support.bus import SERVICES  # noqa: F401


class TokenMint(_TokenMint):
    """The old signature: `token(settings, sub, roles, **claims)`."""

    def token(self, settings, sub, roles, **claims):  # type: ignore[override]
        return super().token(sub, roles, **claims)

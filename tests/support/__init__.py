"""Test support (never shipped): the wire server, the broker, tokens, one HTTP client, one service fixture."""
from tests.support.bus import AMQP_URL, EventTap, delete_bus_namespace, new_namespace, publish_raw
from tests.support.http import ApiClient, Reply
from tests.support.nx import NxServer, free_port, nx_binary, wait_for_port
from tests.support.services import eventually, running_app, serve, settings_for
from tests.support.tokens import TokenMint

__all__ = ["AMQP_URL", "ApiClient", "EventTap", "NxServer", "Reply", "TokenMint", "delete_bus_namespace", "eventually",
           "free_port", "new_namespace", "nx_binary", "publish_raw", "running_app", "serve", "settings_for",
           "wait_for_port"]

"""The standalone OpenAI-compatible reverse proxy over the pipeline.

Network front end: may import `sluice.director.contract` and the core's types, nothing of other
shells.
"""

from .server import ProxyOptions, ProxyServer, default_upstream_pool, tuned_client_session
from .upstream import UpstreamPool

__all__ = [
    "ProxyOptions",
    "ProxyServer",
    "UpstreamPool",
    "default_upstream_pool",
    "tuned_client_session",
]

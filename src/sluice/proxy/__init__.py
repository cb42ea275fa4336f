"""The standalone OpenAI-compatible reverse proxy over the pipeline.

Network front end: may import `sluice.pipeline` and the core's types, nothing of other shells.
"""

from .server import ProxyOptions, ProxyServer, tuned_client_session

__all__ = ["ProxyOptions", "ProxyServer", "tuned_client_session"]

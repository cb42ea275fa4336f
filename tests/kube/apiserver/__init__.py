"""A small Kubernetes API server for tests: the real REST protocol, for the resources Sluice uses.

Driven only over HTTP (kubernetes_asyncio pointed at http://127.0.0.1:port), so what passes here
is what a real kube-apiserver would accept. See `server.ApiServer`.
"""

from .server import ApiServer, User
from .store import ApiError, Store

__all__ = ["ApiError", "ApiServer", "Store", "User"]

"""Sluice: an inference-aware Endpoint Picker (flow control + scheduling) for the Gateway API
Inference Extension. See DESIGN.md in the shared docs for the architecture."""

__version__ = "0.1.0"

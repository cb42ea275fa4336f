"""The standalone OpenAI-compatible reverse proxy over the pipeline."""

"""Live endpoint state: the endpoint registry, metrics scraping and parsing, engine metric
profiles and Sluice's own in-flight accounting. May import `sluice.api` and `sluice.net`."""

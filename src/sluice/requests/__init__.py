"""OpenAI request bodies: parsing, classification (objective, priority, fairness id, model
rewrite) and the error taxonomy. Pure; may import `sluice.api` and `sluice.util`."""

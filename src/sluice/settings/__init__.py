"""Typed, frozen settings of `sluice serve`, one field per flag of the table in
`sluice.cli.serve_options` (which builds them). Below both `app` and `cli`: the application
reads fields, never flag strings. May import `sluice.util` only."""

from sluice.settings.serve import ServeSettings

__all__ = ["ServeSettings"]

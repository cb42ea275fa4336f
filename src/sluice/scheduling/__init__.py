"""Where a request goes: the plugin framework (profile handler ▸ filters ▸ scorers ▸ picker),
built-in plugins and EndpointPickerConfig loading. May import `sluice.api`, `sluice.requests`,
`sluice.datalayer` (endpoint snapshots) and `sluice.util`."""

"""Where resources come from: the manifest-directory source, the Kubernetes watcher, the status
writer and leader election; all feed one `PoolState`. May import `sluice.api`,
`sluice.datalayer`."""

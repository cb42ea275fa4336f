"""Tests of the Kubernetes source, status writer, leader election, metrics auth and manifests."""

"""The Endpoint Picker Protocol: an Envoy ext_proc gRPC server over the pipeline."""

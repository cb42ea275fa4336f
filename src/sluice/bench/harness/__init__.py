"""What tests and benchmarks share to stand real parts up on loopback: free ports, a real Envoy
rendered from the shipped example, a zero-latency model server, a pipeline double, the /proc CPU
and memory readers. Shell code for measurement only; nothing in the picker imports it."""

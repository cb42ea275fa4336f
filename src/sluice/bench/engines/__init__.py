"""Real engine processes for tests and benchmarks: llama.cpp's `llama-server` built once into a
cache outside the clone (`build`), and a launcher that starts N instances on free ports
(`llamacpp`). May import everything, like the rest of `bench`."""

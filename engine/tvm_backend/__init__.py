"""Tandem's own runtime on apache-tvm: target detection, kernels, the compile and weight caches,
the engine.

Everything here imports tvm; engine.loader imports this package only when an engine opens."""

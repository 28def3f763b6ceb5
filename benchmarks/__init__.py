"""The benchmark harness: every figure of the product beside the raw clients' and FastStream's.

Run it with `scripts/bench [--quick] [--only W1,W3] [--json FILE]` (see benchmarks/README.md).
`runner` orchestrates; each workload module (`w1_publish` ... `w7_footprint`) measures our product,
the raw client library and FastStream in child processes (`child`, started by `procs`) pinned to a
core, so every figure is a ratio taken in the same invocation on the same services.
"""

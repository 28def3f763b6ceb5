"""`python -m benchmarks`: the harness's command line (scripts/bench runs this)."""

from benchmarks.runner import main

main()

"""Examples of code a team writes on top of the coordination layer (used by `scripts/demo`)."""

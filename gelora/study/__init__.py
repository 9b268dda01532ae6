"""The study: grids of runs, the rate protocol applied to every method, allocators, and the verdicts."""

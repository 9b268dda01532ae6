"""One run: its settings and identity, the Trainer harness, saved adapters, sweeps, rate protocol and jobs."""

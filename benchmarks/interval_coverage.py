"""Coverage of the study's paired intervals on simulated studies with known variance components.

    python benchmarks/interval_coverage.py [--studies 1000]

Each simulated study scores S seeds x J test examples with d[s, j] = 0.01 + seed_s + example_j +
noise_sj (normal parts with the sds below); an interval covers when it contains 0.01. Prints, per
design and seed count, the coverage of `paired_interval` (the study's) and of the percentile
`paired_bootstrap` (1,000 resamples), with the binomial standard error of a coverage estimate.
"""
import argparse
import time

import numpy as np

from gelora.analysis.stats import paired_bootstrap, paired_interval

DESIGNS = {"seeds dominate": (0.05, 0.1, 0.1), "both matter": (0.02, 0.1, 0.3), "examples dominate": (0.005, 0.3, 0.3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    print(f"{args.studies} simulated studies per cell, {args.examples} test examples; "
          f"coverage se about {np.sqrt(0.95 * 0.05 / args.studies):.3f}")
    print(f"{'design':>18} {'seeds':>5} {'paired_interval':>16} {'percentile bootstrap':>21}")
    for name, (seed_sd, example_sd, noise_sd) in DESIGNS.items():
        for seeds in (3, 5, 10):
            hit_t = hit_b = 0
            for i in range(args.studies):
                d = (0.01 + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, example_sd, (1, args.examples))
                     + rng.normal(0, noise_sd, (seeds, args.examples)))
                zero = np.zeros_like(d)
                t = paired_interval(d, zero)
                b = paired_bootstrap(d, zero, n_resamples=1000, seed=i)
                hit_t += t.low <= 0.01 <= t.high
                hit_b += b.low <= 0.01 <= b.high
            print(f"{name:>18} {seeds:>5} {hit_t / args.studies:>16.3f} {hit_b / args.studies:>21.3f}", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

"""A small grid run by tests/test_distributed.py under torchrun: python grid.py OUT METHODS [ACCUMULATION]."""
import os
import sys

from gelora.study.grid import run_grid

run_grid(sys.argv[2].split(","), [0], output_dir=sys.argv[1], model="tiny-bert", dataset="movie-sentiment",
         n_train=32, n_eval=16, n_test=16, max_length=16, batch_size=8, epochs=2, evals=2, rank=4,
         probe_examples=32, sb_num_samples=16, progress=False, log=None,
         gradient_accumulation=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
print(f"rank {os.environ.get('RANK', 0)} done")

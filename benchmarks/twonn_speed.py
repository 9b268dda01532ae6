"""TwoNN speed and agreement: gelora.geometry.twonn against scikit-dimension, and the probe's overhead.

    python benchmarks/twonn_speed.py                 # N in {2k, 10k, 50k}, D in {384, 768}
    python benchmarks/twonn_speed.py --sizes 2000 10000 --skdim-max 10000

For every (N, D): our time (exact search, no bootstrap, as scikit-dimension computes no interval)
in seconds and in float32 Gram products X X^T timed beside it (the floor of any exact search),
scikit-dimension's time, their ratio, both estimates and their relative difference, and the
process's peak memory (the search holds one block of block_size^2 floats beside the data). Then the probe (hidden states of
every layer, pooled) against a plain forward pass over the same batches of the packaged MiniLM.
Timings are the best of --repeats runs, in seconds, on however many threads torch uses here.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from gelora.geometry import synthetic
from gelora.geometry.twonn import TwoNN


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def estimator_table(sizes, dims, repeats, skdim_max, device="cpu"):
    import skdim

    print(f"\nTwoNN on a 16-dimensional Gaussian embedded in D dimensions plus 1% noise (torch threads: "
          f"{torch.get_num_threads()}, device {device}). 'Gram products': our time over the time of one float32 "
          "product X X^T measured beside it, the floor of an exact search (at most 1.0 is the target)")
    print(f"{'N':>7} {'D':>5} {'X X^T (s)':>10} {'gelora (s)':>11} {'Gram prod.':>11} {'skdim (s)':>10} {'speed-up':>9} "
          f"{'d gelora':>10} {'d skdim':>10} {'rel. diff':>10} {'peak RSS MB':>12}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for n in sorted(sizes):  # the largest last: the process's peak memory is then its own
        for d in dims:
            X = (synthetic.gaussian(n, 16, d, seed=0) + 0.01 * np.random.default_rng(1).normal(size=(n, d))).astype(np.float32)
            Xt = torch.from_numpy(X).to(device)

            def gram(Xt=Xt):
                Xt @ Xt.T
                sync()

            def ours(Xt=Xt):
                value = TwoNN(n_bootstrap=0, device=device).fit(Xt).dimension_
                sync()
                return value

            t_ours, value = best_of(ours, 1 if n > 20000 else repeats)
            peak = peak_rss_mb()  # before the Gram product, which holds all N^2 floats at once
            t_gemm, _ = best_of(gram, 1 if n > 20000 else repeats)
            if n <= skdim_max:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t_ref, ref = best_of(lambda X=X: skdim.id.TwoNN().fit(X).dimension_, repeats)
                cells = f"{t_ref:>10.2f} {t_ref / t_ours:>8.1f}x {value:>10.4f} {ref:>10.4f} {abs(value - ref) / ref:>10.1e}"
            else:
                cells = f"{'skipped':>10} {'':>9} {value:>10.4f} {'':>10} {'':>10}"
            print(f"{n:>7} {d:>5} {t_gemm:>10.2f} {t_ours:>11.2f} {t_ours / t_gemm:>11.2f} {cells} {peak:>12.0f}",
                  flush=True)


def probe_table(n_texts, batch_size, repeats):
    from gelora.data.tasks import load_dataset
    from gelora.models.loading import load_model
    from gelora.probing.probe import backbone, hidden_states

    model, tokenizer = load_model("minilm", "classification", 2)
    model.eval()
    texts = load_dataset("movie-sentiment", "train").subset(n_texts, seed=0).texts
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=64)["input_ids"]]
    order = np.argsort(-np.array(lengths), kind="stable")
    batches = [tokenizer([texts[i] for i in order[s:s + batch_size]], padding=True, truncation=True, max_length=64,
                         return_tensors="pt") for s in range(0, len(texts), batch_size)]

    def plain():
        with torch.inference_mode():
            for batch in batches:
                backbone(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    print(f"\nProbe overhead: MiniLM, {n_texts} movie sentences, batches of {batch_size}, max 64 tokens, "
          "the same length-sorted batches")
    t_plain, _ = best_of(plain, repeats)
    print(f"{'plain forward (s)':>28}: {t_plain:.2f}")
    for pooling in ("mean", "cls", "tokens"):
        t_probe, _ = best_of(lambda pooling=pooling: hidden_states(model, tokenizer, texts, pooling=pooling, max_length=64,
                                                   batch_size=batch_size, progress=False), repeats)
        print(f"{'probe, ' + pooling + ' pooling (s)':>28}: {t_probe:.2f}  overhead {100 * (t_probe / t_plain - 1):+.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000])
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 768])
    parser.add_argument("--skdim-max", type=int, default=10000,
                        help="largest N given to scikit-dimension (it sorts full distance rows: minutes at 50k)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe-texts", type=int, default=1000)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the search runs")
    args = parser.parse_args()
    estimator_table(args.sizes, args.dims, args.repeats, args.skdim_max, args.device)
    if args.probe_texts:  # 0: the estimator table only
        probe_table(args.probe_texts, 64, args.repeats)


if __name__ == "__main__":
    main()

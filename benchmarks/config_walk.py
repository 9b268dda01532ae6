"""How far one FinetuneConfig travels: trace a small `finetune` run (tiny-bert, a few steps) and
follow the config object through the package. A *stay* is a run of consecutive calls, in one
module, of functions that hold the config (an argument or a local that is the very object; the
config's dunder methods, construction and attribute reads, are not visits; its other methods
are); the walk is the sequence of stays. Printed: the stays, the modules visited, the returns (a stay in a
module the walk had already left) and, where the modules have layers, the climbs back up (a stay
in a higher layer than the one before it, i.e. a lower module calling up).

    python benchmarks/config_walk.py                # this checkout
    python benchmarks/config_walk.py --source DIR   # another checkout (e.g. a git worktree of an
                                                    # older commit), run with this interpreter

Issue 28 measured the walk before the subpackages; run this on such a worktree to compare.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

LAYERS = ("core", "geometry", "data", "models", "probing", "allocation", "adapters", "methods", "training", "analysis",
          "kit", "study", "cli")

TRACE = r'''
import json, sys, tempfile
sys.path.insert(0, SOURCE)
import gelora
try:
    from gelora.training.train import finetune
    from gelora.training.config import FinetuneConfig
except ImportError:  # the flat package before the subpackages
    from gelora.train import finetune
    from gelora.config import FinetuneConfig
out = tempfile.mkdtemp()
config = FinetuneConfig(method="lora", model="tiny-bert", n_train=32, n_eval=16, n_test=16, max_length=16,
                        batch_size=16, evals=1, progress=False, output_dir=out, force=True)
walk = []
def profile(frame, event, arg):
    if event != "call":
        return
    module = frame.f_globals.get("__name__", "")
    if not module.startswith("gelora") or module == "gelora":
        return
    if frame.f_locals.get("self") is config and frame.f_code.co_name.startswith("__"):
        return  # building the config or reading an attribute is not a visit; its other methods are
    if any(value is config for value in frame.f_locals.values()):
        if not walk or walk[-1] != module:
            walk.append(module)
sys.setprofile(profile)
finetune(config=config)
sys.setprofile(None)
print(json.dumps(walk))
'''


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else (
        LAYERS.index("cli") if parts[-1] == "cli" else None)


def measure(source: Path) -> dict:
    code = TRACE.replace("SOURCE", repr(str(source)))
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=scratch,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    walk = json.loads(done.stdout.strip().splitlines()[-1])
    returns = sum(1 for i, m in enumerate(walk) if m in walk[:i])
    levels = [layer(m) for m in walk]
    climbs = None if None in levels else sum(1 for a, b in zip(levels, levels[1:]) if b > a)
    return {"stays": len(walk), "modules": len(set(walk)), "returns": returns, "climbs_up": climbs, "walk": walk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(Path(__file__).resolve().parent.parent),
                        help="the checkout whose gelora package is traced")
    parser.add_argument("--show-walk", action="store_true", help="print the sequence of stays")
    args = parser.parse_args()
    result = measure(Path(args.source).resolve())
    print(f"{args.source}: {result['stays']} stays in {result['modules']} modules, {result['returns']} returns, "
          f"climbs back up: {result['climbs_up'] if result['climbs_up'] is not None else 'n/a (no layers)'}")
    if args.show_walk:
        print(" -> ".join(m.removeprefix("gelora.") for m in result["walk"]))


if __name__ == "__main__":
    main()

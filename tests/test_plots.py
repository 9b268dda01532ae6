"""What the figures claim by their geometry: points placed by their true parameter counts."""
import pandas as pd

from gelora import plots


def test_methods_with_nearly_equal_counts_keep_their_true_order():
    """LoRA-SB (73,008 parameters) is drawn left of LoRA (73,728) although the two are nudged apart;
    one seed promises no spread bars."""
    runs = pd.DataFrame({"method": ["lora", "lora_sb", "lora_xs", "gelora"],
                         "adapter_params": [73_728, 73_008, 73_008, 73_728], "test": [0.8, 0.7, 0.6, 0.75]})
    axes = plots.metric_vs_params(runs).axes[0]
    x = {c.get_label().split(" (")[0]: float(c.lines[0].get_xdata()[0]) for c in axes.containers}
    assert max(x["LoRA-XS"], x["LoRA-SB"]) < min(x["LoRA"], x["GeLoRA"])
    assert "one seed: no spread to draw" in axes.get_title() and "1 seed)" in axes.containers[0].get_label()

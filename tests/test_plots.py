"""What the figures claim by their geometry: points placed by their true parameter counts."""
import pandas as pd
import pytest

from gelora.kit import plots


def test_methods_with_nearly_equal_counts_keep_their_true_order():
    """LoRA-SB (73,008 parameters) is drawn left of LoRA (73,728) although the two are nudged apart;
    one seed promises no spread bars."""
    runs = pd.DataFrame({"method": ["lora", "lora_sb", "lora_xs", "gelora"],
                         "adapter_params": [73_728, 73_008, 73_008, 73_728], "test": [0.8, 0.7, 0.6, 0.75]})
    axes = plots.metric_vs_params(runs).axes[0]
    x = {c.get_label().split(" (")[0]: float(c.lines[0].get_xdata()[0]) for c in axes.containers}
    assert max(x["LoRA-XS"], x["LoRA-SB"]) < min(x["LoRA"], x["GeLoRA"])
    assert "one seed: no spread to draw" in axes.get_title() and "1 seed)" in axes.containers[0].get_label()


def test_the_random_band_spans_the_draws_and_each_allocator_sits_at_its_difference():
    table = pd.DataFrame({
        "allocation": ["uniform", "gelora", "inverted_gelora", "random_0", "random_1", "random_2"],
        "difference": [0.0, 0.012, -0.020, -0.004, 0.003, -0.010], "low": [0.0, 0.002, -0.030, -0.014, -0.007, -0.02],
        "high": [0.0, 0.022, -0.010, 0.006, 0.013, 0.0],
        "verdict": ["reference", "better", "worse", "not resolved", "not resolved", "not resolved"]})
    ax = plots.allocators({"trec6": table}).axes[0]
    band = next(p for p in ax.patches if "random allocations" in p.get_label())
    assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((-0.010, 0.003))
    assert "3 random allocations" in band.get_label()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gelora", "inverted_gelora", "random_0", "random_1",
                                                            "random_2"]  # the reference is the zero line
    centres = [float(c.lines[0].get_xdata()[0]) for c in ax.containers]
    assert centres == [0.012, -0.020, -0.004, 0.003, -0.010]


def test_metric_vs_params_draws_the_same_figure_twice():
    """The per-seed dots are jittered: seeded, so a rerun writes the same bytes (a figure under
    version control changes only when a result does), whatever the global generator's state."""
    import io

    import matplotlib.pyplot as plt
    import numpy as np

    runs = pd.DataFrame({"method": ["lora"] * 3 + ["lora_sb"] * 3, "adapter_params": [100] * 3 + [10] * 3,
                         "test": np.linspace(0.7, 0.8, 6), "seed": [0, 1, 2] * 2})
    images = []
    for draw in range(2):
        np.random.seed(draw)  # another state each time
        fig = plots.metric_vs_params(runs)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        images.append(buffer.getvalue())
        assert np.array_equal(np.random.get_state()[1], np.random.RandomState(draw).get_state()[1])  # caller's state kept
    assert images[0] == images[1]

"""The study's figures (notebook 06 and the README): the claims with their intervals, bound
against need, rate curves, the efficiency curve and the allocators. They share the registry's
colours and markers with every other figure; `gelora.kit.plots` re-exports them, so notebooks
draw every figure as `plots.<name>`."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gelora.methods import registry as methods


def claims(table: pd.DataFrame, title: str = "The papers' claims: paired difference with its 95% interval"):
    """One row per claim, one point per task: the paired difference (method - reference) with its
    95 % interval (`stats.paired_interval`: seeds and test examples both counted as samples), in the
    claim's method colour; a bar that crosses 0 is not resolved."""
    claims_order = list(dict.fromkeys(table["claim"]))
    tasks = list(dict.fromkeys(table["task"])) if "task" in table else [""]
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(claims_order) + 1.6))
    markers = ["o", "s", "D", "^"]
    for t, task in enumerate(tasks):
        rows = table[table["task"] == task] if "task" in table else table
        for r in rows.itertuples():
            y = claims_order.index(r.claim) + (t - (len(tasks) - 1) / 2) * 0.25
            ax.errorbar(r.difference, y, xerr=[[r.difference - r.low], [r.high - r.difference]], fmt=markers[t % 4],
                        color=methods.colours().get(r.method, "grey"), capsize=3, markersize=6)
        ax.plot([], [], markers[t % 4], color="black", label=task or "difference")
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(claims_order)), claims_order)
    ax.invert_yaxis()
    ax.set(xlabel="difference in the test metric (method - reference); bars: 95% interval", title=title)
    ax.legend(title="task", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def bound_vs_need(tables: dict[str, pd.DataFrame], need: str = "energy_rank_90"):
    """Per task (one panel each), per block: GeLoRA's bound with its 95% interval against the
    rank full fine-tuning's update used (`need`, mean over seeds; bars: seeds' min to max), its
    stable rank, and (where the table has `trained_need`) the rank the per-block sweep needed, an
    open marker when it is the largest rank tried. Log scale: they differ by orders of magnitude."""
    width = max(5.5, 0.3 * max(len(t) for t in tables.values()))  # a 30-block decoder needs a wider panel
    fig, axes = plt.subplots(1, len(tables), figsize=(width * len(tables), 4.2), squeeze=False)
    colours = methods.colours()
    for ax, (task, table) in zip(axes[0], tables.items()):
        x = table["block"].to_numpy()
        bound = table["bound"].to_numpy(dtype=float)
        ax.errorbar(x - 0.1, np.maximum(bound, 0.1), yerr=[np.maximum(bound, 0.1) - np.maximum(table["bound_low"], 0.1),
                                                          np.maximum(table["bound_high"], 0.1) - np.maximum(bound, 0.1)],
                    fmt="D", color=colours.get("gelora"), capsize=3, label="GeLoRA bound (95% interval; 0 drawn at 0.1)")
        low, high = table[f"{need}_min"], table[f"{need}_max"]
        ax.errorbar(x + 0.1, table[need], yerr=[table[need] - low, high - table[need]], fmt="o",
                    color=colours.get("full"), capsize=3, label=f"full FT update: {need.replace('_', ' ')} % (seeds' range)")
        ax.plot(x + 0.1, table["stable_rank"], "x", color="black", label="full FT update: stable rank")
        if "trained_need" in table and table["trained_need"].notna().any():
            top = table["trained_need_at_top"].fillna(False).astype(bool)
            ax.plot(x[~top] + 0.25, table["trained_need"][~top], "s", color=colours.get("lora"),
                    label="trained: smallest rank not worse than the best (per-block sweep)")
            ax.plot(x[top] + 0.25, table["trained_need"][top], "s", mfc="none", color=colours.get("lora"),
                    label="trained: the largest rank tried (the need may be larger)")
        ax.set_yscale("log")
        ax.set(xlabel="block k", ylabel="rank", title=task, xticks=x if len(x) <= 12 else x[::5])
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.suptitle("Does the ID increment bound the rank a block needs?")
    fig.tight_layout()
    return fig


def lr_sensitivity(sweeps: pd.DataFrame, methods_shown=("lora", "lora_xs", "lora_sb")):
    """Validation metric against the learning-rate factor of the sweep, one panel per task, one
    line per method in its registry colour (seed 0; factor 1 = the registry default)."""
    tasks = list(dict.fromkeys(sweeps["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.0), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        part = sweeps[(sweeps["task"] == task) & sweeps["method"].isin(methods_shown)]
        for method, group in part.groupby("method", sort=False):
            group = group.sort_values("factor")
            ax.plot(group["factor"], group["validation"], marker=methods.marker(method), color=methods.colours().get(method),
                    label=methods.label(method))
        ax.set_xscale("log")
        ax.set(xlabel="learning rate / registry default (log scale)", ylabel="validation metric (seed 0)", title=task)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def efficiency(tables: dict[str, pd.DataFrame], tolerance: float = 0.01, reference: str = "LoRA r = 8"):
    """Per task: each point's paired difference from the reference (95% interval) against its
    trainable parameters (log scale), in its method's colour, labelled with its rank; the band is
    +- tolerance (inside it: 'matches')."""
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.2), squeeze=False, sharey=True)
    for ax, (task, table) in zip(axes[0], tables.items()):
        for r in table.itertuples():
            method, _, rank = r.point.partition("@")
            ax.errorbar(r.adapter_params, r.difference, yerr=[[r.difference - r.low], [r.high - r.difference]],
                        fmt=methods.marker(method), color=methods.colours().get(method, "grey"), capsize=3, ms=7)
            ax.annotate(f"{methods.label(method)}{' r=' + rank if rank else ' (budget)'}", (r.adapter_params, r.high),
                        textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
        ax.axhspan(-tolerance, tolerance, color="grey", alpha=0.15, label=f"within {tolerance:g} of {reference}")
        ax.axhline(0, color="grey", lw=1)
        ax.set_xscale("log")
        ax.set(xlabel="trainable adapter parameters (log scale)", title=task,
               ylabel=f"test difference from {reference} (95% interval)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig



def allocators(tables: dict[str, pd.DataFrame]):
    """Per task: every allocator's paired test difference from uniform LoRA at the same budget
    (95 % interval, `study_allocators.allocator_table`); the random allocations' spread (lowest to
    highest draw) is the grey band: an allocator better than chance lies to the right of it."""
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 0.45 * max(len(t) for t in tables.values()) + 1.8),
                             squeeze=False)
    for ax, (task, table) in zip(axes[0], tables.items()):
        rows = table[table["verdict"] != "reference"].reset_index(drop=True)
        draws = rows[rows["allocation"].str.startswith("random_")]
        if len(draws):
            ax.axvspan(draws["difference"].min(), draws["difference"].max(), color="grey", alpha=0.2,
                       label=f"{len(draws)} random allocations (lowest to highest)")
        for y, r in enumerate(rows.itertuples()):
            colour = methods.colours().get("gelora" if "gelora" in r.allocation else "lora", "grey")
            ax.errorbar(r.difference, y, xerr=[[r.difference - r.low], [r.high - r.difference]], fmt="o",
                        color="grey" if r.allocation.startswith("random_") else colour, capsize=3)
        ax.axvline(0, color="black", lw=1, label="uniform LoRA (same budget)")
        ax.set_yticks(range(len(rows)), rows["allocation"])
        ax.invert_yaxis()
        ax.set(xlabel="test difference from uniform LoRA (95% interval)", title=task)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def rate_curves(tables: dict[str, pd.DataFrame]):
    """Per task (`study_rates.rate_table`): every method's mean validation metric over the selection
    seeds against its learning rate (log scale), the band from the worst to the best seed, the
    chosen rate circled; only rates with every selection seed are drawn."""
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.4), squeeze=False, sharey=True)
    for ax, (task, table) in zip(axes[0], tables.items()):
        for method, group in table[table["complete"]].groupby("method", sort=False):
            group = group.sort_values("rate")
            colour = methods.colours().get(method, "grey")
            ax.plot(group["rate"], group["mean"], marker=methods.marker(method), color=colour, label=methods.label(method))
            ax.fill_between(group["rate"], group["min"], group["max"], color=colour, alpha=0.15)
            chosen = group[group["chosen"]]
            ax.scatter(chosen["rate"], chosen["mean"], s=160, facecolors="none", edgecolors=colour, linewidths=1.5)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate (log scale)", ylabel="validation metric (mean; band: worst to best seed)", title=task)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def forest(tasks: pd.DataFrame, pooled: dict | None, title: str, margin: float | None = None):
    """One claim across tasks (or methods): each row's paired difference with its 95 % interval and,
    given `pooled`, the pooled row (diamond: the random-effects estimate; its bar: the interval a
    verdict uses) at the bottom. tasks: columns task, difference, low, high; pooled: estimate, low,
    high (gelora.analysis.pooled). A dashed line marks a non-inferiority margin when one is declared."""
    fig, ax = plt.subplots(figsize=(7, 0.38 * (len(tasks) + 2) + 1.4))
    y = np.arange(len(tasks))
    ax.errorbar(tasks["difference"], y, xerr=[tasks["difference"] - tasks["low"], tasks["high"] - tasks["difference"]],
                fmt="s", color="#555555", capsize=3, markersize=5)
    ticks, labels = list(y), list(tasks["task"])
    if pooled is not None:
        bottom = len(tasks) + 0.6
        ax.errorbar([pooled["estimate"]], [bottom], xerr=[[pooled["estimate"] - pooled["low"]], [pooled["high"] - pooled["estimate"]]],
                    fmt="D", color="black", capsize=4, markersize=8)
        ticks, labels = [*ticks, bottom], [*labels, "pooled"]
    ax.axvline(0, color="grey", lw=1)
    if margin is not None:
        ax.axvline(-margin, color="grey", lw=1, ls="--", label=f"margin -{margin:g}")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set(xlabel="difference in test accuracy (method - reference), 95 % intervals", title=title)
    fig.tight_layout()
    return fig

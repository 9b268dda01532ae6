"""Every figure of the kit, in one seaborn style. Each function draws on a new figure (or a given
axes) and returns the figure; `save` writes it under figures/ as PNG and PDF. The study's figures
live in gelora.kit.study_plots and are importable from here too (`plots.claims`, ...)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gelora.kit.study_plots import allocators, bound_vs_need, claims, efficiency, forest, lr_sensitivity, rate_curves  # noqa: F401
from gelora.methods import registry as methods


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def palette(names) -> dict:
    """Each method's colour from the registry (the same in every figure); grey for other names."""
    colours = methods.colours()
    return {m: colours.get(m, "grey") for m in names}


def save(fig, name: str, figures_dir: str | os.PathLike = "figures", formats=("png", "pdf")) -> list[Path]:
    """Write a figure as figures_dir/name.<format> for every format; returns the paths."""
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        # no creation date in PDFs: the same run gives the same bytes, so figures/ only changes when results do
        fig.savefig(path, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    return paths


def _axes(ax, size=(6.4, 4.2)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax


def twonn_fit(estimator, title: str = "TwoNN fit", true_dimension: float | None = None):
    """Left: the mu histogram against the fitted Pareto density. Right: -log(1 - F) against
    log(mu), the points of the fit and the line through the origin whose slope is d."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    d = estimator.dimension_
    mu = estimator.mu_[np.isfinite(estimator.mu_)]
    upper = np.quantile(mu, 0.99)
    left.hist(mu[mu <= upper], bins=60, density=True, alpha=0.6, label="observed $\\mu = r_2 / r_1$")
    grid = np.linspace(1, upper, 300)
    left.plot(grid, d * grid ** (-d - 1), lw=2, label=f"Pareto density, d = {d:.2f}")
    left.set(xlabel="$\\mu$ (ratio of neighbour distances, unitless)", ylabel="density", title="Distribution of $\\mu$")
    left.legend()
    right.scatter(estimator.log_mu_, estimator.neg_log_survival_, s=6, alpha=0.5, label="points used in the fit")
    x = np.linspace(0, estimator.log_mu_.max(), 50)
    right.plot(x, d * x, color="C1", lw=2, label=f"slope d = {d:.2f}")
    if true_dimension is not None:
        right.plot(x, true_dimension * x, "k--", lw=1, label=f"true d = {true_dimension:g}")
    right.set(xlabel="log $\\mu$", ylabel="$-\\log(1 - F(\\mu))$", title=title)
    right.legend()
    fig.tight_layout()
    return fig


def id_profile(profiles: pd.DataFrame, ax=None, title: str = "Intrinsic dimension per layer"):
    """Dimension per layer (0 = embeddings) with its confidence interval, one line per pooling."""
    fig, ax = _axes(ax)
    for pooling, group in profiles.groupby("pooling", sort=False):
        group = group.sort_values("layer")
        line, = ax.plot(group["layer"], group["dimension"], marker="o", label=pooling or "profile")
        ax.fill_between(group["layer"], group["ci_low"], group["ci_high"], alpha=0.2, color=line.get_color())
        missing = group[group["dimension"].isna()]
        for layer in missing["layer"]:
            ax.annotate("no ID", (layer, np.nanmin(group["dimension"])), ha="center", fontsize=8, color=line.get_color())
    ax.set(xlabel="layer (0 = embedding output)", ylabel="intrinsic dimension (TwoNN)", title=title)
    ax.set_xticks(sorted(profiles["layer"].unique()))
    ax.legend(title="pooling")
    return fig


def id_scaling(scaling: pd.DataFrame, ax=None, title: str = "Scale dependence"):
    """Estimate against the number of points (log axis), mean and spread over repeats."""
    fig, ax = _axes(ax)
    groups = scaling.groupby("label", sort=False) if "label" in scaling.columns else [("", scaling)]
    for label, group in groups:
        ax.errorbar(group["n_points"], group["mean"], yerr=group["std"], marker="o", capsize=3, label=label or None)
    ax.set_xscale("log")
    ax.set(xlabel="number of points (log scale)", ylabel="intrinsic dimension (TwoNN)", title=title)
    if "label" in scaling.columns:
        ax.legend()
    return fig


def ranks(table: pd.DataFrame, title: str = "Rank per block"):
    """Rank of every block for each method, in two panels: LoRA-type adapters (r (in + out)
    parameters per matrix) and LoRA-XS-type cores (r^2 per matrix), whose ranks differ in scale."""
    families = [("LoRA-type: r (in + out) parameters per matrix", methods.family_members("lora")),
                ("LoRA-XS-type: r\u00b2 parameters per matrix", methods.family_members("lora_xs"))]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, (label, members) in zip(axes, families):
        part = table[table["method"].isin(members)]
        order = [m for m in members if m in set(part["method"])]
        if part.empty:
            ax.set_axis_off()
            continue
        sns.barplot(data=part, x="block", y="rank", hue="method", hue_order=order, palette=palette(order), ax=ax)
        ax.set(xlabel="transformer block k", ylabel="rank per adapted matrix", title=label)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=3, frameon=False)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def profile_and_ranks(profile: pd.DataFrame, bounds, allocations: dict[str, list[int]]):
    """The ID profile next to the bounds and ranks it implies."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    id_profile(profile, ax=left, title="ID profile")
    blocks = np.arange(len(bounds))
    table = pd.DataFrame([{"block": b, "rank": r, "method": name} for name, rs in allocations.items()
                          for b, r in zip(blocks, rs)])
    colours = {name: methods.colours().get("gelora") if name.startswith("GeLoRA") else
               methods.colours().get("lora") if "LoRA" in name else "#bbbbbb" for name in allocations}
    sns.barplot(data=table, x="block", y="rank", hue="method", palette=colours, ax=right)
    right.plot(blocks, bounds, "k_", markersize=22, mew=2, label="bound $\\max(d_{k+1} - d_k, 0)$")
    right.set(xlabel="transformer block k (layer k -> k + 1)", ylabel="rank per adapted matrix", title="Ranks from the profile")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def rank_intervals(table: pd.DataFrame, title: str = "GeLoRA bound and rank with 95% bootstrap intervals"):
    """Left: each block's bound with its interval; right: the budgeted rank with its interval
    (from `gelora.probing.rank_uncertainty.allocation_intervals`). Error bars: 2.5 and 97.5 percentiles."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.0))
    colour = methods.colours().get("gelora", "C0")
    for ax, column, label in ((left, "bound", "bound $\\max(d_{k+1} - d_k, 0)$"), (right, "rank", "GeLoRA rank")):
        values = table[column].to_numpy(dtype=float)
        errors = [values - table[f"{column}_low"].to_numpy(dtype=float), table[f"{column}_high"].to_numpy(dtype=float) - values]
        ax.errorbar(table["block"], values, yerr=np.clip(errors, 0, None), fmt="o", color=colour, capsize=4,
                    label=f"{label} (bars: 95% interval)")
        ax.set(xlabel="block k (layer k -> k + 1)", ylabel=column, xticks=table["block"])
        ax.legend(loc="upper left", fontsize=8)
    left.axhline(0, color="grey", lw=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rank_sensitivity(table: pd.DataFrame, title: str = "How the ranks depend on the estimator"):
    """Heatmap: one row per estimator variant, one column per block, the rank in each cell."""
    pivot = table.pivot(index="variant", columns="block", values="rank").loc[table["variant"].unique()]
    fig, ax = plt.subplots(figsize=(1.0 * pivot.shape[1] + 4, 0.45 * pivot.shape[0] + 1.5))
    sns.heatmap(pivot, annot=True, fmt="d", cmap="viridis", cbar_kws={"label": "rank"}, ax=ax)
    ax.set(xlabel="transformer block", ylabel="estimator variant", title=title)
    return fig


def spectra(values: dict[str, np.ndarray], ax=None, title: str = "Singular values of the estimated update"):
    """Normalised singular values (s_i / s_1) of each layer's update, log scale, down to the SVD's
    resolution (len(s) x machine epsilon of s_1, numpy's numerical-rank rule): values below it are
    rounding noise that differs from machine to machine, not directions of the update."""
    fig, ax = _axes(ax)
    for name, s in values.items():
        s = np.asarray(s)
        ratio = s / s[0]
        kept = ratio > len(s) * np.finfo(s.dtype if s.dtype.kind == "f" else np.float64).eps
        ax.plot(np.arange(1, len(s) + 1)[kept], ratio[kept], lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set(xlabel="index i", ylabel="$s_i / s_1$ (log scale)", title=title)
    if len(values) <= 12:
        ax.legend(fontsize=7, ncol=2)
    return fig


def approximation_error(errors: pd.DataFrame, ax=None, title: str = "Rank-r truncation error"):
    """Relative Frobenius error of the rank-r approximation against r, per layer (columns: layer,
    rank, error), with the mean over layers in bold."""
    fig, ax = _axes(ax)
    for _, group in errors.groupby("layer"):
        ax.plot(group["rank"], group["error"], color="grey", alpha=0.35, lw=0.8)
    mean = errors.groupby("rank")["error"].mean()
    ax.plot(mean.index, mean.values, color="C3", lw=2.5, label="mean over layers")
    ax.set(xlabel="rank r", ylabel="$\\|\\Delta W - \\Delta W_r\\|_F / \\|\\Delta W\\|_F$", title=title, ylim=(0, 1.02))
    ax.legend()
    return fig


def subspace_stability(table: pd.DataFrame, ax=None, title: str = "Stability of the initial subspace",
                       chance: dict | None = None):
    """Similarity of the top-r subspace estimated from n examples to a larger-sample estimate
    (band: min to max over the modules); `chance` (rank -> r / d): two random subspaces' score,
    drawn as dotted lines in the rank's colour."""
    fig, ax = _axes(ax)
    ranks_shown = sorted(table["rank"].unique())
    colours = dict(zip(ranks_shown, sns.color_palette("viridis", len(ranks_shown))))
    sns.lineplot(data=table, x="num_samples", y="similarity", hue="rank", marker="o", errorbar=("pi", 100), ax=ax,
                 palette=colours)
    for r, level in (chance or {}).items():
        ax.axhline(level, ls=":", lw=1.2, color=colours.get(r, "grey"), label=f"chance, r = {r}: {level:.3f}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="examples in the gradient estimate (log scale)", ylabel="subspace similarity (0 to 1)",
           title=title, ylim=(0, 1.02))
    ax.legend(title="rank r (band: min-max over modules)", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return fig


def first_steps(losses: pd.DataFrame, ax=None, title: str = "First optimisation steps on the same batches"):
    """Training loss per step (columns: method, step, loss)."""
    fig, ax = _axes(ax)
    sns.lineplot(data=losses, x="step", y="loss", hue="method", marker="o", ax=ax,
                 palette=palette(losses["method"].unique()), hue_order=methods.order(losses["method"]))
    ax.set(xlabel="optimiser step (0 = initialisation)", ylabel="training loss (cross-entropy, nats)", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def metric_vs_params(runs: pd.DataFrame, metric: str = "accuracy", split: str = "test",
                     title: str | None = None):
    """Left: task metric against trainable adapter parameters (log axis), one marker per method at
    the mean over seeds, bars from the worst to the best seed. Right: every seed of every method,
    so that methods with the same parameter count can be told apart."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    colours = palette(runs["method"].unique())
    present = methods.order(runs["method"])
    counts = runs.groupby("method")["adapter_params"].median()
    for method in present:
        group = runs[runs["method"] == method]
        x = counts[method]
        # methods at (nearly) this count side by side, not on top, in the order of their true counts
        same = sorted((m for m in present if abs(np.log(counts[m] / x)) < 0.05), key=lambda m: (counts[m], present.index(m)))
        shift = 10 ** (0.035 * (same.index(method) - (len(same) - 1) / 2))
        y = group[split]
        left.errorbar([x * shift], [y.mean()], yerr=[[y.mean() - y.min()], [y.max() - y.mean()]],
                      fmt=methods.marker(method), ms=9, capsize=4, color=colours[method], alpha=0.85,
                      label=f"{methods.label(method)} ({x:,.0f} params, {len(group)} seed{'s' if len(group) != 1 else ''})")
    left.set_xscale("log")
    spread = "bars: min to max over seeds" if runs.groupby("method").size().max() > 1 else "one seed: no spread to draw"
    left.set(xlabel="trainable adapter parameters (log scale; head excluded)", ylabel=f"{split} {metric}",
             title=title or f"{split.capitalize()} {metric} against parameters\n(mean; {spread})")
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.22), ncol=2, frameon=False,
                title="equal parameter counts are drawn side by side", title_fontsize=8)
    state = np.random.get_state()  # seaborn's jitter draws from numpy's global generator: seeded, so
    np.random.seed(0)               # a rerun draws the same figure (and leaves the caller's state as it was)
    sns.stripplot(data=runs, x="method", y=split, order=present, hue="method", hue_order=present,
                  palette=colours, size=7, jitter=0.15, ax=right, legend=False)
    np.random.set_state(state)
    sns.pointplot(data=runs, x="method", y=split, order=present, color="black", markers="_", linestyles="none",
                  errorbar=None, ax=right)
    right.set(xlabel="", ylabel=f"{split} {metric}", title="Every seed (dots) and the mean (bar)")
    right.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def training_curves(loss: pd.DataFrame, evals: pd.DataFrame, metric: str = "accuracy"):
    """Left: training loss per step; right: validation metric per step (mean and spread over seeds)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    order = methods.order(loss["method"])
    sns.lineplot(data=loss, x="step", y="loss", hue="method", hue_order=order, palette=palette(order), ax=left,
                 errorbar=("pi", 100))
    left.set(xlabel="optimiser step", ylabel="training loss (nats)", title="Training loss (band: min to max over seeds)")
    handles, labels = left.get_legend_handles_labels()
    left.get_legend().remove()
    fig.legend(handles, [methods.label(m) for m in labels], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    if "adalora" in order:
        fig.text(0.01, -0.02, "AdaLoRA's training loss includes its orthogonality penalty (adalora_orth_reg x ||P^T P - I||^2), "
                 "so it sits above the others without meaning a worse fit.", fontsize=8)
    sns.lineplot(data=evals, x="step", y="value", hue="method", hue_order=order, palette=palette(order), marker="o",
                 ax=right, errorbar=("pi", 100), legend=False)
    right.set(xlabel="optimiser step", ylabel=f"validation {metric}", title=f"Validation {metric} (band: min to max)")
    fig.tight_layout()
    return fig


def cost(summary: pd.DataFrame):
    """Training time and peak memory per method (mean over seeds)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    order = methods.order(summary["method"])
    colours = palette(order)
    data = summary.set_index("method").loc[order].reset_index()
    left.bar(data["method"], data["train_time_s"], color=[colours[m] for m in order], label="training")
    left.bar(data["method"], data["init_time_s"], bottom=data["train_time_s"], color="black", alpha=0.5,
             label="initialisation (probe, EVA, gradient pass + SVD)")
    left.set(ylabel="time per run (s)", title="Time")
    left.legend(fontsize=8)
    right.bar(data["method"], data["peak_memory_mb"], color=[colours[m] for m in order])
    right.set(ylabel="peak memory above start (MB)", title="Memory")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig

"""Full fine-tuning: every weight trains. The target matrices are copied first so that the
finisher records the spectrum of each update (the rank full fine-tuning really used, per block)."""
from __future__ import annotations

from gelora.methods.registry import Method, register
from gelora.models.spectra import snapshot, update_spectra
from gelora.models.targets import default_targets, find_targets


def _full(ctx):
    targets = find_targets(ctx.model, ctx.config.target_modules or default_targets(ctx.model))
    ctx.model.gelora_start_weights = (targets, snapshot(targets))
    return ctx.model, {"note": "every parameter trains; budget ignored" if ctx.config.budget else "every parameter trains"}


def _full_final(model) -> dict:
    targets, start = model.__dict__.pop("gelora_start_weights")
    return {"update_spectra": update_spectra(targets, start)}


# Colours: seaborn's colorblind palette, fixed per method so that every figure agrees.
register(Method("full", "Full FT", "full", 5e-5, "#0173b2", "o", _full, None, finish=_full_final,
                description="every weight trains"))

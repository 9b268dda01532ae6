"""gelora: geometry-aware low-rank fine-tuning (GeLoRA ranks, LoRA-SB adapters), Jupyter-first.

The names a user needs are importable from here and loaded on first use, so `import gelora` stays
cheap (no torch until a name that needs it is touched):

    from gelora import TwoNN, id_profile, gelora_ranks, attach_lora_sb, finetune, paired_interval
"""
import importlib
import warnings

__version__ = "0.1.0"

# A deprecation raised inside PEFT's get_peft_model, about nothing gelora does.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

# name -> the module that defines it, in the order of the architecture
_EXPORTS = {
    "TwoNN": "geometry.twonn",
    "load_dataset": "data.tasks", "load_model": "models.loading",
    "id_profile": "probing.probe", "probe_dataset": "probing.probe",
    "gelora_ranks": "allocation.ranks", "lora_config": "allocation.ranks", "recommend_ranks": "allocation.recommend",
    "add_lora_xs": "adapters.lora_xs", "init_lora_xs": "adapters.lora_xs", "save_adapter": "adapters.files",
    "load_adapter": "adapters.files", "export_peft_lora": "adapters.files", "merge_and_unload": "adapters.lora_xs",
    "enable_adapters": "adapters.lora_xs", "disable_adapters": "adapters.lora_xs", "remove_lora_xs": "adapters.lora_xs",
    "estimate_update": "adapters.lora_sb", "apply_lora_sb": "adapters.lora_sb", "attach_lora_sb": "adapters.lora_sb",
    "FinetuneConfig": "training.config", "adapt": "training.apply", "finetune": "training.train", "run_grid": "study.grid",
    "predict": "training.saved", "load_trained": "training.saved",
    "paired_interval": "analysis.stats", "paired_bootstrap": "analysis.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gelora' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

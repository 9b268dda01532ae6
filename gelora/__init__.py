"""gelora: geometry-aware low-rank fine-tuning (GeLoRA ranks, LoRA-SB adapters), Jupyter-first."""
import warnings

__version__ = "0.1.0"

# A deprecation raised inside PEFT's get_peft_model, about nothing gelora does.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

"""gelora: geometry-aware low-rank fine-tuning (GeLoRA ranks, LoRA-SB adapters), Jupyter-first."""
__version__ = "0.1.0"

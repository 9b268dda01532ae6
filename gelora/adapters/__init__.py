"""The LoRA-XS layer (B R A with only R trained) and LoRA-SB's initialisation from the first update."""

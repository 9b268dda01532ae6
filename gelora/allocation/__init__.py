"""Ranks per block: GeLoRA's bound, its budget scaling, and the other allocators it is compared with."""

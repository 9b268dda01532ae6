"""The methods: the registry of their facts, and one module per method family that registers its
methods (with their own settings) on import. The import order below is the registration order,
which is the order of every table and figure: keep it (isort is off for that reason)."""
# isort: off
from gelora.methods import registry  # noqa: F401  (first: the modules below register into it)
from gelora.methods import full  # noqa: F401
from gelora.methods import lora  # noqa: F401
from gelora.methods import gelora  # noqa: F401
from gelora.methods import adalora  # noqa: F401
from gelora.methods import eva  # noqa: F401
from gelora.methods import lora_sb  # noqa: F401  (lora_xs, lora_sb, gelora_sb)
from gelora.methods import peft_inits  # noqa: F401  (lora_ga, pissa)
# isort: on

"""oa inference: loading trained models and adapters safely, generation metrics, LoRA merging."""

__version__ = "0.1.0"

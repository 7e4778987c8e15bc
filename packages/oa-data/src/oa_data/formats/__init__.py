"""Built-in dataset formats (each registered through the `register_dataset_formats` hook)."""


def register_formats(register) -> None:
    """Register every built-in format."""

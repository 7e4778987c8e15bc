"""Chat templates: named built-ins, tokenizer jinja, inline/file jinja, turbo-style role templates."""


def register_templates(register) -> None:
    """Register every built-in named chat template."""

"""Chat templates: named built-ins, tokenizer jinja, inline/file jinja, turbo-style role templates.

Importing this package is cheap: jinja2 is imported when a template is first compiled.
"""

from oa_core.extensions import ChatTemplate
from oa_data.templates.base import (
    TemplateError,
    has_generation_markers,
    render,
    render_generation,
    role_tag_problems,
    role_tags,
    standalone_jinja,
    turbo_template,
)
from oa_data.templates.builtin import BUILTIN_TEMPLATES
from oa_data.templates.resolve import (
    infer_end_of_turn,
    resolve_template,
    template_variables,
    with_end_of_turn,
)

__all__ = [
    "BUILTIN_TEMPLATES",
    "ChatTemplate",
    "TemplateError",
    "has_generation_markers",
    "infer_end_of_turn",
    "register_templates",
    "render",
    "render_generation",
    "role_tag_problems",
    "role_tags",
    "resolve_template",
    "standalone_jinja",
    "template_variables",
    "turbo_template",
    "with_end_of_turn",
]


def register_templates(register) -> None:
    """Register every built-in named chat template."""
    for name, template in BUILTIN_TEMPLATES.items():
        register(name, template, description=template.description)

"""Rendering of borrower messages: templates, filters, SMS segments, lint and preview.

renderer = Renderer(Path("templates"))
rendered = renderer.render("early_first_notice", Channel.SMS, "zh-CN", context)
"""

from outreach.errors import RenderError
from outreach.render.lint import Finding, check_repository, lint_rendered, lint_templates
from outreach.render.preview import preview
from outreach.render.renderer import Rendered, Renderer, TemplateFailed
from outreach.render.samples import sample_context
from outreach.render.segments import sms_encoding_and_segments

__all__ = [
    "Finding",
    "RenderError",
    "Rendered",
    "Renderer",
    "TemplateFailed",
    "check_repository",
    "lint_rendered",
    "lint_templates",
    "preview",
    "sample_context",
    "sms_encoding_and_segments",
]

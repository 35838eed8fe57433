"""Preview one message with sample data (optionally overridden) for POST /v1/templates/preview."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render.catalog import spec_for
from outreach.render.lint import (
    Finding,
    has_errors,
    lint_rendered,
    lint_sources,
    phrases_in_sources,
)
from outreach.render.renderer import Renderer, TemplateFailed
from outreach.render.samples import coerce_context, merge_context, sample_context


def preview(
    renderer: Renderer,
    template: str,
    channel: Channel | str,
    locale: str,
    context_overrides: Mapping[str, Any] | None = None,
    max_sms_segments: int | None = None,
) -> dict[str, Any]:
    """The rendered parts, segments, encoding and lint findings, as JSON-able data.

    `context_overrides` is laid over the sample context key by key, so `{"borrower": {"name":
    "…"}}` changes only the name; amounts, dates and times may be given as JSON strings.

    Raises RenderError when the request cannot be served: an unknown channel, template or
    locale, or an override of the wrong type (the message names the field). A template that
    exists but fails to render is not an exception: the result has `ok: false` and the failure
    among its findings, with file and line.
    """
    try:
        channel = Channel(channel)
    except ValueError as exc:
        raise RenderError(f"unknown channel {channel!r}: expected sms or email") from exc
    version = renderer.version(template, channel, locale)  # RenderError when unknown
    context = sample_context(template, channel, locale)
    if context_overrides is not None:
        if not isinstance(context_overrides, Mapping):
            raise RenderError("context must be an object")
        context = coerce_context(merge_context(context, context_overrides))

    sources = {
        dependency
        for name in renderer.files_for(template, channel, locale).values()
        for dependency in renderer.dependencies(name)
    }
    findings = lint_sources(renderer, sources)
    result: dict[str, Any] = {
        "template": template,
        "channel": str(channel),
        "locale": locale,
        "version": version,
    }
    try:
        rendered = renderer.render(template, channel, locale, context)
    except TemplateFailed as exc:
        file = exc.file or renderer.expected_file(template, str(channel), locale)
        findings.append(Finding(file, exc.line, f"does not render: {exc.detail}", code="render"))
        return result | {"ok": False, "findings": [finding.to_dict() for finding in findings]}

    findings += lint_rendered(
        rendered, context, max_sms_segments, skip_phrases=phrases_in_sources(renderer, sources)
    )
    return (
        result
        | rendered.to_dict()
        | {"ok": not has_errors(findings), "findings": [finding.to_dict() for finding in findings]}
    )


def template_list(renderer: Renderer) -> list[dict[str, Any]]:
    """Every template with its purpose, the channels and locales it has every part for, and
    a version that changes when any of those files changes (GET /v1/templates)."""
    found: dict[str, list[tuple[Channel, str]]] = {}
    for template, channel, locale in renderer.available():
        found.setdefault(template, []).append((channel, locale))
    items = []
    for template, parts in sorted(found.items()):
        digest = hashlib.sha256()
        for channel, locale in sorted(parts):
            digest.update(
                f"{channel}:{locale}:{renderer.version(template, channel, locale)};".encode()
            )
        items.append(
            {
                "name": template,
                "purpose": spec_for(template).purpose.value,
                "channels": sorted({channel.value for channel, _ in parts}),
                "locales": sorted({locale for _, locale in parts}),
                "version": digest.hexdigest()[:12],
            }
        )
    return items

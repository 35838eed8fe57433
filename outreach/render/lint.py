"""Template lint: what `outreach check` and the preview endpoint report.

Checks, each finding naming the file (and the line, where one exists):
- every template the policy references exists in every locale it serves, for each channel;
- every template compiles and renders with the sample data;
- every message says who is writing and how to reach them;
- collection messages carry the opt-out for their channel (SMS reply word, email link);
- a message about an amount states it;
- the full account number never appears (only its last four digits);
- no forbidden language (see `lexicon`), found in the template sources line by line and in the
  rendered text (which catches words assembled by template logic);
- no link but the lender's own (those in the context: website, payment page, unsubscribe),
  and no control, bidi or other invisible formatting character, wherever the text came from;
- an SMS takes no more segments than the policy allows.

The worker lints every message it renders with the same checks (`lint_rendered`) and sends
only those without errors.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render.catalog import spec_for
from outreach.render.filters import TemplateFilterError, format_money
from outreach.render.lexicon import forbidden_language, sms_opt_out_phrases
from outreach.render.renderer import PARTS_BY_CHANNEL, Rendered, Renderer, TemplateFailed
from outreach.render.samples import sample_context
from outreach.render.segments import non_gsm7_characters
from outreach.text import LAYOUT, hidden_characters

ERROR: Final = "error"
WARNING: Final = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int | None
    message: str
    severity: str = ERROR
    # a stable name for the kind of finding, for tests and API clients
    code: str = "lint"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
            "code": self.code,
        }


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(finding.severity == ERROR for finding in findings)


# -- sources -------------------------------------------------------------------------------

_COMMENT: Final = re.compile(r"\{#.*?#\}", re.DOTALL)


def _without_comments(source: str) -> str:
    # Comments speak to template authors (and may name what is forbidden); keep line numbers.
    return _COMMENT.sub(lambda match: "\n" * match.group(0).count("\n"), source)


def lint_sources(renderer: Renderer, names: Collection[str] | None = None) -> list[Finding]:
    """Forbidden language in template files, line by line (all files, or the loader `names`)."""
    findings = []
    for name, source in sorted(renderer.source_files().items()):
        if names is not None and name not in names:
            continue
        for number, line in enumerate(_without_comments(source).splitlines(), start=1):
            for hit in forbidden_language(line):
                findings.append(
                    Finding(
                        renderer.display_path(name),
                        number,
                        f"forbidden language ({hit.category}): {hit.phrase!r}",
                        code="forbidden_language",
                    )
                )
    return findings


def phrases_in_sources(renderer: Renderer, names: Iterable[str]) -> set[str]:
    sources = renderer.source_files()
    return {
        hit.phrase.lower()
        for name in names
        for hit in forbidden_language(_without_comments(sources.get(name, "")))
    }


# -- rendered messages ---------------------------------------------------------------------

_TAG: Final = re.compile(r"<[^>]+>")
# A link followed directly by a Chinese character: many phones make that character part of
# the link, which then leads nowhere.
_LINK_RUN_ON: Final = re.compile(r"https?://[\x21-\x7e]*[^\x00-\x7f]")


# a link: a scheme, or a host written with www.
_LINK: Final = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s<>\"']*|\bwww\.[^\s<>\"']+", re.IGNORECASE)
# on the lower-cased markup: a case-blind search costs ten times as much
_HREF: Final = re.compile(r"""href\s*=\s*["']([^"']*)["']""")
# where a message may point besides the context's own links
_HREF_SCHEMES: Final = ("mailto:", "tel:")
_DIGITS: Final = re.compile(r"\d+")


@functools.lru_cache(maxsize=4096)
def _forbidden_in(words: str) -> tuple[tuple[str, str], ...]:
    return tuple((hit.category, hit.phrase) for hit in forbidden_language(words))


def _forbidden_phrases(text: str) -> tuple[tuple[str, str], ...]:
    """(category, phrase) of each forbidden phrase in `text`, in order. Lexicon phrases have
    no digits, so amounts, dates and ids are folded into one digit first: the messages of one
    template then come down to a few texts, each searched once (the search costs more than
    rendering the message)."""
    return _forbidden_in(_DIGITS.sub("0", text))


def visible_text(markup: str) -> str:
    """What a reader sees of an HTML part: tags removed, entities decoded."""
    return html.unescape(_TAG.sub(" ", markup))


def _resolve(context: Mapping[str, Any], path: str) -> Any:
    value: Any = context
    for key in path.split("."):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        else:
            return None
    return value


def _link_targets(markup: str) -> list[str]:
    """The href of every link in the markup, entities decoded."""
    lowered = markup.lower()
    # a character whose lower case is longer moves the positions: search the markup itself
    searched = lowered if len(lowered) == len(markup) else markup
    return [html.unescape(markup[slice(*found.span(1))]) for found in _HREF.finditer(searched)]


def _data_strings(context: Mapping[str, Any]) -> list[str]:
    """String values of the context, longest first (they are data, not template wording)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if len(value) >= 3:
                found.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(context)
    return sorted(set(found), key=len, reverse=True)


def _without_data(text: str, data: list[str]) -> str:
    # A borrower named Sue or a collector named Marshal is not the template threatening anyone.
    for value in data:
        text = text.replace(value, " ")
    return text


def _mapping(context: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = context.get(key)
    return value if isinstance(value, Mapping) else {}


class _RenderedCheck:
    """The checks of one rendered message; each adds its findings to `findings`."""

    def __init__(self, rendered: Rendered, context: Mapping[str, Any]) -> None:
        self.rendered = rendered
        self.context = context
        self.spec = spec_for(rendered.template)
        self.findings: list[Finding] = []
        # part -> what a reader sees of it
        if rendered.channel is Channel.SMS:
            self.seen = {"sms": rendered.body or ""}
            self.main = "sms"
        else:
            self.seen = {
                "email.subject": rendered.subject or "",
                "email.txt": rendered.text or "",
                "email.html": visible_text(rendered.html or ""),
            }
            self.main = "email.txt"
        # where the message proper is (a subject is too short to carry every element)
        self.bodies = {part: text for part, text in self.seen.items() if part != "email.subject"}
        self.data = _data_strings(context)

    def report(self, part: str, message: str, code: str, severity: str = ERROR) -> None:
        rendered = self.rendered
        file = rendered.files.get(part) or f"{rendered.template}/{part}.{rendered.locale}.j2"
        self.findings.append(Finding(file, None, message, severity, code))

    def empty_parts(self) -> None:
        for part, text in self.seen.items():
            if not text.strip():
                self.report(part, "renders empty", "empty")

    def language(self, skip_phrases: Collection[str]) -> None:
        skip = {phrase.lower() for phrase in skip_phrases}
        for part, text in self.seen.items():
            for category, phrase in _forbidden_phrases(_without_data(text, self.data)):
                if phrase.lower() not in skip:
                    self.report(
                        part,
                        f"forbidden language ({category}) in the rendered text: {phrase!r}",
                        "forbidden_language",
                    )

    def foreign_links(self) -> None:
        """Only the context's own links (the lender's, the unsubscribe link) may appear: a
        link that came in with a name or a field, or was typed into a template, is refused."""
        own = [value for value in self.data if _LINK.fullmatch(value)]
        for part, text in self.seen.items():
            rest = text
            for url in own:
                rest = rest.replace(url, " ")
            if "://" not in rest and "www." not in rest.lower():
                continue
            for link in _LINK.findall(rest):
                self.report(part, f"links to {link!r}, not one of the lender's", "foreign_link")
        for target in _link_targets(self.rendered.html or ""):
            if not target.startswith(_HREF_SCHEMES) and target not in own:
                self.report(
                    "email.html", f"links to {target!r}, not one of the lender's", "foreign_link"
                )

    def hidden_characters(self) -> None:
        for part, text in self.seen.items():
            found = hidden_characters(text, allowed=LAYOUT)
            if found:
                named = ", ".join(f"U+{ord(character):04X}" for character in found)
                self.report(
                    part, f"contains control or invisible formatting characters ({named})", "hidden"
                )

    def sender_and_contact(self) -> None:
        lender = _mapping(self.context, "lender")
        name = lender.get("name")
        contacts = [lender.get(key) for key in ("phone", "email", "website", "payment_url")]
        for part, text in self.bodies.items():
            if isinstance(name, str) and name and name not in text:
                self.report(part, f"does not say who is writing (lender name {name!r})", "sender")
            if not any(isinstance(c, str) and c and c in text for c in contacts):
                self.report(
                    part, "gives no way to reach the lender (phone, email or website)", "contact"
                )

    def opt_out(self) -> None:
        if not self.spec.requires_opt_out:
            return
        if self.rendered.channel is Channel.SMS:
            phrases = sms_opt_out_phrases(self.rendered.locale)
            if not any(phrase.lower() in self.seen["sms"].lower() for phrase in phrases):
                self.report(
                    "sms", f"collection SMS lacks the opt-out instruction {phrases[0]!r}", "opt_out"
                )
            return
        url = self.context.get("unsubscribe_url")
        if not isinstance(url, str) or not url:
            self.report(self.main, "no unsubscribe_url in the context to check", "opt_out")
            return
        if url not in self.seen["email.txt"]:
            self.report("email.txt", "email text lacks the unsubscribe link", "opt_out")
        if f'href="{html.escape(url)}"' not in (self.rendered.html or ""):
            self.report("email.html", "email HTML lacks the unsubscribe link", "opt_out")

    def amounts(self) -> None:
        paths = self.spec.amounts
        if self.rendered.channel is Channel.EMAIL:
            paths += self.spec.email_amounts
        currency = _mapping(self.context, "loan").get("currency")
        for path in paths:
            value = _resolve(self.context, path)
            if value is None or not isinstance(currency, str):
                self.report(
                    self.main, f"cannot check {path}: it or loan.currency is missing", "amount"
                )
                continue
            try:
                expected = format_money(value, currency, self.rendered.locale)
            except TemplateFilterError as exc:
                self.report(self.main, f"cannot format {path}: {exc}", "amount")
                continue
            for part, text in self.bodies.items():
                if expected not in text:
                    self.report(
                        part, f"is about an amount but does not state {path} ({expected})", "amount"
                    )

    def links(self) -> None:
        for part in ("sms", "email.txt"):
            run_on = _LINK_RUN_ON.search(self.seen.get(part, ""))
            if run_on:
                self.report(
                    part,
                    f"link runs into the text after it ({run_on.group(0)!r}); add a space",
                    "link",
                    WARNING,
                )

    def privacy(self) -> None:
        account = _mapping(self.context, "loan").get("account_number")
        if isinstance(account, str) and len(account) > 4:
            for part, text in self.seen.items():
                if account in text:
                    self.report(
                        part, "shows the full account number; use |mask or |last4", "privacy"
                    )

    def sms_size(self, max_sms_segments: int | None) -> None:
        rendered = self.rendered
        if rendered.channel is not Channel.SMS:
            return
        if max_sms_segments is not None and rendered.segments > max_sms_segments:
            self.report(
                "sms",
                f"SMS takes {rendered.segments} segments ({rendered.encoding}); "
                f"the policy allows {max_sms_segments}",
                "segments",
            )
        if rendered.locale.startswith("en") and rendered.encoding == "UCS-2":
            culprits = non_gsm7_characters(self.seen["sms"])
            named = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in culprits)
            self.report(
                "sms",
                f"SMS is sent as UCS-2 (70 characters a segment) because of {named}",
                "encoding",
                WARNING,
            )


def lint_rendered(
    rendered: Rendered,
    context: Mapping[str, Any] | None = None,
    max_sms_segments: int | None = None,
    *,
    skip_phrases: Collection[str] = (),
) -> list[Finding]:
    """Findings about one rendered message, checked against the context it was rendered with.

    Without `context`, the sample context for the template is assumed (what lint renders with).
    `skip_phrases` are forbidden phrases already reported, with their line, from the sources.
    """
    if context is None:
        context = sample_context(rendered.template, rendered.channel, rendered.locale)
    check = _RenderedCheck(rendered, context)
    check.empty_parts()
    check.language(skip_phrases)
    check.foreign_links()
    check.hidden_characters()
    check.sender_and_contact()
    check.opt_out()
    check.amounts()
    check.links()
    check.privacy()
    check.sms_size(max_sms_segments)
    return check.findings


# -- the whole tree ------------------------------------------------------------------------


def lint_templates(
    renderer_or_dir: Renderer | Path | str,
    templates_referenced: Mapping[str, Collection[Channel | str]],
    locales: Iterable[str],
    max_sms_segments: int,
) -> list[Finding]:
    """Lint every referenced template in every locale, and every other template present."""
    renderer = (
        renderer_or_dir if isinstance(renderer_or_dir, Renderer) else Renderer(renderer_or_dir)
    )
    locales = list(locales)
    findings = [
        Finding(error.file, error.line, f"does not compile: {error.message}", code="compile")
        for error in renderer.load_errors
    ]
    findings += lint_sources(renderer)

    targets: set[tuple[str, Channel, str]] = set(renderer.available())
    for template, channels in templates_referenced.items():
        for channel in sorted(Channel(c) for c in channels):
            for locale in locales:
                if renderer.has(template, channel, locale):
                    targets.add((template, channel, locale))
                    continue
                for part in PARTS_BY_CHANNEL[channel]:
                    if not renderer.has_part(template, part, locale):
                        findings.append(
                            Finding(
                                renderer.expected_file(template, part, locale),
                                None,
                                f"missing: the policy sends {template!r} by {channel} in {locale}",
                                code="missing",
                            )
                        )

    uncompiled = {error.file for error in renderer.load_errors}
    for template, channel, locale in sorted(targets):
        context = sample_context(template, channel, locale)
        try:
            rendered = renderer.render(template, channel, locale, context)
        except TemplateFailed as exc:
            if exc.file in uncompiled:
                continue  # already reported, with its line, as a compile error
            file = exc.file or renderer.expected_file(
                template, PARTS_BY_CHANNEL[channel][0], locale
            )
            findings.append(
                Finding(
                    file, exc.line, f"does not render with sample data: {exc.detail}", code="render"
                )
            )
            continue
        except RenderError as exc:
            file = renderer.expected_file(template, PARTS_BY_CHANNEL[channel][0], locale)
            findings.append(Finding(file, None, str(exc), code="render"))
            continue
        dependencies = {
            dep
            for name in renderer.files_for(template, channel, locale).values()
            for dep in renderer.dependencies(name)
        }
        findings += lint_rendered(
            rendered,
            context,
            max_sms_segments,
            skip_phrases=phrases_in_sources(renderer, dependencies),
        )
    return sorted(set(findings), key=lambda f: (f.file, f.line or 0, f.message))


def check_repository(
    templates_dir: Path | str,
    templates_referenced: Mapping[str, Collection[Channel | str]],
    locales: Iterable[str],
    max_sms_segments: int,
) -> list[Finding]:
    """Everything `outreach check` needs to say about a templates directory."""
    path = Path(templates_dir)
    if not path.is_dir():
        return [Finding(str(path), None, "templates directory does not exist", code="missing")]
    return lint_templates(Renderer(path), templates_referenced, locales, max_sms_segments)

"""The renderer: sandbox, strictness, escaping, caching, versions."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render import Renderer, TemplateFailed, sample_context
from outreach.render.renderer import normalize_sms

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
HOSTILE_NAME = "{{ 7*7 }} <b>Bob</b>"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A templates directory with one message, to test the renderer on its own."""
    write(tmp_path, "note/sms.en-US.j2", "Hi {{ borrower.name }},\nyou owe {{ amount|money }}.\n")
    write(tmp_path, "note/email.subject.en-US.j2", "About {{ borrower.name }}\n")
    write(tmp_path, "note/email.txt.en-US.j2", "Dear {{ borrower.name }}\n")
    write(tmp_path, "note/email.html.en-US.j2", "<p>Dear {{ borrower.name }}</p>\n")
    return tmp_path


def context(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "borrower": {"id": "B1", "name": "Ann", "locale": "en-US"},
        "loan": {"currency": "USD"},
        "amount": Decimal("5"),
        "timezone": "UTC",
    }
    return base | extra


def test_renders_sms_with_encoding_and_segments(tiny: Path) -> None:
    rendered = Renderer(tiny).render("note", Channel.SMS, "en-US", context())
    assert rendered.body == "Hi Ann, you owe $5.00."
    assert (rendered.encoding, rendered.segments) == ("GSM-7", 1)
    assert rendered.template == "note"
    assert rendered.channel is Channel.SMS
    assert rendered.locale == "en-US"
    assert rendered.subject is None


def test_renders_email_parts(tiny: Path) -> None:
    rendered = Renderer(tiny).render("note", "email", "en-US", context())
    assert rendered.subject == "About Ann"
    assert rendered.text == "Dear Ann\n"
    assert rendered.html == "<p>Dear Ann</p>\n"
    assert (rendered.segments, rendered.encoding, rendered.body) == (0, None, None)


def test_a_missing_variable_is_an_error_naming_file_and_line(tiny: Path) -> None:
    without_amount = context()
    del without_amount["amount"]
    with pytest.raises(TemplateFailed) as failure:
        Renderer(tiny).render("note", Channel.SMS, "en-US", without_amount)
    assert failure.value.file == (tiny / "note/sms.en-US.j2").as_posix()
    assert failure.value.line == 2
    assert "amount" in str(failure.value)
    assert isinstance(failure.value, RenderError)


def test_a_missing_attribute_is_an_error_not_an_empty_string(tiny: Path) -> None:
    with pytest.raises(TemplateFailed, match="name"):
        Renderer(tiny).render("note", Channel.SMS, "en-US", context(borrower={"id": "B1"}))


def test_none_is_never_printed(tiny: Path) -> None:
    with pytest.raises(TemplateFailed, match="None"):
        Renderer(tiny).render("note", Channel.SMS, "en-US", context(borrower={"name": None}))


def test_unknown_template_channel_or_locale_is_a_clear_render_error(renderer: Renderer) -> None:
    sample = sample_context("early_first_notice", Channel.SMS, "en-US")
    with pytest.raises(RenderError, match="unknown template 'no_such_message'"):
        renderer.render("no_such_message", Channel.SMS, "en-US", sample)
    with pytest.raises(RenderError, match=r"no sms version in locale 'fr-FR'.*en-US, zh-CN, zh-TW"):
        renderer.render("early_first_notice", Channel.SMS, "fr-FR", sample)
    with pytest.raises(RenderError, match=re.escape("help_reply/email.subject.en-US.j2")):
        renderer.render("help_reply", Channel.EMAIL, "en-US", sample)
    with pytest.raises(RenderError, match="unknown template"):
        renderer.render("../templates/_layouts/sms", Channel.SMS, "en-US", sample)


def test_has(renderer: Renderer) -> None:
    assert renderer.has("help_reply", Channel.SMS, "zh-TW")
    assert not renderer.has("help_reply", Channel.EMAIL, "zh-TW")
    assert renderer.has("visit_notice", "email", "zh-CN")
    assert not renderer.has("visit_notice", Channel.SMS, "fr-FR")
    assert not renderer.has("_layouts", Channel.SMS, "en-US")


@pytest.mark.parametrize("locale", ["en-US", "zh-CN", "zh-TW"])
def test_a_hostile_borrower_name_is_data_literal_in_sms_and_escaped_in_html(
    renderer: Renderer, locale: str
) -> None:
    sample = sample_context("early_first_notice", Channel.SMS, locale)
    sample["borrower"]["name"] = HOSTILE_NAME
    sms = renderer.render("early_first_notice", Channel.SMS, locale, sample)
    assert sms.body is not None
    assert HOSTILE_NAME in sms.body
    assert "49" not in sms.body

    sample = sample_context("early_first_notice", Channel.EMAIL, locale)
    sample["borrower"]["name"] = HOSTILE_NAME
    email = renderer.render("early_first_notice", Channel.EMAIL, locale, sample)
    assert email.text is not None and email.html is not None and email.subject is not None
    assert HOSTILE_NAME in email.text
    assert "{{ 7*7 }} &lt;b&gt;Bob&lt;/b&gt;" in email.html
    assert "<b>Bob</b>" not in email.html
    assert "49" not in email.html


def test_data_cannot_break_the_subject_header(renderer: Renderer) -> None:
    sample = sample_context("cease_confirmation", Channel.EMAIL, "en-US")
    sample["lender"]["name"] = "Evergreen\r\nBcc: someone@example.com"
    rendered = renderer.render("optout_confirmation", Channel.EMAIL, "en-US", sample)
    assert rendered.subject is not None
    assert "\n" not in rendered.subject and "\r" not in rendered.subject


def test_the_sandbox_keeps_templates_away_from_python_internals(tiny: Path) -> None:
    write(tiny, "evil/sms.en-US.j2", "{{ borrower.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateFailed, match=r"SecurityError|unsafe"):
        Renderer(tiny).render("evil", Channel.SMS, "en-US", context())


def test_templates_cannot_change_the_context(tiny: Path) -> None:
    write(tiny, "evil/sms.en-US.j2", "{{ borrower.update({'name': 'x'}) }}")
    data = context()
    with pytest.raises(TemplateFailed):
        Renderer(tiny).render("evil", Channel.SMS, "en-US", data)
    assert data["borrower"]["name"] == "Ann"


def test_templates_are_compiled_once_and_not_reread(tiny: Path) -> None:
    renderer = Renderer(tiny)
    (tiny / "note/sms.en-US.j2").write_text("changed {{ nonsense }}", encoding="utf-8")
    shutil.rmtree(tiny / "note")
    assert renderer.render("note", Channel.SMS, "en-US", context()).body == "Hi Ann, you owe $5.00."


def test_a_template_that_does_not_compile_fails_alone(tiny: Path) -> None:
    write(tiny, "broken/sms.en-US.j2", "line one\n{% if %}\n")
    renderer = Renderer(tiny)
    assert [(e.file.endswith("broken/sms.en-US.j2"), e.line) for e in renderer.load_errors] == [
        (True, 2)
    ]
    assert renderer.render("note", Channel.SMS, "en-US", context()).body
    with pytest.raises(TemplateFailed, match="does not compile") as failure:
        renderer.render("broken", Channel.SMS, "en-US", context())
    assert failure.value.line == 2


def test_version_is_stable_and_follows_every_file_a_message_uses(tmp_path: Path) -> None:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    first = Renderer(copy)
    again = Renderer(copy)
    key = ("late_follow_up", Channel.EMAIL, "zh-TW")
    assert first.version(*key) == again.version(*key)
    assert len(first.version(*key)) == 12
    assert first.version(*key) != first.version("late_follow_up", Channel.EMAIL, "zh-CN")
    assert first.version(*key) != first.version("late_follow_up", Channel.SMS, "zh-TW")

    layout = copy / "_layouts/email.txt.zh-TW.j2"
    layout.write_text(layout.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    changed = Renderer(copy)
    assert changed.version(*key) != first.version(*key)
    # a message that does not use that layout keeps its version
    assert changed.version("late_follow_up", Channel.SMS, "zh-TW") == first.version(
        "late_follow_up", Channel.SMS, "zh-TW"
    )
    rendered = changed.render(*key, sample_context(*key))
    assert rendered.version == changed.version(*key)


def test_sms_lines_join_with_a_space_except_beside_chinese() -> None:
    assert normalize_sms("Hi Ann,\n  you owe  $5.\n\n") == "Hi Ann, you owe $5."
    assert normalize_sms("您好，\n请还款。\nReply") == "您好，请还款。Reply"
    assert normalize_sms("访问 https://x.cn \n还款") == "访问 https://x.cn还款"


def test_the_locale_argument_decides_the_language_of_filters(renderer: Renderer) -> None:
    sample = sample_context("pre_due_reminder", Channel.SMS, "zh-CN")
    sample["locale"] = "en-US"  # a stale value in the context does not win
    rendered = renderer.render("pre_due_reminder", Channel.SMS, "zh-CN", sample)
    assert rendered.body is not None and "年" in rendered.body


def test_visit_time_is_shown_in_the_borrowers_zone(renderer: Renderer) -> None:
    sample = sample_context("visit_notice", Channel.SMS, "en-US")
    sample["visit"]["visit_at"] = dt.datetime(2025, 6, 13, 18, 30, tzinfo=dt.UTC)
    sample["timezone"] = "America/Los_Angeles"
    rendered = renderer.render("visit_notice", Channel.SMS, "en-US", sample)
    assert rendered.body is not None and "11:30 AM" in rendered.body

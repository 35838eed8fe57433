"""Preview, as POST /v1/templates/preview serves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render import Renderer, preview

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def test_sms_preview_with_sample_data(renderer: Renderer) -> None:
    result = preview(renderer, "early_first_notice", "sms", "zh-TW", None)
    assert result["ok"] is True
    assert result["findings"] == []
    assert result["body"].startswith("【長青金融】陳怡君您好")
    assert (result["encoding"], result["segments"]) == ("UCS-2", 2)
    assert result["version"] == renderer.version("early_first_notice", Channel.SMS, "zh-TW")
    assert json.loads(json.dumps(result)) == result


def test_email_preview_has_every_part(renderer: Renderer) -> None:
    result = preview(renderer, "pre_legal_notice", Channel.EMAIL, "en-US")
    assert result["ok"] is True
    assert {"subject", "text", "html"} <= set(result)
    assert result["segments"] == 0 and result["encoding"] is None
    json.dumps(result)


def test_overrides_are_merged_and_converted_from_json(renderer: Renderer) -> None:
    result = preview(
        renderer,
        "visit_notice",
        "sms",
        "en-US",
        {
            "borrower": {"name": "Maria Gomez"},
            "visit": {"visit_at": "2025-07-01T15:00:00+00:00", "collector_id": "FC-7"},
            "timezone": "America/Chicago",
        },
    )
    assert result["ok"] is True, result["findings"]
    assert "Hi Maria Gomez," in result["body"]
    assert "Tuesday, July 1, 2025, 10:00 AM" in result["body"]
    assert "(ID FC-7)" in result["body"]


def test_amount_overrides_are_checked_against_the_rendered_text(renderer: Renderer) -> None:
    result = preview(
        renderer, "late_formal_notice", "email", "zh-CN", {"loan": {"amount_due": "99.5"}}
    )
    assert result["ok"] is True
    assert "¥99.50" in result["text"]


def test_findings_come_back_for_what_ops_typed(renderer: Renderer) -> None:
    result = preview(
        renderer, "late_follow_up", "sms", "en-US", {"borrower": {"name": "x" * 200}}, 2
    )
    assert result["ok"] is False
    assert [f["code"] for f in result["findings"]] == ["segments"]
    assert result["findings"][0]["file"].endswith("late_follow_up/sms.en-US.j2")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"loan": {"amount_due": "lots"}}, "loan.amount_due"),
        ({"loan": {"due_date": "next week"}}, "loan.due_date"),
        ({"visit": {"visit_at": "2025-07-01T15:00:00"}}, "visit.visit_at"),
    ],
)
def test_a_malformed_override_names_the_field(
    renderer: Renderer, overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(RenderError, match=field):
        preview(renderer, "visit_notice", "sms", "en-US", overrides)


def test_unknown_template_channel_or_locale_raise(renderer: Renderer) -> None:
    with pytest.raises(RenderError, match="unknown template"):
        preview(renderer, "nope", "sms", "en-US")
    with pytest.raises(RenderError, match="unknown channel"):
        preview(renderer, "help_reply", "fax", "en-US")
    with pytest.raises(RenderError, match="no email version"):
        preview(renderer, "help_reply", "email", "en-US")
    with pytest.raises(RenderError, match="context must be an object"):
        preview(renderer, "help_reply", "sms", "en-US", ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_a_template_that_fails_to_render_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    path = copy / "broken_promise/sms.zh-CN.j2"
    path.write_text(
        path.read_text(encoding="utf-8").replace("promise.amount", "promise.amt"), "utf-8"
    )
    result = preview(Renderer(copy), "broken_promise", "sms", "zh-CN")
    assert result["ok"] is False
    assert "body" not in result
    [finding] = result["findings"]
    assert finding["code"] == "render"
    assert finding["file"] == path.as_posix()
    assert finding["line"] == 3
    assert "amt" in finding["message"]


def test_threats_in_a_previewed_template_are_reported_with_line(tmp_path: Path) -> None:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    path = copy / "late_follow_up/sms.zh-CN.j2"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "{% endblock %}", "否则将通知您的家人。\n{% endblock %}"
        ),
        "utf-8",
    )
    result = preview(Renderer(copy), "late_follow_up", "sms", "zh-CN")
    assert result["ok"] is False
    assert [(f["file"], f["line"], f["code"]) for f in result["findings"]] == [
        (path.as_posix(), 5, "forbidden_language")
    ]

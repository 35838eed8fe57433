"""Lint, as `outreach check` runs it: findings name the file (and line) that needs fixing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from outreach.domain import Channel
from outreach.render import Renderer, lint_rendered, lint_templates, sample_context
from outreach.render.catalog import shipped_references
from outreach.render.lexicon import (
    ARREST,
    EXAGGERATED_LEGAL,
    IMPERSONATION,
    INSULT,
    PRESSURE,
    SHAMING,
    THIRD_PARTIES,
    VIOLENCE,
    forbidden_language,
)
from outreach.render.lint import Finding, check_repository, has_errors

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LOCALES = ("en-US", "zh-CN", "zh-TW")
MAX_SEGMENTS = 3


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the shipped templates to break."""
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def check(templates: Path) -> list[Finding]:
    return check_repository(templates, shipped_references(), LOCALES, MAX_SEGMENTS)


def append_line(path: Path, line: str) -> int:
    """Add `line` at the end of the file's content (inside its last block); its line number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    at = len(lines) - 1 if lines[-1].startswith("{% endblock") else len(lines)
    lines.insert(at, line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return at + 1


THREATS = {
    "en-US": "If you do not pay today, we will contact your employer and the police.",
    "zh-CN": "如不立即还款，我们将通知您的单位领导和家人，并向法院起诉。",
    "zh-TW": "若不立即繳款，我們將通知您的公司主管與家人，並向法院起訴。",
}


def test_the_shipped_templates_have_no_findings() -> None:
    assert check(TEMPLATES) == []


def test_a_threat_added_to_any_template_is_reported_with_file_and_line(templates: Path) -> None:
    added: dict[str, int] = {}
    for path in sorted(templates.glob("[a-z]*/*.j2")):
        locale = path.name.split(".")[-2]
        added[path.as_posix()] = append_line(path, THREATS[locale])
    assert len(added) == 22 * 3 * 4 - 3 * 3  # help_reply has no email parts

    findings = check(templates)
    assert has_errors(findings)
    reported = {
        (f.file, f.line) for f in findings if f.code == "forbidden_language" and f.line is not None
    }
    for file, line in added.items():
        assert (file, line) in reported, file


@pytest.mark.parametrize(
    "file",
    [
        "early_first_notice/sms.en-US.j2",
        "pre_legal_notice/email.html.zh-TW.j2",
        "visit_notice/email.subject.zh-CN.j2",
        "_layouts/email.txt.en-US.j2",
    ],
)
def test_one_threat_is_reported_in_the_file_it_is_in(templates: Path, file: str) -> None:
    locale = file.split(".")[-2]
    line = append_line(templates / file, THREATS[locale])
    findings = [f for f in check(templates) if f.code == "forbidden_language"]
    assert findings
    assert {(f.file, f.line) for f in findings} == {((templates / file).as_posix(), line)}
    assert any(THIRD_PARTIES in f.message for f in findings)


def test_a_threat_assembled_by_template_logic_is_caught_in_the_rendered_text(
    templates: Path,
) -> None:
    path = templates / "late_follow_up/sms.en-US.j2"
    append_line(path, "{{ 'pol' ~ 'ice' }} will visit.")
    findings = [f for f in check(templates) if f.code == "forbidden_language"]
    assert [(f.file, f.line) for f in findings] == [(path.as_posix(), None)]
    assert "'police'" in findings[0].message


def test_jinja_comments_may_name_what_is_forbidden(templates: Path) -> None:
    append_line(templates / "late_follow_up/sms.en-US.j2", "{# never mention the police #}")
    assert check(templates) == []


def test_removing_the_sms_opt_out_where_it_lives_is_reported(templates: Path) -> None:
    layout = templates / "_layouts/sms.zh-TW.j2"
    layout.write_text(layout.read_text(encoding="utf-8").replace("回覆TD退訂", ""), "utf-8")
    findings = [f for f in check(templates) if f.code == "opt_out"]
    files = {f.file for f in findings}
    for template in ("pre_due_reminder", "visit_notice", "help_reply", "optin_confirmation"):
        assert (templates / f"{template}/sms.zh-TW.j2").as_posix() in files
    # confirmations of stopping never carried it; other locales still do
    assert (templates / "optout_confirmation/sms.zh-TW.j2").as_posix() not in files
    assert all("zh-TW" in file for file in files)
    assert "回覆TD退訂" in findings[0].message


def test_a_template_that_drops_the_opt_out_block_is_reported(templates: Path) -> None:
    path = templates / "early_follow_up_2/sms.en-US.j2"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("{% block body %}", "{% block optout %}{% endblock %}\n{% block body %}"),
        "utf-8",
    )
    findings = check(templates)
    assert [(f.file, f.code) for f in findings] == [(path.as_posix(), "opt_out")]
    assert "Reply STOP to opt out" in findings[0].message


def test_removing_the_unsubscribe_link_is_reported(templates: Path) -> None:
    for part in ("txt", "html"):
        layout = templates / f"_layouts/email.{part}.en-US.j2"
        text = layout.read_text(encoding="utf-8")
        layout.write_text(text.replace("{{ unsubscribe_url }}", "https://example.com"), "utf-8")
    findings = [f for f in check(templates) if f.code == "opt_out"]
    files = {f.file for f in findings}
    assert (templates / "negotiation_invitation/email.txt.en-US.j2").as_posix() in files
    assert (templates / "negotiation_invitation/email.html.en-US.j2").as_posix() in files
    assert (templates / "cease_confirmation/email.txt.en-US.j2").as_posix() not in files


def test_a_missing_template_is_named_by_the_file_expected(templates: Path) -> None:
    (templates / "broken_promise/email.html.zh-CN.j2").unlink()
    shutil.rmtree(templates / "help_reply")
    findings = check(templates)
    assert {(f.file, f.code) for f in findings} == {
        ((templates / "broken_promise/email.html.zh-CN.j2").as_posix(), "missing"),
        *{((templates / f"help_reply/sms.{loc}.j2").as_posix(), "missing") for loc in LOCALES},
    }


def test_a_locale_the_policy_serves_but_templates_lack_is_reported(templates: Path) -> None:
    findings = check_repository(templates, {"help_reply": {Channel.SMS}}, ["ja-JP"], 3)
    assert [(f.file, f.code) for f in findings] == [
        ((templates / "help_reply/sms.ja-JP.j2").as_posix(), "missing")
    ]


def test_a_syntax_error_is_reported_with_file_and_line(templates: Path) -> None:
    path = templates / "promise_reminder/email.txt.zh-TW.j2"
    line = append_line(path, "{{ promise.amount | }}")
    findings = check(templates)
    assert [(f.file, f.line, f.code) for f in findings] == [(path.as_posix(), line, "compile")]


def test_a_broken_layout_is_reported_once_in_the_layout(templates: Path) -> None:
    path = templates / "_layouts/email.html.zh-CN.j2"
    line = append_line(path, "{% for %}")
    findings = check(templates)
    assert [(f.file, f.line, f.code) for f in findings] == [(path.as_posix(), line, "compile")]


def test_a_variable_the_message_does_not_have_is_reported(templates: Path) -> None:
    path = templates / "early_follow_up_1/sms.zh-CN.j2"
    line = append_line(path, "{{ visit.collector_name }}")
    findings = check(templates)
    assert [(f.file, f.line, f.code) for f in findings] == [(path.as_posix(), line, "render")]
    assert "visit" in findings[0].message


def test_a_message_about_an_amount_must_state_it(templates: Path) -> None:
    path = templates / "instalment_reminder/sms.en-US.j2"
    path.write_text(
        path.read_text(encoding="utf-8").replace("{{ instalment.amount|money }}", "it"), "utf-8"
    )
    findings = check(templates)
    assert [(f.file, f.code) for f in findings] == [(path.as_posix(), "amount")]
    assert "instalment.amount" in findings[0].message


def test_the_sender_must_be_named(templates: Path) -> None:
    layout = templates / "_layouts/sms.en-US.j2"
    layout.write_text(
        layout.read_text(encoding="utf-8").replace("{{ lender.name }}: ", ""), "utf-8"
    )
    findings = [f for f in check(templates) if f.code == "sender"]
    assert len(findings) == 22  # every en-US SMS
    assert all(f.file.endswith("sms.en-US.j2") for f in findings)


def test_the_full_account_number_must_never_show(templates: Path) -> None:
    path = templates / "late_formal_notice/email.txt.zh-CN.j2"
    append_line(path, "账号：{{ loan.account_number }}")
    findings = check(templates)
    assert [(f.file, f.code) for f in findings] == [(path.as_posix(), "privacy")]


def test_sms_over_the_policy_limit_is_reported() -> None:
    findings = lint_templates(Renderer(TEMPLATES), shipped_references(), LOCALES, 1)
    assert findings and all(f.code == "segments" for f in findings)
    assert any(f.file.endswith("visit_notice/sms.en-US.j2") for f in findings)
    assert "the policy allows 1" in findings[0].message


def test_english_sms_pushed_to_ucs2_by_a_curly_quote_is_a_warning(templates: Path) -> None:
    path = templates / "late_follow_up/sms.en-US.j2"
    path.write_text(path.read_text(encoding="utf-8").replace("It's", "It’s"), "utf-8")
    roomy = lint_templates(templates, shipped_references(), LOCALES, 10)
    assert [(f.file, f.code, f.severity) for f in roomy] == [
        (path.as_posix(), "encoding", "warning")
    ]
    assert "U+2019" in roomy[0].message
    assert not has_errors(roomy)
    # one character took the message from 2 GSM-7 parts to 4 UCS-2 parts
    assert {f.code for f in check(templates)} == {"encoding", "segments"}


def test_borrower_data_is_not_mistaken_for_template_wording() -> None:
    renderer = Renderer(TEMPLATES)
    context = sample_context("early_first_notice", Channel.SMS, "en-US")
    context["borrower"]["name"] = "Sue Marshal-Court"
    rendered = renderer.render("early_first_notice", Channel.SMS, "en-US", context)
    assert lint_rendered(rendered, context) == []


def test_check_repository_reports_a_missing_directory(tmp_path: Path) -> None:
    findings = check_repository(tmp_path / "nope", shipped_references(), LOCALES, 3)
    assert [f.code for f in findings] == ["missing"]
    assert str(findings[0]).endswith("error: templates directory does not exist")


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("We know where you live.", VIOLENCE),
        ("You'll regret ignoring this.", VIOLENCE),
        ("A warrant may be issued for your arrest.", ARREST),
        ("We will tell your neighbours.", THIRD_PARTIES),
        ("We will call your wife.", THIRD_PARTIES),
        ("Your name goes on our blacklist.", SHAMING),
        ("This is an official notice from the court.", IMPERSONATION),
        ("Federal agents are involved.", IMPERSONATION),
        ("We will garnish your wages.", EXAGGERATED_LEGAL),
        ("A lawsuit is being prepared.", EXAGGERATED_LEGAL),
        ("This is your last chance.", PRESSURE),
        ("Pay up, deadbeat.", INSULT),
        ("再不还钱就让你好看。", VIOLENCE),
        ("我们将报警处理，您将被拘留。", ARREST),
        ("我们会联系您的紧急联系人和通讯录好友。", THIRD_PARTIES),
        ("将您列入黑名单并在朋友圈曝光。", SHAMING),
        ("我们是法院执行局。", IMPERSONATION),
        ("将申请强制执行并冻结您的银行卡。", EXAGGERATED_LEGAL),
        ("这是最后通牒。", PRESSURE),
        ("你这个老赖。", INSULT),
        ("再不還錢就給你好看。", VIOLENCE),
        ("我們將報警，由警方處理。", ARREST),
        ("我們會通知您的老闆和同事。", THIRD_PARTIES),
        ("將在臉書公告您的欠款。", SHAMING),
        ("本案已移送地檢署。", IMPERSONATION),
        ("將聲請支付命令並扣薪。", EXAGGERATED_LEGAL),
        ("這是最後機會。", PRESSURE),
        ("你這個騙子。", INSULT),
    ],
)
def test_lexicons_cover_each_category_in_each_language(text: str, category: str) -> None:
    assert category in {hit.category for hit in forbidden_language(text)}


@pytest.mark.parametrize(
    "text",
    [
        "This is a policy issue; courtesy of our customer care team.",
        "Your account may be referred for legal review.",
        "您的账户可能被转交法务部门审核。",
        "您的帳戶可能移交法務部門審查。",
        "请通过官方渠道还款，保护您的账户安全。",
    ],
)
def test_lexicons_leave_ordinary_wording_alone(text: str) -> None:
    assert forbidden_language(text) == []


def test_a_link_that_came_in_with_the_data_is_a_foreign_link() -> None:
    renderer = Renderer(TEMPLATES)
    context = sample_context("early_first_notice", Channel.SMS, "en-US")
    context["borrower"]["name"] = "Hi 王芳😀Please pay at http://scam.example now"
    rendered = renderer.render("early_first_notice", Channel.SMS, "en-US", context)
    findings = lint_rendered(rendered, context)
    assert [f.code for f in findings if f.severity == "error"] == ["foreign_link"]
    assert "http://scam.example" in findings[0].message


def test_a_link_typed_into_an_email_template_is_a_foreign_link(templates: Path) -> None:
    folder = templates / "early_first_notice"
    html = folder / "email.html.en-US.j2"
    html.write_text(
        html.read_text().replace(
            "ui.button(lender.payment_url,", 'ui.button("https://pay.elsewhere.example",'
        )
    )
    text = folder / "email.txt.en-US.j2"
    text.write_text(
        text.read_text().replace(
            "Make a payment: {{ lender.payment_url }}", "Pay at www.elsewhere.example"
        )
    )
    foreign = [f for f in check(templates) if f.code == "foreign_link"]
    assert {(Path(f.file).name, f.message) for f in foreign} == {
        (
            "email.html.en-US.j2",
            "links to 'https://pay.elsewhere.example', not one of the lender's",
        ),
        ("email.txt.en-US.j2", "links to 'www.elsewhere.example', not one of the lender's"),
    }


def test_control_and_bidi_characters_in_the_text_are_reported() -> None:
    renderer = Renderer(TEMPLATES)
    context = sample_context("early_first_notice", Channel.SMS, "zh-CN")
    context["borrower"]["name"] = "王\u202e芳\x07"
    rendered = renderer.render("early_first_notice", Channel.SMS, "zh-CN", context)
    (finding,) = [f for f in lint_rendered(rendered, context) if f.severity == "error"]
    assert finding.code == "hidden"
    assert "U+0007, U+202E" in finding.message
    # a joiner inside an emoji sequence is not hidden text
    context["borrower"]["name"] = "Zoë 👩\u200d👩\u200d👧"
    rendered = renderer.render("early_first_notice", Channel.SMS, "en-US", context)
    assert not has_errors(lint_rendered(rendered, context))

"""The shipped templates: every message renders in every locale, passes lint, and says what it
must (who is writing, what is owed and by when, how to pay or talk, how to opt out)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from outreach.domain import Channel
from outreach.render import Rendered, Renderer, TemplateFailed, lint_rendered, sample_context
from outreach.render.catalog import CATALOG, shipped_references
from outreach.render.lexicon import SMS_OPT_OUT
from outreach.render.lint import check_repository, visible_text

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LOCALES = ("en-US", "zh-CN", "zh-TW")
# The default policy allows 3 parts; shipped SMS stay within 2 with the sample data so that
# longer real names, lender names and links still fit.
DESIGN_SMS_SEGMENTS = 2
POLICY_SMS_SEGMENTS = 3

CASES = [
    (template, channel, locale)
    for template, channels in sorted(shipped_references().items())
    for channel in sorted(channels)
    for locale in LOCALES
]

# Simplified form -> Traditional form, for characters whose forms differ.
SCRIPT_PAIRS = (
    "个個们們还還账帳户戶联聯请請时時为為这這发發对對会會后後电電话話务務额額应應订訂单單费費"
    "经經见見间間说說过過让讓认認记記录錄与與关關于於问問题題网網钱錢银銀贷貸确確统統边邊场場"
    "现現实實节節热熱线線邮郵简簡讯訊议議协協检檢审審码碼证證号號处處仅僅将將给給帮幫变變难難"
    "压壓虑慮择擇适適决決设設计計调調尽盡续續终終总總条條达達满滿际際预預约約资資动動态態据據"
    "营營业業员員阅閱获獲权權执執减減轻輕紧緊头頭长長识識须須况況访訪团團"
)
SIMPLIFIED_ONLY = frozenset(SCRIPT_PAIRS[0::2])
TRADITIONAL_ONLY = frozenset(SCRIPT_PAIRS[1::2])
# Words of mainland or Hong Kong usage that a Taiwanese reader would not expect.
NOT_TAIWAN_USAGE = ("短信", "信息", "賬", "郵箱", "短訊", "視頻", "質量")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def render_sample(renderer: Renderer, template: str, channel: Channel, locale: str) -> Rendered:
    return renderer.render(template, channel, locale, sample_context(template, channel, locale))


def everything_a_reader_sees(rendered: Rendered) -> str:
    if rendered.channel is Channel.SMS:
        return rendered.body or ""
    return "\n".join(
        [rendered.subject or "", rendered.text or "", visible_text(rendered.html or "")]
    )


def test_every_message_the_policy_may_send_exists_in_every_locale(renderer: Renderer) -> None:
    for template, channel, locale in CASES:
        assert renderer.has(template, channel, locale), (template, channel, locale)


def test_the_repository_passes_check(renderer: Renderer) -> None:
    assert check_repository(TEMPLATES, shipped_references(), LOCALES, POLICY_SMS_SEGMENTS) == []


@pytest.mark.parametrize(("template", "channel", "locale"), CASES)
def test_renders_with_sample_data_and_passes_lint(
    renderer: Renderer, template: str, channel: Channel, locale: str
) -> None:
    context = sample_context(template, channel, locale)
    rendered = renderer.render(template, channel, locale, context)
    assert lint_rendered(rendered, context, POLICY_SMS_SEGMENTS) == []
    if channel is Channel.SMS:
        assert rendered.segments <= DESIGN_SMS_SEGMENTS, rendered.body
        assert rendered.encoding == ("GSM-7" if locale == "en-US" else "UCS-2")


@pytest.mark.parametrize("locale", LOCALES)
def test_every_sms_starts_with_who_is_writing(renderer: Renderer, locale: str) -> None:
    for template, channel, case_locale in CASES:
        if channel is Channel.SMS and case_locale == locale:
            rendered = render_sample(renderer, template, channel, locale)
            lender = sample_context(template, channel, locale)["lender"]["name"]
            prefix = f"{lender}: " if locale == "en-US" else f"【{lender}】"
            assert (rendered.body or "").startswith(prefix), template


@pytest.mark.parametrize("locale", LOCALES)
def test_collection_sms_end_with_the_opt_out(renderer: Renderer, locale: str) -> None:
    for template, spec in CATALOG.items():
        if spec.requires_opt_out and Channel.SMS in spec.channels:
            body = render_sample(renderer, template, Channel.SMS, locale).body or ""
            assert body.endswith(SMS_OPT_OUT[locale] + ("." if locale == "en-US" else "")), body


@pytest.mark.parametrize("locale", LOCALES)
def test_confirmations_of_stopping_do_not_ask_to_stop_again(
    renderer: Renderer, locale: str
) -> None:
    for template in ("optout_confirmation", "cease_confirmation"):
        sms = render_sample(renderer, template, Channel.SMS, locale).body or ""
        assert SMS_OPT_OUT[locale] not in sms
        email = render_sample(renderer, template, Channel.EMAIL, locale)
        assert "3f9a2c7d" not in (email.text or "") + (email.html or "")


def test_zh_tw_is_written_in_traditional_characters_with_taiwan_usage(renderer: Renderer) -> None:
    for template, channel, locale in CASES:
        if locale != "zh-TW":
            continue
        seen = everything_a_reader_sees(render_sample(renderer, template, channel, locale))
        simplified = sorted(set(seen) & SIMPLIFIED_ONLY)
        assert not simplified, (template, channel, simplified)
        assert not [w for w in NOT_TAIWAN_USAGE if w in seen], (template, channel)


def test_zh_cn_is_written_in_simplified_characters(renderer: Renderer) -> None:
    for template, channel, locale in CASES:
        if locale != "zh-CN":
            continue
        seen = everything_a_reader_sees(render_sample(renderer, template, channel, locale))
        traditional = sorted(set(seen) & TRADITIONAL_ONLY)
        assert not traditional, (template, channel, traditional)


class _TagBalance(HTMLParser):
    VOID = frozenset({"meta", "br", "img", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:]}")
        else:
            self.open.pop()


@pytest.mark.parametrize("locale", LOCALES)
def test_email_html_is_balanced_inline_styled_and_self_contained(
    renderer: Renderer, locale: str
) -> None:
    for template, channel, case_locale in CASES:
        if channel is not Channel.EMAIL or case_locale != locale:
            continue
        html = render_sample(renderer, template, channel, locale).html or ""
        parser = _TagBalance()
        parser.feed(html)
        assert parser.problems == [] and parser.open == [], (template, parser.problems)
        assert html.startswith("<!DOCTYPE html>")
        assert '<html lang="' in html
        # mail clients drop <style> blocks and block remote content: styles are inline
        assert not parser.tags & {"style", "script", "img", "link", "iframe", "form"}
        assert 'style="' in html


@pytest.mark.parametrize("locale", LOCALES)
def test_the_payment_confirmation_says_when_nothing_is_left_to_pay(
    renderer: Renderer, locale: str
) -> None:
    for channel in Channel:
        context = sample_context("payment_confirmation", channel, locale)
        context["payment"]["amount"] = context["loan"]["amount_due"]
        context["payment"]["amount_due_after"] = Decimal("0")
        rendered = renderer.render("payment_confirmation", channel, locale, context)
        seen = everything_a_reader_sees(rendered)
        expected = {
            "en-US": "no amount due",
            "zh-CN": "没有应还款项",
            "zh-TW": "沒有應繳款項",
        }[locale]
        assert expected in seen
        assert lint_rendered(rendered, context) == []


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("en-US", ("staff ID", "FC-2048", "Sam Rivera", "2:30 PM", "June 13, 2025", "reschedule")),
        ("zh-CN", ("工号", "FC-2048", "李明", "14:30", "2025年6月13日", "改期")),
        ("zh-TW", ("員工編號", "FC-2048", "林志豪", "下午2:30", "2025年6月13日", "改期")),
    ],
)
def test_the_visit_notice_gives_date_time_collector_and_how_to_reschedule(
    renderer: Renderer, locale: str, words: tuple[str, ...]
) -> None:
    email = everything_a_reader_sees(render_sample(renderer, "visit_notice", Channel.EMAIL, locale))
    sms = render_sample(renderer, "visit_notice", Channel.SMS, locale).body or ""
    phone = sample_context("visit_notice", Channel.SMS, locale)["lender"]["phone"]
    for word in words:
        assert word in email, word
        assert word.replace("staff ID", "ID") in sms, word
    assert phone in sms and phone in email


@pytest.mark.parametrize(
    ("locale", "options"),
    [
        ("en-US", ("installments", "extension", "lower")),
        ("zh-CN", ("分期还款", "延期还款", "降低每期还款额")),
        ("zh-TW", ("分期攤還", "展延", "調降每期應繳金額")),
    ],
)
def test_the_negotiation_invitation_names_the_plan_options(
    renderer: Renderer, locale: str, options: tuple[str, ...]
) -> None:
    for channel in Channel:
        seen = everything_a_reader_sees(
            render_sample(renderer, "negotiation_invitation", channel, locale)
        )
        for option in options:
            assert option in seen.lower(), (channel, option)


@pytest.mark.parametrize(
    ("locale", "what_next", "undecided"),
    [
        ("en-US", "referred for legal review", "No decision has been made"),
        ("zh-CN", "转交法务部门审核", "尚未作出任何决定"),
        ("zh-TW", "移交法務部門審查", "尚未做出任何決定"),
    ],
)
def test_the_pre_legal_notice_says_truthfully_what_may_happen(
    renderer: Renderer, locale: str, what_next: str, undecided: str
) -> None:
    for channel in Channel:
        seen = everything_a_reader_sees(
            render_sample(renderer, "pre_legal_notice", channel, locale)
        )
        assert what_next in seen.replace("referred to our legal team for review", what_next)
        assert undecided in seen


def test_a_message_missing_its_part_of_the_context_fails_naming_file_and_line(
    renderer: Renderer,
) -> None:
    context = sample_context("promise_reminder", Channel.SMS, "zh-TW")
    del context["promise"]
    with pytest.raises(TemplateFailed, match="promise") as failure:
        renderer.render("promise_reminder", Channel.SMS, "zh-TW", context)
    assert failure.value.file is not None
    assert failure.value.file.endswith("promise_reminder/sms.zh-TW.j2")
    assert failure.value.line is not None


def test_sample_contexts_have_the_pipelines_shape() -> None:
    context = sample_context("visit_notice", Channel.EMAIL, "zh-TW")
    assert set(context) == {
        "borrower", "loan", "lender", "stage", "timezone", "locale", "unsubscribe_url", "visit",
    }  # fmt: skip
    assert set(context["borrower"]) == {"id", "name", "locale"}
    assert set(context["loan"]) == {
        "id", "product", "currency", "amount_due", "balance", "days_past_due", "due_date",
        "account_number",
    }  # fmt: skip
    assert set(context["lender"]) == {"name", "phone", "email", "website", "payment_url", "hours"}
    assert set(context["visit"]) == {"visit_at", "collector_name", "collector_id"}
    assert context["visit"]["visit_at"].tzinfo is not None
    assert isinstance(context["loan"]["amount_due"], Decimal)
    assert isinstance(context["loan"]["due_date"], dt.date)
    assert "unsubscribe_url" not in sample_context("visit_notice", Channel.SMS, "zh-TW")


@pytest.mark.parametrize("locale", LOCALES)
def test_replies_to_the_borrower_need_no_loan(renderer: Renderer, locale: str) -> None:
    # An opt-out, opt-in, HELP or cease-contact reply may concern a number with no single loan.
    for template in (
        "optout_confirmation",
        "optin_confirmation",
        "help_reply",
        "cease_confirmation",
    ):
        for channel in CATALOG[template].channels:
            context = sample_context(template, channel, locale)
            for key in ("loan", "stage", "timezone"):
                del context[key]
            assert renderer.render(template, channel, locale, context)

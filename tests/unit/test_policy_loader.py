"""The policy file: the default one is what SPEC §5 says; broken ones fail with a precise path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
import yaml

from outreach.domain import Channel, Purpose
from outreach.errors import ConfigurationError
from outreach.policy import PolicyError, load_policy, load_policy_text
from tests.unit.policy_fixtures import (
    DEFAULT_POLICY_PATH,
    default_document,
    default_policy,
    policy_from,
)

TEMPLATE_NAMES = {
    "pre_due_reminder",
    "early_first_notice",
    "early_follow_up_1",
    "early_follow_up_2",
    "early_hardship",
    "negotiation_invitation",
    "negotiation_follow_up",
    "negotiation_hardship",
    "late_formal_notice",
    "late_follow_up",
    "pre_legal_notice",
    "promise_reminder",
    "broken_promise",
    "instalment_reminder",
    "visit_notice",
    "payment_confirmation",
    "optout_confirmation",
    "optin_confirmation",
    "help_reply",
    "cease_confirmation",
}


def test_default_policy_has_the_stages_of_spec_5() -> None:
    policy = default_policy()
    assert [(s.name, s.first_day, s.last_day) for s in policy.stages] == [
        ("pre_due", -3, 0),
        ("early", 1, 15),
        ("negotiation", 16, 45),
        ("late", 46, 89),
        ("pre_legal", 90, None),
    ]
    expected = {-4: None, -3: "pre_due", 0: "pre_due", 1: "early", 15: "early"}
    expected |= {16: "negotiation", 45: "negotiation", 46: "late", 89: "late"}
    expected |= {90: "pre_legal", 400: "pre_legal"}
    assert {day: policy.stage_for(day) for day in expected} == expected


def test_default_policy_window_caps_and_zone_are_those_of_spec_5() -> None:
    policy = default_policy()
    assert policy.contact_window.start == dt.time(8, 0)
    assert policy.contact_window.end == dt.time(21, 0)
    assert {rule.name: rule.limit for rule in policy.caps} == {
        "sms_per_day": 1,
        "sms_per_week": 3,
        "email_per_day": 1,
        "email_per_week": 4,
        "any_per_day": 2,
    }
    windows = {rule.name: rule.window for rule in policy.caps}
    assert windows["sms_per_day"] == dt.timedelta(hours=24)
    assert windows["sms_per_week"] == dt.timedelta(days=7)
    assert policy.default_zone.key == "Asia/Shanghai"
    assert policy.max_sms_segments == 3
    assert policy.locales == ("zh-CN", "zh-TW", "en-US")
    assert policy.default_locale == "en-US"


def test_default_policy_references_exactly_the_shipped_template_names() -> None:
    referenced = default_policy().templates_referenced()
    assert set(referenced) == TEMPLATE_NAMES
    assert referenced["help_reply"] == {Channel.SMS}
    # a step with fallback may go on either channel, so both parts must exist
    assert referenced["early_first_notice"] == {Channel.SMS, Channel.EMAIL}
    assert referenced["optout_confirmation"] == {Channel.SMS, Channel.EMAIL}


def test_hardship_cadence_is_fewer_and_uses_the_hardship_templates() -> None:
    policy = default_policy()
    for name in ("early", "negotiation", "late", "pre_legal"):
        stage = policy.stage(name)
        assert stage is not None
        assert len(stage.tag_steps["hardship"]) < len(stage.steps)
    early, negotiation = policy.stage("early"), policy.stage("negotiation")
    assert early is not None and negotiation is not None
    assert {s.template for s in early.tag_steps["hardship"]} == {"early_hardship"}
    assert {s.template for s in negotiation.tag_steps["hardship"]} == {"negotiation_hardship"}


def test_sender_identity_for_every_locale() -> None:
    policy = default_policy()
    assert policy.sender["en-US"].name == "Harbor Lending"
    assert policy.sender["zh-CN"].name == "海港信贷"
    assert policy.sender["zh-TW"].name == "海港信貸"
    assert set(policy.sender_for("fr-FR")) == {
        "name",
        "phone",
        "email",
        "website",
        "payment_url",
        "hours",
    }
    assert policy.sender_for("fr-FR")["name"] == "Harbor Lending"


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        ("zh-CN", "zh-CN"),
        ("zh-cn", "zh-CN"),
        ("zh_TW", "zh-TW"),
        ("zh-HK", "zh-TW"),
        ("zh-Hant", "zh-TW"),
        ("zh-SG", "zh-CN"),
        ("zh", "zh-CN"),
        ("en-GB", "en-US"),
        ("fr-FR", "en-US"),
        ("", "en-US"),
    ],
)
def test_locale_for_maps_to_a_served_locale(asked: str, served: str) -> None:
    assert default_policy().locale_for(asked) == served


def test_to_json_is_the_effective_policy_and_serialisable() -> None:
    data = default_policy().to_json()
    json.dumps(data)
    assert data["caps"]["sms_per_week"] == 3
    assert data["contact_window"] == {"start": "08:00", "end": "21:00"}
    assert data["jurisdictions"]["US-MA"]["caps"] == {"sms_per_week": 2, "email_per_week": 2}
    assert set(data["templates"]) == TEMPLATE_NAMES
    assert data["events"]["visit_notice"]["notice_hours"] == 48


def test_policy_is_immutable() -> None:
    policy = default_policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_sms_segments = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.holidays["CN"] = frozenset()  # type: ignore[index]
    with pytest.raises(TypeError):
        policy.events[Purpose.HELP_REPLY] = policy.events[Purpose.HELP_REPLY]  # type: ignore[index]


def test_policy_error_is_a_configuration_error_naming_the_file() -> None:
    with pytest.raises(ConfigurationError, match=r"nowhere\.yaml"):
        load_policy("/nonexistent/nowhere.yaml")


def _broken(change: Any) -> str:
    document = default_document()
    change(document)
    with pytest.raises(PolicyError) as caught:
        policy_from(document, "schedules/broken.yaml")
    message = str(caught.value)
    assert message.startswith("schedules/broken.yaml: ")
    return message


def test_unknown_key_is_named_with_its_path() -> None:
    def change(d: dict[str, Any]) -> None:
        d["stages"]["early"]["steps"][2]["tempalte"] = "x"

    message = _broken(change)
    assert "stages.early.steps[2].tempalte: unknown key" in message


def test_missing_template_is_named_with_its_path() -> None:
    def change(d: dict[str, Any]) -> None:
        del d["stages"]["early"]["steps"][2]["template"]

    assert "stages.early.steps[2].template: is required but missing" in _broken(change)


def test_malformed_template_name() -> None:
    def change(d: dict[str, Any]) -> None:
        d["events"]["promise_reminder"]["template"] = "Promise Reminder"

    assert "events.promise_reminder.template: 'Promise Reminder' is not well formed" in _broken(
        change
    )


def test_missing_top_level_section() -> None:
    assert "caps: is required but missing" in _broken(lambda d: d.pop("caps"))


def test_missing_spec_cap() -> None:
    assert "caps.any_per_day: is required" in _broken(lambda d: d["caps"].pop("any_per_day"))


def test_zero_cap_is_refused() -> None:
    def change(d: dict[str, Any]) -> None:
        d["caps"]["sms_per_day"] = 0

    assert "caps.sms_per_day: must be at least 1" in _broken(change)


def test_overlapping_stage_ranges() -> None:
    def change(d: dict[str, Any]) -> None:
        d["stages"]["negotiation"]["days_past_due"]["from"] = 15

    message = _broken(change)
    assert "stages.negotiation.days_past_due: overlaps stage 'early'" in message


def test_open_ended_stage_before_another_overlaps() -> None:
    def change(d: dict[str, Any]) -> None:
        del d["stages"]["late"]["days_past_due"]["to"]

    assert "stages.pre_legal.days_past_due: overlaps stage 'late'" in _broken(change)


def test_step_outside_its_stage() -> None:
    def change(d: dict[str, Any]) -> None:
        d["stages"]["early"]["steps"][0]["days_past_due"] = 20

    assert "stages.early.steps[0]: falls on day 20 past due, outside stage 'early'" in _broken(
        change
    )


def test_step_by_day_within_stage() -> None:
    document = default_document()
    step = document["stages"]["negotiation"]["steps"][0]
    del step["days_past_due"]
    step["day"] = 1
    policy = policy_from(document)
    stage = policy.stage("negotiation")
    assert stage is not None and stage.steps[0].days_past_due == 16


def test_impossible_window() -> None:
    def change(d: dict[str, Any]) -> None:
        d["contact_window"] = {"start": "21:00", "end": "08:00"}

    assert "contact_window: impossible window" in _broken(change)


def test_impossible_jurisdiction_window() -> None:
    def change(d: dict[str, Any]) -> None:
        d["jurisdictions"]["US-MA"]["contact_window"] = {"start": "09:00", "end": "09:00"}

    assert "jurisdictions.US-MA.contact_window: impossible window" in _broken(change)


def test_bad_time_zone() -> None:
    def change(d: dict[str, Any]) -> None:
        d["default_zone"] = "Asia/Beijing"

    assert "default_zone: 'Asia/Beijing' is not an IANA time zone" in _broken(change)


def test_bare_yaml_time_is_explained() -> None:
    # YAML 1.1 reads 10:00 as the sexagesimal number 600 (08:00, with its leading 0, stays text)
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace('end: "21:00"', "end: 21:00")
    with pytest.raises(PolicyError, match=r"contact_window\.end: .*number \(1260\).*quote it"):
        load_policy_text(text, "x.yaml")


def test_duplicate_key_is_refused() -> None:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace(
        "  sms_per_day: 1\n", "  sms_per_day: 1\n  sms_per_day: 5\n"
    )
    with pytest.raises(PolicyError, match="duplicate key 'sms_per_day'"):
        load_policy_text(text, "x.yaml")


def test_yaml_boolean_country_key_is_explained() -> None:
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace(
        "holidays:\n  CN:", "holidays:\n  NO: [2026-05-17]\n  CN:"
    )
    with pytest.raises(PolicyError, match=r"holidays: key False is not a string .*quote it"):
        load_policy_text(text, "x.yaml")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(PolicyError, match=r"x\.yaml: line 3, column 1: is not valid YAML"):
        load_policy_text("a: 1\nb: [\n", "x.yaml")


def test_tag_cadence_needs_its_tag_declared() -> None:
    def change(d: dict[str, Any]) -> None:
        d["cadence_tags"] = []

    assert "stages.early.tag_steps.hardship: tag 'hardship' is not listed" in _broken(change)


def test_visit_notice_of_less_than_two_days_is_refused() -> None:
    def change(d: dict[str, Any]) -> None:
        d["events"]["visit_notice"]["notice_hours"] = 24

    assert "events.visit_notice.notice_hours: 24 is less than the 48 hours" in _broken(change)


def test_every_served_locale_needs_a_sender() -> None:
    assert "sender.zh-TW: is required" in _broken(lambda d: d["sender"].pop("zh-TW"))


def test_default_locale_must_be_served() -> None:
    def change(d: dict[str, Any]) -> None:
        d["default_locale"] = "fr-FR"

    assert "default_locale: 'fr-FR' is not one of locales" in _broken(change)


def test_unknown_channel() -> None:
    def change(d: dict[str, Any]) -> None:
        d["stages"]["late"]["steps"][1]["channel"] = "fax"

    assert "stages.late.steps[1].channel: 'fax' is not a channel" in _broken(change)


def test_bad_holiday_date() -> None:
    def change(d: dict[str, Any]) -> None:
        d["holidays"]["US"].append("2026-02-30")

    assert "holidays.US[8]: must be a date" in _broken(change)


def test_bad_jurisdiction_code_and_unknown_cap() -> None:
    def bad_code(d: dict[str, Any]) -> None:
        d["jurisdictions"]["Massachusetts"] = {"caps": {"sms_per_week": 1}}

    assert "jurisdictions.Massachusetts: 'Massachusetts' is not well formed" in _broken(bad_code)

    def bad_cap(d: dict[str, Any]) -> None:
        d["jurisdictions"]["US-MA"]["caps"]["sms_per_month"] = 4

    assert "jurisdictions.US-MA.caps.sms_per_month: unknown key" in _broken(bad_cap)


def test_missing_event_rule() -> None:
    assert "events.help_reply: is required" in _broken(lambda d: d["events"].pop("help_reply"))


def test_repeated_step() -> None:
    def change(d: dict[str, Any]) -> None:
        steps = d["stages"]["early"]["steps"]
        steps.append(dict(steps[0]))

    assert "stages.early.steps[5]: repeats step d1:early_first_notice" in _broken(change)


def test_document_round_trips_through_text() -> None:
    text = yaml.safe_dump(default_document(), allow_unicode=True)
    assert (
        load_policy_text(text, "copy.yaml").to_json()["stages"]
        == default_policy().to_json()["stages"]
    )


def test_default_policy_matches_the_shipped_template_catalogue() -> None:
    from outreach.render.catalog import shipped_references

    load_policy(DEFAULT_POLICY_PATH, templates=shipped_references())


def test_template_unknown_to_the_catalogue_is_named_with_its_path() -> None:
    known = {name: {Channel.SMS, Channel.EMAIL} for name in TEMPLATE_NAMES - {"late_follow_up"}}
    with pytest.raises(PolicyError) as caught:
        load_policy(DEFAULT_POLICY_PATH, templates=known)
    assert "stages.late.steps[2].template: unknown template 'late_follow_up'" in str(caught.value)
    with pytest.raises(PolicyError, match=r"steps\[2\]\.template: unknown template"):
        load_policy(DEFAULT_POLICY_PATH, templates=TEMPLATE_NAMES - {"late_follow_up"})


def test_template_without_a_part_for_its_fallback_channel() -> None:
    known = {name: {Channel.SMS, Channel.EMAIL} for name in TEMPLATE_NAMES}
    known["promise_reminder"] = {Channel.SMS}
    with pytest.raises(PolicyError) as caught:
        load_policy(DEFAULT_POLICY_PATH, templates=known)
    assert (
        "events.promise_reminder.template: template 'promise_reminder' has no email part "
        "(needed to fall back; set fallback: false if it must not)"
    ) in str(caught.value)


def test_reply_template_without_a_part_for_its_channel() -> None:
    document = default_document()
    document["events"]["help_reply"]["channels"] = ["sms", "email"]
    known = {name: {Channel.SMS, Channel.EMAIL} for name in TEMPLATE_NAMES}
    known["help_reply"] = {Channel.SMS}
    text = yaml.safe_dump(document, allow_unicode=True)
    with pytest.raises(PolicyError, match=r"events\.help_reply\.template: .* has no email part$"):
        load_policy_text(text, "x.yaml", templates=known)

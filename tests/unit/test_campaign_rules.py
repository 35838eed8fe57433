"""The pure parts of campaigns: checking a create body, drawing arms, the caps forecast and
the two-proportion test."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

import pytest

from outreach.domain import Channel
from outreach.policy import load_policy
from outreach.policy.cap_forecast import cap_frees_at
from outreach.policy.model import CapRule
from outreach.render import Renderer
from outreach.service.campaigns import (
    CampaignInvalid,
    CampaignSpec,
    Segment,
    Variant,
    arm_of,
    compare,
    parse_campaign,
    two_proportion_p_value,
    unit_draw,
)

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "schedules" / "default.yaml")
NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(REPO / "templates")


def body(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "name": "Relief",
        "channel": "sms",
        "template": "campaign_hardship_relief",
        "segment": {"stages": ["negotiation", "late"], "amount_min": "10.00"},
        "start_at": "2026-12-04T01:00:00Z",
    }
    document.update(overrides)
    return document


def errors_of(document: object, renderer: Renderer) -> dict[str, str]:
    with pytest.raises(CampaignInvalid) as raised:
        parse_campaign(document, POLICY, renderer, NOW)
    return dict(raised.value.errors)


def test_a_good_body_is_read_whole(renderer: Renderer) -> None:
    spec = parse_campaign(
        body(end_at="2026-12-10T00:00:00+08:00", throttle_per_minute=100, holdout_percent=10),
        POLICY,
        renderer,
        NOW,
    )
    assert spec.channel is Channel.SMS
    assert spec.segment.stages == ("negotiation", "late")
    assert str(spec.segment.amount_min) == "10.00"
    assert spec.end_at == dt.datetime(2026, 12, 9, 16, 0, tzinfo=dt.UTC)
    assert spec.variants == (Variant("default", "campaign_hardship_relief", 1.0),)
    assert spec.throttle_per_minute == 100 and spec.holdout_percent == 10


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"segment": {"stages": ["overdue"]}}, "segment.stages", "unknown stage"),
        ({"segment": {"dpd_min": 30, "dpd_max": 10}}, "segment.dpd_min", "greater than"),
        ({"segment": {"amount_min": "ten"}}, "segment.amount_min", "decimal"),
        ({"segment": {"locales": ["fr-FR"]}}, "segment.locales", "not served"),
        ({"segment": {"region": "x"}}, "segment.region", "not a segment filter"),
        ({"end_at": "2026-12-03T23:00:00Z"}, "end_at", "after start_at"),
        ({"end_at": "tomorrow"}, "end_at", "RFC 3339"),
        ({"start_at": "2026-12-04T01:00:00"}, "start_at", "UTC offset"),
        ({"holdout_percent": 51}, "holdout_percent", "between 0 and 50"),
        ({"holdout_percent": 12.5}, "holdout_percent", "whole number"),
        ({"throttle_per_minute": 0}, "throttle_per_minute", "between"),
        ({"template": "no_such"}, "template", "unknown template"),
        ({"template": "early_first_notice"}, "template", "not a campaign template"),
        ({"channel": "fax"}, "channel", "sms or email"),
        ({"colour": "red"}, "colour", "not a campaign field"),
        (
            {
                "template": None,
                "variants": [{"name": "a", "template": "campaign_hardship_relief", "weight": -1}],
            },
            "variants[0].weight",
            "positive",
        ),
        (
            {
                "template": None,
                "variants": [
                    {"name": "a", "template": "campaign_hardship_relief", "weight": 1},
                    {"name": "a", "template": "campaign_restructuring_offer", "weight": 1},
                ],
            },
            "variants[1].name",
            "used by another",
        ),
    ],
)
def test_each_invalid_field_is_named(
    renderer: Renderer, overrides: dict[str, object], field: str, words: str
) -> None:
    document = body(**overrides)
    if document.get("template") is None:
        document.pop("template")
    errors = errors_of(document, renderer)
    assert field in errors, errors
    assert words in errors[field]


def test_all_faults_are_reported_together(renderer: Renderer) -> None:
    errors = errors_of(
        body(channel="fax", holdout_percent=90, segment={"stages": ["x"]}, name=""), renderer
    )
    assert {"channel", "holdout_percent", "segment.stages", "name"} <= set(errors)


def test_a_template_without_the_campaigns_channel_or_a_reached_locale_is_refused(
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    sms_only = tmp_path / "templates" / "campaign_sms_only"
    sms_only.mkdir()
    for locale in ("zh-CN", "zh-TW"):
        shutil.copy(
            REPO / "templates" / "campaign_hardship_relief" / f"sms.{locale}.j2",
            sms_only / f"sms.{locale}.j2",
        )
    renderer = Renderer(tmp_path / "templates")
    errors = errors_of(body(template="campaign_sms_only", channel="email"), renderer)
    assert "no email part" in errors["template"]
    errors = errors_of(body(template="campaign_sms_only"), renderer)
    assert "en-US" in errors["template"] and "segment reaches" in errors["template"]
    # a segment that only reaches the locales it has is fine
    parse_campaign(
        body(template="campaign_sms_only", segment={"locales": ["zh-CN", "zh-TW"]}),
        POLICY,
        renderer,
        NOW,
    )


def spec(holdout: int, *weights: float) -> CampaignSpec:
    return CampaignSpec(
        name="x",
        channel=Channel.SMS,
        variants=tuple(
            Variant(f"v{i}", "campaign_hardship_relief", w) for i, w in enumerate(weights)
        ),
        segment=Segment(),
        start_at=NOW,
        holdout_percent=holdout,
    )


def test_arms_are_reproducible_and_follow_the_weights() -> None:
    campaign = spec(20, 1, 3)
    arms = Counter()
    for index in range(20_000):
        variant, held_out = arm_of(campaign, "cmp_1", f"b{index}")
        assert arm_of(campaign, "cmp_1", f"b{index}") == (variant, held_out)
        arms["holdout" if held_out else variant.name] += 1
    assert abs(arms["holdout"] - 4000) < 4 * (20_000 * 0.2 * 0.8) ** 0.5
    assert abs(arms["v1"] - 12_000) < 4 * (20_000 * 0.6 * 0.4) ** 0.5
    # another campaign draws other arms for the same borrowers
    other = [arm_of(campaign, "cmp_2", f"b{i}")[1] for i in range(2000)]
    same = [arm_of(campaign, "cmp_1", f"b{i}")[1] for i in range(2000)]
    assert other != same
    assert 0 <= unit_draw("c", "b", "arm") < 1
    assert arm_of(spec(0, 1), "c", "b")[1] is False


def test_cap_forecast_waits_for_the_oldest_slot_of_the_rule_that_holds() -> None:
    day, week = dt.timedelta(days=1), dt.timedelta(days=7)
    rules = (
        CapRule("sms_per_day", Channel.SMS, 1, day),
        CapRule("sms_per_week", Channel.SMS, 3, week),
        CapRule("any_per_day", None, 2, day),
    )
    at = NOW
    assert cap_frees_at(rules, [], Channel.SMS, at) is None
    assert (
        cap_frees_at(rules, [(Channel.EMAIL, at - dt.timedelta(hours=1))], Channel.SMS, at) is None
    )
    one_today = [(Channel.SMS, at - dt.timedelta(hours=3))]
    assert cap_frees_at(rules, one_today, Channel.SMS, at) == (
        at + dt.timedelta(hours=21),
        "sms_per_day",
    )
    three_this_week = [(Channel.SMS, at - dt.timedelta(days=d)) for d in (2, 4, 6)]
    assert cap_frees_at(rules, three_this_week, Channel.SMS, at) == (
        at + dt.timedelta(days=1),
        "sms_per_week",
    )
    assert cap_frees_at(rules, three_this_week, Channel.EMAIL, at) is None


def test_two_proportion_test() -> None:
    # 30 of 100 against 10 of 100: a difference well beyond noise
    assert two_proportion_p_value(30, 100, 10, 100) == pytest.approx(0.000417, abs=2e-5)
    assert two_proportion_p_value(10, 100, 10, 100) == 1.0
    assert two_proportion_p_value(1, 0, 1, 10) is None
    result = compare({"a": (30, 100), "b": (10, 100), "holdout": (12, 100)})
    assert result is not None
    assert (result["leader"], result["runner_up"]) == ("a", "holdout")
    assert 0 < result["p_value"] < 0.01
    assert compare({"a": (3, 10)}) is None

"""The create form of a campaign: its fields as a person fills them in, the body of
`POST /v1/campaigns` made from them (checked by the very code the API checks with), and the
faults that code names, each put back beside its own field.

Every field of the body has its own field in the form: name, channel, one template or up to
VARIANT_ROWS variants (name, template, weight), the segment's filters (stages and locales
ticked, days past due and amounts as numbers, products and tags as comma lists), start and
end (in UTC, as the log's form reads times), throttle and holdout. A value that is not the
number a field wants goes to the check as typed, so the check names it as the API would."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

VARIANT_ROWS = 4
TEXT_FIELDS = (
    "name",
    "channel",
    "template",
    "dpd_min",
    "dpd_max",
    "amount_min",
    "amount_max",
    "products",
    "tags",
    "start_at",
    "end_at",
    "throttle_per_minute",
    "holdout_percent",
)
LIST_FIELDS = ("stages", "locales")
VARIANT_PARTS = ("name", "template", "weight")
# the fields of `segment` in the body, and those of the form that fill them
SEGMENT_NUMBERS = ("dpd_min", "dpd_max")
SEGMENT_AMOUNTS = ("amount_min", "amount_max")
SEGMENT_LISTS = ("products", "tags")
# what a datetime-local field sends: a time without its offset, read as UTC
_FIELD_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")
_WHOLE = re.compile(r"[+-]?\d+")
_VARIANT_FAULT = re.compile(r"variants\[(\d+)\](?:\.(\w+))?")
# the form's field a fault of the body is shown beside (the rest go above the form)
GENERAL = "form"


def variant_key(row: int, part: str) -> str:
    return f"variant_{row}_{part}"


def _whole_or_text(value: str) -> int | str:
    return int(value) if _WHOLE.fullmatch(value) else value


def _weight(value: str) -> int | float | str:
    if _WHOLE.fullmatch(value):
        return int(value)
    try:
        return float(value)
    except ValueError:
        return value


def _instant(value: str) -> str:
    return value + "Z" if _FIELD_TIME.fullmatch(value) else value


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass
class CampaignForm:
    """What the form holds: its text fields, the ticked stages and locales, the variant
    rows, and the id the campaign is previewed (and will be created) under."""

    values: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TEXT_FIELDS, ""))
    stages: list[str] = field(default_factory=list)
    locales: list[str] = field(default_factory=list)
    variants: list[dict[str, str]] = field(
        default_factory=lambda: [dict.fromkeys(VARIANT_PARTS, "") for _ in range(VARIANT_ROWS)]
    )
    campaign_id: str = ""

    @classmethod
    def of(cls, form: FormData) -> CampaignForm:
        def one(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(
            values={name: one(name) for name in TEXT_FIELDS},
            stages=[v for v in form.getlist("stages") if isinstance(v, str) and v],
            locales=[v for v in form.getlist("locales") if isinstance(v, str) and v],
            variants=[
                {part: one(variant_key(row, part)) for part in VARIANT_PARTS}
                for row in range(VARIANT_ROWS)
            ],
            campaign_id=one("campaign_id"),
        )

    def variant_rows(self) -> list[int]:
        """The rows filled in (any of their parts), in order: variant i of the body is row
        `variant_rows()[i]` of the form."""
        return [row for row, item in enumerate(self.variants) if any(item.values())]

    def body(self) -> dict[str, Any]:
        """The create body (SPEC §8) the form says; what is left empty is left out."""
        values = self.values
        body: dict[str, Any] = {"name": values["name"], "channel": values["channel"]}
        if values["template"]:
            body["template"] = values["template"]
        rows = self.variant_rows()
        if rows:
            body["variants"] = []
            for row in rows:
                item = self.variants[row]
                variant: dict[str, Any] = {"name": item["name"], "template": item["template"]}
                if item["weight"]:
                    variant["weight"] = _weight(item["weight"])
                body["variants"].append(variant)
        segment: dict[str, Any] = {}
        if self.stages:
            segment["stages"] = list(self.stages)
        if self.locales:
            segment["locales"] = list(self.locales)
        for name in SEGMENT_NUMBERS:
            if values[name]:
                segment[name] = _whole_or_text(values[name])
        for name in SEGMENT_AMOUNTS:
            if values[name]:
                segment[name] = values[name]
        for name in SEGMENT_LISTS:
            if _comma_list(values[name]):
                segment[name] = _comma_list(values[name])
        body["segment"] = segment
        if values["start_at"]:
            body["start_at"] = _instant(values["start_at"])
        if values["end_at"]:
            body["end_at"] = _instant(values["end_at"])
        for name in ("throttle_per_minute", "holdout_percent"):
            if values[name]:
                body[name] = _whole_or_text(values[name])
        return body

    def hidden(self) -> Iterator[tuple[str, str]]:
        """Every field as (name, value) pairs, to post the same form again (the create
        button under a preview)."""
        for name in TEXT_FIELDS:
            if self.values[name]:
                yield name, self.values[name]
        for name in LIST_FIELDS:
            for value in getattr(self, name):
                yield name, value
        for row, item in enumerate(self.variants):
            for part in VARIANT_PARTS:
                if item[part]:
                    yield variant_key(row, part), item[part]
        if self.campaign_id:
            yield "campaign_id", self.campaign_id

    def faults(self, errors: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
        """The faults a check named (`CampaignInvalid.errors`), by the form field each is
        shown beside; those of no one field under GENERAL."""
        rows = self.variant_rows()
        found: dict[str, list[str]] = {}
        for name, detail in errors:
            found.setdefault(self._field_of(name, rows), []).append(_said(name, detail))
        return found

    def _field_of(self, name: str, rows: Sequence[int]) -> str:
        if name in TEXT_FIELDS:
            return name
        if name.startswith("segment."):
            part = name.removeprefix("segment.")
            return part if part in (*TEXT_FIELDS, *LIST_FIELDS) else GENERAL
        if name == "variants":
            return "variants"
        matched = _VARIANT_FAULT.fullmatch(name)
        if matched:
            index, part = int(matched.group(1)), matched.group(2)
            if index < len(rows) and part in VARIANT_PARTS:
                return variant_key(rows[index], part)
            return "variants"
        return GENERAL


def _said(name: str, detail: str) -> str:
    """A fault as shown beside its field: the detail, which follows the field's name in the
    API's words (`must be …`, `is …`)."""
    return detail[0].upper() + detail[1:] if detail else name


LABELS: dict[str, str] = {
    "name": "Name",
    "channel": "Channel",
    "template": "Template",
    "variants": "Variants",
    "stages": "Stages",
    "dpd_min": "Days past due, at least",
    "dpd_max": "Days past due, at most",
    "amount_min": "Amount due, at least",
    "amount_max": "Amount due, at most",
    "products": "Products",
    "locales": "Locales",
    "tags": "Tags",
    "start_at": "Starts (UTC)",
    "end_at": "Ends (UTC)",
    "throttle_per_minute": "At most per minute",
    "holdout_percent": "Held out (%)",
    GENERAL: "The form",
}
_PART_LABELS = {"name": "name", "template": "template", "weight": "weight"}


def label_of(key: str) -> str:
    """The label of a form field (a variant row's parts: `Variant 2 weight`)."""
    matched = re.fullmatch(r"variant_(\d+)_(\w+)", key)
    if matched:
        return f"Variant {int(matched.group(1)) + 1} {_PART_LABELS[matched.group(2)]}"
    return LABELS.get(key, key)


def faults_in_order(faults: Mapping[str, list[str]]) -> list[tuple[str, str, str]]:
    """Every fault as (field, its label, what is wrong), for the summary above the form."""
    return [(key, label_of(key), detail) for key, details in faults.items() for detail in details]

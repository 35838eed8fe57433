"""Where a borrower may be: the candidate time zones and countries of SPEC §5.

Every source of location counts, and a send must suit all of them: the explicit `timezone`,
the zone(s) of the address, and the zone(s) of each geographic phone number. A number that
maps to more than three zones (toll-free, a whole-country mobile range) says nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezone

from outreach.domain import Address, BorrowerState
from outreach.policy.memo import per_borrower
from outreach.policy.model import Policy

# A phone number mapping to more zones than this tells nothing about where its holder is.
MAX_PHONE_ZONES = 3

# Number types that are not tied to a place: the number moves with its holder or has no
# holder's place at all.
_NON_GEOGRAPHIC_TYPES = frozenset(
    {
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.VOIP,
        PhoneNumberType.PERSONAL_NUMBER,
        PhoneNumberType.PAGER,
        PhoneNumberType.UAN,
        PhoneNumberType.VOICEMAIL,
        PhoneNumberType.UNKNOWN,
    }
)

_NY, _CHI, _DEN, _PHX, _LA = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
)
_AK = ("America/Anchorage", "America/Adak")

# Zones in use in each region, by ISO 3166-2 subdivision code. Where a state or province
# spans zones, all of them are listed: without a finer address the send must suit each.
# Zones that have followed the same rules for decades are folded into one (Detroit and
# Indianapolis into New_York, Boise into Denver, Moncton into Halifax).
REGION_ZONES: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "US": MappingProxyType(
            {
                "AL": (_CHI,),
                "AK": _AK,
                "AZ": (_PHX, _DEN),  # the Navajo Nation keeps daylight saving time
                "AR": (_CHI,),
                "CA": (_LA,),
                "CO": (_DEN,),
                "CT": (_NY,),
                "DE": (_NY,),
                "DC": (_NY,),
                "FL": (_NY, _CHI),
                "GA": (_NY,),
                "HI": ("Pacific/Honolulu",),
                "ID": (_DEN, _LA),
                "IL": (_CHI,),
                "IN": (_NY, _CHI),
                "IA": (_CHI,),
                "KS": (_CHI, _DEN),
                "KY": (_NY, _CHI),
                "LA": (_CHI,),
                "ME": (_NY,),
                "MD": (_NY,),
                "MA": (_NY,),
                "MI": (_NY, _CHI),
                "MN": (_CHI,),
                "MS": (_CHI,),
                "MO": (_CHI,),
                "MT": (_DEN,),
                "NE": (_CHI, _DEN),
                "NV": (_LA, _DEN),
                "NH": (_NY,),
                "NJ": (_NY,),
                "NM": (_DEN,),
                "NY": (_NY,),
                "NC": (_NY,),
                "ND": (_CHI, _DEN),
                "OH": (_NY,),
                "OK": (_CHI,),
                "OR": (_LA, _DEN),
                "PA": (_NY,),
                "RI": (_NY,),
                "SC": (_NY,),
                "SD": (_CHI, _DEN),
                "TN": (_NY, _CHI),
                "TX": (_CHI, _DEN),
                "UT": (_DEN,),
                "VT": (_NY,),
                "VA": (_NY,),
                "WA": (_LA,),
                "WV": (_NY,),
                "WI": (_CHI,),
                "WY": (_DEN,),
                "PR": ("America/Puerto_Rico",),
                "GU": ("Pacific/Guam",),
                "VI": ("America/St_Thomas",),
                "AS": ("Pacific/Pago_Pago",),
                "MP": ("Pacific/Saipan",),
            }
        ),
        "CA": MappingProxyType(
            {
                "AB": ("America/Edmonton",),
                "BC": ("America/Vancouver", "America/Fort_Nelson"),
                "MB": ("America/Winnipeg",),
                "NB": ("America/Halifax",),
                "NL": ("America/St_Johns", "America/Halifax"),
                "NS": ("America/Halifax",),
                "NT": ("America/Edmonton",),
                "NU": ("America/Iqaluit", "America/Winnipeg", "America/Edmonton"),
                "ON": ("America/Toronto", "America/Winnipeg"),
                "PE": ("America/Halifax",),
                "QC": ("America/Toronto", "America/Halifax"),
                "SK": ("America/Regina", "America/Edmonton"),
                "YT": ("America/Whitehorse",),
            }
        ),
        "AU": MappingProxyType(
            {
                "NSW": ("Australia/Sydney", "Australia/Broken_Hill", "Australia/Lord_Howe"),
                "ACT": ("Australia/Sydney",),
                "VIC": ("Australia/Melbourne",),
                "QLD": ("Australia/Brisbane",),
                "SA": ("Australia/Adelaide",),
                "WA": ("Australia/Perth",),
                "TAS": ("Australia/Hobart",),
                "NT": ("Australia/Darwin",),
            }
        ),
    }
)

# Territories listed under a country's regions that an address naming only the country does
# not mean (they have ISO country codes of their own, and would empty the contact window).
_TERRITORIES = frozenset({("US", "PR"), ("US", "GU"), ("US", "VI"), ("US", "AS"), ("US", "MP")})

# Postal codes that pin a multi-zone region down to one zone.
POSTAL_ZONES: Mapping[tuple[str, str], Mapping[str, str]] = MappingProxyType(
    {
        ("AU", "NSW"): MappingProxyType(
            {"2880": "Australia/Broken_Hill", "2898": "Australia/Lord_Howe"}
        ),
    }
)
# The zone of a region's postal codes that are not in POSTAL_ZONES.
POSTAL_DEFAULT_ZONE: Mapping[tuple[str, str], str] = MappingProxyType(
    {("AU", "NSW"): "Australia/Sydney"}
)

# Countries on one legal time, whatever the tz database lists for their far corners.
SINGLE_ZONE_COUNTRIES: Mapping[str, str] = MappingProxyType(
    {
        "CN": "Asia/Shanghai",
        "TW": "Asia/Taipei",
        "HK": "Asia/Hong_Kong",
        "MO": "Asia/Macau",
        "GB": "Europe/London",
        "IE": "Europe/Dublin",
        "JP": "Asia/Tokyo",
        "KR": "Asia/Seoul",
        "SG": "Asia/Singapore",
        "IN": "Asia/Kolkata",
        "PH": "Asia/Manila",
        "TH": "Asia/Bangkok",
        "VN": "Asia/Ho_Chi_Minh",
        "MY": "Asia/Kuala_Lumpur",
        "DE": "Europe/Berlin",
        "FR": "Europe/Paris",
        "ES": "Europe/Madrid",
        "IT": "Europe/Rome",
        "NL": "Europe/Amsterdam",
        "NZ": "Pacific/Auckland",
    }
)

# Region names as addresses spell them, to the codes REGION_ZONES uses.
_REGION_NAME_TABLE = """
US AL Alabama|US AK Alaska|US AZ Arizona|US AR Arkansas|US CA California|US CO Colorado
US CT Connecticut|US DE Delaware|US DC District of Columbia|US FL Florida|US GA Georgia
US HI Hawaii|US ID Idaho|US IL Illinois|US IN Indiana|US IA Iowa|US KS Kansas|US KY Kentucky
US LA Louisiana|US ME Maine|US MD Maryland|US MA Massachusetts|US MI Michigan|US MN Minnesota
US MS Mississippi|US MO Missouri|US MT Montana|US NE Nebraska|US NV Nevada
US NH New Hampshire|US NJ New Jersey|US NM New Mexico|US NY New York|US NC North Carolina
US ND North Dakota|US OH Ohio|US OK Oklahoma|US OR Oregon|US PA Pennsylvania
US RI Rhode Island|US SC South Carolina|US SD South Dakota|US TN Tennessee|US TX Texas
US UT Utah|US VT Vermont|US VA Virginia|US WA Washington|US WV West Virginia|US WI Wisconsin
US WY Wyoming|US PR Puerto Rico|US GU Guam|US VI U.S. Virgin Islands|US AS American Samoa
US MP Northern Mariana Islands
CA AB Alberta|CA BC British Columbia|CA MB Manitoba|CA NB New Brunswick
CA NL Newfoundland and Labrador|CA NS Nova Scotia|CA NT Northwest Territories|CA NU Nunavut
CA ON Ontario|CA PE Prince Edward Island|CA QC Quebec|CA QC Québec|CA SK Saskatchewan
CA YT Yukon
AU NSW New South Wales|AU ACT Australian Capital Territory|AU VIC Victoria|AU QLD Queensland
AU SA South Australia|AU WA Western Australia|AU TAS Tasmania|AU NT Northern Territory
"""


def _region_names() -> Mapping[str, Mapping[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for entry in _REGION_NAME_TABLE.replace("\n", "|").split("|"):
        if entry.strip():
            country, code, name = entry.strip().split(" ", 2)
            table.setdefault(country, {})[name.upper()] = code
    return MappingProxyType({country: MappingProxyType(names) for country, names in table.items()})


_REGION_NAMES = _region_names()


@functools.lru_cache(maxsize=1)
def _zone_tab() -> tuple[Mapping[str, tuple[str, ...]], Mapping[str, str]]:
    """Country → zones and zone → country, from the tz database's own zone.tab."""
    by_country: dict[str, list[str]] = {}
    by_zone: dict[str, str] = {}
    text = resources.files("tzdata").joinpath("zoneinfo/zone.tab").read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        country, zone = fields[0], fields[2]
        by_country.setdefault(country, []).append(zone)
        by_zone[zone] = country
    return (
        MappingProxyType({country: tuple(zones) for country, zones in by_country.items()}),
        MappingProxyType(by_zone),
    )


def normalise_region(country: str, region: str | None) -> str | None:
    """`MA`, `US-MA`, `Massachusetts` and ` ma ` all become `MA`; None when nothing is given."""
    if not region or not region.strip():
        return None
    code = region.strip().upper()
    if code.startswith(f"{country}-"):
        code = code[len(country) + 1 :]
    names = _REGION_NAMES.get(country)
    if names is not None and code in names:
        return names[code]
    return code


def country_zones(country: str) -> tuple[str, ...]:
    country = country.strip().upper()
    if country in SINGLE_ZONE_COUNTRIES:
        return (SINGLE_ZONE_COUNTRIES[country],)
    regions = REGION_ZONES.get(country)
    if regions is not None:
        return _unique(
            zone
            for region, zones in regions.items()
            if (country, region) not in _TERRITORIES
            for zone in zones
        )
    return _zone_tab()[0].get(country, ())


def address_zones(address: Address) -> tuple[str, ...]:
    if not address.country or not address.country.strip():
        return ()
    country = address.country.strip().upper()
    if country in SINGLE_ZONE_COUNTRIES:
        return (SINGLE_ZONE_COUNTRIES[country],)
    region = normalise_region(country, address.region)
    regions = REGION_ZONES.get(country)
    if regions is not None and region is not None and region in regions:
        postal = POSTAL_ZONES.get((country, region))
        if postal is not None and address.postal_code and address.postal_code.strip():
            code = address.postal_code.strip()
            return (postal.get(code) or POSTAL_DEFAULT_ZONE[(country, region)],)
        return regions[region]
    return country_zones(country)


def phone_zones(number: str) -> tuple[str, ...]:
    """The zones of a geographic number; () for one that says nothing about location."""
    return _phone_facts(number)[0]


def phone_country(number: str) -> str | None:
    """The country of a number tied to a place (mobile included); None for toll-free etc."""
    return _phone_facts(number)[1]


@functools.lru_cache(maxsize=16384)
def parsed_number(text: str) -> phonenumbers.PhoneNumber | None:
    """libphonenumber's reading of an international number, None when it cannot read one;
    remembered (treat it as read-only), so the webhook's check of a new number and planning's
    question about its zones, moments later, cost one parse."""
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None


@functools.lru_cache(maxsize=16384)
def _phone_facts(number: str) -> tuple[tuple[str, ...], str | None]:
    """(zones, country) of a number, from one parse (libphonenumber is slow to ask)."""
    parsed = parsed_number(number)
    if parsed is None:
        return (), None
    if not phonenumbers.is_valid_number(parsed):
        return (), None
    if phonenumbers.number_type(parsed) in _NON_GEOGRAPHIC_TYPES:
        return (), None
    zones = tuple(
        zone
        for zone in phone_timezone.time_zones_for_number(parsed)
        if zone != phone_timezone.UNKNOWN_TIMEZONE
    )
    region: str | None = phonenumbers.region_code_for_number(parsed)
    country = region if region and region != "001" else None
    return (zones if len(zones) <= MAX_PHONE_ZONES else ()), country


def phone_facts_text(number: str) -> str:
    """What a number says of where its owner is, as one text to store beside it:
    `zone,zone|CC` (`|` alone for a number that says nothing)."""
    zones, country = _phone_facts(number)
    return ",".join(zones) + "|" + (country or "")


@functools.lru_cache(maxsize=65536)
def _facts_from_text(text: str) -> tuple[tuple[str, ...], str | None]:
    zones, _, country = text.partition("|")
    return tuple(zone for zone in zones.split(",") if zone), country or None


def _borrower_phone_facts(borrower: BorrowerState) -> list[tuple[tuple[str, ...], str | None]]:
    """(zones, country) of each of the borrower's numbers: as recorded with the number when
    it was stored, else worked out now."""
    recorded = borrower.phone_facts
    facts = []
    for index, phone in enumerate(borrower.phones):
        text = recorded[index] if index < len(recorded) else None
        facts.append(_facts_from_text(text) if text is not None else _phone_facts(phone))
    return facts


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@per_borrower
def candidate_zones(policy: Policy, borrower: BorrowerState) -> tuple[ZoneInfo, ...]:
    """Every zone the borrower may be in, most explicit first; the policy default if none."""
    names: list[str] = []
    if borrower.timezone:
        names.append(borrower.timezone.strip())
    if borrower.address is not None:
        names.extend(address_zones(borrower.address))
    for phone_zone_names, _ in _borrower_phone_facts(borrower):
        names.extend(phone_zone_names)
    zones = tuple(zone for zone in (_zone(name) for name in _unique(names)) if zone is not None)
    return zones or (policy.default_zone,)


@per_borrower
def borrower_countries(policy: Policy, borrower: BorrowerState) -> tuple[str, ...]:
    """Every country the borrower may be in (for holidays); the policy default if none."""
    countries: list[str] = []
    if borrower.address is not None and borrower.address.country:
        countries.append(borrower.address.country.strip().upper())
    if borrower.timezone:
        country = _zone_tab()[1].get(borrower.timezone.strip())
        if country is not None:
            countries.append(country)
    for _, phone_region in _borrower_phone_facts(borrower):
        if phone_region is not None:
            countries.append(phone_region)
    return _unique(countries) or (policy.default_country,)


def jurisdiction_codes(borrower: BorrowerState) -> tuple[str, ...]:
    """The jurisdiction keys that apply, broadest first: `US`, then `US-MA`."""
    address = borrower.address
    if address is None or not address.country or not address.country.strip():
        return ()
    country = address.country.strip().upper()
    region = normalise_region(country, address.region)
    return (country,) if region is None else (country, f"{country}-{region}")


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))

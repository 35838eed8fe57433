"""Bodies the API documents beside the ones FastAPI derives."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Accepted(BaseModel):
    status: Literal["accepted", "duplicate"]
    id: str


class FieldProblem(BaseModel):
    field: str | None = Field(description="the offending field, dotted (`segment.dpd_min`)")
    detail: str


class Problem(BaseModel):
    """Every 4xx and 5xx answer of the API (the unsubscribe pages for people aside)."""

    detail: str = Field(description="what is wrong, naming the field where there is one")
    field: str | None = Field(
        default=None, description="the offending field or parameter, where there is one"
    )
    errors: list[FieldProblem] | None = Field(
        default=None, description="every field at fault, where several can be (422)"
    )
    status: str | None = Field(
        default=None, description="a campaign's status, when a transition is refused (409)"
    )

"""Bodies the API documents beside the ones FastAPI derives."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Accepted(BaseModel):
    status: str = Field(examples=["accepted", "duplicate"])
    id: str


class Problem(BaseModel):
    detail: str

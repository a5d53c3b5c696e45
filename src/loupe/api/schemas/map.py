"""2-D map schemas: compact parallel arrays, one entry per mapped item."""

from __future__ import annotations

from pydantic import BaseModel, Field

from loupe.api.schemas.common import DbId
from loupe.api.schemas.items import ItemPublic
from loupe.api.schemas.jobs import JobPublic


class MapPublic(BaseModel):
    method: str = Field(description="umap | tsne")
    backbone: str = Field(description="the features the map was computed on")
    model_version_id: int | None = Field(description="the active model that colours it")
    classes: list[str] = Field(description="what the human and draft indices point at")
    item_ids: list[int]
    x: list[float] = Field(description="map position in [-1, 1]")
    y: list[float]
    human: list[int] = Field(
        description="class index of the human label; -1 unlabelled; -2 labelled, no class"
    )
    draft: list[int] = Field(description="class index of the active model's draft; -1 none")
    uncertainty: list[float | None] = Field(description="the active model's uncertainty")
    flagged: list[int] = Field(description="1 where the active model flagged the item")
    stale: bool = Field(description="the features changed since: POST again to recompute")
    job: JobPublic | None = Field(description="the latest map job of the project")
    computed: bool = Field(description="false before the first map: the arrays are empty")
    message: str = Field(default="", description="why there is no map yet")


class ItemsByIdRequest(BaseModel):
    item_ids: list[DbId] = Field(max_length=5000)


class ItemsByIdPublic(BaseModel):
    data: list[ItemPublic] = Field(description="in the order asked; unknown ids left out")

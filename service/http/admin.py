"""Admin HTTP routes: the registry and API keys.  Every route needs an admin key, always."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from experts_registry.errors import ValidationFailed
from experts_registry.keys import ROLES, new_key
from experts_registry.model import Expert
from experts_registry.upstream import check_secret_ref, check_upstream

from ..core.config import Settings
from ..pipeline.gateway import Gateway
from .auth import require_admin


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(default="user", pattern="^(" + "|".join(ROLES) + ")$")
    models: list[str] = Field(default_factory=list, max_length=1000)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


def admin_routes(gw: Gateway, settings: Settings) -> APIRouter:
    api = APIRouter(prefix="/admin")

    def admin(request: Request) -> None:
        require_admin(request.scope["conclave.principal"])

    @api.get("/experts")
    async def list_experts(request: Request) -> list[dict]:
        admin(request)
        return [e.to_dict() for e in gw.store.list()]

    @api.get("/experts/{name}")
    async def show_expert(name: str, request: Request) -> dict:
        admin(request)
        return gw.store.get(name).to_dict()

    @api.post("/experts", status_code=201)
    async def add_expert(record: dict[str, Any], request: Request, replace: bool = False) -> dict:
        admin(request)
        try:
            expert = Expert.from_dict(record)
        except TypeError as exc:
            raise ValidationFailed(f"not an expert record: {exc}") from None
        check_upstream(expert.api_base, settings.allow_unsafe_upstreams)
        check_secret_ref(expert.api_key_env, settings.expert_secrets)
        gw.store.add(expert, replace=replace)
        return expert.to_dict()

    @api.delete("/experts/{name}")
    async def remove_expert(name: str, request: Request) -> dict:
        admin(request)
        gw.store.remove(name)
        return {"removed": name}

    @api.get("/keys")
    async def list_keys(request: Request) -> list[dict]:
        admin(request)
        return [k.public() for k in gw.store.list_keys()]

    @api.post("/keys", status_code=201)
    async def create_key(spec: NewKey, request: Request) -> JSONResponse:
        admin(request)
        secret, key = new_key(spec.name, spec.role, spec.models, spec.rpm, spec.tpm)
        gw.store.put_key(key)
        return JSONResponse({"secret": secret, "key": key.public()}, status_code=201)

    @api.delete("/keys/{key_id}")
    async def revoke_key(key_id: str, request: Request) -> dict:
        admin(request)
        gw.store.put_key(replace(gw.store.get_key(key_id), revoked=True))
        return {"revoked": key_id}

    return api

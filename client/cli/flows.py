"""flowctl's per-flow commands: list, show and change flows and the current flow."""

from __future__ import annotations

from typing import Any

import orjson

from ..exitcodes import USAGE
from ..model import Flow
from .context import CliError, Ctx
from .output import emit_json

# ------------------------------------------------------------------ reads


def _flow_json(f: Flow, current: str | None) -> dict[str, Any]:
    return {**f.to_dict(), "current": f.id == current}


def cmd_ls(ctx: Ctx) -> int:
    flows, current = ctx.client.get_all_flows(), ctx.client.get_current_flow_id()
    if ctx.args.json:
        emit_json({"current_flow_id": current,
                   "flows": [_flow_json(f, current) for f in flows.values()]})
        return 0
    if not flows:
        print("no flows")
    for f in flows.values():
        print(f"{'*' if f.id == current else ' '} {f.id:<16} {len(f.plans):>5} plans  {f.name}")
    return 0


def _print_flow(f: Flow, current: str | None) -> None:
    mark = " (current)" if f.id == current else ""
    for label, value in (("id", f.id + mark), ("name", f.name), ("revision", f.revision),
                         ("created", f.created), ("updated", f.updated),
                         ("plans", len(f.plans))):
        print(f"{label:<9} {value}")
    for i, plan in enumerate(f.plans):
        print(f"  [{i}] {orjson.dumps(plan).decode()}")
    for key, value in f.extra.items():
        print(f"{key:<9} {orjson.dumps(value).decode()}")


def cmd_show(ctx: Ctx) -> int:
    f = ctx.client.get_flow_by_id(ctx.args.id)
    if f is None:
        raise CliError(f"no flow {ctx.args.id!r}")
    current = ctx.client.get_current_flow_id()
    if ctx.args.json:
        emit_json(_flow_json(f, current))
    else:
        _print_flow(f, current)
    return 0


def cmd_current(ctx: Ctx) -> int:
    f = ctx.client.get_current()
    if ctx.args.json:
        emit_json(None if f is None else f.to_dict())
    elif f is not None:
        print(f"{f.id}  {f.name}")
    if f is None:
        raise CliError("no current flow")
    return 0


# ------------------------------------------------------------------ writes


def cmd_add(ctx: Ctx) -> int:
    plans = None
    if ctx.args.plans is not None:
        try:
            plans = orjson.loads(ctx.args.plans)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"--plans is not valid JSON: {exc}", USAGE) from None
        if not isinstance(plans, list) or not all(isinstance(p, dict) for p in plans):
            raise CliError("--plans must be a JSON list of objects, e.g. "
                           "'[{\"title\": \"draft\"}]'", USAGE)
    print(ctx.client.add_flow(ctx.args.name, plans))
    return 0


def cmd_rm(ctx: Ctx) -> int:
    if not ctx.client.delete_flow(ctx.args.id):
        raise CliError(f"no flow {ctx.args.id!r}")
    print(f"deleted {ctx.args.id}")
    return 0


def cmd_use(ctx: Ctx) -> int:
    if not ctx.client.set_current(ctx.args.id):
        raise CliError(f"no flow {ctx.args.id!r}; the current flow is unchanged")
    print(f"current flow: {ctx.args.id}")
    return 0


def cmd_rename(ctx: Ctx) -> int:
    f = ctx.client.update_flow(ctx.args.id, name=ctx.args.name)
    print(f"renamed {f.id} to {f.name!r} (revision {f.revision})")
    return 0


def cmd_save(ctx: Ctx) -> int:
    if not ctx.client.save(force=True):
        raise CliError("the daemon could not write flows.json (see its log); "
                       "every acknowledged write is still in the journal")
    print(f"flows.json written at revision {ctx.client.ping()['revision']}")
    return 0


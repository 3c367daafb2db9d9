"""Normalize whatever a flows.json held into a schema-3.0 document.

Pure (no I/O) so the in-memory and the streaming loader share one set of
rules: :class:`Migrator` takes flows one at a time, then the top-level fields;
:func:`normalize` drives it over a parsed document. One pass, no copies: this
runs over 100k+ flows at daemon start (budget ~100 ms per 100k); a valid flow
is taken as is or rebuilt once (:mod:`.flow_layouts`), only broken ones take the
slow, noted path.
Notes are bounded. Data is never dropped: a value that cannot stay where it
was is kept next to it under ``<key>_invalid``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from itertools import repeat
from typing import Any

from flowd_client.flowids import Deriver

from .flow_layouts import FLOW_KEYS, MISSING, OLD_TOOL_KEYS, as_is, old_tool_form, rebuilt

VERSION = "3.0"
_KNOWN = frozenset(FLOW_KEYS)
_TOP_KEYS = ("version", "meta", "current_flow_id", "flows")
MAX_NOTES = 50
#: field -> (type, factory of the default (None: now), how the default reads in a note)
_FIELD_RULES: dict[str, tuple[type, Any, str]] = {
    "name": (str, str, "''"), "plans": (list, list, "[]"),
    "created": (str, None, "now"), "updated": (str, None, "now")}
_MISSING = MISSING


class CorruptFileError(Exception):
    """The document cannot be used as a store; the caller keeps its bytes aside."""


def _now() -> str:
    """Local naive ISO 8601, the seed's timestamp format (a seam for tests)."""
    return datetime.now().isoformat(timespec="microseconds")


_JSON_KINDS = {"dict": "an object", "list": "an array", "str": "a string", "int": "a number",
               "float": "a number", "bool": "a boolean", "NoneType": "null"}


def json_kind(value: object, article: bool = True) -> str:
    """The value's JSON type for messages: "an array" (or "array" without article)."""
    name = type(value).__name__
    kind = _JSON_KINDS.get(name, name)
    return kind if article else kind.split(" ")[-1]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def stash(target: dict[str, Any], base: str, value: object) -> str:
    """Keep ``value`` under ``base`` (or ``base_2``, ...): never overwrite a key."""
    key, n = base, 1
    while key in target:
        n += 1
        key = f"{base}_{n}"
    target[key] = value
    return key


def check_flows_shape(kind: str, is_v3: bool) -> None:
    """Refuse a ``flows`` value no rule can turn into a store.

    ``kind`` is "list", "dict", "missing" or another Python type name. Why 3.0 is
    stricter: a 3.0 file is ours and has no backup, so a surprising shape
    means the file is not what it claims; a legacy file is kept as a backup
    before the first 3.0 write, so an absent ``flows`` may mean "no flows".
    """
    if kind == "dict" or (kind in ("list", "missing") and not is_v3):
        return
    want = "an object" if is_v3 else "an array or an object"
    got = "missing" if kind == "missing" else _JSON_KINDS.get(kind, kind)
    version = "version 3.0" if is_v3 else "pre-3.0"
    raise CorruptFileError(f"{version} file: 'flows' is {got}, expected {want}")


class NoteLog:
    """At most ``limit`` notes, then a count: 100k broken flows must not make 100k lines."""

    def __init__(self, limit: int = MAX_NOTES) -> None:
        self.kept: list[str] = []
        self.more, self.limit = 0, limit

    def add(self, note: str) -> None:
        """Keep the note if there is room, else only count it."""
        if len(self.kept) < self.limit:
            self.kept.append(note)
        else:
            self.more += 1

    def as_list(self) -> list[str]:
        """The kept notes, then "... and N more" if some were only counted."""
        return self.kept + ([f"... and {self.more} more"] if self.more else [])


class Migrator:
    """Builds the normalized ``flows`` dict one flow at a time, then the document.

    Feed it with :meth:`add_flows` (list form: ids come from the flows),
    :meth:`add_items` (dict form: ids are the keys) or :meth:`add_flow`, in
    file order, then call :meth:`finish` once with the top-level fields other
    than ``flows``. Flow dicts are rebuilt (key order fixed), their values
    (plans, unknown keys) are taken as they are, not copied.
    """

    def __init__(self) -> None:
        self.flows: dict[str, dict[str, Any]] = {}
        self.notes, self.now = NoteLog(), _now()
        self.max_revision = self.count = 0
        self.list_form = False
        #: entries of ``flows`` that are not objects, kept under ``flows_invalid``
        self.invalid: dict[str, Any] = {}
        self._dup_next: dict[str, int] = {}
        #: ids for flows that have none, derived from their content
        self.deriver = Deriver()

    def add_flow(self, item: object, key: str | None = None) -> None:
        """One flow: ``key`` is its key in a dict-form file, None in a list-form one."""
        if key is None:
            self.list_form = True
        self._add_pairs(((key, item),))

    def add_flows(self, items: Iterable[object]) -> None:
        """List-form flows, in file order."""
        self.list_form = True
        self._add_pairs(zip(repeat(None), items))

    def add_items(self, items: Iterable[tuple[str, object]]) -> None:
        """Dict-form flows as (key, flow) pairs, in file order."""
        self._add_pairs(items)

    def _add_pairs(self, pairs: Iterable[tuple[str | None, object]]) -> None:
        """The hot loop: a well-formed flow costs a key check and at most one dict."""
        flows, canon, old_form = self.flows, FLOW_KEYS, OLD_TOOL_KEYS
        maxrev, pos, canonical, old_tool = self.max_revision, self.count, True, True
        for key, item in pairs:
            pos += 1
            new = None
            if type(item) is dict:
                # files are homogeneous: stop looking for a layout at the first other one
                layout = tuple(item)
                if canonical and layout[:6] == canon:
                    new = as_is(key, item, flows)
                elif old_tool and layout == old_form:
                    canonical = False
                    new = old_tool_form(key, item, flows)
                else:
                    canonical = old_tool = False
                    new = rebuilt(key, item, flows)
            if new is None:
                self.count = pos
                new = self._repair(pos, key, item)
                if new is None:
                    continue
            flows[new["id"]] = new
            rev = new["revision"]
            if rev > maxrev:
                maxrev = rev
        self.count, self.max_revision = pos, maxrev

    def _repair(self, pos: int, key: str | None, item: object) -> dict[str, Any] | None:
        """A flow that needs a change: fix it field by field, noting each change.

        Returns the new flow, or None for an entry that is not a flow at all
        (kept under ``flows_invalid``).
        """
        if type(item) is not dict:
            label = f"#{pos}" if key is None else str(key)
            where = stash(self.invalid, label, item)
            self.notes.add(f"flow entry {label} is {json_kind(item)}, not an object: "
                           f"kept under flows_invalid[{where!r}]")
            return None
        fid, raw = self._pick_id(key, item), item.get("id", _MISSING)
        where = f"flow #{pos}" if key is None else f"flow with key {key!r}"
        who = where if fid is None else f"flow {fid}"
        invalid = fid is None and key is None and raw not in (_MISSING, None, "")
        aside: dict[str, Any] = {"id_invalid": raw} if invalid else {}
        new = {"id": fid, "name": self._field(who, item, "name", aside),
               "plans": self._field(who, item, "plans", aside),
               "created": self._field(who, item, "created", aside),
               "updated": self._field(who, item, "updated", aside),
               "revision": self._revision(who, item, aside)}
        for k, v in item.items():
            if k not in _KNOWN:
                new[k] = v
        for k, v in aside.items():
            stash(new, k, v)
        if fid is None:  # from the content, now that it is final: the same file, the same id
            new["id"] = fid = self.deriver.derive(new, lambda c: c not in self.flows)
            self.notes.add(f"{where} had invalid id {_short(raw)}: assigned {fid}, old value kept "
                           "as id_invalid" if invalid else f"{where} had no id: assigned {fid}")
        return new

    def _pick_id(self, key: str | None, item: dict[str, Any]) -> str | None:
        """The key (dict form) or the id field (list form), de-duplicated; None when the
        flow has neither: its id is then derived from its content."""
        raw = item.get("id", _MISSING)
        if key is not None and type(key) is str and key:
            if raw is not _MISSING and raw != key:
                self.notes.add(f"flow {key}: id field {_short(raw)} disagreed with its key: "
                               "key wins")
            fid = key
        elif type(raw) is str and raw:
            fid = raw
            if key is not None:
                self.notes.add(f"flow with key {key!r}: its id field {raw} used as key")
        else:
            return None
        if fid in self.flows:
            old, fid = fid, self._dup_id(fid)
            self.notes.add(f"duplicate id {old} renamed {fid}")
        return fid

    def _dup_id(self, fid: str) -> str:
        """``<id>_dup``, ``<id>_dup2``, ...: the first free one (nothing is freed meanwhile)."""
        n = self._dup_next.get(fid, 1)
        while True:
            cand = f"{fid}_dup" if n == 1 else f"{fid}_dup{n}"
            n += 1
            if cand not in self.flows:
                self._dup_next[fid] = n
                return cand

    def _field(self, who: str, item: dict[str, Any], field: str, aside: dict[str, Any]) -> Any:
        """``name``/``plans``/``created``/``updated``: kept if of the right type,
        else a default ("" / [] / now); a wrong-typed value is kept aside (a
        number or boolean name is coerced with str() instead)."""
        want, make, shown = _FIELD_RULES[field]
        value = item.get(field, _MISSING)
        if type(value) is want:
            return value
        default = self.now if make is None else make()
        if value is _MISSING or value is None:
            self.notes.add(f"{who} had no {field}: set to {shown}")
        elif field == "name" and isinstance(value, (int, float)):
            self.notes.add(f"{who}: name {_short(value)} ({json_kind(value)}) coerced to "
                           f"{str(value)!r}")
            return str(value)
        else:
            aside[f"{field}_invalid"] = value
            self.notes.add(f"{who}: {field} of type {json_kind(value, False)} kept as "
                           f"{field}_invalid, {field} set to {shown}")
        return default

    def _revision(self, who: str, item: dict[str, Any], aside: dict[str, Any]) -> int:
        rev = item.get("revision", 0)
        if type(rev) is int:
            return rev
        aside["revision_invalid"] = rev
        self.notes.add(f"{who}: revision {_short(rev)} is not an integer: kept as "
                       "revision_invalid, revision set to 0")
        return 0

    def finish(self, top: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The normalized document and the notes; ``top`` is the file's top level.

        ``top["flows"]``, if present, is ignored: the flows are the ones added.
        """
        version = top.get("version", _MISSING)
        is_v3 = version == VERSION
        if self.list_form:
            check_flows_shape("list", is_v3)
        doc: dict[str, Any] = {"version": VERSION, "meta": None, "current_flow_id": None,
                               "flows": self.flows}
        legacy_keys = () if is_v3 else ("current_flow",)
        for k, v in top.items():
            if k not in _TOP_KEYS and k not in legacy_keys:
                doc[k] = v
        doc["meta"] = self._meta(top.get("meta", _MISSING), doc, is_v3)
        doc["current_flow_id"] = self._current(top, doc, is_v3)
        if "flows" not in top:
            self.notes.add("the file had no 'flows': the store starts empty")
        if self.invalid:
            where = stash(doc, "flows_invalid", self.invalid)
            self.notes.add(f"{len(self.invalid)} flow entries that were not objects are kept "
                           f"under {where}")
        notes = self.notes.as_list()
        if not is_v3:
            was = "no version (1.x)" if version is _MISSING else f"version {_short(version)}"
            form = " (flows were an array)" if self.list_form else ""
            notes.insert(0, f"migrated from {was} to 3.0: {len(self.flows)} flows{form}")
        return doc, notes

    def _meta(self, raw: object, doc: dict[str, Any], is_v3: bool) -> dict[str, Any]:
        """Keep unknown meta keys; ensure integer ``file_revision`` and ``revision``."""
        if type(raw) is dict:
            meta = raw
        else:
            meta = {}
            if raw is not _MISSING and raw is not None:
                where = stash(doc, "meta_invalid", raw)
                self.notes.add(f"meta was {json_kind(raw)}, not an object: kept as {where}, "
                               "fresh meta")
        for field in ("file_revision", "revision"):
            value = meta.get(field, 0)
            if type(value) is not int:
                where = stash(meta, f"{field}_invalid", value)
                self.notes.add(f"meta.{field} {_short(value)} is not an integer: kept as "
                               f"meta.{where}, set to 0")
                value = 0
            meta[field] = value
        if not is_v3 and meta["revision"] < self.max_revision:
            # flows carry revisions: the store's next revision must be above all of them
            self.notes.add(f"meta.revision raised from {meta['revision']} to "
                           f"{self.max_revision}, the highest flow revision")
            meta["revision"] = self.max_revision
        return meta

    def _current(self, top: dict[str, Any], doc: dict[str, Any], is_v3: bool) -> str | None:
        """``current_flow_id`` naming an existing flow, else the first flow, else None.

        Pre-3.0 files may hold the old ``current_flow`` (an object with an id, or
        an id): it collapses to ``current_flow_id``, which wins when both name a flow.
        """
        flows = self.flows
        cid = top.get("current_flow_id")
        if type(cid) is str and cid in flows:
            return cid
        old = None if is_v3 else top.get("current_flow")
        old_id = old.get("id") if type(old) is dict else old
        if type(old_id) is str and old_id in flows:
            self.notes.add(f"current_flow collapsed to current_flow_id {old_id}")
            return old_id
        if old is not None and type(old) not in (dict, str):
            where = stash(doc, "current_flow_invalid", old)
            self.notes.add(f"current_flow of type {json_kind(old, False)} kept as {where}")
        first = next(iter(flows), None)
        if cid is not None:
            what = f"current_flow_id {_short(cid)} names no flow"
        elif type(old_id) is str:
            what = f"current_flow {_short(old_id)} names no flow"
        elif first is not None:
            what = "no current flow"
        else:
            return None
        self.notes.add(f"{what}: set to {first if first is not None else 'null'}")
        return first


def normalize(raw: object) -> tuple[dict[str, Any], list[str]]:
    """Turn a parsed flows.json (any version) into a schema-3.0 document plus notes.

    Takes ownership of ``raw``: its flow values and its meta dict end up in
    the result (no copies). A top-level list is a legacy file's flows list.
    Raises :class:`CorruptFileError` when no rule can make a store of it.
    """
    if type(raw) is list:
        raw = {"flows": raw}
    if type(raw) is not dict:
        raise CorruptFileError(f"top level is {json_kind(raw)}, expected an object")
    flows = raw.get("flows", _MISSING)
    kind = "missing" if flows is _MISSING else type(flows).__name__
    check_flows_shape(kind, raw.get("version") == VERSION)
    migrator = Migrator()
    if type(flows) is list:
        migrator.add_flows(flows)
    elif type(flows) is dict:
        migrator.add_items(flows.items())
    return migrator.finish(raw)

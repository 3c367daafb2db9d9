"""Paged listings of the store (flowd.paging), both forms, without a daemon."""

from __future__ import annotations

from typing import Any

import orjson
from flowd_client.protocol import PAGE_JSON, pack, unpack
from test_store import write

from flowd.paging import DECODED_SHARE, Pager
from flowd.store import Store


def unpack_reply(reply: bytes) -> Any:
    return unpack(reply, 1 << 30, 1 << 30)


def listing(pager: Pager, store: Store, **args: Any) -> tuple[list[dict[str, Any]], int]:
    """Every flow a listing gives, in order, and its pages."""
    flows: list[dict[str, Any]] = []
    page = unpack_reply(pager.page(store, args))
    for pages in range(1, 10_000):
        got = orjson.loads(page[PAGE_JSON]).values() if args.get("json") else page["flows"]
        flows += got
        if page["next"] is None:
            return flows, pages
        page = unpack_reply(pager.page(store, {**args, "cursor": page["next"]}))
    raise AssertionError("the listing never ended")


def filled(n: int) -> Store:
    store = Store()
    for i in range(n):
        write(store, "add_flow", name=f"flow \u2028 {i} \"q\" 한글", plans=[{"i": i, "f": i / 7}],
              extra={"k": {"nested": [i, None, True]}})
    return store


def test_json_pages_list_what_decoded_pages_list() -> None:
    store = filled(50)
    expected = [store.get(fid) for fid in store.flows]
    for page_bytes in (1 << 10, 1 << 20):
        for limit in (None, 7):
            args = {} if limit is None else {"limit": limit}
            decoded, _ = listing(Pager(page_bytes), store, **args)
            as_json, pages = listing(Pager(page_bytes), store, json=True, **args)
            assert decoded == as_json == expected
            if page_bytes == 1 << 10:
                assert pages > 10  # bounded in bytes: a flow is about 200 of them
            else:
                assert pages == (8 if limit else 1)


def test_listings_begun_at_one_state_share_its_copy_and_no_later_one() -> None:
    store, pager = filled(30), Pager()
    first = unpack_reply(pager.page(store, {"json": True, "limit": 5}))
    second = unpack_reply(pager.page(store, {"limit": 5}))
    a, b = (pager.cursors[p["next"]] for p in (first, second))
    assert a.lines is b.lines
    write(store, "add_flow", name="later")
    third = unpack_reply(pager.page(store, {"limit": 5}))
    c = pager.cursors[third["next"]]
    assert c.lines is not a.lines and len(c.lines) == 31 and len(a.lines) == 30
    store.load({"flows": {}, "meta": {"revision": store.revision}})  # same revision, reloaded
    assert pager._capture(store) == []


def test_decoded_pages_end_at_a_share_of_the_page_bytes() -> None:
    """A decoded page costs the loop a decode and a pack per flow: it ends sooner."""
    store, cap = filled(300), 64 << 10
    pager = Pager(cap)
    page = unpack_reply(pager.page(store, {}))
    size = len(pack(page["flows"]))
    assert cap // DECODED_SHARE - 300 < size <= cap // DECODED_SHARE + 300
    json_page = unpack_reply(Pager(cap).page(store, {"json": True}))
    assert len(json_page[PAGE_JSON]) > cap // 2  # the whole page_bytes

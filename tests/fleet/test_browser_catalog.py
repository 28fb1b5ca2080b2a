"""The data browser's catalog, admin token and thumbnails, without a browser: keyset pages that cover the
list exactly once in both directions, filters, following the store's index (and its rebuild), round
memberships, constant-time token checks, the bounded thumbnail cache and the placeholder."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browserkit as bk  # noqa: E402

from edgedepth.errors import ConfigError, DataError  # noqa: E402
from edgedepth.fleet.browser.auth import AdminAuth, new_token_file, read_token_file  # noqa: E402
from edgedepth.fleet.browser.catalog import (  # noqa: E402
    _COLUMNS,
    SORTS,
    Catalog,
    FrameQuery,
    decode_cursor,
    frame_row,
)
from edgedepth.fleet.browser.history import History  # noqa: E402
from edgedepth.fleet.browser.images import ThumbnailCache, colorize_depth, render  # noqa: E402
from edgedepth.fleet.index import FrameIndex  # noqa: E402


class _IndexOnly:
    """A store stand-in with just the frame index (what the catalog follows)."""

    def __init__(self, path: Path) -> None:
        self.index = FrameIndex(path)


def _catalog(tmp_path: Path, n: int) -> Catalog:
    store = _IndexOnly(tmp_path / "index.db")
    for i in range(n):
        store.index.add(bk.synthetic_meta(i))
    cat = Catalog(tmp_path / "browse.db", store, refresh_s=0)
    assert cat.refresh(force=True) == n
    return cat


def _walk(cat: Catalog, q: FrameQuery) -> list:
    ids = []
    page = cat.page(q)
    while True:
        ids += [r["id"] for r in page.rows]
        if page.next_cursor is None:
            break
        q.after, q.before = decode_cursor(page.next_cursor), None
        page = cat.page(q)
        assert page.prev_cursor is not None
    return ids


@pytest.mark.parametrize("sort", ["score", "novelty", "captured", "device", "bytes"])
@pytest.mark.parametrize("desc", [True, False])
def test_keyset_pages_cover_every_match_once_in_order(tmp_path, sort, desc):
    cat = _catalog(tmp_path, 403)
    col = SORTS[sort]
    order = "DESC" if desc else "ASC"
    rows = cat._db.execute(f"SELECT id, {col} FROM frames WHERE domain = 'night' "
                           f"ORDER BY {col} {order}, id {order}").fetchall()
    q = FrameQuery(sort=sort, desc=desc, filters={"domain": "night"}, limit=17)
    ids = _walk(cat, q)
    assert ids == [r[0] for r in rows]
    # and backwards from the last page: the same pages, reversed
    last = cat.page(FrameQuery(sort=sort, desc=desc, filters={"domain": "night"}, limit=17,
                               after=(rows[-18][1], rows[-18][0])))
    assert [r["id"] for r in last.rows] == [r[0] for r in rows[-17:]] and last.next_cursor is None
    back = cat.page(FrameQuery(sort=sort, desc=desc, filters={"domain": "night"}, limit=17,
                               before=decode_cursor(last.prev_cursor)))
    assert [r["id"] for r in back.rows] == [r[0] for r in rows[-34:-17]]


def test_filters_and_total(tmp_path):
    cat = _catalog(tmp_path, 200)
    metas = [bk.synthetic_meta(i) for i in range(200)]
    page = cat.page(FrameQuery(filters={"device": "dev-03", "selection": "hard"}, limit=500))
    want = {m["id"] for m in metas if m["device_id"] == "dev-03" and m["selection"] == "hard"}
    assert {r["id"] for r in page.rows} == want and page.total == len(want)
    page = cat.page(FrameQuery(score_min=10, score_max=60, limit=500))
    assert {r["id"] for r in page.rows} == {m["id"] for m in metas if 10 <= m["score"] <= 60}
    # the label kind: the `labels` list, else the kind of an uploaded depth file, else "none"
    assert cat.page(FrameQuery(filters={"label": "depth_gt"}, limit=500)).total == 200
    bare = dict(metas[0], labels=[], files={"rgb.jpg": metas[0]["files"]["rgb.jpg"]})
    assert frame_row(bare)[_COLUMNS.index("label")] == "none"
    assert frame_row(bare)[_COLUMNS.index("depth")] is None
    assert cat.page(FrameQuery(filters={"device": "no-such"})).total == 0
    with pytest.raises(DataError):
        decode_cursor("not a cursor")


def test_catalog_follows_new_items_and_a_rebuilt_index(tmp_path):
    cat = _catalog(tmp_path, 10)
    gen = cat.generation
    cat.store.index.add(bk.synthetic_meta(10))
    assert cat.refresh(force=True) == 1 and cat.count() == 11 and cat.generation > gen
    assert cat.refresh(force=True) == 0
    # the index is rebuilt (deleted, reindexed in another order): the catalog starts over from it
    cat.store.index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp_path / "index.db") + suffix).unlink(missing_ok=True)
    cat.store.index = FrameIndex(tmp_path / "index.db")
    for i in (3, 1, 2):
        cat.store.index.add(bk.synthetic_meta(i))
    cat.refresh(force=True)
    assert cat.count() == 3


def test_round_memberships_from_lineage(tmp_path):
    metas = bk.make_store(tmp_path / "store", 6)
    bk.make_rounds(tmp_path / "rounds", metas)
    from edgedepth.fleet.store.local import LocalStore

    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    cat = Catalog(tmp_path / "browse.db", store, refresh_s=0)
    hist = History(str(tmp_path / "rounds"), None, cat, refresh_s=0)
    rounds = hist.rounds()
    cat.refresh(force=True)
    assert [r.name for r in rounds] == ["0", "1"] and rounds[0].gate.verdict == "promote"
    page = cat.page(FrameQuery(round="1", limit=50))
    assert {r["id"] for r in page.rows} == {m["id"] for m in metas[3:]}
    assert all(r["rounds"][0]["round"] == "1" for r in page.rows)
    store.close()


def test_admin_token_checks(tmp_path):
    token = new_token_file(tmp_path / "t")
    assert read_token_file(tmp_path / "t") == token
    assert (tmp_path / "t").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError):
        new_token_file(tmp_path / "t")  # never overwrites
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError):
        read_token_file(tmp_path / "short")
    auth = AdminAuth(token)
    assert auth.allowed(f"Bearer {token}", None)
    assert auth.allowed(None, auth.session)
    assert not auth.allowed(f"Bearer {token}x", None)
    assert not auth.allowed("Bearer edt_device_token_of_some_camera", None)
    assert not auth.allowed(None, token)  # the token itself is not a session cookie
    assert not auth.allowed(None, None)
    assert AdminAuth(token + "2").session != auth.session


def test_thumbnails_cache_is_bounded_and_bad_files_raise(tmp_path):
    cache = ThumbnailCache(max_bytes=1000)
    for i in range(10):
        cache.put(("k", i), b"x" * 300)
    assert cache.bytes <= 1000 and len(cache) == 3 and cache.get(("k", 9)) is not None
    assert cache.get(("k", 0)) is None
    with pytest.raises(DataError):
        render(b"not an image", "rgb.png", "rgb", None, 160, (0.5, 20))
    ok, png = cv2.imencode(".png", np.full((48, 64), 2000, np.uint16))
    jpg = render(png.tobytes(), "depth.png", "depth_sensor", "mm_uint16", 96, (0.5, 20))
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (72, 96, 3)


def test_depth_colours_run_from_bright_near_to_dark_far():
    img = colorize_depth(np.array([[0.5, 2.0, 20.0, 0.0]], np.float32), 0.5, 20.0)
    brightness = img.astype(int).sum(axis=2)[0]
    assert brightness[0] > brightness[1] > brightness[2]
    assert tuple(img[0, 3]) == (48, 48, 48)  # no depth: grey


class _ListingStore:
    """A store without a local index (like s3://): only iter_items(since)."""

    def __init__(self, metas) -> None:
        self.metas = metas
        self.since = []

    def iter_items(self, since=None):
        self.since.append(since)
        return iter([m for m in self.metas if since is None or m["received_at"] > since])


def test_catalog_follows_a_store_without_an_index(tmp_path):
    metas = [bk.synthetic_meta(i) for i in range(30)]
    store = _ListingStore(metas[:20])
    cat = Catalog(tmp_path / "browse.db", store, refresh_s=0)
    assert cat.refresh(force=True) == 20 and store.since == [None]
    # ten more arrive; one was committed late with a receive time before the newest one seen
    late = dict(metas[20], received_at=metas[18]["received_at"])
    store.metas = metas[:20] + [late] + metas[21:]
    assert cat.refresh(force=True) == 10 and cat.count() == 30
    assert store.since[-1] is not None and store.since[-1] < late["received_at"]

"""`mxgate gc` on the fs store, against the events a real pipeline wrote.

One scenario: a clean and a GTUBE message go through the pipeline (one delivered, one held in
quarantine); two bodies nobody references are put into the store beside them. gc keeps both
referenced bodies (reporting the quarantined one as such), leaves an orphan alone until it has
stayed unreferenced for the grace period, then deletes it, and deletes at once with no grace.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from support import samples
from support.cli import MXGATE
from support.pipeline import REPO, MakePipeline, queued_id, wait_for
from support.sink import SinkThread

from mxgate import catalog
from mxgate.blobstore import FsBlobStore, key_for
from mxgate.kafka import read_events
from ops.gc import collect

pytestmark = pytest.mark.integration


def test_gc_removes_only_unreferenced_bodies(
    sink: SinkThread, make_pipeline: MakePipeline, tmp_path: Path
) -> None:
    p = make_pipeline(
        sink.port,
        extra_env={"MXGATE_OPS__STATE_PATH": str(tmp_path / "ops")},
    )
    quarantine = catalog.name(catalog.QUARANTINE, p.prefix)
    delivery = catalog.name(catalog.DELIVERY, p.prefix)
    p.start("scanner")
    p.start("receiver")
    ids = {}
    for kind, body in (("clean", samples.clean_message(7)), ("gtube", samples.gtube_message())):
        code, text = p.send(body, ["user@example.test"])
        assert code == 250, text
        ids[kind] = queued_id(text)
    p.start("deliverer")
    wait_for(
        lambda: len(list(read_events(p.settings, topics=[quarantine, delivery]))) >= 2,
        120,
        "the quarantine and the delivery",
    )

    store = FsBlobStore(tmp_path / "store")
    kept = {key_for(_sha(b)) for b in (samples.clean_message(7), samples.gtube_message())}
    orphan = _old(store, asyncio.run(store.put(b"nobody refers to me\r\n")).key)
    assert kept | {orphan} == set(_keys(store))

    # A grace period: the orphan is only remembered on the first run, deleted once it is over.
    graced = p.settings.model_copy(
        update={"ops": p.settings.ops.model_copy(update={"gc_grace": 3600.0})}
    )
    first = collect(graced, now=1_000_000.0)
    assert first.waiting == [orphan] and first.deleted == []
    assert collect(graced, now=1_000_000.0 + 1800).deleted == []
    assert collect(graced, dry_run=True, now=1_000_000.0 + 3600).deleted == [orphan]
    assert orphan in set(_keys(store)), "a dry run deletes nothing"
    done = collect(graced, now=1_000_000.0 + 3600)
    assert done.deleted == [orphan]
    assert done.referenced == 2 and done.quarantined == [key_for(_sha(samples.gtube_message()))]
    assert set(_keys(store)) == kept

    # No grace, through the CLI: a new orphan goes at once; the referenced bodies stay.
    orphan2 = _old(store, asyncio.run(store.put(b"another orphan\r\n")).key)
    out = subprocess.run(
        [MXGATE, "gc", "--json"],
        env=p.env | {"MXGATE_OPS__GC_GRACE": "0"},
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["deleted"] == [orphan2] and report["listed"] == 3
    assert set(_keys(store)) == kept

    # A body put again after gc listed the store (the same bytes, a new message whose event
    # gc has not read) is spared even when its grace is over: puts refresh its time.
    orphan3 = asyncio.run(store.put(b"sent again\r\n")).key
    again = collect(p.settings.model_copy(
        update={"ops": p.settings.ops.model_copy(update={"gc_grace": 0.0})}))  # fmt: skip
    assert again.deleted == [] and again.waiting == [orphan3]
    assert orphan3 in set(_keys(store))


def _old(store: FsBlobStore, key: str) -> str:
    """Age a body's file by a minute: an orphan from the past, not one put a moment ago."""
    path = store.root / key
    t = path.stat().st_mtime - 60
    os.utime(path, (t, t))
    return key


def _sha(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def _keys(store: FsBlobStore) -> list[str]:
    async def go() -> list[str]:
        return [k async for k in store.iter_keys()]

    return asyncio.run(go())

"""Hostile files, configs, caches and streams (issue 22): each a clear error or the right result,
never a wrong result, a hang or a traceback."""

# ruff: noqa: F811 - fixtures imported from the other test files are redefined as parameters

from __future__ import annotations

import json
from dataclasses import replace

import huggingface_hub.utils._http
import pytest

from stemsplit.hub import VERIFICATIONS, hub_cache
from stemsplit.registry import download_bag, is_cached
from test_registry import (COMMIT, REPO_ID, SIGNATURE, assert_same_weights, hub, reference,  # noqa: F401
                           tiny_info, weights)


# 2. A model pinned to a branch: the Hub cache keeps refs/BRANCH -> commit, snapshots/commit/FILE

def branch_pinned(weights: bytes):
    return replace(tiny_info(weights), revision="main")


def test_branch_pinned_model_is_cached_and_loads_with_the_hub_unreachable(hub, reference, weights, monkeypatch):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = branch_pinned(weights)
    assert not is_cached(info)
    heard = []
    download_bag(info, heard.append)
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    assert (folder / "refs" / "main").read_text() == COMMIT
    assert is_cached(info)
    hub.stop()
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", lambda seconds: None)
    assert_same_weights(download_bag(info, heard.append), reference)
    assert heard == ["downloading model 'tiny' (licence: MIT)"]


def test_a_ref_that_is_not_a_commit_is_not_cached(hub, weights):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = branch_pinned(weights)
    download_bag(info)
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    (folder / "refs" / "main").write_text("../../../elsewhere")
    assert not is_cached(info)


# 13. A corrupt verification record is never trusted, nor a traceback

@pytest.mark.parametrize("record", ['{"main/FILE": "oops"}', '{"main/FILE": {"commit": 5}}', '[1, 2]',
                                    '{"main/FILE": {"commit": "../x", "sha256": "00"}}', '\xff\xfe'])
def test_corrupt_verification_record_is_not_trusted(hub, reference, weights, record):
    hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
    info = replace(tiny_info(weights), revision="main",
                   files=tuple(replace(file, sha256=None) for file in tiny_info(weights).files))
    record = record.replace("FILE", f"{SIGNATURE}.safetensors")
    folder = hub_cache() / f"models--{REPO_ID.replace('/', '--')}"
    folder.mkdir(parents=True)
    (folder / VERIFICATIONS).write_text(record, encoding="latin-1")
    assert not is_cached(info)
    assert_same_weights(download_bag(info), reference)
    assert json.loads((folder / VERIFICATIONS).read_text())[f"main/{SIGNATURE}.safetensors"]["commit"] == COMMIT
    assert is_cached(info)

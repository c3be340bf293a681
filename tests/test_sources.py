"""Catalogue files from plain URLs, through a loopback web server in the real download code: pinned by
SHA-256 and size, mirrors, redirects, cut transfers, silent servers, archives hostile or not, offline use.
The networks are the test-only `fake` family's (fake_family.py): what is proven here is the files' way."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf

from fake_family import package, registered
from hub_server import FileServer, HubServer
from stemsplit import archives
from stemsplit.catalogue import ModelInfo, WeightFile, read_catalogue
from stemsplit.downloads import Announcement
from stemsplit.errors import ModelError
from stemsplit.files import HOST
from stemsplit.registry import download_bag, is_cached
from stemsplit.sources import fetch_file, url_cache

GAINS = {"drums": 0.1, "bass": 0.2, "other": 0.3, "vocals": 0.4}
WEIGHTS = package("0fake000", GAINS)
SHA256 = hashlib.sha256(WEIGHTS).hexdigest()
NAME = "0fake000.safetensors"
TIMEOUT = 1.0  # seconds, through STEMSPLIT_DOWNLOAD_TIMEOUT


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("STEMSPLIT_DOWNLOAD_TIMEOUT", str(TIMEOUT))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with registered():
        yield tmp_path / "cache"


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


@pytest.fixture
def silent() -> Iterator[str]:
    """The address of a server that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield "http://127.0.0.1:%d" % listener.getsockname()[1]
    listener.close()


def url_model(*urls: str, name: str = NAME, sha256: str = SHA256, size: int = len(WEIGHTS)) -> ModelInfo:
    file = WeightFile(name=name, sha256=sha256, size=size, urls=urls, shares=(1.0,) * 4)
    return ModelInfo(name="tiny", family="fake", description="a fake model from URLs", licence="MIT",
                     stems=tuple(GAINS), files=(file,))


def cache_contents(cache: Path) -> list[str]:
    return sorted(path.relative_to(cache).as_posix() for path in cache.rglob("*") if path.is_file()) \
        if cache.exists() else []


def gains_of(bag) -> list[float]:
    return bag.members[0].network.gains.tolist()


def test_a_url_file_is_downloaded_verified_cached_and_announced_once(cache, server):
    server.files["/w/0fake000.safetensors"] = WEIGHTS
    info = url_model(server.url("/w/0fake000.safetensors"))
    assert not is_cached(info) and info.pinning == "yes"
    heard = []
    assert gains_of(download_bag(info, heard.append)) == pytest.approx(list(GAINS.values()))
    assert heard == [f"downloading model 'tiny' (licence: MIT): {NAME}, {len(WEIGHTS) / 1e6:.1f} MB"]
    assert cache_contents(cache) == [f"{SHA256}/{NAME}"] and is_cached(info)
    download_bag(info, heard.append)
    assert len(heard) == 1 and len(server.requests) == 1


def test_a_corrupt_download_is_removed(cache, server):
    server.files["/w"] = WEIGHTS[:-1] + b"!"
    with pytest.raises(ModelError, match=r"^downloading 0fake000.safetensors of model 'tiny' failed: "
                                         r"127.0.0.1:\d+: corrupt \(sha256 mismatch\), removed; check"):
        download_bag(url_model(server.url("/w")))
    assert cache_contents(cache) == []


def test_a_corrupt_cached_file_is_removed_before_use(cache, server):
    server.files["/w"] = WEIGHTS
    info = url_model(server.url("/w"))
    download_bag(info)
    cached = cache / SHA256 / NAME
    cached.write_bytes(WEIGHTS[:-1] + b"!")
    with pytest.raises(ModelError, match="in the cache was corrupt .*removed, run again"):
        download_bag(info)
    assert cache_contents(cache) == []
    download_bag(info)
    assert cached.read_bytes() == WEIGHTS


def test_mirrors_are_tried_in_order(cache, server):
    server.files["/corrupt"] = bytes(len(WEIGHTS))
    server.files["/good"] = WEIGHTS
    info = url_model(server.url("/missing"), server.url("/corrupt"), server.url("/good"))
    heard = []
    assert gains_of(download_bag(info, heard.append)) == pytest.approx(list(GAINS.values()))
    assert [path for path, _ in server.requests] == ["/missing", "/corrupt", "/good"]
    assert cache_contents(cache) == [f"{SHA256}/{NAME}"]


def test_every_source_failing_is_one_error_naming_each(cache, server):
    server.files["/short"] = WEIGHTS[:100]
    with pytest.raises(ModelError) as caught:
        download_bag(url_model(server.url("/missing"), server.url("/short")))
    message = str(caught.value)
    assert "\n" not in message
    assert ": HTTP 404 " in message and f"it sends 100 bytes where {len(WEIGHTS)} are pinned" in message
    assert cache_contents(cache) == []


def test_redirects_are_followed(cache, server):
    server.redirects["/releases/download/v1/0fake000.safetensors"] = server.url("/objects/abc")
    server.files["/objects/abc"] = WEIGHTS
    download_bag(url_model(server.url("/releases/download/v1/0fake000.safetensors")))
    assert [path for path, _ in server.requests] == ["/releases/download/v1/0fake000.safetensors", "/objects/abc"]


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_a_transfer_cut_half_way_resumes_or_restarts(cache, server, ranges):
    server.files["/w"] = WEIGHTS
    server.cut_after, server.ranges = len(WEIGHTS) // 2, ranges
    heard = []
    download_bag(url_model(server.url("/w")), heard.append)
    assert server.requests == [("/w", None), ("/w", f"bytes={len(WEIGHTS) // 2}-")]
    assert (cache / SHA256 / NAME).read_bytes() == WEIGHTS and len(heard) == 1
    assert cache_contents(cache) == [f"{SHA256}/{NAME}"]


def test_half_a_download_a_killed_run_left_is_resumed(cache, server):
    server.files["/w"] = WEIGHTS
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = cache / SHA256 / f".{NAME}.partial-{HOST}-{dead.pid}-0123abcd"
    left.parent.mkdir(parents=True)
    left.write_bytes(WEIGHTS[:100])
    download_bag(url_model(server.url("/w")))
    assert server.requests == [("/w", "bytes=100-")]
    assert cache_contents(cache) == [f"{SHA256}/{NAME}"]


def test_a_server_that_never_answers_fails_within_the_timeout(cache, server, silent):
    start = time.monotonic()
    with pytest.raises(ModelError, match=rf"127.0.0.1:\d+: no answer within {TIMEOUT:g} s "
                                         r"\(STEMSPLIT_DOWNLOAD_TIMEOUT\)"):
        download_bag(url_model(f"{silent}/w"))
    assert time.monotonic() - start < TIMEOUT + 2
    server.files["/w"] = WEIGHTS  # a mirror after it is tried
    download_bag(url_model(f"{silent}/w", server.url("/w")))
    assert cache_contents(cache) == [f"{SHA256}/{NAME}"]


def test_a_hub_that_never_answers_fails_within_the_timeout(cache, silent, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", silent)
    info = replace(url_model(), repo="tester/Tiny", revision="0123456789abcdef0123456789abcdef01234567",
                   files=(WeightFile(name=NAME, sha256=SHA256, shares=(1.0,) * 4),))
    start = time.monotonic()
    with pytest.raises(ModelError, match=rf"^the Hugging Face Hub did not answer about {NAME} of model 'tiny' "
                                         rf"within {TIMEOUT:g} s \(STEMSPLIT_DOWNLOAD_TIMEOUT\)"):
        download_bag(info)
    assert time.monotonic() - start < TIMEOUT + 2


def test_the_hub_path_announces_only_real_downloads(cache, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    info = replace(url_model(), repo="tester/Tiny", revision=commit,
                   files=(WeightFile(name=NAME, sha256=SHA256, shares=(1.0,) * 4),))
    heard = []
    with HubServer() as hub:
        hub.add("tester/Tiny", commit, NAME, WEIGHTS)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(ModelError, match="not downloaded yet and HF_HUB_OFFLINE is set"):
            download_bag(info, heard.append)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        download_bag(info, heard.append)
        download_bag(info, heard.append)
    assert heard == [f"downloading model 'tiny' (licence: MIT): {NAME}, {len(WEIGHTS) / 1e6:.1f} MB"]


def test_offline_a_cached_file_works_and_an_uncached_one_fails_at_once(cache, monkeypatch):
    with FileServer() as server:
        server.files["/w"] = WEIGHTS
        info = url_model(server.url("/w"))
        download_bag(info)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    heard = []
    assert gains_of(download_bag(info, heard.append)) == pytest.approx(list(GAINS.values()))
    other = url_model(server.url("/other"), sha256="1" * 64)
    with pytest.raises(ModelError, match="^model 'tiny' is not downloaded yet and HF_HUB_OFFLINE is set"):
        download_bag(other, heard.append)
    assert heard == []


# Archives

def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def member(name: str, content: bytes = b"", kind: bytes = tarfile.REGTYPE, target: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    return info, content if kind == tarfile.REGTYPE else None


def archive_file(server: FileServer, name: str, content: bytes) -> WeightFile:
    server.files[f"/{name}"] = content
    return WeightFile(name=name, sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                      urls=(server.url(f"/{name}"),))


def fetch_archive(file: WeightFile) -> Path:
    info = replace(url_model(), files=(file,))
    path, sha256 = fetch_file(info, file, Announcement(info, lambda message: None))
    assert sha256 == file.sha256
    return path


def test_an_archive_is_unpacked_into_its_folder_and_checked_before_use(cache, server):
    content = tar_gz(member("2stems/", kind=tarfile.DIRTYPE), member("2stems/model.index", b"index"),
                     member("2stems/model.data", b"data" * 1000))
    file = archive_file(server, "2stems.tar.gz", content)
    folder = fetch_archive(file)
    assert folder == url_cache() / file.sha256 / "2stems"
    assert (folder / "2stems" / "model.data").read_bytes() == b"data" * 1000
    unpacked = [f"{file.sha256}/2stems/2stems/model.data", f"{file.sha256}/2stems/2stems/model.index"]
    assert cache_contents(cache) == unpacked + [f"{file.sha256}/manifest.json"]
    assert fetch_archive(file) == folder and len(server.requests) == 1
    (folder / "2stems" / "model.index").write_bytes(b"other")
    with pytest.raises(ModelError, match="in the cache was corrupt \\(its files changed\\)"):
        fetch_archive(file)
    assert cache_contents(cache) == []
    assert (fetch_archive(file) / "2stems" / "model.index").read_bytes() == b"index"


def test_a_zip_archive_is_unpacked(cache, server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("a/b.bin", b"weights")
    folder = fetch_archive(archive_file(server, "model.zip", buffer.getvalue()))
    assert folder.name == "model" and (folder / "a" / "b.bin").read_bytes() == b"weights"


def zip_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777 << 16)
        zipped.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def zip_going_up() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("../escaped", b"x")
    return buffer.getvalue()


HOSTILE = {
    "absolute": (lambda: tar_gz(member("/tmp/stemsplit-escaped")), "is an absolute path"),
    "dot-dot": (lambda: tar_gz(member("ok/../../escaped", b"x")), r"goes up a folder \('..'\)"),
    "symlink": (lambda: tar_gz(member("link", kind=tarfile.SYMTYPE, target="/etc/passwd")), "is a link"),
    "hard link": (lambda: tar_gz(member("link", kind=tarfile.LNKTYPE, target="/etc/passwd")), "is a link"),
    "device": (lambda: tar_gz(member("dev", kind=tarfile.CHRTYPE)), "is a device"),
    "twice": (lambda: tar_gz(member("a", b"1"), member("a", b"2")), "is in the archive twice"),
    "size bomb": (lambda: tar_gz(member("zeros", bytes(3 << 20))), "takes the archive past the 1048576 bytes"),
    "zip symlink": (zip_with_symlink, "is a link"),
    "zip dot-dot": (zip_going_up, r"goes up a folder"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_archive_is_refused_and_leaves_nothing(cache, server, case, tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 1 << 20)
    make, reason = HOSTILE[case]
    suffix = ".zip" if case.startswith("zip") else ".tar.gz"
    file = archive_file(server, f"hostile{suffix}", make())
    with pytest.raises(ModelError, match=f"^the archive hostile{suffix} is refused: its member '.*' {reason}"):
        fetch_archive(file)
    assert cache_contents(cache) == []
    assert [path for path in cache.rglob("*") if path.is_dir()] == [cache / file.sha256]
    assert not Path("/tmp/stemsplit-escaped").exists() and not (tmp_path / "escaped").exists()


# The catalogue format and the command

def test_url_entries_need_http_urls_and_take_a_size_where_one_is_published(tmp_path):
    entry = """default = "tiny"
[tiny]
family = "htdemucs"
description = "d"
licence = "MIT"
stems = ["drums", "bass", "other", "vocals"]
[[tiny.files]]
name = "w.safetensors"
urls = ["https://example.org/w.safetensors", "https://mirror.example.org/w.safetensors"]
"""
    pinned = f'sha256 = "{SHA256}"\nsize = 12\n'
    (tmp_path / "good.toml").write_text(entry + pinned)
    [file] = read_catalogue(tmp_path / "good.toml")["tiny"].files
    assert file.urls == ("https://example.org/w.safetensors", "https://mirror.example.org/w.safetensors")
    (tmp_path / "unsized.toml").write_text(entry + f'sha256 = "{SHA256}"\n')  # the SHA-256 alone pins it
    [file] = read_catalogue(tmp_path / "unsized.toml")["tiny"].files
    assert (file.sha256, file.size) == (SHA256, None)
    for broken, problem in [(entry + f'sha256 = "{SHA256}"\nsize = 0\n', "size must be a positive whole number"),
                            (entry + 'sha256_prefix = "ABC"\n', "sha256_prefix is for files from urls"),
                            (entry + pinned + 'sha256_prefix = "abc"\n', "digits that begin its sha256"),
                            (entry.replace("https://example", "file:///example") + pinned, "is not an http"),
                            (entry.replace('"w.safetensors"', '"../w.safetensors"') + pinned, "plain file name")]:
        (tmp_path / "broken.toml").write_text(broken)
        with pytest.raises(ModelError, match=f"'tiny' is malformed: .*{problem}"):
            read_catalogue(tmp_path / "broken.toml")


def write_catalogue(path: Path, info: ModelInfo) -> Path:
    [file] = info.files
    pins = {"sha256": file.sha256, "size": file.size, "sha256_prefix": file.sha256_prefix}
    path.write_text(f"""default = "tiny"
[tiny]
family = "fake"
description = "d"
licence = "MIT"
stems = {json.dumps(list(info.stems))}
[[tiny.files]]
name = "{file.name}"
urls = {json.dumps(list(file.urls))}
shares = [1.0, 1.0, 1.0, 1.0]
""" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in pins.items() if value is not None))
    return path


def run_command(tmp_path: Path, monkeypatch, info: ModelInfo) -> tuple[int, str]:
    from click.testing import CliRunner

    from stemsplit.cli import main

    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", write_catalogue(tmp_path / "models.toml", info))
    sf.write(tmp_path / "song.wav", np.zeros((4410, 2), dtype=np.float32), 44100)
    result = CliRunner().invoke(main, ["-n", "tiny", str(tmp_path / "song.wav"), "-o", str(tmp_path / "out")],
                                env={"COLUMNS": "200"})
    return result.exit_code, result.stderr


def test_the_command_separates_with_a_url_model_and_fails_in_one_line_exit_3(cache, server, silent, tmp_path,
                                                                           monkeypatch):
    server.files["/w"] = WEIGHTS
    code, stderr = run_command(tmp_path, monkeypatch, url_model(server.url("/w")))
    assert code == 0, stderr
    assert f"downloading model 'tiny' (licence: MIT): {NAME}" in stderr
    stems = sorted(name for name in os.listdir(tmp_path / "out" / "tiny" / "song") if not name.startswith("."))
    assert stems == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    code, stderr = run_command(tmp_path, monkeypatch, url_model(f"{silent}/w", sha256="2" * 64))
    assert code == 3
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"error: downloading {NAME} of model 'tiny' failed: {silent[7:]}: no answer within 1 s "
        "(STEMSPLIT_DOWNLOAD_TIMEOUT); check the connection and run again"]


# URL files no page gives the SHA-256 of: verified at first download, then pinned by the record

def unpinned_model(*urls: str, prefix: str | None = SHA256[:8], size: int | None = None) -> ModelInfo:
    file = WeightFile(name=NAME, urls=urls, size=size, sha256_prefix=prefix, shares=(1.0,) * 4)
    return replace(url_model(), files=(file,))


def record(cache: Path) -> dict:
    return json.loads((cache / "stemsplit-verified.json").read_text())


def test_an_unpinned_url_file_is_recorded_at_first_download_then_used_offline(cache, monkeypatch):
    with FileServer() as server:
        server.files["/w"] = WEIGHTS
        info = unpinned_model(server.url("/w"))
        assert info.pinning == "no" and not is_cached(info)
        heard = []
        assert gains_of(download_bag(info, heard.append)) == pytest.approx(list(GAINS.values()))
    assert heard == [f"downloading model 'tiny' (licence: MIT): {NAME}, {len(WEIGHTS) / 1e6:.1f} MB"]
    assert cache_contents(cache) == [f"{SHA256}/{NAME}", "stemsplit-verified.json"]
    assert record(cache) == {server.url("/w"): {"sha256": SHA256, "size": len(WEIGHTS)}}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_cached(info) and gains_of(download_bag(info, heard.append)) == pytest.approx(list(GAINS.values()))
    assert len(heard) == 1 and len(server.requests) == 1


def test_after_recording_a_mirror_with_other_bytes_is_refused_and_the_next_tried(cache, server):
    server.files["/w"] = WEIGHTS
    download_bag(unpinned_model(server.url("/w"), prefix=None))
    (cache / SHA256 / NAME).unlink()
    del server.files["/w"]
    server.files["/other"], server.files["/good"] = WEIGHTS[:-1] + b"!", WEIGHTS
    info = unpinned_model(server.url("/w"), server.url("/other"), prefix=None)
    with pytest.raises(ModelError) as caught:
        download_bag(info)
    assert ": HTTP 404 " in str(caught.value) and str(caught.value).endswith(
        f"{server.url('')[7:]}: corrupt (sha256 mismatch), removed; check the connection and run again "
        f"(its SHA-256 was recorded at its first download, in {cache / 'stemsplit-verified.json'})")
    assert cache_contents(cache) == ["stemsplit-verified.json"]
    download_bag(replace(info, files=(replace(info.files[0], urls=info.files[0].urls + (server.url("/good"),)),)))
    assert cache_contents(cache) == [f"{SHA256}/{NAME}", "stemsplit-verified.json"]


def test_a_prefix_mismatch_exits_3_and_leaves_no_file(cache, server, tmp_path, monkeypatch):
    server.files["/w"] = WEIGHTS
    wrong = "0" * 8 if not SHA256.startswith("0") else "1" * 8
    code, stderr = run_command(tmp_path, monkeypatch, unpinned_model(server.url("/w"), prefix=wrong))
    assert code == 3
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"downloading model 'tiny' (licence: MIT): {NAME}, {len(WEIGHTS) / 1e6:.1f} MB",
        f"error: downloading {NAME} of model 'tiny' failed: {server.url('')[7:]}: corrupt (its SHA-256 does not "
        f"begin with {wrong} as its name says), removed; check the connection and run again"]
    assert cache_contents(cache) == [] and [path for path in cache.rglob("*")] == [cache / "first-downloads"]


def test_a_cut_transfer_of_an_unpinned_file_resumes(cache, server):
    server.files["/w"] = WEIGHTS
    server.cut_after = len(WEIGHTS) // 2
    download_bag(unpinned_model(server.url("/w")))
    assert server.requests == [("/w", None), ("/w", f"bytes={len(WEIGHTS) // 2}-")]
    assert (cache / SHA256 / NAME).read_bytes() == WEIGHTS and record(cache)[server.url("/w")]["sha256"] == SHA256


@pytest.mark.parametrize("tampered", ["not json", "contradicts the prefix", "contradicts the size"])
def test_a_corrupt_record_or_one_the_catalogue_contradicts_is_not_trusted(cache, server, tampered):
    server.files["/w"] = WEIGHTS
    info = unpinned_model(server.url("/w"), size=len(WEIGHTS))
    download_bag(info)
    path = cache / "stemsplit-verified.json"
    other = {"sha256": "f" * 64 if tampered == "contradicts the prefix" else SHA256,
             "size": len(WEIGHTS) + (tampered == "contradicts the size")}
    path.write_text("{" if tampered == "not json" else json.dumps({server.url("/w"): other}))
    assert not is_cached(info)
    assert gains_of(download_bag(info)) == pytest.approx(list(GAINS.values()))
    assert len(server.requests) == 2 and record(cache) == {server.url("/w"): {"sha256": SHA256, "size": len(WEIGHTS)}}


def test_a_record_naming_other_bytes_is_refused_in_one_line(cache, server):
    server.files["/w"] = WEIGHTS
    info = unpinned_model(server.url("/w"), prefix=None)
    download_bag(info)
    (cache / "stemsplit-verified.json").write_text(json.dumps({server.url("/w"): {"sha256": "e" * 64,
                                                                                 "size": len(WEIGHTS)}}))
    with pytest.raises(ModelError, match=r"corrupt \(sha256 mismatch\), removed; .* recorded at its first download"):
        download_bag(info)


def test_models_says_which_files_are_verified_at_first_download(cache, server, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stemsplit.cli import main

    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE",
                        write_catalogue(tmp_path / "models.toml", unpinned_model(server.url("/w"))))
    lines = CliRunner().invoke(main, ["models", "tiny"]).stdout.splitlines()
    assert "  verified at first download (against the SHA-256 the Hub publishes, or a URL file's size and SHA-256 " \
           "prefix where known), then pinned by the recorded value" in lines
    assert lines[-1] == "  download size not published; cached no"


def test_an_unpinned_archive_is_recorded_unpacked_and_checked(cache, server):
    content = tar_gz(member("2stems/model.index", b"index"))
    sha256 = hashlib.sha256(content).hexdigest()
    server.files["/2stems.tar.gz"] = content
    file = WeightFile(name="2stems.tar.gz", urls=(server.url("/2stems.tar.gz"),))
    info = replace(url_model(), files=(file,))
    folder, recorded = fetch_file(info, file, Announcement(info, lambda message: None))
    assert recorded == sha256 and is_cached(info)
    assert folder == cache / sha256 / "2stems" and (folder / "2stems" / "model.index").read_bytes() == b"index"
    assert record(cache) == {server.url("/2stems.tar.gz"): {"sha256": sha256, "size": len(content)}}
    assert fetch_file(info, file, Announcement(info, print)) == (folder, sha256) and len(server.requests) == 1

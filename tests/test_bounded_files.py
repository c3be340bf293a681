"""Issue 22's principle for JSON files (UVR's VR model parameters, Spleeter's configs): read through the one
bounded reader YAML configs use, so that an oversized, undecodable or deeply nested file is a model error
naming it, never a traceback."""

from __future__ import annotations

import pytest

from stemsplit.checkpoint import read_json
from stemsplit.errors import ModelError
from stemsplit.families.vr import read_params

CASES = {
    "oversized": (b'{"band": {}, "pad": "' + b"x" * (1 << 16) + b'"}', "is larger than 64 KiB"),
    "latin-1": (b'{"primary_stem": "Voix \xe9"}', r"is not UTF-8 text \(byte 23\)"),
    "deep": (b"[" * 40 + b"]" * 40, "nests deeper than 32 levels"),
    "deeper than json goes": (b"[" * 60000 + b"]" * 60000, "is larger than 64 KiB"),
    "json's own limit": (b"[" * 30000 + b"]" * 30000, "nests deeper than 32 levels"),
    "invalid": (b'{"band": ', "Expecting value"),
}


@pytest.mark.parametrize("name", CASES)
def test_a_bad_json_file_is_a_model_error_naming_it(tmp_path, name):
    content, words = CASES[name]
    path = tmp_path / "params.json"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=f"^{path} is not a valid model-parameters JSON: .*{words}"):
        read_params(path)


def test_a_file_within_the_bounds_reads_whole(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text("[" * 31 + '{"n": 1}' + "]" * 31)
    data = read_json(path, "test file")
    for _ in range(31):
        (data,) = data
    assert data == {"n": 1}

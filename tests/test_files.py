"""Publishing a song's outputs: all of them or none, the identity record last."""

import pytest

from stemsplit.errors import OutputError
from stemsplit.files import PARTIAL_FILE, publishing


def test_outputs_and_their_record_are_published_together(tmp_path):
    song = tmp_path / "out" / "song"
    paths = [song / "vocals.wav", song / "drums.wav"]
    record = (song / ".vocals.wav.stemsplit.json", "new record\n")
    with publishing(paths, record) as temporaries:
        assert song.is_dir() and list(temporaries) == paths
        for path, temporary in temporaries.items():
            assert temporary.parent == song and PARTIAL_FILE.match(temporary.name)
            temporary.write_text(path.name)
        assert not any(path.exists() for path in paths) and not record[0].exists()
    assert sorted(p.name for p in song.iterdir()) == [".vocals.wav.stemsplit.json", "drums.wav", "vocals.wav"]
    assert [path.read_text() for path in paths] == ["vocals.wav", "drums.wav"]
    assert record[0].read_text() == "new record\n"


def test_a_failed_rename_removes_the_outputs_placed_and_leaves_no_record(tmp_path):
    (tmp_path / "drums.wav" / "in the way").mkdir(parents=True)  # a folder, not empty: renaming onto it fails
    (tmp_path / ".vocals.wav.stemsplit.json").write_text("old record\n")
    paths = [tmp_path / "vocals.wav", tmp_path / "drums.wav"]
    with pytest.raises(OutputError, match=f"^cannot write {tmp_path / 'drums.wav'}: "):
        with publishing(paths, (tmp_path / ".vocals.wav.stemsplit.json", "new record\n")) as temporaries:
            for temporary in temporaries.values():
                temporary.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drums.wav"]  # the old record went before any rename


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failure_before_publishing_keeps_the_old_outputs_and_record(tmp_path, error):
    (tmp_path / "vocals.wav").write_text("old")
    (tmp_path / ".vocals.wav.stemsplit.json").write_text("old record\n")
    with pytest.raises(error):
        with publishing([tmp_path / "vocals.wav", tmp_path / "new" / "drums.wav"],
                        (tmp_path / ".vocals.wav.stemsplit.json", "new record\n")) as temporaries:
            for temporary in temporaries.values():
                temporary.write_text("new")
            raise error
    assert sorted(p.name for p in tmp_path.iterdir()) == [".vocals.wav.stemsplit.json", "vocals.wav"]
    assert (tmp_path / "vocals.wav").read_text() == "old"
    assert (tmp_path / ".vocals.wav.stemsplit.json").read_text() == "old record\n"


def test_an_unwritable_place_is_an_output_error_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(OutputError, match=f"^cannot write to {tmp_path / 'file' / 'song'}: "):
        with publishing([tmp_path / "file" / "song" / "vocals.wav"]):
            pytest.fail("the body must not run")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]

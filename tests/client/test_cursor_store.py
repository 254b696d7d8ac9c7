"""FileCursorStore: a cursor survives a restart and is never torn by a failed save."""

import pytest
from reviewqueue_client import FileCursorStore


def test_a_saved_cursor_is_read_back_by_a_new_store(tmp_path):
    # given no cursor file yet
    path = tmp_path / "state" / "labels.cursor"
    assert FileCursorStore(path).load() is None
    # when a cursor is saved, then another
    FileCursorStore(path).save("120.4")
    FileCursorStore(path).save("133.9")
    # then a fresh store (a restarted process) reads the last one, and no temp file is left
    assert FileCursorStore(path).load() == "133.9"
    assert [p.name for p in path.parent.iterdir()] == ["labels.cursor"]


def test_a_save_that_fails_half_way_leaves_the_previous_cursor(tmp_path):
    # given a stored cursor
    store = FileCursorStore(tmp_path / "labels.cursor")
    store.save("120.4")
    # when a save fails while writing (a value that cannot be encoded)
    with pytest.raises(TypeError):
        store.save(object())  # type: ignore[arg-type]
    # then the previous cursor is intact and the partial file is gone
    assert store.load() == "120.4"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.cursor"]


def test_a_file_that_holds_no_cursor_is_refused(tmp_path):
    path = tmp_path / "labels.cursor"
    path.write_text('{"cursor": 12}')
    with pytest.raises(ValueError, match="not a string"):
        FileCursorStore(path).load()

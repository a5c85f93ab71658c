"""The write path's own guarantees, beside its speed: atomic files and the garbage collector left as found."""

import gc

import pytest

from trajsim.atomic import atomic_writer, write_bytes_atomic
from trajsim.output import collection_paused


def test_a_write_into_a_missing_folder_makes_the_folder(tmp_path):
    target = tmp_path / "fhir" / "bundles" / "patient-0000001.json"
    write_bytes_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert [path.name for path in target.parent.iterdir()] == [target.name]


def test_a_failed_write_leaves_neither_the_file_nor_a_partial_one(tmp_path):
    target = tmp_path / "patient-0000001.json"
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b'{"resourceType": "Bundle"')
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_file(tmp_path):
    target = tmp_path / "patient-0000001.json"
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"new")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_the_collector_runs_again_after_a_patient_even_one_that_failed():
    assert gc.isenabled()
    with pytest.raises(ValueError), collection_paused():
        assert not gc.isenabled()
        raise ValueError("bad record")
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off():
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

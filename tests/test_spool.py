"""FileBytes reads like the bytes it holds (the subset the scanner uses), across window edges."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_offload import spool


def _file(tmp_path, data: bytes) -> spool.FileBytes:
    w = spool.SpoolWriter(str(tmp_path))
    w.write(data)
    return w.finish(eight_bit=not data.isascii())


@pytest.fixture(autouse=True)
def small_window(monkeypatch):
    monkeypatch.setattr(spool, "WINDOW", 7)  # every search crosses window edges


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=60), sub=st.sampled_from([b"", b"a", b"\r\n", b"\r\n.", b"--b\r\n", b"ab" * 5]),
       start=st.integers(-70, 70), end=st.one_of(st.none(), st.integers(-70, 70)))
def test_find_startswith_and_slices_match_bytes(tmp_path_factory, data, sub, start, end):
    data = data.replace(b"x", b"a\r\n.")  # make the interesting patterns likely
    with _file(tmp_path_factory.mktemp("s"), data) as fb:
        assert fb.find(sub, start, end) == data.find(sub, start, end)
        assert fb.startswith(sub, start, end) == data.startswith(sub, start, end)
        assert fb[start:end] == data[start:end]
        assert b"".join(fb.chunks(max(start, 0), end, 5)) == data[start:end] or start < 0
        assert len(fb) == len(data)
        if data:
            assert fb[start % len(data)] == data[start % len(data)]


def test_file_is_private_nameless_and_closed(tmp_path):
    fb = _file(tmp_path, b"hello\r\n")
    assert list(tmp_path.iterdir()) == []  # no name in the directory, ever
    assert stat.S_IMODE(os.fstat(fb.fd).st_mode) == 0o600
    with fb.open() as f:
        assert f.read() == b"hello\r\n"
    with fb.mapped() as mm:
        assert mm[:5] == b"hello"
    fd = fb.fd
    fb.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError):
        fb.read(0, 1)


def test_sweep_removes_fallback_leftovers_only(tmp_path):
    (tmp_path / f"{spool.PREFIX}abc{spool.SUFFIX}").write_bytes(b"x")
    (tmp_path / "keep.txt").write_bytes(b"y")
    assert spool.sweep(str(tmp_path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert spool.sweep(str(tmp_path / "missing")) == 0


def test_pieces_stream_literals_and_ranges(tmp_path):
    fb = _file(tmp_path, b"0123456789abcdef")
    p = spool.Pieces(fb, [b"HEAD\r\n", (0, 4), b"", (10, 10), (12, 16)]).prepend(b">")
    assert len(p) == len(p.read_all()) == len(b">HEAD\r\n0123cdef")
    assert p.read_all() == b">HEAD\r\n0123cdef"
    assert p.isascii()
    assert not spool.Pieces(fb, [b"\xc3\xa9", (0, 2)]).isascii()
    eight = _file(tmp_path, b"ab\xff")
    assert spool.Pieces(eight, [(0, 2)]).isascii() and not spool.Pieces(eight, [(0, 3)]).isascii()

"""common.parallel: ordered, bounded parallel map over chunks."""

import pytest

from common.parallel import chunked, map_chunks


def _upper_fn():
    return lambda lines: [line.upper() for line in lines]


def _failing_items():
    yield "a"
    raise OSError("disk went away")


@pytest.mark.parametrize("workers", [1, 2])
def test_map_chunks_keeps_input_order(workers):
    lines = [f"line {i}" for i in range(40)]
    chunks = list(map_chunks(_upper_fn, lines, workers=workers, chunk_size=3))
    assert [len(c) for c in chunks] == [3] * 13 + [1]
    assert sum(chunks, []) == [f"LINE {i}" for i in range(40)]


def test_an_error_while_reading_reaches_the_caller():
    with pytest.raises(OSError, match="disk went away"):
        list(map_chunks(_upper_fn, _failing_items(), workers=2, chunk_size=1))


def test_chunked_rejects_empty_chunks():
    assert list(chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        list(chunked([1], 0))

"""`ixd.wire.record.Record`: frozen value records as `@dataclass(frozen=True)` makes them, without
importing dataclasses (the light client's model is built on it)."""

from __future__ import annotations

import pytest

from ixd.wire.record import Record


class Point(Record):
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(sorted(self.tags)))


class Other(Record):
    x: int
    y: int = 0


def test_fields_defaults_and_post_init() -> None:
    assert Point(1).y == 0 and Point(1, 2).y == 2 and Point(x=1, y=3).y == 3
    assert Point(1, tags=("b", "a")).tags == ("a", "b")
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=())"


def test_equality_and_hash_follow_the_fields_and_the_class() -> None:
    assert Point(1, 2) == Point(1, 2) and hash(Point(1, 2)) == hash(Point(1, 2))
    assert Point(1, 2) != Point(2, 1)
    assert Point(1) != Other(1)  # same fields, another class
    assert len({Point(1), Point(1), Point(2)}) == 2


def test_records_are_frozen() -> None:
    point = Point(1)
    with pytest.raises(AttributeError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.x


@pytest.mark.parametrize("make", [
    lambda: Point(),  # type: ignore[call-arg]
    lambda: Point(1, 2, (), 4),  # type: ignore[call-arg]
    lambda: Point(1, x=1),  # type: ignore[misc]
    lambda: Point(1, z=1),  # type: ignore[call-arg]
])
def test_wrong_arguments_are_type_errors(make: object) -> None:
    with pytest.raises(TypeError):
        make()  # type: ignore[operator]

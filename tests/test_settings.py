"""leaf.settings: typed dataclasses from mappings, every error naming the dotted key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from leaf.settings import Checked, SettingError, from_mapping, setting, to_mapping


@dataclass
class Inner(Checked):
    rate: float = setting(0.5, ge=0.0, le=1.0)
    mode: Literal["fast", "slow"] = setting("fast")


@dataclass
class Outer(Checked):
    name: str = setting("x")
    sizes: list[int] = setting(default_factory=lambda: [1], ge=1)
    inner: Inner = setting(default_factory=Inner)
    named: dict[str, Inner] = setting(default_factory=dict)
    limit: int | None = setting(None, ge=1)


@pytest.mark.parametrize("data, message", [
    ({"nmae": "y"}, "cfg.nmae: unknown key (did you mean 'name'?)"),
    ({"inner": {"rat": 0.1}}, "cfg.inner.rat: unknown key (did you mean 'rate'?)"),
    ({"inner": {"rate": 1.5}}, "cfg.inner.rate: must be <= 1.0, got 1.5"),
    ({"inner": {"mode": "fats"}}, "cfg.inner.mode: expected one of 'fast' | 'slow', got 'fats'"),
    ({"named": {"a": {"rate": -1}}}, "cfg.named.a.rate: must be >= 0.0, got -1"),
    ({"sizes": [2, 0]}, "cfg.sizes: must be >= 1, got 0"),
    ({"sizes": [1, "2"]}, "cfg.sizes[1]: expected int, got '2'"),
    ({"limit": True}, "cfg.limit: expected int or null, got True"),
    ({"name": 3}, "cfg.name: expected str, got 3"),
    ({"inner": 3}, "cfg.inner: expected Inner, got 3"),
])
def test_bad_values_name_the_dotted_key(data, message):
    with pytest.raises(SettingError) as err:
        from_mapping(Outer, data, "cfg")
    assert message in str(err.value)


def test_good_values_are_typed_and_round_trip():
    obj = from_mapping(Outer, {"inner": {"rate": 1}, "named": {"a": {}}, "limit": 3}, "cfg")
    assert obj.inner.rate == 1.0 and isinstance(obj.inner.rate, float)
    assert isinstance(obj.named["a"], Inner) and obj.limit == 3
    assert from_mapping(Outer, to_mapping(obj), "cfg") == obj


def test_objects_made_in_python_are_checked_too():
    with pytest.raises(SettingError, match=r"Inner.rate: must be <= 1.0"):
        Inner(rate=2.0)

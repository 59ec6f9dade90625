"""The studio's shared helpers: a request's refused fields as one line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from genforge.web.common import validation_line

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=80))
errors = st.lists(st.fixed_dictionaries(
    {"loc": st.lists(st.one_of(st.text(max_size=12), st.integers()), max_size=4).map(tuple),
     "type": st.sampled_from(["greater_than_equal", "less_than", "too_short", "missing", "int_parsing", "json_invalid",
                              "literal_error", "value_error", "no-such-type"]),
     "msg": st.text(max_size=60)},
    optional={"input": st.one_of(scalars, st.lists(scalars, max_size=5)),
              "ctx": st.dictionaries(st.sampled_from(["ge", "lt", "min_length", "le", "other"]), scalars, max_size=3)}),
    max_size=4)


@given(errors)
def test_any_error_list_reads_as_one_line(listed):
    line = validation_line(listed)
    assert isinstance(line, str) and line.strip() and "\n" not in line and "\r" not in line


def test_the_common_refusals_read_as_a_person_would_say_them():
    assert validation_line([{"loc": ("body", "steps"), "type": "greater_than_equal", "msg": "Input should be >= 1",
                             "input": -5, "ctx": {"ge": 1}}]) == "steps: must be at least 1 (got -5)"
    assert validation_line([{"loc": ("query", "interval"), "type": "less_than_equal", "msg": "...", "input": "inf",
                             "ctx": {"le": 60.0}}]) == "interval: must be at most 60 (got 'inf')"
    assert validation_line([{"loc": ("body", "a"), "type": "missing", "msg": "Field required", "input": {}},
                            {"loc": ("body", "b"), "type": "value_error", "msg": "Value error, Odd value", "input": 3}]) \
        == "a: is required; b: odd value (got 3)"
    assert validation_line([]) == "the request was refused"

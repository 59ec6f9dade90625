"""bench/switches.py: each switch really changes what runs, and is restored; the interleaving times both
sides alike; the command prints one row per switch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import switches  # noqa: E402

from genforge import nets  # noqa: E402
from genforge.models import gan  # noqa: E402


@pytest.mark.parametrize("name, read", [("joint-d", lambda: gan.JOINT_PASSES[0]),
                                        ("narrow", lambda: nets.MAX_NARROW_WINDOW[0] > 0),
                                        ("gemm-grads", lambda: nets._gemm_grads[0])])
def test_each_switch_turns_its_path_on_and_off_and_restores_it(name, read):
    before = read()
    for on in (True, False):
        with switches.SWITCHES[name](on):
            assert read() is on
        assert read() == before


def test_compare_times_as_many_steps_on_each_side_in_alternating_order():
    seen = []

    def step():
        seen.append(state[0])

    state = [None]

    def switch(on):
        return switches._setting(state, on)

    on, off = switches.compare(step, switch, blocks=3)
    assert on > 0 and off > 0
    assert seen.count(True) == seen.count(False) == 3 * 4  # 1 untimed + 3 timed steps per block
    assert seen[:4] == [True] * 4 and seen[4:12] == [False] * 8 and seen[12:16] == [True] * 4  # pairs flip
    assert state[0] is None


def test_the_command_prints_a_row_per_switch(capsys):
    switches.main(["--case", "mnist-dcgan", "--switch", "joint-d", "--blocks", "1", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["switch", "on", "ms", "off", "ms", "off/on"]
    assert lines[2].split()[0] == "joint-d" and float(lines[2].split()[-1]) > 0
    with pytest.raises(SystemExit):
        switches.main(["--blocks", "0"])

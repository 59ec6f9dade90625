"""bench/throughput.py stops on SIGTERM (and Ctrl-C) instead of going on to its next case."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from genforge.models.vae import VAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import throughput  # noqa: E402


def test_a_sigterm_during_a_measured_run_stops_the_benchmark(monkeypatch, capsys):
    original, calls = VAE.loss_terms, {"n": 0}

    def terminated(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # inside the loop's second step, as a job runner's SIGTERM would arrive
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VAE, "loss_terms", terminated)
    cases = []
    monkeypatch.setattr(throughput, "measure", lambda name, *args: cases.append(name) or
                        throughput.genforge_rate("mnist-vae", ["model.hidden=16", "train.threads=1"], 6))
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--case", "mnist-vae", "--case", "mnist-dcgan"])
    with pytest.raises(SystemExit) as stop:
        throughput.main()
    assert stop.value.code == 130 and cases == ["mnist-vae"]  # the second case never starts
    assert "stopped by a signal" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the loop gave the default action back

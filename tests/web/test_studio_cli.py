"""`genforge studio` from the command line: it starts, prints its URL and serves the page."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from genforge.cli import main
from tests.web.browser import free_port


def test_genforge_studio_serves_the_runs_folder(tmp_path):
    port = free_port()
    studio = subprocess.Popen([sys.executable, "-m", "genforge", "studio", "--runs", str(tmp_path / "runs"),
                               "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        printed = studio.stderr.readline()
        assert f"open http://127.0.0.1:{port}/" in printed and "?token=" not in printed
        for _ in range(100):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert "genforge studio" in page
        assert (tmp_path / "runs").is_dir()
    finally:
        studio.terminate()
        studio.wait(30)


def test_a_bad_training_limit_is_one_line(capsys):
    assert main(["studio", "--max-trainings", "0"]) == 2
    assert "--max-trainings must be at least 1" in capsys.readouterr().err


def test_a_taken_port_an_impossible_port_and_a_file_for_runs_are_one_line_before_any_url(capsys, tmp_path):
    import socket

    with socket.socket() as holder:  # another server on the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert main(["studio", "--runs", str(tmp_path), "--port", str(taken)]) == 2
        err = capsys.readouterr().err
        assert f"cannot serve on 127.0.0.1:{taken}" in err and "choose another --port" in err and "open http" not in err
    assert main(["studio", "--port", "99999"]) == 2
    assert "--port takes 1-65535, not 99999" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main(["studio", "--runs", str(tmp_path / "afile"), "--port", str(free_port())]) == 2
    assert "is a file, not a folder of runs" in capsys.readouterr().err

"""DataLoader workers: a temporary folder that Unix sockets fit in, whatever TMPDIR is."""

from __future__ import annotations

import os

from seco_deploy.data.workers import SOCKET_PATH_MAX, short_temp_dir


def test_short_temp_dir_keeps_a_short_folder(tmp_path) -> None:
    short = "/tmp"
    assert short_temp_dir(short) == short


def test_short_temp_dir_replaces_a_folder_too_long_for_sockets(tmp_path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    chosen = short_temp_dir(str(deep))
    assert chosen != str(deep)
    assert len(os.fsencode(chosen)) + len("/pymp-xxxxxxxx/listener-xxxxxxxx") <= SOCKET_PATH_MAX
    assert os.access(chosen, os.W_OK)

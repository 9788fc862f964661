"""The command line: help, list, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from edgecnn.cli.main import main


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "edgecnn.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("list", "demo"):
        assert cmd in out.stdout


def test_list_prints_every_model_with_its_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "resnet56_cifar" in out and "853,018" in out and "5,483,032" in out


def test_list_channel_divisor(capsys):
    assert main(["list", "--width", "0.7", "--divisor", "1", "--arch"]) == 0
    out = capsys.readouterr().out
    assert "channels to multiples of 1" in out
    assert "resnet20_cifar: conv_c11 basic_r3_c11_padskip basic_r3_s2_c22_padskip basic_r3_s2_c45_padskip gap fc" in out
    assert main(["list", "--divisor", "0"]) == 2
    assert "--divisor: must be" in capsys.readouterr().err


def test_bad_input_is_one_line_exit_2(capsys):
    assert main(["list", "--width", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edgecnn list: error: argument --width: must be in (0, 64], got -1 (see `edgecnn list --help`)"]


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="unknown block kind 'nope'"):
        main(["--debug", "analyze", "conv_c8 nope"])

"""Checks shared by the CLI tests."""

from __future__ import annotations


def one_error_line(capsys, command: str = "compress") -> str:
    """The command's stderr: exactly one line, rftpack's error format, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"rftpack {command}: error: "), err
    assert "Traceback" not in err
    return err

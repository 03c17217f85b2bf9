"""Running the CLI in tests, and the one-line error every bad input must give."""

from __future__ import annotations

from typer.testing import CliRunner

from contaudit.cli import app

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    """``(exit code, output)`` of ``contaudit ARGS``."""
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_line_error(code: int, output: str, *fragments: str) -> str:
    """Exit code 2, exactly one non-blank line ``Error: ...`` holding every fragment, no traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]

"""Print the README's table of bad inputs and the one-line error each gets, by running every case of
tests/bad_input_cases.py (the list the tests check):

    python scripts/bad_inputs.py
"""
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bad_input_cases import CASES, Workspace, invoke  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        print("| bad input | exit | message |")
        print("|---|---|---|")
        for what, args, _ in CASES:
            result = invoke(ws, what, args)
            message = result.output.strip().replace(tmp, "…").replace("|", "\\|")
            message = re.sub(r"\s+", " ", message)
            print(f"| {what} | {result.exit_code} | `` {message} `` |")  # double backticks: messages quote flags


if __name__ == "__main__":
    main()

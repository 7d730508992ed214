"""The README's two fresh-machine commands are the ones that work: CI runs the second verbatim."""
from __future__ import annotations

import re

from tests.conftest import ROOT


def commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())[:2]


def test_readme_opens_with_the_two_commands():
    install_and_train, install_and_test = commands()
    assert install_and_train.endswith("dl-ray train jobs/mnist_lenet.yaml")
    assert 'pip install -e ".[test]"' in install_and_test and "pytest" in install_and_test
    head = (ROOT / "README.md").read_text().split("```bash")[0]
    assert "```" not in head  # nothing comes before them


def test_ci_runs_the_readme_test_command_verbatim():
    assert commands()[1] in (ROOT / ".ci/run").read_text()

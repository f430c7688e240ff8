"""The project's own style gates: ruff, snakefmt and `snakemake --lint` stay clean."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [("check",), ("format", "--check")])
def test_ruff_is_clean(command):
    result = subprocess.run([BIN / "ruff", *command, "."], cwd=REPO, capture_output=True)
    assert result.returncode == 0, result.stdout.decode()[-3000:]


def test_snakefmt_is_clean():
    result = subprocess.run(
        [BIN / "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def test_snakemake_lint_is_clean(tiny_run):
    _, _, _, work = tiny_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    result = run_snakemake(config, work, "--lint")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Lints for" not in result.stdout + result.stderr, result.stdout[-3000:]

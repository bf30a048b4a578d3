"""This machine's pip configuration, for an image build: writes it as one pip.conf and prints
a read-only mount (HOST:CONTAINER:ro) per host path it names (CA bundle, constraints,
find-links folders, file:// indexes), one per line, each under MOUNT_ROOT, where the written
pip.conf finds them.

A build's pip sees none of the host's configuration on its own: without it, it may not reach
the index at all (a proxy's CA) or find other wheels than the host's pip does (its torch).
Mounted under MOUNT_ROOT, not in place: a file such as the CA bundle belongs to a package that
the build itself may install (ca-certificates), which cannot replace a mounted file.

Usage: python3 scripts/pip_build_config.py OUT_PIP_CONF
"""

import ast
import subprocess
import sys
from pathlib import Path

# `pip config list` names a section per line: files' sections, and ":env:" for PIP_*
# variables, which override the files and are the global section to pip.
ENV_SECTION = ":env:"
# Under /tmp: buildah leaves the mount points behind, empty, in the image.
MOUNT_ROOT = "/tmp/pip-host"


def read_config() -> dict[str, dict[str, str]]:
    """{section: {key: value}} as pip resolves it, environment variables last (they win)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    config: dict[str, dict[str, str]] = {}
    from_env = []
    for line in listed:
        name, _, quoted = line.partition("=")
        section, _, key = name.rpartition(".")
        if section == ENV_SECTION:
            from_env.append((key, ast.literal_eval(quoted)))
        else:
            config.setdefault(section, {})[key] = ast.literal_eval(quoted)
    for key, value in from_env:
        config.setdefault("global", {})[key] = value
    return config


def in_mount(word: str) -> str:
    """A value's word (a path or file:// URL) with its absolute path moved under MOUNT_ROOT."""
    scheme = "file://" if word.startswith("file://") else ""
    path = word.removeprefix(scheme)
    return scheme + MOUNT_ROOT + path if path.startswith("/") else word


def host_paths(config: dict[str, dict[str, str]]) -> list[str]:
    """Existing absolute paths among the values (lists are space-separated). For a file://
    index, the folder above it: an index's links often lead beside it (../../files/...)."""
    found = []
    for values in config.values():
        for value in values.values():
            for word in value.split():
                path = word
                if word.startswith("file://"):
                    path = str(Path(word.removeprefix("file://")).parent)
                if path.startswith("/") and Path(path).exists() and path not in found:
                    found.append(path)
    return found


def main() -> int:
    config = read_config()
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {' '.join(in_mount(word) for word in value.split())}")
        lines.append("")
    Path(sys.argv[1]).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(f"{path}:{in_mount(path)}:ro" for path in host_paths(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

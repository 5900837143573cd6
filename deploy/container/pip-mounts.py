"""Print the `podman build` options that give pip inside the build this machine's pip configuration.

The Dockerfile is built as it is (no ARG for an index), so pip's settings cannot come in as build args: the
merged configuration that `pip config list` shows (files and PIP_* variables, the variables winning) is
written to one pip.conf, mounted read-only at /etc/pip.conf for the RUN steps only (nothing of it stays in
the image), with every local path it names (find-links and index directories, constraint files, the CA
bundle; a local index's parent folder, which holds its files) mounted read-only at the same path. Usage: pip-mounts.py PIP OUT_DIR (one option per line).
"""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    pip, out_dir = sys.argv[1], Path(sys.argv[2])
    listed = subprocess.run([pip, "config", "list"], capture_output=True, text=True, check=True).stdout
    merged: dict[str, dict[str, str]] = {}
    from_env: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or "." not in key:
            continue
        section, name = key.rsplit(".", 1)
        value = str(ast.literal_eval(raw))
        if section == ":env:":
            from_env[name] = value
        else:
            merged.setdefault(section, {})[name] = value
    merged.setdefault("global", {}).update(from_env)
    # The Dockerfile's own ENV (PIP_NO_CACHE_DIR, PIP_DISABLE_PIP_VERSION_CHECK) still applies over these.
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_dict(merged)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pip.conf"
    with path.open("w") as f:
        conf.write(f)
    mounts = {str(path): "/etc/pip.conf"}
    for values in merged.values():
        for value in values.values():
            for token in value.split():
                local = token.removeprefix("file://").rstrip("/")
                if local.startswith("/") and os.path.exists(local):
                    # A local index (DIR/simple) links its files relative to itself (../../files/...).
                    if os.path.basename(local) == "simple":
                        local = os.path.dirname(local)
                    mounts[local] = local
    for src, dst in mounts.items():
        print(f"--volume={src}:{dst}:ro")


if __name__ == "__main__":
    main()

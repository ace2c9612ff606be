"""Hard-link installed distributions, with everything they require, from this Python's venv into
another venv of the same Python version, so that `pip install` there finds them installed.

`make test` builds two venvs with the same torch pin (.venv for Kilted, .venv-jazzy for Jazzy).
PyPI's torch for Linux brings its CUDA libraries, about 5 GB; a second copy once filled a CI
machine's disk. Hard links cost no space and leave each venv whole: removing or upgrading a
package in one leaves the other's files as they were. Where a link cannot be made (another file
system, another Python version) nothing is linked and pip installs as usual.

    .venv/bin/python test/support/link_packages.py .venv-jazzy torch torchvision
"""

from __future__ import annotations

import os
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def required_closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `names`, and every installed one they require (with the
    extras their markers leave out dropped), each once."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return list(found.values())


def installed_names(site_packages: Path) -> set[str]:
    return {
        canonicalize_name(dist.metadata["Name"])
        for dist in metadata.distributions(path=[str(site_packages)])
    }


def link_distribution(dist: metadata.Distribution, source: Path, target: Path) -> int:
    """Every file of `dist` under `source` (site-packages), linked at the same place under
    `target`; the scripts it installs outside site-packages are left out (their first line names
    the other venv's Python). The number of files linked."""
    paths = [Path(dist.locate_file(record)).resolve() for record in dist.files or []]
    inside = [path.relative_to(source) for path in paths if path.is_relative_to(source)]
    # Its metadata last: a distribution cut short by an error is not seen as installed.
    inside.sort(key=lambda relative: relative.parts[0].endswith(".dist-info"))
    linked = 0
    for relative in inside:
        if not (source / relative).is_file():
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.exists():
            os.link(source / relative, destination)
            linked += 1
    return linked


def main() -> int:
    target_venv = Path(sys.argv[1]).resolve()
    names = sys.argv[2:]
    source = Path(sysconfig.get_paths()["purelib"]).resolve()
    target = target_venv / source.relative_to(Path(sys.prefix).resolve())
    if not target.is_dir():
        print(f"link_packages: {target} is not there (another Python version?); pip installs")
        return 0
    present = installed_names(target)
    dists = [
        dist
        for dist in required_closure(names)
        if canonicalize_name(dist.metadata["Name"]) not in present
    ]
    try:
        count = sum(link_distribution(dist, source, target) for dist in dists)
    except OSError as error:
        print(f"link_packages: no hard link ({error.strerror}); pip installs the rest")
        return 0
    print(f"link_packages: {len(dists)} distributions ({count} files) linked into {target_venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

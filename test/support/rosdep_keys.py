"""What each package.xml dependency resolves to on every ROS 2 distribution the README names, read
from ros/rosdistro (test/packaging/rosdep_keys.json, checked by test_distributions.py): a ROS
package released in that distribution, or a rosdep key's Ubuntu packages (apt or pip) on the
distribution's Ubuntu release.

Regenerate from a git checkout of ros/rosdistro:

    .venv/bin/python test/support/rosdep_keys.py --rosdistro GIT_DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "test" / "packaging" / "rosdep_keys.json"
DISTRIBUTIONS = ("humble", "jazzy", "kilted", "lyrical", "rolling")
DEPEND_TAGS = ("depend", "exec_depend", "build_depend", "test_depend")


def package_dependencies(package_xml=ROOT / "package.xml") -> list:
    root = ET.parse(package_xml).getroot()
    return sorted({e.text.strip() for tag in DEPEND_TAGS for e in root.iter(tag)})


def _show(git_dir, path) -> str:
    return subprocess.run(
        ["git", "-C", str(git_dir), "show", f"HEAD:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _ubuntu_packages(rule, codename):
    """A rosdep rule's packages for one Ubuntu release: 'apt: a b' / 'pip: a b' / None."""
    ubuntu = rule.get("ubuntu") if isinstance(rule, dict) else None
    if isinstance(ubuntu, dict) and not ("pip" in ubuntu or "packages" in ubuntu):
        ubuntu = ubuntu.get(codename, ubuntu.get("*"))
    if isinstance(ubuntu, list):
        return "apt: " + " ".join(ubuntu) if ubuntu else None
    if isinstance(ubuntu, dict) and "pip" in ubuntu:
        return "pip: " + " ".join(ubuntu["pip"]["packages"])
    if isinstance(ubuntu, dict) and "packages" in ubuntu:
        return "apt: " + " ".join(ubuntu["packages"])
    return None


def resolve(git_dir) -> dict:
    rules = {}
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load(_show(git_dir, f"rosdep/{name}")))
    table = {"platforms": {}, "dependencies": {}}
    released = {}
    for dist in DISTRIBUTIONS:
        distribution = yaml.safe_load(_show(git_dir, f"{dist}/distribution.yaml"))
        codename = distribution["release_platforms"]["ubuntu"][0]
        table["platforms"][dist] = f"ubuntu {codename}"
        released[dist] = {
            package: repo
            for repo, entry in distribution["repositories"].items()
            if "release" in entry
            for package in entry["release"].get("packages", [repo])
        }
    for dependency in package_dependencies():
        row = {}
        for dist in DISTRIBUTIONS:
            codename = table["platforms"][dist].split()[1]
            if dependency in released[dist]:
                row[dist] = f"ros: {dependency} ({released[dist][dependency]})"
            else:
                row[dist] = _ubuntu_packages(rules.get(dependency), codename)
        table["dependencies"][dependency] = row
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rosdistro", required=True, help="git dir of ros/rosdistro")
    parser.add_argument("--out", default=str(TABLE))
    args = parser.parse_args(argv)
    table = resolve(args.rosdistro)
    commit = subprocess.run(
        ["git", "-C", args.rosdistro, "log", "-1", "--format=%h %cs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    table = {"source": f"ros/rosdistro @ {commit}", **table}
    Path(args.out).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{len(table['dependencies'])} dependencies -> {args.out}")


if __name__ == "__main__":
    main()

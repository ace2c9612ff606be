"""`make test`'s second venv takes torch from the first as hard links
(test/support/link_packages.py): what it links, pip sees as installed, and nothing else changes."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINKER = ROOT / "test" / "support" / "link_packages.py"
LISTING = (
    "import json, importlib.metadata as m; "
    "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
)


def run_linker(target: Path, *names: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(LINKER), str(target), *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def installed_in(venv: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LISTING], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python*/site-packages")
    return found


def test_a_distribution_and_what_it_requires_are_linked_and_seen_installed(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    before = installed_in(venv)

    out = run_linker(venv, "jinja2")

    # jinja2 requires MarkupSafe: both, at this venv's versions, and nothing else.
    after = installed_in(venv)
    assert {name: after[name] for name in set(after) - set(before)} == {
        "jinja2": metadata.version("jinja2"),
        "markupsafe": metadata.version("markupsafe"),
    }
    assert out.strip().startswith("link_packages: 2 distributions")
    ours = Path(metadata.distribution("jinja2").locate_file("jinja2/__init__.py")).resolve()
    theirs = site_packages(venv) / "jinja2" / "__init__.py"
    assert theirs.stat().st_ino == ours.stat().st_ino
    import_check = "import jinja2; print(jinja2.Template('{{ x }}').render(x=7))"
    run = subprocess.run([str(venv / "bin" / "python"), "-c", import_check], capture_output=True)
    assert run.stdout.strip() == b"7"


def test_a_distribution_the_target_has_is_left_as_it_is(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    own = site_packages(venv) / "markupsafe-0.0.1.dist-info"
    own.mkdir()
    (own / "METADATA").write_text("Metadata-Version: 2.1\nName: MarkupSafe\nVersion: 0.0.1\n")

    out = run_linker(venv, "jinja2")

    assert out.strip().startswith("link_packages: 1 distributions")
    assert installed_in(venv)["markupsafe"] == "0.0.1"
    assert not (site_packages(venv) / "markupsafe").exists()


def test_a_venv_of_another_python_gets_nothing(tmp_path):
    venv = tmp_path / "venv"
    (venv / "lib" / "python2.7" / "site-packages").mkdir(parents=True)

    out = run_linker(venv, "jinja2")

    assert "is not there" in out and "pip installs" in out
    assert not any((venv / "lib" / "python2.7" / "site-packages").iterdir())

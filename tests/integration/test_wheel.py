"""pubip outside this checkout: the wheel in a fresh venv, on every CPython >= 3.11 on this machine.

A node venv (`pip install pubip-*.whl`) answers `pubip plan` and checks a watchdog config and has no
ansible-core; a controller venv (`pubip-*.whl[controller]`) documents the collection's modules with
ansible-doc, from the installed package alone; on this Python, it also runs the main job against a lab.
Everything runs from a temporary directory with no variable pointing at the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import labkit

pytestmark = pytest.mark.install
ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "collection/ansible_collections/pubip/cluster/tests/unit/plugins/module_utils/fixtures" \
    / "ctdb-vectors.json"


def pythons() -> list[str]:
    """Every CPython >= 3.11 on this machine (this one first), one per minor version: on PATH, in /usr/bin,
    /usr/local/bin, or pyenv's versions."""
    found: dict[str, str] = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    candidates = [shutil.which(f"python3.{minor}") or "" for minor in range(11, 20)]
    for pattern in ("/usr/bin/python3.*", "/usr/local/bin/python3.*"):
        candidates += sorted(str(p) for p in Path("/").glob(pattern.lstrip("/")))
    candidates += sorted(str(p) for p in (Path.home() / ".pyenv/versions").glob("3.*/bin/python3"))
    for exe in candidates:
        if not exe or not os.access(exe, os.X_OK):
            continue
        probe = subprocess.run([exe, "-c", "import sys, venv, ensurepip; print(sys.implementation.name, "
                                "'%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
        name, _sep, version = probe.stdout.strip().partition(" ")
        if probe.returncode == 0 and name == "cpython" and version not in found and \
                tuple(int(x) for x in version.split(".")) >= (3, 11):
            found[version] = exe
    return list(found.values())


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV")) and k != "PATH"} | {"PATH": "/usr/bin:/bin"}


def run(argv: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=clean_env(), text=True, capture_output=True, timeout=900, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    tree = labkit.copy_checkout(tmp_path_factory.mktemp("checkout"))  # not in this tree: workers build at once
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(tree)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (whl,) = out.glob("pubip-*.whl")
    yield whl


def venv(python: str, where: Path, requirement: str) -> Path:
    made = run([python, "-m", "venv", str(where)], where.parent)
    assert made.returncode == 0, made.stderr
    pip = run([str(where / "bin/pip"), "install", "-q", requirement], where.parent)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    return where / "bin"


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.mark.parametrize("python", pythons())
def test_node_venv_plans_and_checks_a_config_without_ansible(wheel: Path, python: str, tmp_path: Path) -> None:
    bin_dir = venv(python, tmp_path / "node", str(wheel))
    assert run([str(bin_dir / "pubip"), "--version"], tmp_path).stdout.strip() == "pubip 0.2.0"
    vectors = json.loads(VECTORS.read_text())[:5]
    plan = run([str(bin_dir / "pubip"), "plan", "--input", "-"], tmp_path, input=json.dumps(vectors))
    assert plan.returncode == 0, plan.stderr
    assert [[(a["ip"], a["pnn"]) for a in out["assignments"]] for out in json.loads(plan.stdout)] == \
        [[(e["ip"], e["pnn"]) for e in v["expected"]] for v in vectors]
    for name in ("secret", "peer-secret"):
        (tmp_path / name).write_text("s3cret\n")
        (tmp_path / name).chmod(0o600)
    cfg = tmp_path / "watchdog.yml"
    cfg.write_text(f"node: node1\nlistener:\n  url: http://192.0.2.254:8750/v1/takeover-run\n"
                   f"  secret_file: {tmp_path}/secret\npeers:\n  secret_file: {tmp_path}/peer-secret\n"
                   f"  nodes:\n    node2: 192.0.2.2\n")
    checked = run([str(bin_dir / "pubip-watchdog"), "--check-config", "--config", str(cfg)], tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert run([str(bin_dir / "python"), "-c", "import ansible"], tmp_path).returncode != 0  # a node: no Ansible
    print(f"node venv on {python}: {size_mb(tmp_path / 'node'):.0f} MB")


def documents_the_collection(bin_dir: Path, cwd: Path) -> None:
    for plugin in ("pubip.cluster.public_ip", "pubip.cluster.takeover_run"):
        doc = run([str(bin_dir / "ansible-doc"), "-t", "module", plugin], cwd)
        assert doc.returncode == 0 and "CTDB" in doc.stdout, doc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("python", pythons()[1:])  # this Python's controller venv: the lab test below
def test_controller_venv_documents_the_collection(wheel: Path, python: str, tmp_path: Path) -> None:
    bin_dir = venv(python, tmp_path / "ctl", f"{wheel}[controller]")
    documents_the_collection(bin_dir, tmp_path)
    print(f"controller venv on {python}: {size_mb(tmp_path / 'ctl'):.0f} MB")


@pytest.mark.slow
@pytest.mark.lab
def test_controller_venv_documents_the_collection_and_runs_the_main_job_against_a_lab(
        wheel: Path, tmp_path: Path, lab_factory: object) -> None:
    bin_dir = venv(sys.executable, tmp_path / "ctl", f"{wheel}[controller]")
    documents_the_collection(bin_dir, tmp_path)
    handle = lab_factory("--nodes", "3", "--vips", "3", "--ipv6", "--no-watchdog", "--no-takeover")  # type: ignore
    proc = subprocess.run(["ip", "netns", "exec", handle.ctl, str(bin_dir / "ansible-playbook"), "-i",
                           handle.inventory, "pubip.cluster.takeover_run"], cwd=tmp_path, env=clean_env(),
                          text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    holders = handle.holders()
    assert all(len(h) == 1 for h in holders.values()) and len(holders) == 6
    assert labkit.LabHandle(handle.info).count_by_host() == {"node1": 2, "node2": 2, "node3": 2}


def test_execution_environment_definition_builds_a_context(tmp_path: Path) -> None:
    """execution-environment.yml for AWX: ansible-builder (no container engine here) makes the build context,
    installing the collection from its galaxy tarball with the collection's Python and system requirements."""
    bin_dir = Path(sys.executable).parent
    built = subprocess.run([str(bin_dir / "ansible-galaxy"), "collection", "build", "--force", "--output-path",
                            str(tmp_path / "dist"), str(ROOT / "collection/ansible_collections/pubip/cluster")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    shutil.copy(ROOT / "execution-environment.yml", tmp_path)
    made = subprocess.run([str(bin_dir / "ansible-builder"), "create", "-f", "execution-environment.yml",
                           "--context", str(tmp_path / "ctx")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (tmp_path / "ctx/_build/dist/pubip-cluster-0.2.0.tar.gz").exists()
    assert "dist/pubip-cluster-0.2.0.tar.gz" in (tmp_path / "ctx/_build/requirements.yml").read_text()
    assert "ansible-galaxy collection install" in (tmp_path / "ctx/Dockerfile").read_text()
    import tarfile

    with tarfile.open(tmp_path / "dist/pubip-cluster-0.2.0.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"meta/execution-environment.yml", "requirements.txt", "bindep.txt",
            "playbooks/takeover_run.yml"} <= names

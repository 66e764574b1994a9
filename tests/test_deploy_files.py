"""deploy/: what can be checked without a container engine. The Dockerfile's build inputs exist and its
command is a real console script with real arguments; compose.yaml and the Helm values parse, run commands
and modules that exist, and every environment variable they use is documented in docs/; the Helm
values carry the same instance settings as deploy/dagster.yaml (run queue, launcher, instance class, run
monitoring and retries), and both workspaces name the code location alike. The unauthenticated servers
are reachable only through the authenticating proxy: compose keeps them off the gateway's network, and
the Helm chart ships the proxy, on unless switched off."""

import importlib
import importlib.util
import itertools
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from offload import paths
from offload.runtime import concurrency, instance

ROOT = paths.PROJECT_ROOT
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
IMAGE_ROOT = "/opt/offload"  # the Dockerfile's WORKDIR: the repository's root inside the image
OFFLOAD_SERVICES = {"code-server", "webserver", "daemon", "webhooks", "batch-creator"}
# Where each console script's click command lives, to check subcommands and options without running them.
CLICK_COMMANDS = {"dagster": "dagster._cli", "dagster-webserver": "dagster_webserver.cli",
                  "dagster-daemon": "dagster._daemon.cli"}  # fmt: skip


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def helm_values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def helm() -> dict[str, Any]:
    """The values passed to Dagster's chart (a dependency of offload's chart, so under ``dagster:``)."""
    return helm_values()["dagster"]


def readme_variables() -> set[str]:
    """Variables named in the docs: README.md and docs/*.md (configuration.md, production.md, security.md)."""
    text = "\n".join(page.read_text() for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", text))


def env_example() -> dict[str, str]:
    """deploy/.env.example's variables, commented-out optional ones included."""
    found = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", (DEPLOY / ".env.example").read_text(), re.M)
    return dict(found)


def image_command() -> list[str]:
    return next(json.loads(arguments) for kind, arguments in dockerfile() if kind == "CMD")


def check_command(argv: list[str]) -> None:
    """The executable is a console script of this environment; ``-m`` modules import; files exist."""
    executable = argv[0]
    assert executable == "python" or (BIN / executable).exists(), f"no console script {executable}"
    for flag, value in itertools.pairwise(argv):
        if flag == "-m":
            assert importlib.util.find_spec(value) is not None, f"no module {value}"
        if flag in ("-f", "-w", "--python-file", "--workspace"):
            path = Path(value.replace(IMAGE_ROOT, str(ROOT)))
            assert (path if path.is_absolute() else ROOT / path).is_file(), f"no file {value}"
    if executable in CLICK_COMMANDS:
        check_click_command(argv)


def check_click_command(argv: list[str]) -> None:
    """Every subcommand in ``argv`` exists, and every option it passes is one the command takes."""
    command = importlib.import_module(CLICK_COMMANDS[argv[0]]).cli
    words = argv[1:]
    while isinstance(command, click.Group):
        assert words and words[0] in command.commands, f"{argv[0]}: no subcommand {words[:1]}"
        command, words = command.commands[words[0]], words[1:]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    assert {word for word in words if word.startswith("-")} <= options, f"{argv}: unknown option"


def check_configurable(block: dict[str, Any]) -> None:
    module = importlib.import_module(block["module"])
    assert hasattr(module, block["class"]), f"{block['module']} has no {block['class']}"


# -- Dockerfile ------------------------------------------------------------------------------------------


def test_dockerfile_builds_from_python_311_slim_and_copies_only_what_exists():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [shlex.split(arguments) for kind, arguments in instructions if kind == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    # Everything the installed package is made of is in the image (pyproject's package list).
    copied = {Path(source).parts[0] for *sources, _ in copies for source in sources}
    assert {"offload", "pipelines", "resources", "schedules", "sensors", "definitions.py"} <= copied
    assert ("WORKDIR", IMAGE_ROOT) in instructions


def test_dockerfile_serves_the_code_location_on_4000():
    command = image_command()
    assert command[:3] == ["dagster", "code-server", "start"]
    check_command(command)
    assert command[command.index("-p") + 1] == "4000"
    assert ("EXPOSE", "4000") in dockerfile()


# -- compose ---------------------------------------------------------------------------------------------


def test_compose_runs_postgres_and_offloads_services_from_the_image():
    services = compose()["services"]
    assert set(services) == {"postgres", "proxy", *OFFLOAD_SERVICES}
    for name in OFFLOAD_SERVICES:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["env_file"] == ".env"
        check_command(service.get("command") or image_command())
    assert services["webhooks"]["command"][:3] == ["python", "-m", "offload.webhooks"]
    check_command(services["code-server"]["healthcheck"]["test"][1:])
    # No authentication in Dagster's webserver: it publishes nothing; the authenticating proxy is the way in.
    assert "ports" not in services["webserver"]
    proxy = services["proxy"]
    assert proxy["environment"]["OFFLOAD_WEBSERVER_UPSTREAM"] == "webserver:3000"
    templates = proxy["volumes"][0].split(":")[0]
    assert (DEPLOY / templates / "offload.conf.template").is_file()
    assert proxy["ports"] == ["${OFFLOAD_PROXY_PORT}:8080"]
    # Every variable the nginx configuration reads is set; the users script runs before nginx starts.
    conf = (DEPLOY / templates / "offload.conf.template").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", conf)) <= set(proxy["environment"])
    script = DEPLOY / "proxy" / "40-offload-users.sh"
    assert f"./proxy/{script.name}:/docker-entrypoint.d/{script.name}:ro" in proxy["volumes"]
    assert script.stat().st_mode & 0o111  # the image runs only executable scripts


def test_compose_keeps_the_unauthenticated_servers_off_the_gateways_network():
    """The gateway faces the internet; the webserver and the code server answer anyone who reaches them."""
    services = compose()["services"]
    defaults = compose().get("x-offload", {}).get("networks")

    def networks(name: str) -> set[str]:
        found = services[name].get("networks", defaults if name in OFFLOAD_SERVICES else None)
        assert found, f"{name}: no networks listed, so it would join the default network with every service"
        return set(found)

    gateway = networks("webhooks")
    assert not gateway & (networks("webserver") | networks("code-server"))
    assert gateway & networks("postgres")  # the gateway's inbox and runs live in PostgreSQL
    for name in ("webserver", "daemon", "proxy"):  # the daemon and the proxy still reach the servers
        assert networks(name) & networks("code-server") and networks(name) & networks("webserver")
    assert set(compose()["networks"]) >= {n for name in services for n in networks(name)}
    # The gateway stores events; the daemon's sensor launches their runs where the servers are reachable.
    assert services["webhooks"]["environment"]["OFFLOAD_WEBHOOK_LAUNCH"] == "sensor"


def test_compose_variables_are_in_the_env_example_and_documented():
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert used and used <= set(env_example())
    assert set(env_example()) - readme_variables() == set()


def test_the_production_workspace_names_the_location_as_the_local_one():
    local = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_file"]
    [served] = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    assert served["grpc_server"]["location_name"] == local["location_name"]
    assert served["grpc_server"]["host"] in compose()["services"]
    assert served["grpc_server"]["port"] == 4000


def test_the_instance_file_names_real_classes_and_documented_variables():
    config = yaml.safe_load(instance.PRODUCTION_FILE.read_text())
    for key in ("instance_class", "run_launcher", "run_coordinator", "compute_logs"):
        check_configurable(config[key])
    variables = set(re.findall(r"env: ([A-Z][A-Z0-9_]*)", instance.PRODUCTION_FILE.read_text()))
    assert variables - readme_variables() == set()
    assert variables <= set(env_example()) | {"DAGSTER_COMPUTE_LOG_DIR"}  # that one the image sets


# -- Helm ------------------------------------------------------------------------------------------------


def test_helm_values_carry_the_production_instance_settings():
    values = helm()
    common = instance.common_settings()
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "CustomRunCoordinator"
    assert coordinator["config"]["customRunCoordinator"] == concurrency.run_coordinator_config()
    assert values["runLauncher"]["type"] == "CustomRunLauncher"
    assert values["runLauncher"]["config"]["customRunLauncher"] == common["run_launcher"]
    extra = values["additionalInstanceConfig"]
    assert extra == {key: common[key] for key in ("instance_class", "run_monitoring", "run_retries")}
    # The chart's own blocks are off, else the instance file would hold each key twice.
    assert not values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert not values["dagsterDaemon"]["runRetries"]["enabled"]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    for block in (coordinator["config"]["customRunCoordinator"], *extra.values()):
        if "module" in block:
            check_configurable(block)


def test_helm_runs_offloads_image_everywhere_with_real_arguments_and_documented_variables():
    values = helm()
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == "offload" and deployment["port"] == 4000
    check_command(["dagster", "api", "grpc", *deployment["dagsterApiGrpcArgs"]])
    images = {values[name]["image"]["repository"] for name in ("dagsterWebserver", "dagsterDaemon")}
    assert images == {deployment["image"]["repository"]}
    assert {item["name"] for item in deployment["env"]} - readme_variables() == set()


def test_helm_ships_the_authenticating_proxy_on_by_default():
    from dagster.version import __version__

    chart = yaml.safe_load((DEPLOY / "helm" / "Chart.yaml").read_text())
    [dependency] = chart["dependencies"]
    assert (dependency["name"], dependency["version"]) == ("dagster", __version__)
    proxy = helm_values()["proxy"]
    assert proxy["enabled"] is True
    template = (DEPLOY / "helm" / "templates" / "proxy.yaml").read_text()
    assert re.search(r"^\{\{- if \.Values\.proxy\.enabled \}\}$", template, re.M)
    assert template.rstrip().endswith("{{- end }}")
    # The same nginx configuration as compose's, from a copy inside the chart (Helm reads only its own files).
    conf = (DEPLOY / "proxy" / "templates" / "offload.conf.template").read_text()
    for name in ("offload.conf.template", "40-offload-users.sh"):
        assert (DEPLOY / "helm" / "files" / name).read_text() == next(
            (DEPLOY / "proxy").rglob(name)
        ).read_text()
        assert f'.Files.Get "files/{name}"' in template
    assert (
        "mountPath: /docker-entrypoint.d/40-offload-users.sh" in template and "defaultMode: 0755" in template
    )
    # Every value the template reads exists; every variable the nginx configuration reads is set.
    for path in re.findall(r"\.Values\.proxy((?:\.\w+)+)", template):
        node: Any = proxy
        for key in path.strip(".").split("."):
            assert key in node, f"proxy{path}: not in values.yaml"
            node = node[key]
    assert set(re.findall(r"\$\{(\w+)\}", conf)) <= set(re.findall(r"- name: (OFFLOAD_\w+)", template))
    assert 'required "proxy.uiUrl: ' in template  # no default public name: the install says to set it
    assert proxy["upstream"] == "{{ .Release.Name }}-webserver:80"  # Dagster's chart's webserver Service
    assert "tpl .Values.proxy.upstream ." in template
    assert helm()["dagsterWebserver"]["service"] == {"type": "ClusterIP", "port": 80}
    assert proxy["service"]["type"] == "ClusterIP"


@pytest.mark.parametrize("name", ["compose.yaml", "helm/values.yaml", "workspace.yaml", "dagster.yaml"])
def test_deploy_yaml_parses(name):
    assert isinstance(yaml.safe_load((DEPLOY / name).read_text()), dict)


def test_the_example_web_app_runs_after_the_plain_install():
    """``uvicorn examples.fastapi_app:app`` after ``scripts/setup.sh`` (no extra): fastapi is a base
    dependency, not only a dev one."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[ ;]", requirement)[0] for requirement in project["dependencies"]]
    assert "fastapi" in names and "uvicorn" in names
    source = (ROOT / "examples" / "fastapi_app.py").read_text()
    assert "from fastapi import" in source

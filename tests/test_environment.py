"""The environment snapshot: what it records about this machine, and what it never shows."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from pathlib import Path

import pytest

from repro.app.environment import REDACTED, collect_environment, looks_secret, redact, relevant_env


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "CARGO_REGISTRY_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "API_KEY",
        "my_api_key",
        "SSH_PRIVATE_KEY",
        "PGPASSWORD",
        "DB_PASS",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "NPM_AUTH",
        "OPENAI_APIKEY",
    ],
)
def test_secret_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name", ["PATH", "PWD", "AUTHOR", "KEYBOARD_LAYOUT", "PYTHONHASHSEED", "CARGO_HOME", "author"]
)
def test_ordinary_names(name: str) -> None:
    assert not looks_secret(name)


def test_redact_text_and_mappings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home" / "ada"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-1234567890")
    text = (
        f"clone {home}/src/ticketq; GITHUB_TOKEN=ghp_abcdef export PASSWORD='hunter2 x' "
        "https://ada:pa55word@git.example.org/repo.git and tok-1234567890 and "
        f"{home}-other and API_KEY: zzz9 and author: Ada"
    )
    out = redact(text)
    for secret in ("ghp_abcdef", "hunter2", "pa55word", "tok-1234567890", "zzz9", str(home) + "/"):
        assert secret not in out, secret
    assert "clone ~/src/ticketq" in out
    assert f"{home}-other" in out  # only the home directory itself becomes ~
    assert "author: Ada" in out
    data = redact(
        {
            "env": {"PATH": f"{home}/bin:/usr/bin", "NPM_TOKEN": "x" * 8, "EMPTY_TOKEN": ""},
            "list": [f"{home}/a", {"DB_PASSWORD": "p"}],
            "n": 3,
        }
    )
    assert data == {
        "env": {"PATH": "~/bin:/usr/bin", "NPM_TOKEN": REDACTED, "EMPTY_TOKEN": ""},
        "list": ["~/a", {"DB_PASSWORD": REDACTED}],
        "n": 3,
    }


def test_relevant_env_keeps_what_matters_and_redacts() -> None:
    env = {
        "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/opt/lib",
        "PYTHONHASHSEED": "0",
        "CARGO_REGISTRY_TOKEN": "cargo-secret-value",
        "RUSTFLAGS": "-Zsanitizer=thread",
        "TSAN_OPTIONS": "halt_on_error=1",
        "PYO3_PYTHON": "/x/python3",
        "CFLAGS": "-O1",
        "USER": "ada",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "EDITOR": "vi",
    }
    out = relevant_env(env)
    assert list(out) == sorted(out)
    assert out["CARGO_REGISTRY_TOKEN"] == REDACTED
    assert out["TSAN_OPTIONS"] == "halt_on_error=1"
    assert {
        "PATH",
        "LD_LIBRARY_PATH",
        "PYTHONHASHSEED",
        "RUSTFLAGS",
        "PYO3_PYTHON",
        "CFLAGS",
    } <= set(out)
    assert "USER" not in out and "EDITOR" not in out and "AWS_SECRET_ACCESS_KEY" not in out


def test_collect_environment_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSAN_OPTIONS", "second_deadlock_stack=1")
    monkeypatch.setenv("CARGO_REGISTRY_TOKEN", "do-not-publish-me")
    env = collect_environment()
    assert env["os"]["kernel"] == platform.release()
    assert env["os"]["system"] == platform.system()
    assert env["cpu"]["count"] == os.cpu_count()
    assert env["tsan_options"] == "second_deadlock_stack=1"
    assert env["env"]["CARGO_REGISTRY_TOKEN"] == REDACTED
    assert "do-not-publish-me" not in json.dumps(env)
    if Path("/proc/sys/vm/mmap_rnd_bits").exists():
        assert env["vm_mmap_rnd_bits"] == int(Path("/proc/sys/vm/mmap_rnd_bits").read_text())
    if shutil.which("gcc"):
        assert "gcc" in env["compilers"]["gcc"]
        rt = env["tsan_runtime"]["gcc"]
        assert rt is not None and "libtsan" in rt["path"]
    if shutil.which("rustc"):
        assert env["rust"]["release"] and env["rust"]["host"]
    assert "cpython" not in env and "extension" not in env
    json.dumps(env)  # stored in meta.json as is


def test_collect_environment_records_the_build(tmp_path: Path) -> None:
    patch = tmp_path / "revert.patch"
    patch.write_text("--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n")
    tarball_sha = "ab" * 32
    info = {
        "recipe": "r",
        "python": {
            "python": str(tmp_path / "py/bin/python3"),
            "prefix": str(tmp_path / "py"),
            "key": "k",
            "version": "3.13.5",
            "gil_disabled": True,
            "tsan": True,
            "compiler": "gcc",
            "compiler_version": "gcc (Debian 12.2.0-14) 12.2.0",
            "source": "/srv/mirror/Python-3.13.5.tar.xz",
            "source_id": tarball_sha,
            "configure_args": ["--prefix=/p", "--disable-gil", "--with-thread-sanitizer", "CC=gcc"],
            "patches": [str(patch)],
            "log": None,
        },
        "extension": {"repo": "../ticketq", "sha": "c" * 40, "key": "no-such-build"},
        "command": "./stress_test",
        "cwd": "/w",
        "tsan_options": {"halt_on_error": "0"},
    }
    env = collect_environment(info)
    py = env["cpython"]
    assert py["origin"] == "tarball" and py["tarball_sha256"] == tarball_sha
    assert py["configure_args"][1:3] == ["--disable-gil", "--with-thread-sanitizer"]
    assert py["patches"][0]["sha256"] == hashlib.sha256(patch.read_bytes()).hexdigest()
    assert py["patches"][0]["text"] == patch.read_text()
    assert env["extension"] == {"repo": "../ticketq", "sha": "c" * 40, "build_env": None}
    assert env["run"]["tsan_options"] == {"halt_on_error": "0"}
    git_info = dict(info, python=dict(info["python"], source="/src/cpython", source_id="d" * 40))
    assert collect_environment(git_info)["cpython"]["commit"] == "d" * 40


def test_run_variables_that_differ_on_a_worker_are_named() -> None:
    from repro.app.environment import variable_differences

    here = {"PYTHON_GIL": "0", "PYTHONPATH": "/a", "TSAN_OPTIONS": "x=1", "CC": "gcc"}
    there = {
        "PYTHONPATH": "/b",
        "PYTHON": "/cache/python3",  # the interpreter repro built on the worker
        "TSAN_OPTIONS": "x=2",
        "CC": "clang",
        "PYTHONMALLOC": "m",
    }
    # Paths are each machine's own, build variables are not the run's, and what the
    # recipe sets is the same everywhere.
    assert variable_differences(here, there, ["PYTHONMALLOC"]) == [
        "PYTHON_GIL (here '0', there unset)",
        "TSAN_OPTIONS (here 'x=1', there 'x=2')",
    ]


def test_the_record_names_each_worker_whose_run_variables_differ() -> None:
    from repro.app.environment import run_variables, worker_variables

    recorded = {"PYTHON_GIL": "0", "PYTHONPATH": "/a", "CC": "gcc", "TSAN_OPTIONS": "x=1"}
    others = {
        "tcp://b:1": {"PYTHON_GIL": "0", "PYTHONPATH": "/b", "CC": "clang", "TSAN_OPTIONS": "x=1"},
        "tcp://c:1": {"PYTHONPATH": "/a", "TSAN_OPTIONS": "x=1", "PYTHONMALLOC": "malloc"},
    }
    # b differs only in a path and a build variable: the same experiment.
    differ = worker_variables(recorded, others)
    assert differ == {"tcp://c:1": {"PYTHON_GIL": None, "PYTHONMALLOC": "malloc"}}
    # The record takes them from the prepared run, beside its env.
    snap = run_variables({"env": recorded, "worker_env": differ})
    assert snap == {"env": recorded, "tsan_options": "x=1", "worker_env": differ}
    assert "worker_env" not in (run_variables({"env": recorded, "worker_env": {}}) or {})

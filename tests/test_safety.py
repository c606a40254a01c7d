"""Hostile and faulty input: paths, names and values that must stay data, through the real CLI.

A recipe's directory, a target's function name or an environment value is data; none
of them may become a shell command, a line of the generated script, HTML in a report
or a secret in a published file. Each test here was seen failing before its fix.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import repro

from repro.report.markdown import PLAIN_MARKER

HOSTILE_DIR = "dir with space;touch PWNED;x"


def _plain_script(markdown: str) -> str:
    """The plain shell script of a Markdown report, as a reader would copy it."""
    after = markdown.split(PLAIN_MARKER, 1)[1]
    fence = after.split("\n", 2)[1]
    assert fence.startswith("```"), fence
    return after.split(fence + "\n", 1)[1].split("\n```", 1)[0] + "\n"


def _flaky_recipe_in(folder: Path, tsan_bin: Path, **reproducer: object) -> Path:
    """A recipe whose reproducer is a script beside it, running a real racy TSAN program."""
    folder.mkdir(parents=True)
    run = folder / "run.sh"
    run.write_text(f'#!/bin/sh\nexec {tsan_bin / "flaky_race"} "$@"\n')
    run.chmod(0o755)
    data = {
        "name": "hostile",
        "reproducer": {"command": "{recipe_dir}/run.sh", "timeout": 30, **reproducer},
        "target": {"functions": ["publish", "poll_result"]},
    }
    path = folder / "recipe.yaml"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "reproducer",
    [
        {"command": "{recipe_dir}/run.sh"},
        {"setup": ["cp {recipe_dir}/run.sh {work}/copy.sh"], "command": "{work}/copy.sh"},
    ],
    ids=["command", "setup"],
)
def test_placeholder_with_shell_metachars_is_quoted(
    tmp_path: Path, tsan_bin: Path, reproducer: dict[str, object]
) -> None:
    """`{recipe_dir}` with a space and a `;`: one word in the command, the setup and the script."""
    recipe = _flaky_recipe_in(tmp_path / HOSTILE_DIR, tsan_bin, **reproducer)
    runs = tmp_path / "runs"
    env = {"REPRO_CACHE_DIR": str(tmp_path / "cache")}  # the setup runs there: look for PWNED
    res = repro(
        "stress", str(recipe), "--runs", "20", "--runs-dir", str(runs), cwd=tmp_path, env=env
    )
    out = res.stdout + res.stderr
    assert not list(tmp_path.rglob("PWNED")), out
    assert "crash" not in out, out
    assert res.returncode == 0, out  # the race of flaky_race was reproduced
    (run_dir,) = runs.iterdir()

    # The generated script runs the same commands, quoted the same way.
    report = repro("report", str(run_dir), env=env)
    assert report.returncode == 0, report.stderr
    script = _plain_script(report.stdout)
    play = tmp_path / "play"
    play.mkdir()
    done = subprocess.run(
        ["bash", "-c", script], cwd=play, capture_output=True, text=True, timeout=300
    )
    assert not list(tmp_path.rglob("PWNED")), script
    assert "race reproduced in run" in done.stdout, done.stdout + done.stderr + script


def test_placeholder_values_are_one_shell_word() -> None:
    """Only the value is quoted: `{work}/x` stays one word, `{{` stays a brace."""
    from repro.app.context import expand, expand_for_shell

    values = {"work": "/a b/w'x", "threads": "8", "python": "/usr/bin/python3"}
    assert expand_for_shell("{work}/compile_string {threads}", values) == (
        "'/a b/w'\"'\"'x'/compile_string 8"
    )
    assert expand_for_shell("{python} -c 'print({{1}})'", values) == (
        "/usr/bin/python3 -c 'print({1})'"
    )
    assert expand("{work}/sub", values) == "/a b/w'x/sub"  # a path, never a shell
    argv = subprocess.run(
        ["sh", "-c", "printf '%s\\n' " + expand_for_shell("{work}/c {threads}", values)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert argv == ["/a b/w'x/c", "8"]


def test_shell_braces_are_the_shells_own() -> None:
    """A group `{ a; b; }`, `${VAR}` and brace expansion stay shell code (met on bitarray's
    recipe, where `{ ...; }` was refused as an unknown placeholder); a name in braces is
    still a placeholder, and a misspelt one is still an error."""
    from repro.app.context import expand_for_shell
    from repro.errors import ReproError

    values = {"work": "/a b", "python": "/usr/bin/python3"}
    code = 'W=w; { echo "${W}"; echo {x,y}; echo {1..2}; } && echo {work}'
    expanded = expand_for_shell(code, values)
    assert expanded == "W=w; { echo \"${W}\"; echo {x,y}; echo {1..2}; } && echo '/a b'"
    out = subprocess.run(["bash", "-c", expanded], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["w", "x y", "1 2", "/a b"]
    with pytest.raises(ReproError, match=r"unknown placeholder \{pyhton\}"):
        expand_for_shell("{pyhton} -V", values)


HOSTILE_TEXT = "<script>alert(1)</script> <img src=x onerror=alert(2)> <svg/onload=alert(3)>"


def _outside_code(markdown: str) -> str:
    """What a Markdown viewer interprets: the text outside fenced blocks and code spans."""
    lines, fence = [], ""
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence) and not stripped.strip("`"):
                fence = ""
            continue
        if stripped.startswith("```"):
            fence = "`" * (len(stripped) - len(stripped.lstrip("`")))
            continue
        lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text)


def test_hostile_names_stay_data_in_reproduce_sh_and_markdown(
    tmp_path: Path, tsan_bin: Path
) -> None:
    """A newline in a target function, HTML in a description and a function name."""
    recipe = _flaky_recipe_in(tmp_path / "r", tsan_bin)
    data = json.loads(recipe.read_text())
    data["description"] = HOSTILE_TEXT + " ![pixel](http://example.invalid/t.png)"
    data["target"]["functions"] = ["publish\ntouch PWNED\n", "<img src=y onerror=alert(4)>"]
    recipe.write_text(json.dumps(data))
    runs = tmp_path / "runs"
    res = repro("stress", str(recipe), "--runs", "2", "--runs-dir", str(runs), cwd=tmp_path)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    (run_dir,) = runs.iterdir()

    md = repro("report", str(run_dir))
    assert md.returncode == 0, md.stderr
    shown = _outside_code(md.stdout)
    for bad in ("<script", "<img", "<svg", "![pixel]"):
        assert bad not in shown, shown
    assert "alert(1)" in shown  # escaped, not dropped
    html = repro("report", str(run_dir), "--format", "html")
    assert html.returncode == 0, html.stderr
    for bad in ("<script>alert", "<img src=x onerror", "<svg/onload", "<img src=y onerror"):
        assert bad not in html.stdout

    script = _plain_script(md.stdout)
    play = tmp_path / "play"
    play.mkdir()
    subprocess.run(["bash", "-c", script], cwd=play, capture_output=True, timeout=300)
    assert not list(tmp_path.rglob("PWNED")), script
    assert not any(line.startswith("touch PWNED") for line in script.splitlines()), script


def test_markdown_text_and_code_spans_cannot_break_out() -> None:
    from repro.report.markdown import cell, inline, text, url

    assert text("a <- b | std::vector<int>") == "a <- b | std::vector&lt;int>"
    assert text("x\n# heading [l](u) \\") == "x # heading \\[l\\](u) \\\\"
    assert inline("a``b") == "``` a``b ```" and inline("`") == "`` ` ``"
    assert cell(inline("a|b\nc")) == "`a\\|b c`"
    assert url("javascript:alert(1)") is None
    assert url("https://h/x) <b>") == "https://h/x%29%20%3Cb%3E"


def test_shell_comment_keeps_one_line() -> None:
    from repro.report.shell import comment

    assert comment("a\nrm -rf ~\r\x1b[2J") == "# a\\nrm -rf ~\\r\\x1b[2J"


# Made-up credentials in their providers' shapes.
GH_PAT = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"
AWS_ID = "AKIA" + "Q3EXAMPLEK7EXAMPL"[:16]
PEM_BODY = "MIIEowIBAAKCAQEAexamplekeybody"


def test_secrets_by_shape_and_flow_set_stay_out_of_every_report(
    tmp_path: Path, tsan_bin: Path
) -> None:
    """`--set 'reproducer.env={GH_TOKEN: …}'` and token-shaped values under innocent names."""
    recipe = _flaky_recipe_in(tmp_path / "r", tsan_bin)
    data = json.loads(recipe.read_text())
    data["reproducer"]["env"] = {
        "PLAIN_SETTING": GH_PAT,
        "OTHER_SETTING": AWS_ID,
        "DEPLOY_MATERIAL": f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n"
        "-----END RSA PRIVATE KEY-----",
    }
    data["reproducer"]["command"] = f"PLAIN={GH_PAT} {{recipe_dir}}/run.sh"  # in the summary
    recipe.write_text(json.dumps(data))
    runs = tmp_path / "runs"
    flow_secret = "flow-form-secret-0006"
    res = repro(
        "stress", str(recipe), "--runs", "2", "--runs-dir", str(runs),
        "--set", f"reproducer.env={{GH_TOKEN: {flow_secret}, PLAIN_SETTING: {GH_PAT}}}",
        "--report", str(tmp_path / "end.md"), "--json-out", str(tmp_path / "out.json"),
        cwd=tmp_path,
        env={"CARGO_PLAIN_SETTING": GH_PAT},  # recorded in the run's environment
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stdout + res.stderr
    (run_dir,) = runs.iterdir()
    outputs = {name: (tmp_path / name).read_text() for name in ("end.md", "out.json")}
    for fmt in ("markdown", "json", "html"):
        rep = repro("report", str(run_dir), "--format", fmt)
        assert rep.returncode == 0, rep.stderr
        outputs[fmt] = rep.stdout
    meta = json.loads((run_dir / "meta.json").read_text())
    outputs["meta.json environment"] = json.dumps(meta["environment"])
    for name, text in outputs.items():
        for secret in (flow_secret, GH_PAT, AWS_ID, PEM_BODY):
            assert secret not in text, (name, secret)
    assert "GH_TOKEN" in outputs["markdown"]  # the --set item is still shown, its value is not

"""Redaction by name and by shape: what a published report or run record may never hold."""

from __future__ import annotations

import pytest

from repro.redact import REDACTED, looks_like_token, redact

# Made-up credentials in the shapes their providers use.
TOKENS = {
    "github": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "github-fine-grained": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "gitlab": "glpat-" + "x1Y2z3W4v5U6t7S8r9Q0",
    "openai": "sk-proj-" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56",
    "private-key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----",
}


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_token_shaped_values_are_redacted_under_innocent_names(kind: str) -> None:
    token = TOKENS[kind]
    assert looks_like_token(token)
    text = f"PLAIN_SETTING: {token}\nexport OTHER={token} # and in prose: {token}."
    out = redact(text)
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in out and token not in out, out
    assert "PLAIN_SETTING: " + REDACTED in out
    data = redact({"env": {"PLAIN_SETTING": token}, "set": [f"reproducer.env.X={token}"]})
    assert data == {"env": {"PLAIN_SETTING": REDACTED}, "set": [f"reproducer.env.X={REDACTED}"]}


def test_a_cut_off_private_key_is_redacted_to_the_end() -> None:
    out = redact("key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nxyz")
    assert out == "key:\n" + REDACTED


@pytest.mark.parametrize(
    "item",
    [
        "reproducer.env={GH_TOKEN: flowsecret1}",
        "reproducer.env={A: 1, GH_TOKEN: flowsecret1, B: 2}",
        'reproducer.env={"GH_TOKEN": "flowsecret1"}',
        "reproducer.env={gh_token: 'flowsecret1'}",
        "reproducer.env.GH_TOKEN=flowsecret1",
    ],
)
def test_secret_names_in_set_items_are_redacted(item: str) -> None:
    out = redact(item)
    assert "flowsecret1" not in out and REDACTED in out, out
    assert out.startswith("reproducer.env")


@pytest.mark.parametrize(
    "text",
    [
        "task-scheduler-worker-number-one",  # sk- inside a word
        "sk-learn-compatibility-check-only",  # no digit: a name, not a key
        "AKIA is not a key",
        "tq_publish <- producer | tq_poll <- consumer",
        "the password: see the README",  # prose, not a YAML key
        'export PYO3_PYTHON="$PYTHON"',
        "author: Ada, KEYBOARD=us",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_yaml_keys_in_a_recipe_are_redacted_whatever_their_case() -> None:
    text = "reproducer:\n  env:\n    gh_token: yamlsecret1 and more\n    - api_key: yamlsecret2\n"
    out = redact(text)
    assert "yamlsecret" not in out and "more" not in out, out
    assert "gh_token: " + REDACTED in out

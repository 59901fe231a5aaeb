"""The admin CLI as operators run it: a subprocess on a config file, with the pepper in
the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher

REPO = Path(__file__).resolve().parents[2]
PEPPER = "cli-test-pepper-0123456789abcdef"


@pytest.fixture
def config_file(tmp_path) -> Path:
    serve_config = yaml.safe_load((REPO / "configs/local.yaml").read_text())
    args = serve_config["applications"][0]["args"]
    args["auth"] = {"enabled": True, "database_url": f"sqlite:///{tmp_path}/keys.db"}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(serve_config))
    return path


def cli(config_file: Path, *argv: str, pepper: str | None = PEPPER, **variables: str):
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_SERVICE_KEY_PEPPER"}
    if pepper is not None:
        env["IMAGE_SERVICE_KEY_PEPPER"] = pepper
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-m", "serve_app.security.admin", "--config", str(config_file), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def store_for(config_file: Path) -> KeyStore:
    url = f"sqlite:///{config_file.parent}/keys.db"
    return KeyStore.open(url, KeyHasher(PEPPER.encode()))


def test_create_prints_the_key_once_and_list_never_does(config_file):
    created = cli(
        config_file, "create", "--tenant", "acme", "--name", "crm",
        "--scopes", "generate,edit", "--models", "sd-tiny",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-") and len(created.stdout.splitlines()) == 1
    assert "shown only now" in created.stderr
    store = store_for(config_file)
    record = store.verify(key)
    assert record is not None and record.scopes == {"generate", "edit"}
    listed = cli(config_file, "list")
    as_json = cli(config_file, "list", "--json", "--tenant", "acme")
    for output in (listed, as_json):
        assert output.returncode == 0 and key not in output.stdout
        secret = key.removeprefix(f"sk-{record.prefix}-")  # may itself contain '-'
        assert secret not in output.stdout and record.prefix in output.stdout
    [row] = json.loads(as_json.stdout)
    assert row["models"] == ["sd-tiny"] and row["revoked_at"] is None
    store.close()


def test_rotate_then_revoke(config_file):
    old_key = cli(config_file, "create", "--tenant", "acme", "--name", "oa", "--scopes", "jobs")
    old_key = old_key.stdout.strip()
    store = store_for(config_file)
    old_prefix = store.verify(old_key).prefix
    rotated = cli(config_file, "rotate", old_prefix, "--old-expires-in-days", "1")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert store.verify(new_key).rotated_from == old_prefix
    assert store.verify(old_key) is not None  # both live during the grace period
    revoked = cli(config_file, "revoke", old_prefix)
    assert revoked.returncode == 0 and old_prefix in revoked.stdout
    assert store.verify(old_key) is None and store.verify(new_key) is not None
    store.close()


def test_errors_are_plain_messages(config_file):
    missing = cli(config_file, "revoke", "nosuchprefix")
    assert missing.returncode == 1 and "no key with prefix" in missing.stderr
    no_pepper = cli(config_file, "list", pepper=None)
    assert no_pepper.returncode == 2 and "IMAGE_SERVICE_KEY_PEPPER" in no_pepper.stderr
    bad_scope = cli(config_file, "create", "--tenant", "a", "--name", "b", "--scopes", "root")
    assert bad_scope.returncode == 2 and "scopes" in bad_scope.stderr
    assert "Traceback" not in missing.stderr + no_pepper.stderr + bad_scope.stderr


def test_the_console_script_is_installed(config_file):
    script = Path(sys.executable).parent / "image-service-keys"
    env = {**os.environ, "IMAGE_SERVICE_KEY_PEPPER": PEPPER}
    listed = subprocess.run(
        [str(script), "--config", str(config_file), "list"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr


def test_a_key_naming_a_model_the_config_does_not_serve_is_made_with_a_warning(config_file):
    created = cli(
        config_file, "create", "--tenant", "acme", "--name", "cms",
        "--scopes", "generate", "--models", "sd-tiny,z-image-portrait",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "serves no model named z-image-portrait" in created.stderr
    assert "sd-tiny" not in created.stderr.split("named")[1].split("(")[0]
    quiet = cli(
        config_file, "create", "--tenant", "acme", "--name", "crm",
        "--scopes", "generate", "--models", "sd-tiny",
    )  # fmt: skip
    assert "warning" not in quiet.stderr


def test_the_config_is_never_guessed(tmp_path):
    """Without --config it stops, rather than write keys to whatever database a default
    config names (a laptop's, when ops meant production's)."""
    script = Path(sys.executable).parent / "image-service-keys"
    env = {**os.environ, "IMAGE_SERVICE_KEY_PEPPER": PEPPER}
    listed = subprocess.run(
        [str(script), "list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 2
    assert "--config" in listed.stderr and "Traceback" not in listed.stderr
    assert not (tmp_path / "data").exists()


def test_the_key_database_url_from_the_environment_wins(config_file, tmp_path):
    """Where the URL carries a password it lives in $IMAGE_SERVICE_KEY_DATABASE_URL, not in
    the Serve config; the CLI writes where the Gateway reads."""
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    created = cli(
        config_file, "create", "--tenant", "acme", "--name", "crm", "--scopes", "generate",
        IMAGE_SERVICE_KEY_DATABASE_URL=elsewhere,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "elsewhere.db").exists()
    assert store_for(config_file).list_keys() == []

"""The application's pydantic config: the real local.yaml validates, bad ones name the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve_app.config import RESERVED_DEPLOYMENT_NAMES, AppConfig, parse_size

LOCAL_YAML = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"


@pytest.fixture(scope="module")
def local_args() -> dict:
    serve_config = yaml.safe_load(LOCAL_YAML.read_text())
    return serve_config["applications"][0]["args"]


@pytest.fixture
def args(local_args) -> dict:
    return copy.deepcopy(local_args)


def validation_message(args: dict) -> str:
    with pytest.raises(ValidationError) as info:
        AppConfig.model_validate(args)
    return str(info.value)


def test_local_yaml_args_validate(local_args):
    config = AppConfig.model_validate(local_args)
    assert [m.name for m in config.models] == [
        "z-image-tiny",
        "sd-tiny",
        "pix2pix-tiny",
        "qwen-edit-tiny",
        "qwen-edit-plus-tiny",
        "longcat-edit-tiny",
        "glm-4.6v-tiny",
    ]
    assert config.model("glm-4.6v-tiny").task == "vision-chat"
    assert config.model("sd-tiny").family == "stable-diffusion"
    assert config.model("sd-tiny").task == "text-to-image"
    assert config.model("qwen-edit-tiny").task == "image-edit"
    assert config.model("missing") is None
    assert config.storage.root == "./data/images"


def test_every_local_deployment_is_a_model_or_builtin(local_args):
    serve_config = yaml.safe_load(LOCAL_YAML.read_text())
    config = AppConfig.model_validate(local_args)
    deployments = {d["name"] for d in serve_config["applications"][0]["deployments"]}
    assert deployments == {m.name for m in config.models} | RESERVED_DEPLOYMENT_NAMES


def test_config_is_frozen(local_args):
    config = AppConfig.model_validate(local_args)
    with pytest.raises(ValidationError):
        config.templates_path = "elsewhere.yaml"


def test_unknown_top_level_key_is_named(args):
    args["templatez_path"] = "x"
    message = validation_message(args)
    assert "templatez_path" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_key_under_a_model_has_field_path(args):
    args["models"][1]["limits"]["max_widht"] = 512
    assert "models.1.limits.max_widht" in validation_message(args)


def test_wrong_type_under_a_model_has_field_path(args):
    args["models"][0]["batching"]["max_batch_size"] = "lots"
    assert "models.0.batching.max_batch_size" in validation_message(args)


def test_the_retired_batch_wait_setting_names_its_replacement(args):
    args["models"][0]["batching"]["batch_wait_timeout_s"] = 0.05
    message = validation_message(args)
    assert "models.0.batching" in message
    assert "batch_wait_timeout_s is gone" in message and "idle_wait_s" in message


def test_max_n_above_max_batch_size_is_refused(args):
    args["models"][0]["limits"]["max_n"] = 9
    message = validation_message(args)
    assert "models.0" in message
    assert "max_n (9)" in message and "max_batch_size (8)" in message


def test_duplicate_model_names_are_refused(args):
    args["models"][1]["name"] = "z-image-tiny"
    args["models"][1]["family"] = "z-image"
    args["models"][1]["path"] = "tiny:z-image"
    message = validation_message(args)
    assert "models" in message
    assert "must be unique" in message and "z-image-tiny" in message


@pytest.mark.parametrize("name", sorted(RESERVED_DEPLOYMENT_NAMES))
def test_reserved_deployment_name_is_refused(args, name):
    args["models"][0]["name"] = name
    message = validation_message(args)
    assert "models.0.name" in message
    assert "built-in deployment" in message


def test_tiny_path_must_match_family(args):
    args["models"][0]["path"] = "tiny:stable-diffusion"
    message = validation_message(args)
    assert "models.0" in message
    assert "does not match family" in message


def test_unknown_family_is_named(args):
    args["models"][0]["family"] = "dall-e"
    assert "models.0.family" in validation_message(args)


@pytest.mark.parametrize("size", ["1024x1024", "32x256"])
def test_default_size_outside_limits_is_refused(args, size):
    args["models"][1]["defaults"]["size"] = size
    message = validation_message(args)
    assert "models.1" in message
    assert "outside the model's limits" in message


def test_default_size_over_max_pixels_is_refused(args):
    args["models"][0]["limits"]["max_pixels"] = 256 * 255
    message = validation_message(args)
    assert "models.0" in message and "max_pixels" in message


def test_malformed_default_size_is_refused(args):
    args["models"][0]["defaults"]["size"] = "big"
    assert "models.0.defaults.size" in validation_message(args)


def test_default_steps_over_max_steps_is_refused(args):
    args["models"][0]["defaults"]["steps"] = 21
    assert "max_steps" in validation_message(args)


def test_models_must_not_be_empty(args):
    args["models"] = []
    assert "models" in validation_message(args)


def test_storage_defaults_to_local(args):
    del args["storage"]
    storage = AppConfig.model_validate(args).storage
    assert storage.kind == "local"
    assert storage.s3 is None


def test_s3_storage_validates(args):
    args["storage"] = {
        "kind": "s3",
        "s3": {"bucket": "image-results", "prefix": "prod/", "region": "eu-west-1"},
    }
    s3 = AppConfig.model_validate(args).storage.s3
    assert s3.bucket == "image-results"
    assert s3.addressing_style == "auto"
    assert s3.max_attempts == 3


def test_s3_kind_needs_a_bucket(args):
    args["storage"] = {"kind": "s3"}
    assert "kind 's3' needs an s3 block" in validation_message(args)
    args["storage"] = {"kind": "s3", "s3": {"region": "eu-west-1"}}
    assert "storage.s3.bucket" in validation_message(args)


def test_s3_block_with_local_kind_is_refused(args):
    args["storage"] = {"kind": "local", "s3": {"bucket": "image-results"}}
    assert "kind is 'local'" in validation_message(args)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bucket", "Bad_Bucket"),
        ("prefix", "../up/"),
        ("prefix", "no-trailing-slash"),
        ("endpoint_url", "ftp://store"),
        ("endpoint_url", "http://store/path"),
        ("addressing_style", "sideways"),
        ("max_attempts", 0),
        ("connect_timeout_s", 0),
    ],
)
def test_bad_s3_fields_are_named(args, field, value):
    args["storage"] = {"kind": "s3", "s3": {"bucket": "image-results", field: value}}
    assert f"storage.s3.{field}" in validation_message(args)


@pytest.mark.parametrize(
    ("section", "fields", "variable"),
    [
        (("storage", "s3"), {"bucket": "b-1", "access_key_id": "AKIAHIDDEN"}, "AWS_ACCESS_KEY_ID"),
        (
            ("storage", "s3"),
            {"bucket": "b-1", "secret_access_key": "hidden"},
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            ("storage",),
            {"signing_secret": "hidden-value-of-32-bytes-or-more"},
            "IMAGE_SERVICE_SIGNING_SECRET",
        ),
        (("jobs", "webhooks"), {"secrets": ["hidden"]}, "IMAGE_SERVICE_WEBHOOK_SECRETS"),
    ],
)
def test_a_secret_field_is_refused_naming_its_variable(args, section, fields, variable):
    """Serve logs an application's args: secrets come from the environment only."""
    place = args
    for name in section:
        place = place.setdefault(name, {})
    if section == ("storage", "s3"):
        args["storage"]["kind"] = "s3"
    place.update(fields)
    message = validation_message(args)
    assert f"${variable}" in message and "hidden" not in message.replace("${", "")
    field = next(name for name in fields if name != "bucket")
    assert f"{'.'.join(section)}\n" in message and f"{field} is not read from the config" in message


@pytest.mark.parametrize(
    "value",
    ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3cDzLKVWqb0=", "sk-ABCDEFGHJKMN-0123456789abcdef"],
)
def test_a_secret_looking_value_anywhere_in_args_is_refused(args, value):
    args["models"][0]["path"] = value
    message = validation_message(args)
    assert "models.0.path looks like a secret" in message and value not in message


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1024x1024", (1024, 1024)), ("768x512", (768, 512)), ("64x99999", (64, 99999))],
)
def test_parse_size_is_width_first(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize(
    "size",
    [
        "",
        "auto",
        "1024",
        "1024*1024",
        "1024X1024",
        "-1x10",
        "1x1",
        "123456x10",
        " 64x64",
        "64x64 ",
        "64.0x64",
    ],
)
def test_parse_size_rejects_garbage(size):
    with pytest.raises(ValueError):
        parse_size(size)


def test_task_follows_family_and_a_contradiction_fails(args):
    edit = {"name": "e", "family": "longcat-image-edit", "path": "tiny:longcat-image-edit"}
    args["models"] = [edit]
    assert AppConfig.model_validate(args).models[0].task == "image-edit"
    args["models"] = [{**edit, "task": "text-to-image"}]
    assert "serves task 'image-edit'" in validation_message(args)


PASSWORD_URLS = {
    ("jobs", "store_url"): "postgresql+psycopg://jobs:hunter2@db/jobs",
    ("auth", "database_url"): "postgresql+psycopg://keys:hunter2@db/keys",
    ("rate_limits", "redis_url"): "redis://:hunter2@redis:6379/0",
}


@pytest.mark.parametrize(
    ("place", "variable"),
    [
        (("jobs", "store_url"), "IMAGE_SERVICE_JOB_STORE_URL"),
        (("auth", "database_url"), "IMAGE_SERVICE_KEY_DATABASE_URL"),
        (("rate_limits", "redis_url"), "IMAGE_SERVICE_REDIS_URL"),
    ],
)
def test_a_password_in_a_url_is_refused_naming_the_variable(place, variable):
    """Serve logs an application's args: a password there would reach every log."""
    section, field = place
    args = copy.deepcopy(yaml.safe_load(LOCAL_YAML.read_text())["applications"][0]["args"])
    args[section] = {**args.get(section, {}), field: PASSWORD_URLS[place]}
    message = validation_message(args)
    assert f"${variable}" in message and "hunter2" not in message
    args[section][field] = PASSWORD_URLS[place].replace(":hunter2", "")
    AppConfig.model_validate(args)


def test_the_lora_catalog_is_checked_against_the_models(args):
    config = AppConfig.model_validate(args)
    assert [lora.name for lora in config.loras_for("sd-tiny")] == ["ink-tiny", "watercolor-tiny"]
    assert config.loras_for("longcat-edit-tiny") == []
    twice = copy.deepcopy(args)
    twice["loras"].append({**twice["loras"][0]})
    assert "LoRA names must be unique" in validation_message(twice)
    no_adapters = copy.deepcopy(args)
    no_adapters["loras"].append({"name": "x", "path": "tiny:9", "models": ["longcat-edit-tiny"]})
    assert "takes no per-request adapters" in validation_message(no_adapters)
    # A model this config does not serve is skipped: one catalog serves several configs.
    subset = copy.deepcopy(args)
    subset["models"] = [m for m in subset["models"] if m["name"] == "sd-tiny"]
    assert [lora.name for lora in AppConfig.model_validate(subset).loras] == [
        "ink-tiny",
        "watercolor-tiny",
    ]
    limits = copy.deepcopy(args)
    limits["models"][0]["adapters"] = {"max_scale": 0}
    assert "max_scale" in validation_message(limits)

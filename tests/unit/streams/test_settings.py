from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from streams.settings import Settings, SettingsError, describe_settings, load_model_class

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_and_environment_overrides():
    s = Settings.from_env({"STREAMREC_PARTITIONS": "8", "STREAMREC_WEB_ENABLED": "yes",
                           "STREAMREC_LEARNING_RATE": "0.05", "STREAMREC_BROKER_URL": "kafka://a:1,kafka://b:2"})
    assert (s.partitions, s.web_enabled, s.learning_rate) == (8, True, 0.05)
    assert s.bootstrap_servers == ["a:1", "b:2"]
    assert Settings().web_enabled is False and Settings().web_host == "127.0.0.1"


def test_frozen_and_secrets_hidden():
    s = Settings.from_env({"STREAMREC_REDIS_PASSWORD": "hunter2", "STREAMREC_SASL_PASSWORD": "s3cret"})
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.top_n = 3  # type: ignore[misc]
    assert all(default == "" for env, default, _ in describe_settings() if env.endswith("PASSWORD"))


@pytest.mark.parametrize("env", [
    {"STREAMREC_TOP_N": "zero"}, {"STREAMREC_TOP_N": "0"}, {"STREAMREC_SECURITY_PROTOCOL": "TLS"},
    {"STREAMREC_REDIS_URL": "http://x"}, {"STREAMREC_WEB_ENABLED": "maybe"}, {"STREAMREC_BROKER_URL": ""},
    {"STREAMREC_REDIS_CLUSTER": "true", "STREAMREC_REDIS_URL": "unix:///tmp/redis.sock"},
])
def test_bad_values_are_clear_errors(env):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert "STREAMREC_" in str(info.value)


def test_round_trip_through_environment():
    s = Settings(top_n=7, web_enabled=True, redis_password="pw", learning_rate=0.2)
    assert Settings.from_env(s.to_env()) == s


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [env for env, _, _ in describe_settings() if f"`{env}`" not in readme]
    assert not missing


def test_settings_command_lists_every_variable(capsys, monkeypatch):
    """``streamrec settings`` prints every setting's variable whole, also 80 columns wide (a pipe)."""
    from streams.tools.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["settings"]) == 0
    first_column = re.findall(r"^\S (STREAMREC_[A-Z0-9_]+) ", capsys.readouterr().out, re.MULTILINE)
    every = [Settings.env_name(f.name) for f in dataclasses.fields(Settings)]
    assert len(every) > 50 and first_column == every


def test_learning_defaults_are_the_models_defaults():
    import inspect

    from models import BPRMF

    defaults = {k: v.default for k, v in inspect.signature(BPRMF).parameters.items()}
    s = Settings()
    for name in ("n_factors", "learning_rate", "regularization", "n_negatives", "init_std", "seed"):
        assert getattr(s, name) == defaults[name], name


def test_kafka_sasl_and_ssl_options_come_from_the_environment():
    import ssl

    from streams.io.kafka import aiokafka_options, faust_credentials

    env = {"STREAMREC_SECURITY_PROTOCOL": "SASL_SSL", "STREAMREC_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMREC_SASL_USERNAME": "svc", "STREAMREC_SASL_PASSWORD": "pw-from-env"}
    s = Settings.from_env(env)
    options = aiokafka_options(s)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "pw-from-env")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_credentials(s)
    assert credentials is not None and credentials.username == "svc" and credentials.ssl_context is not None
    assert "pw-from-env" not in repr(s)  # secrets stay out of logs
    plain = aiokafka_options(Settings.from_env({}))
    assert plain["security_protocol"] == "PLAINTEXT" and "ssl_context" not in plain and faust_credentials(Settings()) is None


def test_the_model_setting_defaults_to_bprmf():
    from models import BPRMF

    assert Settings().model == "models.bpr:BPRMF" and load_model_class(Settings.from_env({}).model) is BPRMF


@pytest.mark.parametrize("spec, says", [
    ("models.bpr.BPRMF", "must be module:Class"),
    ("models.nowhere:BPRMF", "cannot import models.nowhere"),
    ("models.bpr:Nothing", "has no class Nothing"),
    ("models.base:event_weights", "has no class event_weights"),
    ("models.popularity:Popularity", "lacks methods the worker calls: add_covisit_counts, add_item_deltas"),
])
def test_the_model_setting_names_an_importable_class_with_the_workers_methods(spec, says):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"STREAMREC_MODEL": spec})
    assert "STREAMREC_MODEL" in str(info.value) and says in str(info.value)

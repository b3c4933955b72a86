"""Settings: defaults, then the environment, then explicit overrides; bad values fail naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from web.settings import Settings, SettingsError


def test_defaults_match_the_readme_configuration_table() -> None:
    settings = Settings.load(environ={})
    assert settings.tf_serving_address == "localhost:8500"
    assert settings.model_config_file == Path("tf_server/models.config")
    assert settings.models_dir is None
    assert settings.upload_folder == Path("upload_folder")
    assert settings.output_folder == Path("output")
    assert settings.max_content_length == 16 * 1024 * 1024
    assert settings.max_image_pixels == 40_000_000
    assert settings.grpc_timeout_s == 30.0
    assert settings.api_keys == ()
    assert settings.max_input_side == 1600
    assert settings.results_max_count == 200
    assert settings.results_max_bytes == 512 * 1024 * 1024


def test_environment_then_overrides() -> None:
    environ = {
        "TF_SERVING_ADDRESS": "model-server:8500",
        "GRPC_TIMEOUT_S": "2.5",
        "API_KEYS": " a, b ,,c ",
        "SECRET_KEY": "x" * 32,
    }
    settings = Settings.load(environ=environ, overrides={"GRPC_TIMEOUT_S": "7", "MODELS_DIR": "/models"})
    assert settings.tf_serving_address == "model-server:8500"
    assert settings.grpc_timeout_s == 7.0
    assert settings.api_keys == ("a", "b", "c")
    assert settings.models_dir == Path("/models")


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings.load(
        environ={"API_KEYS": "s3cret", "SECRET_KEY": "session-signing-" * 2, "METRICS_TOKEN": "scrape-me"}
    )
    text = repr(settings)
    assert "s3cret" not in text and "session-signing" not in text and "scrape-me" not in text


def test_keys_need_a_secret_key_to_sign_sessions() -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY is required when API_KEYS is set"):
        Settings.load(environ={"API_KEYS": "k1"})
    with pytest.raises(SettingsError, match="SECRET_KEY.*at least 16 characters"):
        Settings.load(environ={"API_KEYS": "k1", "SECRET_KEY": "short"})


@pytest.mark.parametrize(
    "variable,value,fragment",
    [
        ("TF_SERVING_ADDRESS", "no-port", "host:port"),
        ("TF_SERVING_ADDRESS", "host:99999", "host:port"),
        ("TF_SERVING_ADDRESS", "ipv4:10.0.0.1:8500,10.0.0.2", "ipv4:"),
        ("TF_SERVING_ADDRESS", "ipv4:tf-serving:8500", "ipv4:"),  # names go in dns:///, not ipv4:
        ("TF_SERVING_ADDRESS", "ipv6:::1:8500", "ipv6:"),
        ("TF_SERVING_ADDRESS", "dns:///tf-serving", "dns:///host:port"),
        ("TF_SERVING_ADDRESS", "http://tf-serving:8500", "gRPC target"),
        ("MAX_CONTENT_LENGTH", "16MB", "positive integer"),
        ("MAX_CONTENT_LENGTH", "0", "positive integer"),
        ("MAX_IMAGE_PIXELS", "-5", "positive integer"),
        ("GRPC_TIMEOUT_S", "soon", "positive number"),
        ("GRPC_TIMEOUT_S", "0", "positive number"),
        ("MAX_INPUT_SIDE", "1.5", "positive integer"),
        ("RESULTS_MAX_COUNT", "", "positive integer"),
        ("MODEL_CONFIG_FILE", "  ", "must not be empty"),
        ("MAX_DECODE_PIXELS_IN_FLIGHT", "many", "positive integer"),
        ("DECODE_WAIT_S", "-1", "positive number"),
        ("TRUSTED_PROXIES", "yes", "whole number"),
        ("TRUSTED_PROXIES", "11", "0 to 10"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(environ={variable: value})
    assert variable in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize(
    "target",
    [
        "localhost:8500",
        "[::1]:8500",
        "dns:///tf-serving.models.svc.cluster.local:8500",
        "dns://10.0.0.10:53/tf-serving:8500",
        "ipv4:127.0.0.1:8500,127.0.0.1:8510",
        "ipv6:[::1]:8500,[::1]:8510",
        "unix:/run/tf-serving.sock",
    ],
)
def test_any_grpc_target_is_accepted(target: str) -> None:
    """Several replicas behind one name or a fixed list: the channel balances over them."""
    assert Settings.load(environ={"TF_SERVING_ADDRESS": target}).tf_serving_address == target


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(SettingsError, match="TF_SERVING_ADRESS"):
        Settings.load(environ={}, overrides={"TF_SERVING_ADRESS": "x:1"})


def test_create_app_fails_at_startup_on_a_bad_value(tmp_path: Path) -> None:
    from web import create_app

    with pytest.raises(SettingsError, match="MAX_IMAGE_PIXELS"):
        create_app({"MAX_IMAGE_PIXELS": "lots", "UPLOAD_FOLDER": str(tmp_path)})

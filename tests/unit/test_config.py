"""The ``metastudio`` connection parsed into MetaStudioConnectionConfig (config.py)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from airflow.models.connection import Connection

from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import MetaStudioConfigError, MetaStudioValidationError
from airflow_provider_metastudio.ratelimit import DEFAULT_RATES

PROJECT_ID = "0d697589d98091f12f92c0073501cd79"
AK = "HPUAEXAMPLEAK0000001"
SK = "sk-Secret+Value/with=chars-9f8e7d6c"
SECURITY_TOKEN = "sts-token-Secret-4d3c2b1a"
IAM_PASSWORD = "iam-Password-Secret-1a2b3c"
STATIC_TOKEN = "MIIstatic-token-Secret-5e6f7a"
EMULATOR = "http://127.0.0.1:18080"
BASE_EXTRA = {"project_id": PROJECT_ID}


def from_parts(extra=None, login=AK, password=SK, **destination):
    return MetaStudioConnectionConfig.from_parts(
        login=login, password=password, extra={**BASE_EXTRA, **(extra or {})}, **destination
    )


@pytest.fixture(autouse=True)
def no_sdk_env(monkeypatch):
    monkeypatch.delenv("CLOUD_SDK_AK", raising=False)
    monkeypatch.delenv("CLOUD_SDK_SK", raising=False)


def test_defaults():
    cfg = from_parts()
    assert cfg.project_id == PROJECT_ID
    assert cfg.auth_type == "aksk"
    assert cfg.region == "cn-north-4"
    assert cfg.endpoint == "https://metastudio.cn-north-4.myhuaweicloud.com"
    assert (cfg.ak, cfg.sk) == (AK, SK)
    assert cfg.security_token is None and cfg.token is None and cfg.app_user_id is None
    assert cfg.verify is True
    assert cfg.timeout == (10.0, 60.0)
    assert cfg.rate_limits == dict(DEFAULT_RATES)


def test_region_builds_the_endpoint():
    cfg = from_parts({"region": "cn-east-3"})
    assert cfg.endpoint == "https://metastudio.cn-east-3.myhuaweicloud.com"


def test_host_wins_over_the_region():
    cfg = from_parts({"region": "cn-east-3"}, host="127.0.0.1", port=18080, schema="http")
    assert cfg.endpoint == EMULATOR


@pytest.mark.parametrize(
    ("destination", "endpoint"),
    [
        ({"host": "metastudio.corp.example"}, "https://metastudio.corp.example"),
        ({"host": "metastudio.corp.example", "port": 8443}, "https://metastudio.corp.example:8443"),
        ({"host": "https://metastudio.corp.example:8443/"}, "https://metastudio.corp.example:8443"),
        ({"host": "localhost", "port": "9", "schema": "HTTP"}, "http://localhost:9"),
        ({"host": "::1", "port": 9, "schema": "http"}, "http://[::1]:9"),
        ({"host": "http://127.0.0.1:18080", "schema": "http"}, EMULATOR),
    ],
)
def test_host_port_and_schema_build_the_endpoint(destination, endpoint):
    assert from_parts(**destination).endpoint == endpoint


def test_endpoint_extra_agreeing_with_host_may_add_a_path():
    cfg = from_parts({"endpoint": EMULATOR + "/gw/"}, host="127.0.0.1", port=18080, schema="http")
    assert cfg.endpoint == EMULATOR + "/gw"


def test_endpoint_extra_on_huawei_cloud_is_honoured_without_host():
    url = "https://metastudio.cn-east-3.myhuaweicloud.com"
    assert from_parts({"endpoint": url + "/"}).endpoint == url


# Airflow 3's connection test re-uses a stored secret while host and port stay as stored; these
# are the fields a tester may change freely, so none of them may move the secrets elsewhere.
DESTINATION_ERRORS = {
    "endpoint extra elsewhere, no host": ({"endpoint": EMULATOR}, {}, "endpoint"),
    "endpoint extra on a look-alike domain": (
        {"endpoint": "https://metastudio.myhuaweicloud.com.evil.example"},
        {},
        "endpoint",
    ),
    "endpoint extra http on huawei cloud": (
        {"endpoint": "http://metastudio.cn-north-4.myhuaweicloud.com"},
        {},
        "endpoint",
    ),
    "endpoint extra disagrees with host": (
        {"endpoint": "http://127.0.0.1:18081"},
        {"host": "127.0.0.1", "port": 18080, "schema": "http"},
        "endpoint",
    ),
    "endpoint extra changes the scheme": (
        {"endpoint": "https://127.0.0.1:18080"},
        {"host": "127.0.0.1", "port": 18080, "schema": "http"},
        "endpoint",
    ),
    "http to a remote host": ({}, {"host": "metastudio.corp.example", "schema": "http"}, "schema"),
    "schema disagrees with host": ({}, {"host": "https://127.0.0.1:9", "schema": "http"}, "schema"),
    "ftp schema": ({}, {"host": "127.0.0.1", "schema": "ftp"}, "schema"),
    "port without host": ({}, {"port": 18080}, "host"),
    "port twice": ({}, {"host": "127.0.0.1:9", "port": 10, "schema": "http"}, "port"),
    "port out of range": ({}, {"host": "127.0.0.1", "port": 70000, "schema": "http"}, "port"),
    "port in host out of range": ({}, {"host": "http://127.0.0.1:70000"}, "host"),
    "host with a path": ({}, {"host": "https://metastudio.corp.example/x"}, "host"),
    "host with userinfo": ({}, {"host": "https://u@metastudio.corp.example"}, "host"),
    "iam endpoint elsewhere": (
        {"auth_type": "password", "domain": "acme", "iam_endpoint": "http://127.0.0.1:18081"},
        {"host": "127.0.0.1", "port": 18080, "schema": "http"},
        "iam_endpoint",
    ),
    "iam endpoint elsewhere, no host": (
        {"auth_type": "password", "domain": "acme", "iam_endpoint": "https://iam.evil.example"},
        {},
        "iam_endpoint",
    ),
}


@pytest.mark.parametrize(
    ("extra", "destination", "field"), DESTINATION_ERRORS.values(), ids=list(DESTINATION_ERRORS)
)
def test_secrets_go_only_where_host_says(extra, destination, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        from_parts(extra, **destination)
    assert exc.value.field == field
    assert SK not in str(exc.value)


def test_empty_extras_count_as_missing():
    cfg = from_parts({"region": "", "endpoint": None, "verify": "", "timeout": ""})
    assert cfg.region == "cn-north-4" and cfg.verify is True and cfg.timeout == (10.0, 60.0)


def test_credentials_are_stripped():
    cfg = from_parts(login=f"  {AK}\n", password=f" {SK} ")
    assert (cfg.ak, cfg.sk) == (AK, SK)


def test_from_json_connection():
    conn = Connection.from_json(
        json.dumps(
            {
                "conn_type": "metastudio",
                "login": AK,
                "password": SK,
                "extra": {
                    "project_id": PROJECT_ID,
                    "region": "ap-southeast-1",
                    "security_token": SECURITY_TOKEN,
                    "timeout": {"connect": 3, "read": 30},
                    "rate_limits": {"show": 5},
                    "verify": False,
                },
            }
        ),
        conn_id="metastudio_default",
    )
    cfg = MetaStudioConnectionConfig.from_connection(conn)
    assert cfg.endpoint == "https://metastudio.ap-southeast-1.myhuaweicloud.com"
    assert (cfg.ak, cfg.sk, cfg.security_token) == (AK, SK, SECURITY_TOKEN)
    assert cfg.timeout == (3.0, 30.0)
    assert cfg.rate_limits == {**DEFAULT_RATES, "show": 5.0}
    assert cfg.verify is False


def test_from_uri_connection_with_host_port_and_schema():
    uri = (
        f"metastudio://{quote(AK, safe='')}:{quote(SK, safe='')}@127.0.0.1:18080/http"
        f"?project_id={PROJECT_ID}"
        "&rate_limits=false&verify=false&timeout=5"
        f"&app_user_id=user-001"
    )
    conn = Connection(conn_id="metastudio_default", uri=uri)
    assert (conn.host, conn.port, conn.schema) == ("127.0.0.1", 18080, "http")
    cfg = MetaStudioConnectionConfig.from_connection(conn)
    assert (cfg.ak, cfg.sk) == (AK, SK)  # '+', '/' and '=' survive the URI
    assert cfg.endpoint == EMULATOR
    assert cfg.rate_limits is None
    assert cfg.verify is False
    assert cfg.timeout == (5.0, 5.0)
    assert cfg.app_user_id == "user-001"


def test_from_uri_connection_with_json_timeout_and_rate_limits():
    # Airflow 2 keeps such URI values as strings, as a connection form does; 3.x decodes them
    uri = (
        f"metastudio://{AK}:{quote(SK, safe='')}@/?project_id={PROJECT_ID}"
        f"&timeout={quote(json.dumps({'connect': 2, 'read': 20}), safe='')}"
        f"&rate_limits={quote(json.dumps({'list': 3}), safe='')}"
    )
    cfg = MetaStudioConnectionConfig.from_connection(Connection(conn_id="c", uri=uri))
    assert cfg.timeout == (2.0, 20.0)
    assert cfg.rate_limits == {**DEFAULT_RATES, "list": 3.0}


def test_from_connection_without_extra_dejson():
    class Plain:  # anything with login/password/extra, e.g. a task-sdk Connection
        login, password, extra = AK, SK, json.dumps(BASE_EXTRA)

    assert MetaStudioConnectionConfig.from_connection(Plain()).project_id == PROJECT_ID


@pytest.mark.parametrize(("login", "password"), [(None, None), ("", "")], ids=["none", "empty"])
def test_sdk_environment_fallback(monkeypatch, login, password):
    monkeypatch.setenv("CLOUD_SDK_AK", AK)
    monkeypatch.setenv("CLOUD_SDK_SK", SK)
    cfg = from_parts(login=login, password=password)
    assert (cfg.ak, cfg.sk) == (AK, SK)


def test_connection_credentials_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("CLOUD_SDK_AK", "ENVAK")
    monkeypatch.setenv("CLOUD_SDK_SK", "ENVSK")
    cfg = from_parts()
    assert (cfg.ak, cfg.sk) == (AK, SK)


def test_half_credentials_are_not_completed_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLOUD_SDK_AK", "ENVAK")
    monkeypatch.setenv("CLOUD_SDK_SK", "ENVSK")
    with pytest.raises(MetaStudioConfigError, match="login"):
        from_parts(password=None)


def test_missing_credentials_name_both_sources():
    with pytest.raises(MetaStudioConfigError) as exc:
        from_parts(login=None, password=None)
    assert "CLOUD_SDK_AK" in str(exc.value) and "'login'" in str(exc.value)


def test_missing_project_id_names_it():
    with pytest.raises(MetaStudioValidationError) as exc:
        MetaStudioConnectionConfig.from_parts(login=AK, password=SK, extra={"region": "cn-north-4"})
    assert exc.value.field == "project_id"
    assert "project_id" in str(exc.value)


FIELD_ERRORS = {
    "bad project_id": ({"project_id": "../other"}, "project_id"),
    "unknown region": ({"region": "beijing-four"}, "region"),
    "upper-case region": ({"region": "CN-NORTH-4"}, "region"),
    "endpoint without scheme": ({"endpoint": "metastudio.cn-north-4.myhuaweicloud.com"}, "endpoint"),
    "endpoint host:port only": ({"endpoint": "localhost:8080"}, "endpoint"),
    "endpoint ftp": ({"endpoint": "ftp://example.com"}, "endpoint"),
    "endpoint with query": ({"endpoint": "https://example.com/?x=1"}, "endpoint"),
    "endpoint with fragment": ({"endpoint": "https://example.com/#x"}, "endpoint"),
    "bad auth_type": ({"auth_type": "oauth"}, "auth_type"),
    "app_user_id chinese": ({"app_user_id": "用户"}, "app_user_id"),
    "missing CA bundle": ({"verify": "/nonexistent/ca.pem"}, "verify"),
    "timeout garbage": ({"timeout": "soon"}, "timeout"),
    "timeout three values": ({"timeout": [1, 2, 3]}, "timeout"),
    "timeout zero": ({"timeout": 0}, "timeout"),
    "timeout negative read": ({"timeout": {"connect": 5, "read": -1}}, "timeout"),
    "rate_limits unknown call": ({"rate_limits": {"delete": 1}}, "rate_limits"),
    "rate_limits garbage": ({"rate_limits": "lots"}, "rate_limits"),
    "iam endpoint without scheme": (
        {"auth_type": "password", "domain": "acme", "iam_endpoint": "iam.example.com"},
        "iam_endpoint",
    ),
}


@pytest.mark.parametrize(("extra", "field"), FIELD_ERRORS.values(), ids=list(FIELD_ERRORS))
def test_invalid_extras_name_the_field(extra, field):
    with pytest.raises(MetaStudioValidationError) as exc:
        from_parts(extra, login="user" if extra.get("auth_type") == "password" else AK)
    assert exc.value.field == field
    assert field in str(exc.value)
    assert len(str(exc.value)) < 300


VERIFY_CASES = {
    "true": ("true", True),
    "True": ("True", True),
    "bool true": (True, True),
    "false": ("false", False),
    "0": ("0", False),
    "bool false": (False, False),
}


@pytest.mark.parametrize(("value", "expected"), VERIFY_CASES.values(), ids=list(VERIFY_CASES))
def test_verify(value, expected):
    assert from_parts({"verify": value}).verify is expected


def test_verify_ca_bundle_path(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert from_parts({"verify": str(bundle)}).verify == str(bundle)


TIMEOUT_CASES = {
    "default": (None, (10.0, 60.0)),
    "int": (30, (30.0, 30.0)),
    "string": ("12.5", (12.5, 12.5)),
    "pair": ([5, 90], (5.0, 90.0)),
    "mapping": ({"connect": 3, "read": 45}, (3.0, 45.0)),
    "mapping read only": ({"read": 120}, (10.0, 120.0)),
    "json string": ('{"connect": 4, "read": 40}', (4.0, 40.0)),
    "json list string": ("[1, 2]", (1.0, 2.0)),
}


@pytest.mark.parametrize(("value", "expected"), TIMEOUT_CASES.values(), ids=list(TIMEOUT_CASES))
def test_timeout_forms(value, expected):
    assert from_parts({"timeout": value}).timeout == expected


def test_auth_type_is_case_insensitive():
    assert from_parts({"auth_type": " AKSK "}).auth_type == "aksk"


def test_token_auth():
    cfg = from_parts({"auth_type": "token"}, login=None, password=f" {STATIC_TOKEN} ")
    assert cfg.auth_type == "token"
    assert cfg.token == STATIC_TOKEN
    assert cfg.ak is None and cfg.sk is None


def test_token_auth_needs_the_token():
    with pytest.raises(MetaStudioConfigError, match="token"):
        from_parts({"auth_type": "token"}, login=None, password=None)


def test_password_auth():
    cfg = from_parts(
        {"auth_type": "password", "domain": "acme", "region": "cn-east-3"}, login="ops", password=IAM_PASSWORD
    )
    assert (cfg.user, cfg.password, cfg.domain) == ("ops", IAM_PASSWORD, "acme")
    assert cfg.iam_endpoint == "https://iam.cn-east-3.myhuaweicloud.com"
    assert cfg.ak is None and cfg.sk is None


def test_password_auth_iam_endpoint_override():
    cfg = from_parts(
        {"auth_type": "password", "domain": "acme", "iam_endpoint": "http://127.0.0.1:9/"},
        login="ops",
        password=IAM_PASSWORD,
        host="127.0.0.1",
        port=9,
        schema="http",
    )
    assert cfg.iam_endpoint == "http://127.0.0.1:9"
    huawei = from_parts(
        {"auth_type": "password", "domain": "acme", "iam_endpoint": "https://iam.myhuaweicloud.com"},
        login="ops",
        password=IAM_PASSWORD,
        host="127.0.0.1",
        port=9,
        schema="http",
    )
    assert huawei.iam_endpoint == "https://iam.myhuaweicloud.com"


@pytest.mark.parametrize(
    ("login", "password", "extra"),
    [("ops", IAM_PASSWORD, {}), ("ops", None, {"domain": "acme"}), (None, IAM_PASSWORD, {"domain": "acme"})],
    ids=["no-domain", "no-password", "no-user"],
)
def test_password_auth_needs_user_password_and_domain(login, password, extra):
    with pytest.raises(MetaStudioConfigError) as exc:
        from_parts({"auth_type": "password", **extra}, login=login, password=password)
    assert "domain" in str(exc.value)


SECRET_CONFIGS = {
    "aksk with security token": (
        {"security_token": SECURITY_TOKEN},
        AK,
        SK,
        {SK, SECURITY_TOKEN},
    ),
    "token": ({"auth_type": "token"}, None, STATIC_TOKEN, {STATIC_TOKEN}),
    "password": ({"auth_type": "password", "domain": "acme"}, "ops", IAM_PASSWORD, {IAM_PASSWORD}),
}


@pytest.mark.parametrize(
    ("extra", "login", "password", "secrets"), SECRET_CONFIGS.values(), ids=list(SECRET_CONFIGS)
)
def test_secrets_are_listed_and_not_in_repr(extra, login, password, secrets):
    cfg = from_parts(extra, login=login, password=password)
    assert set(cfg.secrets) == secrets
    for secret in secrets:
        assert secret not in repr(cfg)
        assert secret not in str(cfg)


def test_config_is_frozen():
    cfg = from_parts()
    with pytest.raises(AttributeError):
        cfg.endpoint = "https://evil.example.com"  # type: ignore[misc]

"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declared here once: Airflow >= 3.2 reads ``conn-fields`` and
``ui-field-behaviour`` directly; older UIs get the same fields through the hook's
``get_connection_form_widgets`` / ``get_ui_field_behaviour``, which are built from these dicts.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_metastudio import __version__

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    # Host/Port/Schema hold the destination: Airflow re-uses stored secrets in a connection test
    # only while host and port are unchanged (see config.py).
    "hidden-fields": ["extra"],
    "relabeling": {
        "login": "AK (access key id) / IAM user",
        "password": "SK (secret key) / IAM password / token",
        "schema": "Scheme",
    },
    "placeholders": {
        "host": "empty: metastudio.{region}.myhuaweicloud.com; or a private host, 127.0.0.1",
        "port": "empty: the scheme's port",
        "schema": "https (default); http for loopback hosts only",
        "login": "HPUAXXXXXXXXXXXXXXXX (empty: use CLOUD_SDK_AK)",
        "password": "secret access key (empty: use CLOUD_SDK_SK)",
    },
}

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "project_id": {
        "label": "Project ID",
        "description": "Required. The project of the region (IAM console, My Credentials, Projects).",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$"},
    },
    "region": {
        "label": "Region",
        "description": "Builds https://metastudio.{region}.myhuaweicloud.com. Default cn-north-4.",
        "schema": {"type": ["string", "null"], "default": "cn-north-4"},
    },
    "endpoint": {
        "label": "Endpoint override (legacy)",
        "description": "Put private hosts and the emulator in Host/Port/Scheme. This is only honoured "
        "on https://*.myhuaweicloud.com, or when it agrees with Host (it may add a path).",
        "schema": {"type": ["string", "null"], "format": "url"},
    },
    "auth_type": {
        "label": "Authentication",
        "description": "aksk: AK/SK signing (default); token: password holds an IAM token; "
        "password: IAM user name and password, with Domain.",
        "schema": {
            "type": ["string", "null"],
            "enum": ["aksk", "token", "password", None],
            "default": "aksk",
        },
    },
    "domain": {
        "label": "Domain (account name)",
        "description": "For auth_type password: the account that owns the IAM user.",
        "schema": {"type": ["string", "null"]},
    },
    "iam_endpoint": {
        "label": "IAM endpoint",
        "description": "For auth_type password. Default https://iam.{region}.myhuaweicloud.com; "
        "else an https://*.myhuaweicloud.com URL or the scheme, host and port of Host.",
        "schema": {"type": ["string", "null"], "format": "url"},
    },
    "security_token": {
        "label": "Security token",
        "description": "For temporary AK/SK: sent and signed as X-Security-Token.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "proxy": {
        "label": "Proxy",
        "description": "Optional http(s) proxy URL for every call of this connection, e.g. "
        "http://user:pass@proxy:3128; takes precedence over HTTPS_PROXY/NO_PROXY.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "app_user_id": {
        "label": "App user id",
        "description": "Optional third-party user id, sent as X-App-UserId (ASCII only).",
        "schema": {"type": ["string", "null"]},
    },
    "verify": {
        "label": "Verify TLS",
        "description": "true (default), false, or the path of a CA bundle.",
        "schema": {"type": ["string", "null"], "default": "true"},
    },
    "timeout": {
        "label": "Timeout",
        "description": 'Seconds, or JSON {"connect": 10, "read": 60} (the default).',
        "schema": {"type": ["string", "null"]},
    },
    "rate_limits": {
        "label": "Client-side quota",
        "description": 'JSON requests/second per call: the default {"show": 1, "list": 1, "create": 1, '
        '"create_by_url": 2} (the documented per-tenant quotas) and {"asset_show": 1, "asset_list": 1} '
        "(the asset library's calls; their quota is not documented); a subset overrides those calls "
        "only; false turns it off.",
        "schema": {"type": ["string", "null"], "format": "json"},
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-metastudio",
        "name": "Huawei Cloud MetaStudio",
        "description": "Huawei Cloud MetaStudio stylized picture modeling: create 3D digital-human "
        "models from photos, wait for them and fetch their assets.",
        "versions": [__version__],
        # The shape ASF providers carry (provider.yaml's "integrations"); guides live in docs/.
        "integrations": [
            {
                "integration-name": "Huawei Cloud MetaStudio",
                "external-doc-url": "https://support.huaweicloud.com/intl/en-us/metastudio/index.html",
                "how-to-guide": ["/docs/connections.md", "/docs/operators.md"],
                # MetaStudioModelLibraryTrigger: an asset watcher (event-driven scheduling)
                "tags": ["service"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "metastudio",
                "hook-class-name": "airflow_provider_metastudio.hooks.metastudio.MetaStudioHook",
                "hook-name": "Huawei Cloud MetaStudio",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
        "hooks": [
            {
                "integration-name": "Huawei Cloud MetaStudio",
                "python-modules": ["airflow_provider_metastudio.hooks.metastudio"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Huawei Cloud MetaStudio",
                "python-modules": [
                    "airflow_provider_metastudio.triggers.picture_modeling",
                    "airflow_provider_metastudio.triggers.model_asset",
                    "airflow_provider_metastudio.triggers.model_library",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Huawei Cloud MetaStudio",
                "python-modules": [
                    "airflow_provider_metastudio.sensors.picture_modeling",
                    "airflow_provider_metastudio.sensors.model_asset",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "Huawei Cloud MetaStudio",
                "python-modules": [
                    "airflow_provider_metastudio.operators.picture_modeling",
                    "airflow_provider_metastudio.operators.model_asset",
                ],
            }
        ],
        "extra-links": [
            "airflow_provider_metastudio.links.picture_modeling.MetaStudioPictureModelingJobLink"
        ],
        **ASSET_URIS,
    }


# -- the metastudio:// asset URI scheme (issue #14) ------------------------------------------------
# metastudio://{project_id}/assets[/{asset_id}]; see airflow_provider_metastudio.asset_events.
_URI_HANDLER = {
    "schemes": ["metastudio"],
    "handler": "airflow_provider_metastudio.asset_events.sanitize_uri",
}
ASSET_URIS: dict[str, Any] = {
    "asset-uris": [_URI_HANDLER],  # Airflow 3
    "dataset-uris": [_URI_HANDLER],  # Airflow 2.11
}

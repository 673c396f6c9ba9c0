"""Airflow 3's React UI in a real browser (headless Debian Chromium) against the stack's api-server.

Two user paths: adding a ``metastudio`` connection through the form (the provider's fields, labels,
placeholders and masked secrets as the hook declares them; saved, then tested against the emulator
over loopback) and following a finished deferrable sensor's *MetaStudio Model* extra link. The test
needs only the ``deployment`` fixture's ``api_url``, ``emulator`` (``connection_json()``) and
``output_dir``; screenshots of every step go to ``output_dir/ui/<test>/``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from deployment.browser import Browser, chromium, missing

from airflow_provider_metastudio.get_provider_info import get_provider_info
from airflow_provider_metastudio.hooks.metastudio import MetaStudioHook
from airflow_provider_metastudio.links.picture_modeling import MetaStudioPictureModelingJobLink, console_url

# CI installs the browser (it runs as root): there a missing one fails the test instead of skipping it.
pytestmark = pytest.mark.skipif(
    missing() is not None and not os.environ.get("CI"), reason=f"no browser: {missing()}"
)

#: The finished deferrable sensor comes from a run of the main example DAG.
DAG_ID = "example_metastudio_picture_modeling"
SENSOR_TASK_ID = "wait_for_model"
# The standard fields' input names in Airflow 3's form (``url_schema`` of hook_meta is ``schema``).
STANDARD_FIELDS = ("description", "host", "port", "login", "password", "schema")


def _conn_fields() -> dict[str, dict[str, Any]]:
    """The extra fields as the hook declares them: ``conn-fields``, which Airflow >= 3.2 renders and
    from which ``MetaStudioHook.get_connection_form_widgets()`` builds the older UIs' widgets (that
    method needs flask-appbuilder, which an Airflow 3 install without the FAB provider lacks)."""
    (conn_type,) = [
        c for c in get_provider_info()["connection-types"] if c["connection-type"] == MetaStudioHook.conn_type
    ]
    return conn_type["conn-fields"]


def _xpath_text(text: str) -> str:
    """``text`` as an XPath string literal (labels may hold either kind of quote)."""
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


def _field(browser: Browser, label: str, where: str) -> Any:
    """The form field (role=group) whose label reads ``label``. Extra fields' labels point at no
    input (their ``for`` differs from the input's id), so the field is found by its group."""
    from selenium.webdriver.common.by import By

    xpath = (
        "//div[@role='dialog']//div[@role='group']"
        f"[.//label[normalize-space(translate(., '*', ''))={_xpath_text(label)}]]"
    )
    return browser.wait(
        f"no field labelled {label!r} on the connection form ({where})",
        lambda d: next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()), None),
    )


def _input(group: Any) -> Any:
    """The one visible input of a form field."""
    from selenium.webdriver.common.by import By

    found = group.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), textarea")
    assert len(found) == 1, f"{len(found)} inputs in the field {group.text.splitlines()[:1]}"
    return found[0]


def _button(browser: Browser, text: str, where: str, scope: str = "//div[@role='dialog']") -> Any:
    from selenium.webdriver.common.by import By

    xpath = f"{scope}//button[normalize-space()={_xpath_text(text)}]"
    return browser.wait(
        f"no button {text!r} {where}",
        lambda d: next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()), None),
    )


def _api(stack: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    # The stack's UI needs no login (SIMPLE_AUTH_MANAGER_ALL_ADMINS), and nor does its REST API.
    return requests.request(method, f"{stack.api_url.rstrip('/')}/api/v2/{path}", timeout=30, **kwargs)


@pytest.fixture
def stack(deployment: Any) -> Any:
    """The stack of tests/deployment/conftest.py; the browser test needs only its ``api_url``,
    ``emulator`` and ``output_dir``."""
    return deployment


@pytest.fixture
def browser(stack: Any, request: pytest.FixtureRequest) -> Iterator[Browser]:
    with chromium(Path(stack.output_dir) / "ui" / request.node.name) as b:
        yield b


@pytest.fixture
def conn_id(stack: Any) -> Iterator[str]:
    """A fresh connection id (the stack may be shared); the connection is deleted afterwards."""
    conn_id = f"metastudio_ui_{uuid.uuid4().hex[:8]}"
    yield conn_id
    _api(stack, "DELETE", f"connections/{conn_id}")


def test_add_metastudio_connection_through_the_form(stack, browser, conn_id):
    from selenium.webdriver.common.by import By

    emulator_conn = json.loads(stack.emulator.connection_json())
    behaviour = MetaStudioHook.get_ui_field_behaviour()
    driver = browser.driver
    driver.get(f"{stack.api_url.rstrip('/')}/connections")
    _button(browser, "Add Connection", "on the connections page", scope="").click()
    combo = browser.wait(
        "no 'Connection Type' chooser in the Add Connection dialog",
        lambda d: d.find_element(By.CSS_SELECTOR, "[role=dialog] input[role=combobox]"),
    )
    browser.shot("add-connection-dialog")
    type_name = MetaStudioHook.hook_name
    combo.send_keys(type_name)
    browser.wait(
        f"no connection type {type_name!r} offered (is the provider installed in the api-server?)",
        lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text == type_name],
    )[0].click()
    where = f"connection type {type_name}"

    # Standard fields, relabelled and with the hook's placeholders; the secret one masked.
    for name in STANDARD_FIELDS:
        label = behaviour["relabeling"].get(name)
        if label is None:
            continue
        element = _input(_field(browser, label, where))
        assert element.get_attribute("name") == name, (label, element.get_attribute("name"))
    for name, placeholder in behaviour["placeholders"].items():
        element = browser.wait(
            f"no input {name!r} on the connection form ({where})",
            lambda d, name=name: d.find_element(By.CSS_SELECTOR, f"[role=dialog] [name={name}]"),
        )
        assert element.get_attribute("placeholder") == placeholder, name
    for name in set(behaviour["hidden_fields"]) & set(STANDARD_FIELDS):
        assert not driver.find_elements(By.CSS_SELECTOR, f"[role=dialog] [name={name}]"), f"{name} is shown"
    assert driver.find_element(By.CSS_SELECTOR, "[role=dialog] [name=password]").get_attribute("type") == (
        "password"
    ), "the SK field is not masked"
    # Fill them in with the emulator's values (opening Extra Fields folds this section).
    driver.find_element(By.CSS_SELECTOR, "[role=dialog] [name=connection_id]").send_keys(conn_id)
    for name in ("host", "port", "schema", "login", "password"):
        element = driver.find_element(By.CSS_SELECTOR, f"[role=dialog] [name={name}]")
        element.send_keys(str(emulator_conn[name]))
    typed_secret = driver.find_element(By.CSS_SELECTOR, "[role=dialog] [name=password]")
    assert typed_secret.get_attribute("type") == "password", "the SK is shown in clear text once typed"
    browser.shot("standard-fields")

    # The provider's own fields: label, description and masking as declared.
    _button(browser, "Extra Fields", f"on the connection form ({where})").click()
    fields = _conn_fields()
    for spec in fields.values():
        group = _field(browser, spec["label"], where)
        assert spec["description"] in group.text, (spec["label"], group.text)
        secret = spec["schema"].get("format") == "password"
        if spec["schema"].get("enum"):  # a choice: a combobox, not a text input
            assert group.find_elements(By.CSS_SELECTOR, "input[role=combobox]"), spec["label"]
            continue
        kind = _input(group).get_attribute("type")
        assert (kind == "password") == secret, f"{spec['label']!r}: input type {kind!r}"
        default = spec["schema"].get("default")
        if default is not None:
            assert _input(group).get_attribute("value") == default, spec["label"]
    browser.shot("extra-fields")

    # The extras with the emulator's values, and save.
    for name, value in emulator_conn["extra"].items():
        if name in fields:
            _input(_field(browser, fields[name]["label"], where)).send_keys(str(value))
    browser.shot("filled")
    save = _button(browser, "Save", "in the Add Connection dialog")
    browser.wait("the Save button stays disabled on a complete form", lambda d: save.is_enabled())
    save.click()
    row = f"//tr[.//td[normalize-space()={_xpath_text(conn_id)}]]"
    browser.wait(
        f"no row {conn_id!r} in the connections list after saving",
        lambda d: d.find_elements(By.XPATH, row) and not d.find_elements(By.CSS_SELECTOR, "[role=dialog]"),
    )
    browser.shot("saved")
    stored = _api(stack, "GET", f"connections/{conn_id}").json()
    assert stored["conn_type"] == MetaStudioHook.conn_type
    assert (stored["host"], stored["port"], stored["schema"], stored["login"]) == tuple(
        emulator_conn[k] for k in ("host", "port", "schema", "login")
    )
    assert emulator_conn["password"] not in json.dumps(stored)
    assert json.loads(stored["extra"])["project_id"] == emulator_conn["extra"]["project_id"]

    # Test it: Airflow 3.3 offers Test on the saved connection's row; the hook calls the emulator.
    test_button = f"{row}//button[@aria-label='Test Connection']"
    test = browser.wait(
        f"no 'Test Connection' button on the row of {conn_id!r}",
        lambda d: next(iter(d.find_elements(By.XPATH, test_button)), None),
    )
    test.click()
    toast = browser.wait(
        "no 'Test Connection Successful' message after pressing Test",
        lambda d: next(
            (
                e
                for e in d.find_elements(By.CSS_SELECTOR, "[role=status], [role=alert], [data-scope=toast]")
                if "Test Connection" in e.text
            ),
            None,
        ),
    )
    browser.shot("tested")
    assert "Test Connection Successful" in toast.text, toast.text
    assert f"project {emulator_conn['extra']['project_id']}" in toast.text, toast.text
    assert emulator_conn["password"] not in driver.page_source, "the SK is in the page"


def _utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))  # Python 3.10 reads no "Z"


def _finished_sensor_run(stack: Any, output_dir: Path) -> str:
    """Trigger the example DAG over the REST API; the run id once it succeeded."""
    deadline = time.monotonic() + 300
    while _api(stack, "GET", f"dags/{DAG_ID}").status_code != 200:
        assert time.monotonic() < deadline, f"DAG {DAG_ID} not parsed by the stack"
        time.sleep(2)
    _api(stack, "PATCH", f"dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    run_id = f"ui_{uuid.uuid4().hex[:8]}"
    body = {"dag_run_id": run_id, "logical_date": None, "conf": {"cover_dir": str(output_dir / "covers")}}
    _api(stack, "POST", f"dags/{DAG_ID}/dagRuns", json=body).raise_for_status()
    state = None
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} of {DAG_ID} still {state}"
        time.sleep(2)
        state = _api(stack, "GET", f"dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
    tis = _api(stack, "GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tis}
    return run_id


def test_sensor_extra_link_points_at_the_console(stack, browser):
    from selenium.webdriver.common.by import By

    run_id = _finished_sensor_run(stack, browser.output_dir)
    ti = f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
    sensor = _api(stack, "GET", f"{ti}/{SENSOR_TASK_ID}").json()
    assert sensor["operator"] == "MetaStudioPictureModelingJobSensor", sensor["operator"]
    # It deferred: a task resumed by its trigger is queued again after it started.
    started, queued = (_utc(sensor[k]) for k in ("start_date", "queued_when"))
    assert queued > started, (started, queued)
    # The expected URL from the emulator's own record of the job the run created.
    job_id = _api(stack, "GET", f"{ti}/create_job/xcomEntries/job_id").json()["value"]
    conn = json.loads(stack.emulator.connection_json())
    admin = f"{conn['schema']}://{conn['host']}:{conn['port']}/_emulator/jobs/{job_id}"
    asset_id = requests.get(admin, timeout=10).json()["info"]["model_asset_id"]
    region = conn["extra"].get("region") or _conn_fields()["region"]["schema"]["default"]
    expected = console_url(region, asset_id)

    driver = browser.driver
    driver.get(f"{stack.api_url.rstrip('/')}/dags/{DAG_ID}/runs/{run_id}/tasks/{SENSOR_TASK_ID}")
    browser.wait(
        f"the task instance page of {SENSOR_TASK_ID} does not say Success",
        lambda d: "Success" in d.find_element(By.TAG_NAME, "body").text,
    )
    browser.shot("task-instance")
    details = browser.wait(
        "no 'Details' tab on the task instance page",
        lambda d: next(iter(d.find_elements(By.XPATH, "//a[normalize-space()='Details']")), None),
    )
    details.click()
    name = MetaStudioPictureModelingJobLink.name
    link = browser.wait(
        f"no {name!r} extra link on the Details tab of {SENSOR_TASK_ID}",
        lambda d: next(iter(d.find_elements(By.XPATH, f"//a[normalize-space()={_xpath_text(name)}]")), None),
    )
    browser.shot("extra-link")
    href = link.get_attribute("href")
    assert href == expected, (href, expected)
    # Follow it only where it stays on this machine; the console is a remote page.
    if urlsplit(href).hostname == "127.0.0.1":
        link.click()
        browser.wait(f"the link did not lead to {href}", lambda d: d.current_url == href)
        browser.shot("followed")


def test_a_missing_element_is_named_with_a_screenshot(stack, browser):
    """The failure a renamed or missing field gives: its label in the message, and a screenshot."""
    browser.driver.get(f"{stack.api_url.rstrip('/')}/connections")
    what = "no field labelled 'No such field' on the connection form"
    with pytest.raises(AssertionError, match=rf"^{what} \(after 1 s; screenshot .*missing\.png\)$") as e:
        browser.wait(what, lambda d: None, 1)
    shot = Path(str(e.value).rsplit("screenshot ", 1)[1].rstrip(")"))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

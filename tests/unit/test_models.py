"""Job states and the picture-modeling job model (models.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testsupport import DATA

from airflow_provider_metastudio.exceptions import MetaStudioInvalidResponseError
from airflow_provider_metastudio.models import (
    ErrorInfo,
    JobState,
    PictureModelingJob,
    cover_url_expiry,
    parse_time,
    redact_url,
)

JOB_SUCCEED = json.loads((DATA / "job_succeed.json").read_text())
COVER_SIGNATURE = "DXJ9rIuf0Sf4aDlR95icBU%2Bu9Y8%3D"
COVER_EXPIRES_AT = datetime(2022, 11, 18, 6, 14, 24, tzinfo=timezone.utc)  # Expires=1668752064
JOB_FAILED = {
    **JOB_SUCCEED,
    "state": "FAILED",
    "end_time": None,
    "model_cover_url": None,
    "error_info": {"error_code": "MSS.00000050", "error_msg": "no face detected"},
}

# state -> (terminal, success (partial accepted), success (partial refused), failure)
STATE_TABLE = {
    "WAITING": (False, False, False, False),
    "PROCESSING": (False, False, False, False),
    "PARTIAL_SUCCEED": (True, True, False, False),
    "SUCCEED": (True, True, True, False),
    "FAILED": (True, False, False, True),
    "CANCELED": (True, False, False, True),
    "ARCHIVED": (False, False, False, False),  # not in the contract: unknown, never success
    "succeed": (False, False, False, False),  # states are case-sensitive: unknown
    "": (False, False, False, False),
}


@pytest.mark.parametrize("state", list(STATE_TABLE), ids=[s or "empty" for s in STATE_TABLE])
def test_state_predicates(state):
    terminal, success, strict_success, failure = STATE_TABLE[state]
    assert JobState.is_terminal(state) is terminal
    assert JobState.is_success(state) is success
    assert JobState.is_success(state, accept_partial_success=False) is strict_success
    assert JobState.is_failure(state) is failure


@pytest.mark.parametrize("state", list(JobState), ids=[s.value for s in JobState])
def test_state_predicates_accept_enum_members(state):
    assert JobState.is_terminal(state) is STATE_TABLE[state.value][0]
    assert JobState.parse(state) is state


def test_none_state_is_not_terminal():
    assert JobState.parse(None) is None
    assert not JobState.is_terminal(None)
    assert not JobState.is_success(None)


def test_documented_example_parses():
    job = PictureModelingJob.from_api(JOB_SUCCEED)
    assert job.job_id == "f503894a-20e2-4274-ad88-8364f59a93da_SMS"
    assert job.state == "SUCCEED"
    assert job.known_state is JobState.SUCCEED
    assert job.start_time == datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)
    assert job.end_time == datetime(2022, 11, 7, 11, 43, 32, tzinfo=timezone.utc)
    assert job.error_info is None
    assert job.error_code is None and job.error_msg is None
    assert job.model_asset_id == "3fcb602bdbe4982ff59832b172949a21"
    assert job.name == "my_model"
    assert job.style_id == "system_male_001"
    assert job.model_cover_url == JOB_SUCCEED["model_cover_url"]
    assert job.model_cover_url_expires_at == COVER_EXPIRES_AT
    assert job.is_terminal and job.is_success() and not job.is_failure


def test_failed_job_keeps_error_info():
    job = PictureModelingJob.from_api(JOB_FAILED)
    assert job.error_info == ErrorInfo("MSS.00000050", "no face detected")
    assert job.error_code == "MSS.00000050"
    assert job.is_failure and job.is_terminal and not job.is_success()
    assert job.model_cover_url is None and job.model_cover_url_expires_at is None


def test_empty_error_info_is_none():
    job = PictureModelingJob.from_api({**JOB_SUCCEED, "error_info": {"error_code": "", "error_msg": ""}})
    assert job.error_info is None


def test_unknown_state_is_kept_raw_and_never_success():
    job = PictureModelingJob.from_api({**JOB_SUCCEED, "state": "ARCHIVED"})
    assert job.state == "ARCHIVED"
    assert job.known_state is None
    assert not job.is_terminal
    assert not job.is_success()
    assert not job.is_failure
    assert job.to_dict()["state"] == "ARCHIVED"


MISSING_FIELD_CASES = {
    "no job_id": {k: v for k, v in JOB_SUCCEED.items() if k != "job_id"},
    "no state": {k: v for k, v in JOB_SUCCEED.items() if k != "state"},
    "empty job_id": {**JOB_SUCCEED, "job_id": ""},
    "null state": {**JOB_SUCCEED, "state": None},
    "numeric job_id": {**JOB_SUCCEED, "job_id": 42},
    "list instead of object": [JOB_SUCCEED],
    "null": None,
    "bad start_time": {**JOB_SUCCEED, "start_time": "last tuesday"},
    "numeric end_time": {**JOB_SUCCEED, "end_time": 1667821412},
}


@pytest.mark.parametrize("data", MISSING_FIELD_CASES.values(), ids=list(MISSING_FIELD_CASES))
def test_from_api_rejects_malformed_jobs(data):
    with pytest.raises(MetaStudioInvalidResponseError):
        PictureModelingJob.from_api(data)


@pytest.mark.parametrize(
    "data",
    [JOB_SUCCEED, JOB_FAILED, {"job_id": "j1", "state": "WAITING"}],
    ids=["succeed", "failed", "minimal"],
)
def test_to_dict_from_dict_round_trip(data):
    job = PictureModelingJob.from_api(data)
    plain = job.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # JSON-safe for XCom and trigger events
    assert PictureModelingJob.from_dict(plain) == job


def test_to_dict_shape():
    plain = PictureModelingJob.from_api(JOB_SUCCEED).to_dict()
    assert plain["start_time"] == "2022-11-07T11:43:08Z"
    assert plain["end_time"] == "2022-11-07T11:43:32Z"
    assert plain["model_cover_url_expires_at"] == "2022-11-18T06:14:24Z"
    assert plain["error_info"] is None
    failed = PictureModelingJob.from_api(JOB_FAILED).to_dict()
    assert failed["error_info"] == {"error_code": "MSS.00000050", "error_msg": "no face detected"}


REDACT_CASES = {
    "documented cover": (
        JOB_SUCCEED["model_cover_url"],
        JOB_SUCCEED["model_cover_url"].replace(COVER_SIGNATURE, "***"),
    ),
    "signature first": ("https://h/x.png?Signature=abc&Expires=1", "https://h/x.png?Signature=***&Expires=1"),
    "lower case": ("https://h/x.png?a=1&signature=abc", "https://h/x.png?a=1&signature=***"),
    "amz": (
        "https://h/x?X-Amz-Signature=deadbeef&X-Amz-Date=1",
        "https://h/x?X-Amz-Signature=***&X-Amz-Date=1",
    ),
    "fragment kept": ("https://h/x?Signature=abc#frag", "https://h/x?Signature=***#frag"),
    "no signature": ("https://h/x.png?Expires=1", "https://h/x.png?Expires=1"),
    "not a query key": ("https://h/Signature=abc/x.png", "https://h/Signature=abc/x.png"),
}


@pytest.mark.parametrize(("url", "expected"), REDACT_CASES.values(), ids=list(REDACT_CASES))
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize("value", [None, ""], ids=["none", "empty"])
def test_redact_url_passes_empty_values(value):
    assert redact_url(value) == value


def test_repr_and_describe_hide_the_cover_signature():
    job = PictureModelingJob.from_api(JOB_SUCCEED)
    for text in (repr(job), str(job), job.describe()):
        assert COVER_SIGNATURE not in text
        assert "DXJ9rIuf0Sf4aDlR95icBU" not in text
        assert "Signature=***" in text
        assert job.job_id in text


COVER_EXPIRY_CASES = {
    "documented": (JOB_SUCCEED["model_cover_url"], COVER_EXPIRES_AT),
    "lower-case key": ("https://h/x?expires=0", datetime(1970, 1, 1, tzinfo=timezone.utc)),
    "no expires": ("https://h/x?Signature=a", None),
    "garbage": ("https://h/x?Expires=soon", None),
    "none": (None, None),
}


@pytest.mark.parametrize(("url", "expected"), COVER_EXPIRY_CASES.values(), ids=list(COVER_EXPIRY_CASES))
def test_cover_url_expiry(url, expected):
    assert cover_url_expiry(url) == expected


UTC_TIME = datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)
PARSE_TIME_CASES = {
    "Z": ("2022-11-07T11:43:08Z", datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)),
    "fraction": ("2022-11-07T11:43:08.250Z", datetime(2022, 11, 7, 11, 43, 8, 250000, tzinfo=timezone.utc)),
    "offset": ("2022-11-07T19:43:08+08:00", datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)),
    "naive is UTC": ("2022-11-07T11:43:08", datetime(2022, 11, 7, 11, 43, 8, tzinfo=timezone.utc)),
    "null": (None, None),
    "empty": ("", None),
    # Forms Python 3.10's fromisoformat rejects: parse_time must not depend on the Python version.
    "one digit": ("2022-11-07T11:43:08.1Z", datetime(2022, 11, 7, 11, 43, 8, 100000, tzinfo=timezone.utc)),
    "nanoseconds": ("2022-11-07T19:43:08.123456789+08:00", UTC_TIME.replace(microsecond=123456)),
    "offset without colon": ("2022-11-07T19:43:08+0800", UTC_TIME),
    "offset hours only": ("2022-11-07T19:43:08+08", UTC_TIME),
    "negative offset": ("2022-11-07T06:13:08-05:30", UTC_TIME),
    "lower-case z and t": ("2022-11-07t11:43:08z", UTC_TIME),
    "space for T": ("2022-11-07 19:43:08+08:00", UTC_TIME),
    "comma fraction": ("2022-11-07T11:43:08,5Z", UTC_TIME.replace(microsecond=500000)),
    "no seconds": ("2022-11-07T11:43Z", UTC_TIME.replace(second=0)),
    "date only": ("2022-11-07", datetime(2022, 11, 7, tzinfo=timezone.utc)),
    "surrounding blanks": (" 2022-11-07T11:43:08Z ", UTC_TIME),
    "leap second": ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=timezone.utc)),
}


@pytest.mark.parametrize(("value", "expected"), PARSE_TIME_CASES.values(), ids=list(PARSE_TIME_CASES))
def test_parse_time(value, expected):
    parsed = parse_time(value, "start_time")
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is not None


def test_parse_time_error_names_the_field_and_truncates():
    with pytest.raises(MetaStudioInvalidResponseError, match="end_time") as exc:
        parse_time("x" * 1000, "end_time")
    assert len(str(exc.value)) < 200


def test_parse_time_keeps_the_given_offset():
    parsed = parse_time("2022-11-07T06:13:08-05:30", "start_time")
    assert parsed is not None and parsed.utcoffset() == -timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(
    "value",
    [
        "2022-13-07T11:43:08Z",  # month 13
        "2022-11-07T24:00:00Z",
        "2022-11-07T11:43:08+24:00",  # offsets stay under a day
        "2022-11-07T11:43:08.Z",
        "2022-11-07T11:43:08ZZ",
        "2022-11-07T11:43:08 UTC",
        "20221107T114308Z",
        "\u0662\u0660\u0662\u0662-11-07T11:43:08Z",  # non-ASCII digits
        "yesterday",
    ],
)
def test_parse_time_refuses(value):
    with pytest.raises(MetaStudioInvalidResponseError, match="start_time"):
        parse_time(value, "start_time")


@given(
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)),
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    nanos=st.integers(min_value=0, max_value=999),
    digits=st.integers(min_value=0, max_value=9),
    separator=st.sampled_from(["T", "t", " "]),
    style=st.sampled_from(["colon", "compact", "z"]),
)
def test_parse_time_property(moment, offset_minutes, nanos, digits, separator, style):
    """Any RFC 3339 rendering of an instant (fraction of 0-9 digits, any offset style) parses back to
    that instant, cut to microseconds, with its offset."""
    fraction = f"{moment.microsecond:06d}{nanos:03d}"[:digits]
    if style == "z":
        offset_minutes = 0
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    zone = {"colon": f"{sign}{hours:02d}:{minutes:02d}", "compact": f"{sign}{hours:02d}{minutes:02d}"}
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + (f".{fraction}" if digits else "")
    text += zone.get(style, "Z")
    expected = moment.replace(
        microsecond=int(fraction[:6].ljust(6, "0")), tzinfo=timezone(timedelta(minutes=offset_minutes))
    )
    parsed = parse_time(text, "start_time")
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset()

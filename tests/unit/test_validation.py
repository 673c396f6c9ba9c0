"""Input checks made before any request is built (validation.py)."""

from __future__ import annotations

import struct

import pytest
from testsupport import BAD_JOB_IDS, png_header

from airflow_provider_metastudio.exceptions import MetaStudioValidationError
from airflow_provider_metastudio.validation import (
    MAX_PHOTO_BYTES,
    image_type_and_size,
    validate_app_user_id,
    validate_http_url,
    validate_job_id,
    validate_photo,
    validate_project_id,
    validate_region,
    validate_text,
)


def jpeg_header(width: int, height: int, sof_marker: int = 0xC0) -> bytes:
    """SOI, a JFIF APP0, a DHT (0xC4, which must not be read as a frame), the SOF, SOS and EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dht = b"\xff\xc4" + struct.pack(">H", 2 + 17 + 1) + b"\x00" + bytes([0, 1] + [0] * 14) + b"\x00"
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof = (
        bytes([0xFF, sof_marker])
        + struct.pack(">HBHHB", 8 + len(components), 8, height, width, 3)
        + components
    )
    sos = b"\xff\xda" + struct.pack(">H", 12) + b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + app0 + dht + sof + sos + b"\x00" * 16 + b"\xff\xd9"


GOOD_JOB_IDS = {
    "documented": "f503894a-20e2-4274-ad88-8364f59a93da_SMS",
    "asset id": "3fcb602bdbe4982ff59832b172949a21",
    "one char": "a",
    "128 chars": "a" * 128,
}


@pytest.mark.parametrize("job_id", BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS))
def test_bad_job_ids_are_refused_with_a_short_message(job_id):
    with pytest.raises(MetaStudioValidationError) as exc:
        validate_job_id(job_id)
    assert exc.value.field == "job_id"
    assert str(exc.value).startswith("Invalid job_id:")
    assert len(str(exc.value)) < 200
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("job_id", GOOD_JOB_IDS.values(), ids=list(GOOD_JOB_IDS))
def test_good_job_ids_pass_unchanged(job_id):
    assert validate_job_id(job_id) == job_id


def test_id_too_long_by_one():
    with pytest.raises(MetaStudioValidationError, match="129 characters"):
        validate_job_id("a" * 129)


def test_field_name_is_configurable():
    with pytest.raises(MetaStudioValidationError) as exc:
        validate_job_id("a/b", field="model_asset_id")
    assert exc.value.field == "model_asset_id"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0d697589d98091f12f92c0073501cd79", True),
        ("p_1-x", True),
        ("../p", False),
        ("a b", False),
        ("a" * 65, False),
    ],
    ids=["hex", "dash-underscore", "traversal", "space", "too-long"],
)
def test_project_id(value, ok):
    if ok:
        assert validate_project_id(value) == value
    else:
        with pytest.raises(MetaStudioValidationError) as exc:
            validate_project_id(value)
        assert exc.value.field == "project_id"


REGIONS = {
    "cn-north-4": True,
    "cn-east-3": True,
    "ap-southeast-1": True,
    "la-south-2": True,
    "CN-NORTH-4": False,
    "cn_north_4": False,
    "beijing4": False,
    "cn-north": False,
    "cn-north-4 ": False,
    "": False,
}


@pytest.mark.parametrize(("region", "ok"), REGIONS.items(), ids=[r or "empty" for r in REGIONS])
def test_region(region, ok):
    if ok:
        assert validate_region(region) == region
    else:
        with pytest.raises(MetaStudioValidationError) as exc:
            validate_region(region)
        assert exc.value.field == "region"


APP_USER_IDS = {
    "ascii": ("user-001", True),
    "with inner space": ("user 001", True),
    "256 chars": ("u" * 256, True),
    "chinese": ("用户001", False),
    "fullwidth digits": ("user００１", False),
    "crlf": ("user\r\nX-Evil: 1", False),
    "tab": ("user\t1", False),
    "leading space": (" user", False),
    "empty": ("", False),
    "257 chars": ("u" * 257, False),
    "int": (1, False),
}


@pytest.mark.parametrize(("value", "ok"), APP_USER_IDS.values(), ids=list(APP_USER_IDS))
def test_app_user_id(value, ok):
    if ok:
        assert validate_app_user_id(value) == value
    else:
        with pytest.raises(MetaStudioValidationError) as exc:
            validate_app_user_id(value)
        assert exc.value.field == "app_user_id"
        assert len(str(exc.value)) < 200


URLS = {
    "https": ("https://example.com/a.png", True),
    "http with port": ("http://127.0.0.1:8080/a.png", True),
    "upper-case scheme": ("HTTPS://example.com/a.png", True),
    "surrounding spaces stripped": ("  https://example.com/a.png  ", True),
    "ftp": ("ftp://example.com/a.png", False),
    "file": ("file:///etc/passwd", False),
    "s3": ("s3://bucket/a.png", False),
    "javascript": ("javascript:alert(1)", False),
    "no host": ("http:///a.png", False),
    "no scheme": ("example.com/a.png", False),
    "inner space": ("https://example.com/a b.png", False),
    "empty": ("", False),
    "none": (None, False),
}


@pytest.mark.parametrize(("value", "ok"), URLS.values(), ids=list(URLS))
def test_http_url(value, ok):
    if ok:
        assert validate_http_url(value, "picture_url") == value.strip()
    else:
        with pytest.raises(MetaStudioValidationError) as exc:
            validate_http_url(value, "picture_url")
        assert exc.value.field == "picture_url"


def test_https_only_refuses_http():
    with pytest.raises(MetaStudioValidationError, match="https URL"):
        validate_http_url("http://example.com/a.png", "notify_url", allow_http=False)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("my_model", True),
        ("我的模型", True),
        ("x" * 256, True),
        ("", False),
        ("  ", False),
        ("x" * 257, False),
        ("a\nb", False),
        (None, False),
    ],
    ids=["ascii", "chinese", "max", "empty", "blank", "too-long", "newline", "none"],
)
def test_text(value, ok):
    if ok:
        assert validate_text(value, "name") == value
    else:
        with pytest.raises(MetaStudioValidationError) as exc:
            validate_text(value, "name")
        assert exc.value.field == "name"


IMAGE_CASES = {
    "png": (png_header(640, 480), ("png", 640, 480)),
    "png max": (png_header(3840, 2160), ("png", 3840, 2160)),
    "jpeg sof0": (jpeg_header(1920, 1080), ("jpg", 1920, 1080)),
    "jpeg progressive sof2": (jpeg_header(800, 600, 0xC2), ("jpg", 800, 600)),
    "jpeg portrait": (jpeg_header(1080, 1920), ("jpg", 1080, 1920)),
}


@pytest.mark.parametrize(("data", "expected"), IMAGE_CASES.values(), ids=list(IMAGE_CASES))
def test_image_type_and_size(data, expected):
    assert image_type_and_size(data) == expected


NOT_IMAGES = {
    "gif": b"GIF89a" + b"\x00" * 32,
    "text": b"hello, this is not a picture at all",
    "truncated png": png_header(10, 10)[:20],
    "png signature without IHDR": b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
    "jpeg without frame": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
    + b"\x00" * 8,
}


@pytest.mark.parametrize("data", NOT_IMAGES.values(), ids=list(NOT_IMAGES))
def test_non_images_are_refused(data):
    with pytest.raises(MetaStudioValidationError) as exc:
        image_type_and_size(data)
    assert exc.value.field == "photo"


PHOTO_CASES = {
    "png": (png_header(640, 480), "png"),
    "jpeg": (jpeg_header(640, 480), "jpg"),
    "landscape limit": (png_header(3840, 2160), "png"),
    "portrait limit": (png_header(2160, 3840), "png"),
}


@pytest.mark.parametrize(("data", "ext"), PHOTO_CASES.values(), ids=list(PHOTO_CASES))
def test_validate_photo_accepts(data, ext):
    assert validate_photo(data) == ext


BAD_PHOTOS = {
    "empty": (b"", "empty"),
    "too wide": (png_header(3841, 100), "3841x100"),
    "too large both ways": (png_header(4000, 3000), "4000x3000"),
    "square over height": (jpeg_header(2161, 2161), "2161x2161"),
    "zero width": (png_header(0, 10), "0x10"),
    "gif": (b"GIF89a" + b"\x00" * 32, "PNG or JPEG"),
    "too many bytes": (png_header(10, 10) + b"\x00" * MAX_PHOTO_BYTES, "bytes"),
}


@pytest.mark.parametrize(("data", "fragment"), BAD_PHOTOS.values(), ids=list(BAD_PHOTOS))
def test_validate_photo_refuses(data, fragment):
    with pytest.raises(MetaStudioValidationError) as exc:
        validate_photo(data)
    assert exc.value.field == "photo"
    assert fragment in str(exc.value)
    assert len(str(exc.value)) < 200

"""The ingest task's handling of a message: one bad photo refuses that product only."""

from __future__ import annotations

import base64

import pytest

from workers.tasks import decode_photos


def test_a_photo_that_is_not_base64_refuses_its_product_only() -> None:
    records = [{"product_id": "p1"}, {"product_id": "p2"}, {"product_id": "p3"}]
    photos = [base64.b64encode(b"\xff\xd8jpeg").decode(), "not base64!", base64.b64encode(b"png").decode()]
    kept, data, report = decode_photos(records, photos)
    assert kept == [records[0], records[2]] and data == [b"\xff\xd8jpeg", b"png"]
    assert report.indexed == 0 and report.failed == [("p2", "photo is not valid base64")]


def test_a_message_whose_lists_differ_in_length_is_refused_whole() -> None:
    with pytest.raises(ValueError, match="2 records but 1 photos"):
        decode_photos([{"product_id": "p1"}, {"product_id": "p2"}], [""])

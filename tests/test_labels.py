"""The payload ids a run is tagged with for people (``offload.labels``): id fields only, short safe values."""

from offload.labels import label_tags


def test_only_short_id_fields_become_labels(monkeypatch):
    monkeypatch.setenv("BILLING_API_KEY", "sk_live_abcdef123456")
    payload = {
        "video_id": "intro-42",
        "user_id": "user_7",
        "user_email": "ada@example.com",  # not an id: stays in the run config
        "video_url": "https://cdn.example.com/u/intro.mp4",
        "order_id": 1234,
        "flag_id": True,  # a boolean is no id
        "event_id": "x" * 65,  # too long to read as a tag
        "note_id": "has space",  # not an id's characters
        "key_id": "sk_live_abcdef123456",  # a configured secret: never in the UI
        "data": {"nested_id": "n1"},  # top level only
    }

    assert label_tags(payload) == {"video_id": "intro-42", "user_id": "user_7", "order_id": "1234"}
    assert label_tags({}) == {}

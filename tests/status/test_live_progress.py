"""Live progress: the WebSocket (and the SSE fallback) at ``/videos/<id>/events`` sends the status
document on every change of the resource and closes after the terminal one."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

import pytest
import requests
from simple_websocket import Client, ConnectionClosed, ConnectionError  # type: ignore[import-untyped]
from status_support import StatusIngest, completed_status


def ws_url(ingest: StatusIngest, video_id: str, query: str = "") -> str:
    return f"ws{ingest.url[4:]}/videos/{video_id}/events{query}"


def close(ws: Client) -> None:
    """Close from our side unless the server already did."""
    with contextlib.suppress(ConnectionClosed):
        ws.close()


def receive(ws: Client) -> dict[str, Any]:
    message = ws.receive(timeout=30)
    assert message is not None, "no update within 30 s"
    return dict(json.loads(message))


def assert_closed(ws: Client) -> None:
    with pytest.raises(ConnectionClosed) as closed:  # the server closes; nothing else arrives first
        message = ws.receive(timeout=30)
        pytest.fail(f"expected the server to close, got {message!r}")
    assert closed.value.reason == 1000


def test_websocket_follows_the_resource_until_completed(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    ws = Client.connect(ws_url(status_ingest, video_id), headers=status_ingest.headers())
    try:
        first = receive(ws)
        assert (first["id"], first["status"], first["progress"]) == (video_id, "PENDING", 0)
        status_ingest.set_status(video_id, {"phase": "Queued", "progress": 0, "jobId": f"vt-{video_id}-g1"})
        assert (receive(ws)["phase"], "Queued") == ("Queued", "Queued")
        for progress in (10, 55, 90):
            status_ingest.set_status(video_id, {"phase": "Processing", "progress": progress})
            update = receive(ws)
            assert (update["status"], update["progress"]) == ("PROCESSING", progress)
        status_ingest.set_status(video_id, completed_status(video_id))
        done = receive(ws)
        assert (done["status"], done["progress"]) == ("COMPLETED", 100)
        assert done["master_playlist_url"] and len(done["renditions"]) == 2
        # the same document as GET /videos/<id> (links follow the Host header, and simple-websocket's
        # client sends the host without the port: ask with the same Host)
        same_host = {**status_ingest.headers(), "Host": "127.0.0.1"}
        assert done == requests.get(f"{status_ingest.url}/videos/{video_id}", headers=same_host, timeout=30).json()
        assert_closed(ws)
    finally:
        close(ws)


def test_websocket_with_query_token_until_failed(status_ingest: StatusIngest) -> None:
    """Browsers can't set headers on a WebSocket: the document's events_url carries a token."""
    video_id = status_ingest.create_video()
    status_ingest.set_status(video_id, {"phase": "Processing", "progress": 5})
    events_url = requests.get(f"{status_ingest.url}/videos/{video_id}", headers=status_ingest.headers(),
                              timeout=30).json()["events_url"]
    assert "?token=" in events_url
    ws = Client.connect(events_url)
    try:
        assert receive(ws)["progress"] == 5
        # a metadata-only change (a label) is not a status change: no message for it
        status_ingest.objects.patch_namespaced_custom_object(
            "vidup.io", "v1alpha1", status_ingest.namespace, "videotranscodes", video_id,
            {"metadata": {"labels": {"touched": "yes"}}}, _content_type="application/merge-patch+json")
        status_ingest.set_status(video_id, {"phase": "Failed", "reason": "InvalidMedia",
                                            "message": "no video stream"})
        failed = receive(ws)
        assert (failed["status"], failed["reason"], failed["error"]) == ("FAILED", "InvalidMedia", "no video stream")
        assert_closed(ws)
    finally:
        close(ws)
    # an API key works in ?token= too, for clients that can only pass a URL
    ws = Client.connect(ws_url(status_ingest, video_id, f"?token={status_ingest.keys['acme']}"))
    try:
        assert receive(ws)["status"] == "FAILED"
        assert_closed(ws)
    finally:
        close(ws)


def test_websocket_of_a_terminal_video_sends_once_and_closes(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    status_ingest.set_status(video_id, completed_status(video_id))
    ws = Client.connect(ws_url(status_ingest, video_id), headers=status_ingest.headers())
    try:
        assert receive(ws)["status"] == "COMPLETED"
        assert_closed(ws)
    finally:
        close(ws)


def test_websocket_reports_deletion(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    ws = Client.connect(ws_url(status_ingest, video_id), headers=status_ingest.headers())
    try:
        assert receive(ws)["status"] == "PENDING"
        status_ingest.delete_video(video_id)
        assert receive(ws) == {"id": video_id, "deleted": True}
        assert_closed(ws)
    finally:
        close(ws)


@pytest.mark.parametrize(("alias", "query", "status"), [
    (None, "", 401),
    ("globex", "", 403),
    (None, "?token=1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 403),
    (None, "?token=vk_unknown", 401),
])
def test_websocket_auth_is_refused_before_the_handshake(status_ingest: StatusIngest, alias: str | None, query: str,
                                                        status: int) -> None:
    video_id = status_ingest.create_video()
    headers = status_ingest.headers(alias) if alias else None
    with pytest.raises(ConnectionError) as refused:
        Client.connect(ws_url(status_ingest, video_id, query), headers=headers)
    assert refused.value.status_code == status


def test_websocket_unknown_video_is_404(status_ingest: StatusIngest) -> None:
    with pytest.raises(ConnectionError) as refused:
        Client.connect(ws_url(status_ingest, "f" * 32), headers=status_ingest.headers())
    assert refused.value.status_code == 404


def test_server_sent_events_fallback(status_ingest: StatusIngest) -> None:
    video_id = status_ingest.create_video()
    received: list[dict[str, Any]] = []
    first = threading.Event()

    def read() -> None:
        with requests.get(f"{status_ingest.url}/videos/{video_id}/events", headers=status_ingest.headers(),
                          stream=True, timeout=60) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    received.append(json.loads(line[len("data: "):]))
                    first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(30)
    status_ingest.set_status(video_id, {"phase": "Processing", "progress": 42})
    status_ingest.set_status(video_id, completed_status(video_id))
    reader.join(60)
    assert not reader.is_alive(), "the stream did not end after COMPLETED"
    assert (received[0]["status"], received[0]["progress"]) == ("PENDING", 0)
    assert received[-1]["status"] == "COMPLETED"
    assert ("PROCESSING", 42) in [(d["status"], d["progress"]) for d in received]

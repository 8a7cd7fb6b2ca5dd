"""hookrelay deliveries without a broker: selection, the backlog count and both renderings."""

from __future__ import annotations

import io

import orjson
from rich.console import Console

from hookrelay.commands.deliveries import Found, Selection, backlog, render_json, render_tables


def pending_row(hook_id: str, tier: str, due_at: str) -> dict[str, object]:
    return {"due_at": due_at, "hook_id": hook_id, "tier": tier, "event": "User.Created",
            "attempts": 1, "last_status": 503, "delivery_id": f"msg_{due_at[14:19]}",
            "origin": "t[0]@1", "error": "http 503"}  # fmt: skip


ROWS = [
    pending_row("crm", "g.retry.1m", "2026-01-01T00:01:00.000+00:00"),
    pending_row("crm", "g.retry.1m", "2026-01-01T00:02:00.000+00:00"),
    pending_row("crm", "g.retry.10m", "2026-01-01T00:09:00.000+00:00"),
    pending_row("audit", "g.retry.1m", "2026-01-01T00:00:30.000+00:00"),
]


def test_a_selection_takes_every_filter_together_and_until_is_exclusive() -> None:
    s = Selection(hook_ids=("crm",), events=("User.Created",), since_ms=1000, until_ms=2000)
    assert s.takes("crm", "User.Created", "msg_a", 1000)
    assert not s.takes("crm", "User.Created", "msg_a", 2000)
    assert not s.takes("audit", "User.Created", "msg_a", 1500)
    assert not s.takes("crm", "User.Deleted", "msg_a", 1500)
    assert Selection().takes(None, None, None, 0)


def test_the_backlog_counts_per_hook_and_tier_with_the_first_and_last_due_times() -> None:
    assert backlog(ROWS) == [
        {"hook_id": "audit", "tier": "g.retry.1m", "pending": 1,
         "next_due_at": "2026-01-01T00:00:30.000+00:00",
         "last_due_at": "2026-01-01T00:00:30.000+00:00"},
        {"hook_id": "crm", "tier": "g.retry.1m", "pending": 2,
         "next_due_at": "2026-01-01T00:01:00.000+00:00",
         "last_due_at": "2026-01-01T00:02:00.000+00:00"},
        {"hook_id": "crm", "tier": "g.retry.10m", "pending": 1,
         "next_due_at": "2026-01-01T00:09:00.000+00:00",
         "last_due_at": "2026-01-01T00:09:00.000+00:00"},
    ]  # fmt: skip


def test_json_gives_every_row_and_the_counts() -> None:
    found = Found(rows=list(ROWS), read=6, other_deployments=2)
    doc = orjson.loads(render_json("pending", found, None))
    assert (doc["shown"], doc["matched"], doc["read"], doc["other_deployments"]) == (4, 4, 6, 2)
    assert doc["rows"] == ROWS and len(doc["backlog"]) == 3


def test_tables_show_the_newest_rows_one_line_each_and_say_what_was_left_out() -> None:
    out = io.StringIO()
    found = Found(rows=list(ROWS), read=6, other_deployments=2)
    render_tables("pending", found, 2, Console(file=out, width=400))
    text = out.getvalue()
    assert "waiting per hook and tier (times in UTC)" in text
    assert "2026-01-01 00:09:00.000" in text and "2026-01-01T" not in text
    # The last two rows (the newest), one line each:
    assert "msg_09:00" in text and "msg_00:30" in text and "msg_01:00" not in text
    assert "pending: 2 of 4 shown (--limit), 6 records read; 2 of other deployments left out" in (
        text
    )

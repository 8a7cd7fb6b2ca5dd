"""The README's "Try it against your own receiver" snippet, as written: its two YAML files
are taken from the README itself, ``hookrelay check`` accepts them, and ``hookrelay
send-test`` reaches a receiver at the snippet's own URL with a valid signature. (Its
broker steps need ``make kafka-start`` on port 9092; the rest of the suite covers
``produce`` and ``run``.) The snippet once named a loopback URL the SSRF guard refuses:
check said ok, send-test failed and run dead-lettered everything."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.integration.harness import hookrelay_cli

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet() -> str:
    """The shell block of the README's "Try it against your own receiver" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Try it against your own receiver", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the section lost its shell block"
    return match.group(1)


def heredoc(block: str, path: str) -> str:
    """What ``cat > PATH <<'EOF' ... EOF`` writes."""
    match = re.search(rf"cat > {re.escape(path)} <<'EOF'\n(.*?)\nEOF\n", block, re.DOTALL)
    assert match is not None, f"the snippet no longer writes {path}"
    return match.group(1) + "\n"


async def test_the_readme_snippet_checks_and_reaches_its_receiver(tmp_path: Path) -> None:
    block = snippet()
    (tmp_path / "hooks.yaml").write_text(heredoc(block, "/tmp/hooks.yaml"), encoding="utf-8")
    main = tmp_path / "hookrelay.yaml"
    main.write_text(heredoc(block, "/tmp/hookrelay.yaml"), encoding="utf-8")
    key = re.search(r"export MY_SIGNING_KEY=(\S+)", block)
    assert key is not None
    url = urlsplit(re.search(r"url: (\S+)", heredoc(block, "/tmp/hooks.yaml")).group(1))  # type: ignore[union-attr]

    received: list[bool] = []

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        expected = hmac.new(key.group(1).encode(), body, hashlib.sha256).hexdigest()
        received.append(request.headers.get("logto-signature-sha-256") == expected)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(url.path, webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, url.hostname, url.port)
    await site.start()  # the snippet's own address: a clash fails the test, not skips it
    os.environ["MY_SIGNING_KEY"] = key.group(1)
    try:
        code, out, err = await hookrelay_cli("check", "-c", str(main))
        assert code == 0, err
        code, out, err = await hookrelay_cli(
            "send-test", "my-receiver", "-c", str(main), "--event", "User.Created"
        )
        assert code == 0, out + err
        assert "status: 200" in out
    finally:
        del os.environ["MY_SIGNING_KEY"]
        await runner.cleanup()
    assert received == [True]

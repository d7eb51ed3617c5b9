from __future__ import annotations

from channels import append
from tests.helpers import Account
from tests.live import LiveServer, ws_connect


async def test_welcome_subscribe_and_live_event(live: LiveServer, alice: Account) -> None:
    async with ws_connect(live.ws_url, alice.access_token) as ws:
        welcome = await ws.expect("welcome")
        assert welcome["user_id"] == alice.id
        ack = await ws.request({"op": "subscribe", "channel": f"user:{alice.id}", "id": 1})
        assert ack == {
            "type": "subscribed",
            "channel": f"user:{alice.id}",
            "seq": 0,
            "recovered": True,
            "id": 1,
        }
        async with live.sessionmaker() as s:
            await append(s, f"user:{alice.id}", "test.ping", {"n": 1})
            await s.commit()
        (event,) = await ws.events(1)
        assert event["seq"] == 1 and event["data"] == {"n": 1}

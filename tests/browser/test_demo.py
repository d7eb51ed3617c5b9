"""The demo at `/` in a real browser: two users in two browser contexts see each other's rides,
bookings, chat and typing live; one goes offline and back and gets what it missed once, in
order. `/docs` renders with every non-local request blocked."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.helpers import PASSWORD
from tests.live import LiveServer

pytestmark = pytest.mark.slow

WAIT = 30_000  # ms: generous, the machine may be busy
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


async def open_app(
    browser: Browser, server: LiveServer, **options: Any
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(**options)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(server.http + "/")
    return context, page


async def sign_up(page: Page, name: str) -> str:
    email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
    await page.click("[data-testid=tab-signup]")
    await page.fill("[data-testid=name]", name)
    await page.fill("[data-testid=email]", email)
    await page.fill("[data-testid=password]", PASSWORD)
    await page.click("[data-testid=auth-submit]")
    await expect(page.locator("[data-testid=connection]")).to_have_attribute(
        "data-state", "connected", timeout=WAIT
    )
    return email


async def sign_in(page: Page, email: str) -> None:
    await page.fill("[data-testid=email]", email)
    await page.fill("[data-testid=password]", PASSWORD)
    await page.click("[data-testid=auth-submit]")
    await expect(page.locator("[data-testid=connection]")).to_have_attribute(
        "data-state", "connected", timeout=WAIT
    )


async def publish(page: Page, origin: str, destination: str, seats: int = 3) -> None:
    await page.fill("[data-testid=origin-input]", origin)
    await page.fill("[data-testid=destination-input]", destination)
    await page.fill("[data-testid=seats-input]", str(seats))
    await page.click("[data-testid=publish]")
    # published: the form clears itself
    await expect(page.locator("[data-testid=origin-input]")).to_have_value("", timeout=WAIT)


def card(page: Page, destination: str) -> Any:
    return page.locator("[data-testid=ride-card]", has_text=destination)


async def messages(page: Page) -> list[str]:
    texts = await page.locator("[data-testid=message] .body").all_inner_texts()
    return [t.strip() for t in texts]


async def test_two_users_see_rides_bookings_chat_and_typing_live_and_recover_offline(
    browser: Browser, live_factory: Callable[..., Any], shots: Path
) -> None:
    server: LiveServer = await live_factory(heartbeat_s=2)
    driver_ctx, driver = await open_app(browser, server, viewport=DESKTOP)
    rider_ctx, rider = await open_app(browser, server, viewport=DESKTOP)
    await driver.screenshot(animations="disabled", path=shots / "demo-sign-in.png")
    await sign_up(driver, "Ana Petrova")
    rider_email = await sign_up(rider, "Timur Galiev")
    await rider.evaluate("window.__noReload = true")

    # A ride published by one appears live on the other's board.
    await publish(driver, "Innopolis", "Kazan, Kremlin")
    ride = card(rider, "Kazan, Kremlin")
    await expect(ride).to_be_visible(timeout=WAIT)
    await expect(ride.locator("[data-testid=seats]")).to_have_text("3 seats left")
    await publish(driver, "Innopolis", "Kazan airport", seats=2)
    await publish(driver, "Verkhniy Uslon", "Innopolis", seats=4)
    await expect(rider.locator("[data-testid=ride-card]")).to_have_count(3, timeout=WAIT)
    assert await rider.evaluate("window.__noReload") is True  # live, not reloaded

    # A booking updates the seats on both boards.
    await ride.locator("[data-testid=book]").click()
    booked = ride.locator("[data-testid=booked]")
    await expect(booked).to_have_text(re.compile("Booked"), timeout=WAIT)
    await expect(ride.locator("[data-testid=seats]")).to_have_text("2 seats left", timeout=WAIT)
    await expect(card(driver, "Kazan, Kremlin").locator("[data-testid=seats]")).to_have_text(
        "2 seats left", timeout=WAIT
    )
    await expect(driver.locator("[data-testid=badge]")).to_have_text("1", timeout=WAIT)
    await driver.screenshot(animations="disabled", path=shots / "demo-board.png")

    # The ride page: chat and typing cross between the two.
    await card(driver, "Kazan, Kremlin").click()
    await ride.click()
    for page in (driver, rider):
        await expect(page.locator("[data-testid=message-input]")).to_be_visible(timeout=WAIT)
    await expect(driver.locator("[data-testid=ride-seats]")).to_have_text("2 seats left")
    await rider.fill("[data-testid=message-input]", "Hi! Where do we meet?")
    await expect(driver.locator("[data-testid=typing]")).to_have_text(
        re.compile("Timur is typing"), timeout=WAIT
    )
    await rider.click("[data-testid=send]")
    await expect(driver.locator("[data-testid=message]")).to_have_count(1, timeout=WAIT)
    await driver.fill("[data-testid=message-input]", "North gate of the technopark, 7:50")
    await driver.click("[data-testid=send]")
    await expect(rider.locator("[data-testid=message]")).to_have_count(2, timeout=WAIT)
    assert await messages(driver) == await messages(rider) == [
        "Hi! Where do we meet?", "North gate of the technopark, 7:50"
    ]  # fmt: skip
    rider_id = await rider.evaluate("window.kudaDemo.me.id")
    await expect(driver.locator("[data-testid=presence]")).to_have_attribute(
        "data-users", re.compile(rf"\b{rider_id}\b"), timeout=WAIT
    )
    await rider.fill("[data-testid=message-input]", "See you there")
    await expect(driver.locator("[data-testid=typing]")).to_have_text(
        re.compile("Timur is typing"), timeout=WAIT
    )
    await driver.screenshot(animations="disabled", path=shots / "demo-ride.png")
    await rider.fill("[data-testid=message-input]", "")

    # The rider goes offline; what is sent meanwhile arrives once, in order, once back.
    await rider_ctx.set_offline(True)
    connection = rider.locator("[data-testid=connection]")
    await expect(connection).not_to_have_attribute("data-state", "connected", timeout=WAIT)
    await expect(connection).to_have_text("Offline", timeout=WAIT)
    sent = [f"While you were away {i}" for i in range(1, 4)]
    for body in sent:
        await driver.fill("[data-testid=message-input]", body)
        await driver.click("[data-testid=send]")
        await expect(driver.locator("[data-testid=message]", has_text=body)).to_be_visible()
    await rider_ctx.set_offline(False)
    await expect(connection).to_have_attribute("data-state", "connected", timeout=WAIT)
    await expect(rider.locator("[data-testid=message]")).to_have_count(5, timeout=WAIT)
    await asyncio.sleep(1)  # anything extra (a duplicate) would show by now
    assert await messages(rider) == await messages(driver)
    assert (await messages(rider))[2:] == sent

    # The same rider at phone width.
    phone_ctx, phone = await open_app(browser, server, viewport=PHONE, device_scale_factor=2,
                                      is_mobile=True, has_touch=True)  # fmt: skip
    await sign_in(phone, rider_email)
    await expect(phone.locator("[data-testid=ride-card]")).to_have_count(3, timeout=WAIT)
    await phone.screenshot(animations="disabled", path=shots / "demo-phone-board.png")
    await phone.locator("[data-testid=ride-card]", has_text="Kazan, Kremlin").click()
    await expect(phone.locator("[data-testid=message]")).to_have_count(5, timeout=WAIT)
    ride_shot = shots / "demo-phone-ride.png"
    await phone.screenshot(animations="disabled", path=ride_shot, full_page=True)
    for page in (driver, rider, phone):
        assert page.errors == []  # type: ignore[attr-defined]
    for context in (driver_ctx, rider_ctx, phone_ctx):
        await context.close()


async def test_api_docs_render_with_no_internet(browser: Browser, live: LiveServer) -> None:
    context = await browser.new_context(viewport=DESKTOP)
    outside: list[str] = []

    async def local_only(route: Any) -> None:
        url = route.request.url
        if url.startswith(live.http) or url.startswith("data:"):
            await route.continue_()
        else:
            outside.append(url)
            await route.abort("internetdisconnected")

    await context.route("**/*", local_only)
    page = await context.new_page()
    await page.goto(live.http + "/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Kuda", timeout=WAIT)
    await expect(page.locator(".opblock").first).to_be_visible(timeout=WAIT)
    await page.goto(live.http + "/")
    await expect(page.locator("[data-testid=auth-form]")).to_be_visible(timeout=WAIT)
    assert outside == []
    await context.close()

"""The Playground in real Chromium: the recorded run plays by itself on the canvas, and a changed setting
brings a new run that starts again from step 0. The frame rate is measured in bench/playground_fps.py."""

from __future__ import annotations

from playwright.sync_api import Page, expect

PLAYER = "[data-testid=playground]"


def test_playground_animates_and_follows_the_settings(page: Page, app_server, first_paint, assert_no_errors) -> None:
    first_paint(page, f"{app_server.url}/playground?k=16&steps=200", "Playground")
    player = page.locator(PLAYER)
    expect(player).to_have_attribute("data-state", "playing", timeout=60_000)
    start = int(player.get_attribute("data-frame"))
    page.wait_for_timeout(1500)
    assert int(player.get_attribute("data-frame")) > start          # frames advance with no click
    expect(page.get_by_test_id("playgroundStatus")).to_contain_text("of 16 codes used")
    assert_no_errors(page)

    page.get_by_text("FSQ: a fixed rounding grid").click()
    expect(page.get_by_test_id("playgroundStatus")).to_contain_text("nothing to restart", timeout=60_000)
    expect(page.get_by_test_id("playgroundStatus")).to_contain_text("of 16 codes used")   # 4 x 4 rounding cells
    assert player.get_attribute("data-state") != "error"            # the run's codes and cell edges were read
    assert "q=fsq" in page.url
    page.get_by_test_id("playgroundPlay").click()                   # pause
    expect(player).not_to_have_attribute("data-state", "playing")
    held = player.get_attribute("data-frame")
    page.wait_for_timeout(800)
    assert player.get_attribute("data-frame") == held

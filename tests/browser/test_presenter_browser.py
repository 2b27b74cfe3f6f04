"""A lecturer's path through the app in presenter mode, in real Chromium: the Lesson stays in the top bar, each
page a Lesson step opens has Previous / Next, one press of Back leaves a page, a page opened from a link starts
at its top, and Train folds its settings after Start so the live panel is on the first screen."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from ui.lesson import STEPS

H1 = "[data-testid=stMain] h1"
STEP_BAR = ".st-key-lesson_step_bar"
TITLES = {"learn": "Learn", "paint": "Paint", "train": "Train", "playground": "Playground", "codebook": "Codebook",
          "sample": "Sample", "reconstruct": "Reconstruct"}   # a step's view file -> its page title's first word


def _title(number: int) -> str:
    return TITLES[STEPS[number - 1].page.removeprefix("views/").removesuffix(".py")]


def _open_step(page: Page, number: int) -> None:
    """Click step `number`'s link on the Lesson and wait for its page to be drawn."""
    link = page.locator("[data-testid=stMain] [data-testid=stPageLink] a").nth(number - 1)
    link.scroll_into_view_if_needed()
    link.click()
    _wait_for(page, _title(number))


def _wait_for(page: Page, title: str) -> None:
    expect(page.locator(H1).first).to_contain_text(title, timeout=120_000)
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=120_000)
    page.wait_for_timeout(1500)   # late reruns (a fragment's first tick) would write the URL now, if anything did


@pytest.mark.parametrize("width,height", [(1280, 720), (1024, 768)])
def test_the_lesson_is_first_in_the_presenter_bar(page: Page, app_server, first_paint, width, height) -> None:
    page.set_viewport_size({"width": width, "height": height})
    first_paint(page, f"{app_server.url}/codebook?present=1", "Codebook")
    nav = page.locator("[data-testid=stTopNav]")
    lesson = nav.get_by_text("Lesson", exact=True)
    expect(lesson).to_be_visible()
    links = [t.strip() for t in nav.locator("[data-testid=stTopNavLink]").all_inner_texts()]
    assert links[0] == "Lesson", links
    if width >= 1280:   # every page in the bar, none behind "N more"
        expect(nav.get_by_text(re.compile(r"^\d+ more$"))).to_have_count(0)


def test_back_leaves_a_page_opened_from_the_lesson_in_one_press(page: Page, app_server, first_paint) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    first_paint(page, f"{app_server.url}/lesson?present=1", "Lesson")
    page.wait_for_timeout(1500)
    for number in (5, 1, 3):   # Codebook (its UMAP polls), Learn (the root URL), Train (its panels tick)
        main = page.locator("[data-testid=stMain]")
        main.evaluate("e => e.scrollTo(0, e.scrollHeight)")   # the page opened must start at its top anyway
        _open_step(page, number)
        assert main.evaluate("e => e.scrollTop") == 0
        page.go_back()
        _wait_for(page, "Lesson")


def test_previous_and_next_walk_the_lesson(page: Page, app_server, first_paint) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    first_paint(page, f"{app_server.url}/lesson?present=1", "Lesson")
    _open_step(page, 1)
    bar = page.locator(STEP_BAR)
    expect(bar.get_by_role("link", name="Previous step")).to_have_count(0)   # the first step has nothing before it
    for number in range(2, len(STEPS) + 1):
        bar.get_by_role("link", name="Next step").click()
        _wait_for(page, _title(number))
        expect(bar).to_contain_text(f"Lesson step {number} of {len(STEPS)}: {STEPS[number - 1].label}")
        for name, value in STEPS[number - 1].params.items():   # the step's settings came with it
            assert f"{name}={value.replace(':', '%3A')}" in page.url, (name, page.url)
        assert "present=1" in page.url
    expect(bar.get_by_role("link", name="Next step")).to_have_count(0)   # the last step has nothing after it
    bar.get_by_role("link", name="Previous step").click()
    _wait_for(page, _title(len(STEPS) - 1))
    bar.get_by_role("link", name="Lesson", exact=True).click()
    _wait_for(page, "Lesson")
    expect(page.locator(STEP_BAR)).to_have_count(0)


def test_train_folds_its_settings_after_start_in_presenter_mode(page: Page, app_server, first_paint) -> None:
    """The live panel then begins on the first screen, and its metrics are not cut at 1280 or 1024 px."""
    page.set_viewport_size({"width": 1280, "height": 720})
    first_paint(page, f"{app_server.url}/train?present=1&k=128&budget=steps&steps=200", "Train")
    settings = page.locator(".st-key-tr_settings_open details").first
    page.get_by_text("New run settings").click()
    expect(settings).to_have_attribute("open", "")
    page.get_by_role("button", name="Start training").click()   # scrolls to it and waits until it stands still
    your_run = page.get_by_text("Your run", exact=True)
    expect(your_run).to_be_visible(timeout=60_000)
    expect(settings).not_to_have_attribute("open", "")
    box = your_run.bounding_box()
    assert box is not None and box["y"] + box["height"] < 720, box
    expect(page.get_by_text("Codes used").first).to_be_visible(timeout=120_000)
    for mode in ("presenter", "normal"):
        if mode == "normal":
            page.get_by_text("Leave presenter mode").click()
            expect(page.get_by_text("Leave presenter mode")).to_have_count(0, timeout=30_000)
            expect(page.get_by_text("Codes used").first).to_be_visible(timeout=60_000)
        for width, height in ((1280, 720), (1024, 768)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(800)
            cut = page.locator("[data-testid=stMetric] [data-testid=stMarkdownContainer]").evaluate_all(
                "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")
            assert not cut, (mode, width, cut)

"""The labelling page on a real `rmserve serve` (gunicorn, SQLite store): workers sharing the store, and a real
browser ordering by keyboard and by dragging."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from bench.live_server import RunningServer, running_server

RMSERVE = Path(sys.executable).with_name("rmserve")
TASK = re.compile(r'data-task="(\d+)"')
# A policy's output that would run as a script, or turn bold, were it markup.
HOSTILE = "<script>window.owned = true</script><b>rude</b>"
# True once the page after `arguments[0]`'s has loaded (its script ran); asked in one call, so of one document.
NEXT_PAGE_LOADED = """
  if (document.readyState !== "complete") return false;
  const prompt = document.getElementById("prompt");
  return document.getElementById("empty") !== null || (prompt !== null && prompt.textContent !== arguments[0]);
"""


def add_tasks(data_dir: Path, tasks: list[dict[str, object]]) -> None:
    """`rmserve label add`, as a user would run it next to the server."""
    task_file = data_dir.parent / "tasks.jsonl"
    task_file.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    subprocess.run([str(RMSERVE), "label", "add", str(task_file), "--data-dir", str(data_dir)], check=True)


@pytest.fixture
def two_workers(tiny_repository: Path, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    data_dir = tmp_path / "data"
    env = {"RMSERVE_LABELLING": "true", "RMSERVE_DATA_DIR": str(data_dir), "RMSERVE_WORKERS": "2"}
    add_tasks(data_dir, [{"prompt": f"prompt {number}", "responses": ["a", "b"]} for number in range(40)])
    with running_server(tiny_repository, tmp_path / "rmserve.log", env=env) as server:
        yield server, data_dir


def test_two_workers_never_hand_out_the_same_task(two_workers: tuple[RunningServer, Path]) -> None:
    server, _ = two_workers

    def task_for(labeller: str) -> int:
        page = requests.get(f"{server.base_url}/label", params={"labeller": labeller}, timeout=60)
        page.raise_for_status()
        found = TASK.search(page.text)
        assert found is not None, page.text
        return int(found[1])

    with ThreadPoolExecutor(max_workers=8) as pool:
        leased = list(pool.map(task_for, [f"labeller-{number}" for number in range(40)]))
    assert sorted(leased) == list(range(1, 41)), "a task went to two labellers, or one was never handed out"
    metrics = requests.get(f"{server.base_url}/metrics", timeout=10).text
    assert 'rmserve_label_tasks{state="leased"} 40.0' in metrics


def browser() -> webdriver.Chrome:
    """Headless Chromium through Selenium, from the Debian packages (`chromium`, `chromium-driver`)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("needs Chromium and its driver: Debian's `chromium` and `chromium-driver` (.ci/install-tools.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,1200"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def drag(driver: webdriver.Chrome, source: WebElement, onto: WebElement) -> None:
    """Press on `source`, move into the upper half of `onto` (it lands before it), release."""
    chain = ActionChains(driver).click_and_hold(source)
    chain.move_to_element_with_offset(onto, 0, -onto.size["height"] // 4).release().perform()


@pytest.mark.slow  # a browser and a server: about 20 s
def test_a_person_orders_by_keyboard_and_by_dragging_and_export_holds_exactly_that(
    tiny_repository: Path, tmp_path: Path
) -> None:
    driver = browser()
    data_dir = tmp_path / "data"
    wanted = {
        "Which is kind?": ["kind", "neutral", HOSTILE],
        "Which is short?": ["short", "medium one", "a rather long answer"],
    }
    add_tasks(data_dir, [{"prompt": prompt, "responses": sorted(order)} for prompt, order in wanted.items()])
    env = {"RMSERVE_LABELLING": "true", "RMSERVE_DATA_DIR": str(data_dir)}

    def shown() -> tuple[str, list[WebElement], list[str]]:
        """The prompt, the response items and their texts, in the order on the page."""
        items = driver.find_elements(By.CSS_SELECTOR, "li.response")
        texts = [item.find_element(By.CSS_SELECTOR, ".text").text for item in items]
        return driver.find_element(By.ID, "prompt").text, items, texts

    def press(*keys: str) -> None:
        driver.find_element(By.TAG_NAME, "body").send_keys(*keys)

    def save_and_wait(prompt: str) -> None:
        """Enter saves and reloads: wait for the next page to have run its script (a drag before that does nothing)."""
        press(Keys.ENTER)
        WebDriverWait(driver, 30).until(lambda _: driver.execute_script(NEXT_PAGE_LOADED, prompt))

    try:
        with running_server(tiny_repository, tmp_path / "rmserve.log", env=env) as server:
            driver.get(f"{server.base_url}/label?labeller=ana")
            prompt, _, texts = shown()
            assert prompt == "Which is kind?"  # tasks come in the order added
            assert sorted(texts) == sorted(wanted[prompt])  # the hostile response as its text
            assert driver.execute_script("return window.owned") is None
            assert not driver.find_elements(By.CSS_SELECTOR, "li.response b, li.response script")
            press(*[str(texts.index(text) + 1) for text in wanted[prompt][:-1]])  # numbers as shown; last follows
            save_and_wait(prompt)

            prompt, _, _ = shown()
            for _ in range(2):  # two drags whatever the order shown: the second once met the first's text selection
                _, items, _ = shown()
                drag(driver, items[-1], items[0])
            for place, text in enumerate(wanted[prompt]):
                _, items, texts = shown()
                if texts[place] != text:
                    drag(driver, items[texts.index(text)], items[place])
            _, items, texts = shown()
            assert texts == wanted[prompt]
            save_and_wait(prompt)
            assert "Nothing left" in driver.page_source
    finally:
        driver.quit()
    exported = tmp_path / "orderings.jsonl"
    subprocess.run([str(RMSERVE), "label", "export", str(exported), "--data-dir", str(data_dir)], check=True)
    records = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(records, key=lambda record: record["prompt"]) == [
        {"prompt": prompt, "responses": order} for prompt, order in sorted(wanted.items())
    ]

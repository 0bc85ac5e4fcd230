"""The review page end to end in headless Chromium (Debian's chromium + chromium-driver):
alerts seeded through Kafka, filtered, opened, marked fraud; the label reaches the labels
topic and the alert shows as reviewed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from fraudcore.contracts import decode_label
from tests.alerting.helpers import Service, ServiceConfig, consume, make_alert, produce, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), f"{binary} missing: make install (Debian chromium packages)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_analyst_filters_opens_and_marks_an_alert_fraud(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    browser: webdriver.Chrome,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    suspect, other = unique_name("user"), unique_name("user")
    target = make_alert(suspect, severity="critical", score=0.974, amount=1899.0)
    seeded = [
        make_alert(suspect, severity="low", score=0.81),
        target,
        make_alert(other, severity="critical", score=0.95),
        make_alert(other, severity="medium", score=0.86),
    ]
    service = start_service()
    produce(service_config.bootstrap, service_config.alerts_topic, seeded)
    assert wait_until(lambda: service.alerts()["total"] == len(seeded))

    wait = WebDriverWait(browser, 15)
    browser.get(service_config.base_url + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "alerts-caption"), f"of {len(seeded)}"))

    browser.find_element(By.ID, "f-user").send_keys(suspect)
    browser.find_element(By.CSS_SELECTOR, "input[name=severity][value=critical]").click()
    browser.find_element(By.ID, "apply").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "alerts-caption"), "of 1,"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
    assert [r.get_attribute("data-alert-id") for r in rows] == [target["alert_id"]]

    rows[0].find_element(By.CSS_SELECTOR, "button.row-open").click()
    detail = wait.until(ec.visibility_of_element_located((By.ID, "detail")))
    reasons = [li.text for li in detail.find_elements(By.CSS_SELECTOR, "#d-reasons li")]
    assert reasons == [r["text"] for r in target["reasons"]]
    assert browser.find_element(By.ID, "d-score").text == "0.974"
    assert browser.find_element(By.ID, "d-threshold").text == "0.800"
    facts = browser.find_element(By.ID, "d-facts").text
    assert f"fraud-detector version {target['model_version']}" in facts
    assert target["transaction_id"] in facts
    features = browser.find_element(By.ID, "d-features").text
    assert "amount_zscore" in features and "distance_km missing" in features

    # A wrong key is refused and asked for again; the right one sends the verdict.
    browser.find_element(By.ID, "v-note").send_keys("card reported stolen")
    browser.find_element(By.ID, "mark-fraud").click()
    key_input = wait.until(ec.visibility_of_element_located((By.ID, "key-input")))
    key_input.send_keys("not-the-key")
    browser.find_element(By.ID, "key-save").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "key-error"), "refused"))
    browser.find_element(By.ID, "key-input").send_keys(service_config.api_key)
    browser.find_element(By.ID, "key-save").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "d-status"), "Reviewed: fraud"))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#alerts tbody tr"), "Reviewed"))
    assert "API key set" in browser.find_element(By.ID, "key-state").text

    [msg] = consume(service_config.bootstrap, service_config.labels_topic, 1)
    label, _ = decode_label(msg.value())
    assert (label["transaction_id"], label["label"], label["source"]) == (
        target["transaction_id"],
        "fraud",
        "analyst",
    )
    assert label["note"] == "card reported stolen"
    stored = service.http.get(f"/alerts/{target['alert_id']}").json()
    assert (stored["status"], stored["verdict"]) == ("reviewed", "fraud")

    shot = Path(os.environ.get("ALERTING_SCREENSHOT", tmp_path / "review-page.png"))
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot))

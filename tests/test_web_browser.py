"""The page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver")

from webserver import WebServer  # noqa: E402

pytestmark = [pytest.mark.web, pytest.mark.browser]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).parent.parent / "docs" / "web-result.png"


@pytest.fixture(scope="module")
def browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("Debian's chromium / chromium-driver are not installed (make browser-deps)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dfserve-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1000,1400"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    srv = WebServer(exported.out_dir, tmp_path_factory.mktemp("web browser") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from dfserve import samples

    d = tmp_path_factory.mktemp("browser clips")
    face = samples.make_face_video(d / "face.mp4", n_frames=32, width=320, height=180)["path"]
    noface = samples.make_noface_video(d / "coffee.mp4", n_frames=8, width=320, height=180)["path"]
    # 20 face frames, the 8 coffee frames (no face), 12 face frames: the timeline shows a gap and grey ticks
    f, n = _frames(face), _frames(noface)
    mixed = d / "astronaut and coffee.mp4"
    samples.write_video(mixed, f[:20] + n + f[20:])
    return {"mixed": str(mixed), "noface": noface}


def _frames(path):
    import av

    with av.open(str(path)) as c:
        return [fr.to_ndarray(format="bgr24") for fr in c.decode(video=0)]


def _upload(browser, server, path):
    from selenium.webdriver.common.by import By

    _open(browser, server)
    browser.find_element(By.ID, "file").send_keys(str(path))


def _open(browser, server):
    """The page, once it has read /v1/config (the option defaults, explain among them)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.getElementById('limit').textContent"))


def test_page_upload_verdict_and_timeline(browser, server, clips, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    _upload(browser, server, clips["mixed"])
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: d.find_element(By.ID, "verdict").text in ("FAKE", "REAL"))
    svg = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "svg#timeline")))
    assert int(svg.get_attribute("data-scored")) == 32
    assert len(svg.find_elements(By.CSS_SELECTOR, "circle.pt")) == 32
    assert len(svg.find_elements(By.CSS_SELECTOR, "rect.noface")) == 8  # the coffee frames, marked
    assert len(svg.find_elements(By.CSS_SELECTOR, "polyline.line")) == 2  # no line through them
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelectorAll('#thumbs img'); return i.length > 0 && "
        "[...i].every(x => x.complete && x.naturalWidth > 0);"))
    verdict = browser.find_element(By.ID, "verdict").text
    conf = browser.find_element(By.ID, "confidence").text
    p_fake = float(browser.find_element(By.ID, "p-fake").text)
    assert conf.endswith("%") and 50 <= float(conf.split()[0]) <= 100
    assert (p_fake >= 0.5) == (verdict == "FAKE")
    assert browser.find_element(By.ID, "upload-progress").get_attribute("value") == "1"
    assert "astronaut and coffee.mp4" in browser.find_element(By.ID, "jobs").text
    assert "32 of 40 frames scored" in browser.find_element(By.ID, "frames-line").text
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("blob:")
    assert "option sample" in browser.find_element(By.ID, "details").text
    # the same result as the API's
    import httpx

    job_id = browser.execute_script("return location.hash.slice(1)")
    api = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
    assert api["result"]["label"] == verdict and f"{api['result']['p_fake']:.4f}" == f"{p_fake:.4f}"
    _check_evidence(browser, api)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1000, min(max(height + 200, 800), 2600))
    shot = SCREENSHOT if os.environ.get("DFSERVE_UPDATE_SCREENSHOT") else tmp_path / "web-result.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))
    # phone-sized: nothing wider than the screen
    browser.set_window_size(390, 844)
    wide = browser.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
        "window.innerWidth + 1).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"), wide
    browser.set_window_size(1000, 1400)


def _check_evidence(browser, api):
    """#24 item 4: the page asked for explain (spec.WEB_EXPLAIN_DEFAULT), shades the row's segments on the
    timeline and shows the evidence crops with their heat canvases; the checkbox hides and shows the heat."""
    from selenium.webdriver.common.by import By

    from dfserve import spec

    row = api["result"]
    assert api["options"]["explain"] == spec.WEB_EXPLAIN_DEFAULT
    segs = browser.find_elements(By.CSS_SELECTOR, "svg#timeline rect.seg")
    assert len(segs) == len(row["segments"])
    assert [int(e.get_attribute("data-first")) for e in segs] == [g["first_frame"] for g in row["segments"]]
    assert browser.find_element(By.ID, "segments").is_displayed()
    ev = row["evidence"]
    assert len(ev) == spec.WEB_EXPLAIN_DEFAULT
    assert browser.execute_script(
        "const i = document.querySelectorAll('#evidence img'); return i.length && "
        "[...i].every(x => x.complete && x.naturalWidth > 0) && i.length") == len(ev)
    heats = browser.find_elements(By.CSS_SELECTOR, "#evidence canvas.heat")
    assert len(heats) == len(ev) and all(h.is_displayed() for h in heats)
    assert [h.get_attribute("width") for h in heats] == [str(len(e["heat"][0])) for e in ev]
    # the canvas holds the heat: red cells where the row's heat is positive (alpha scaled by the max |heat|)
    m = max(abs(v) for r in ev[0]["heat"] for v in r)
    want = sum(v > 0 and 200 * v / m >= 0.5 for r in ev[0]["heat"] for v in r)
    red = browser.execute_script(
        "const c = document.querySelector('#evidence canvas.heat'), d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let k = 0; k < d.length; k += 4) "
        "if (d[k + 3] > 0 && d[k] > d[k + 2]) n++; return n;")
    assert abs(red - want) <= 1 and (want > 0) == (red > 0), (red, want)
    toggle = browser.find_element(By.ID, "heat-toggle")
    toggle.click()
    assert not any(h.is_displayed() for h in heats)
    assert all(e.is_displayed() for e in browser.find_elements(By.CSS_SELECTOR, "#evidence img"))
    toggle.click()
    assert all(h.is_displayed() for h in heats)


def test_page_explains_errors_in_words(browser, server, clips):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _upload(browser, server, clips["noface"])
    err = WebDriverWait(browser, 120).until(
        lambda d: d.find_element(By.ID, "error").is_displayed() and d.find_element(By.ID, "error"))
    assert "No face was found" in err.text
    assert browser.find_element(By.ID, "verdict").text == "NO VERDICT"


def test_page_draws_one_timeline_line_per_person(browser, server, tmp_path):
    """--faces all through the page: one line per face track, and the deciding person is named."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from dfserve import samples

    v = samples.make_multi_face_video(
        tmp_path / "two people.mp4", [{"who": "astronaut", "scale": 0.6, "start": (10, 0), "end": (470, 10)},
                                      {"who": "cameraman", "scale": 0.6, "start": (490, 190), "end": (20, 180)}],
        n_frames=30)
    _open(browser, server)
    browser.execute_script("document.getElementById('opt-faces').value = 'all'")  # the (folded) options panel
    browser.execute_script("document.getElementById('opt-explain').value = '0'")  # no evidence: faster
    browser.find_element(By.ID, "file").send_keys(v["path"])
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: d.find_element(By.ID, "verdict").text in ("FAKE", "REAL"))
    svg = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "svg#timeline")))
    tracks = {e.get_attribute("data-track") for e in svg.find_elements(By.CSS_SELECTOR, "polyline.line")}
    assert tracks == {"0", "1"}
    assert "(decides)" in svg.text and "person 0" in svg.text and "person 1" in svg.text
    assert int(svg.get_attribute("data-scored")) == 60  # two faces in each of 30 frames

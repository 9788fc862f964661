"""The report in a real browser: headless Chromium loads it, every image decodes, no console errors, a screenshot.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing) and
selenium (in the ``[dev]`` extra). Skipped, with the reason printed, only where no browser is installed.
"""

import shutil

import pytest
import torch

from edgecnn.build import build
from edgecnn.explain.run import ExplainConfig, explain_images
from edgecnn.report import write_report
from edgecnn.run_document import write_results
from test_report import BLOCKS, HISTORY, dynamics_sections


def _browser():
    """(chromium, chromedriver, selenium webdriver module), or the reason there is none."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None, "no chromium / chromedriver on PATH (apt-get install chromium chromium-driver)"
    try:
        from selenium import webdriver
    except ImportError:
        return None, "selenium is not installed (pip install 'edgecnn[dev]')"
    return (chromium, driver, webdriver), ""


@pytest.fixture(scope="module")
def chrome():
    found, reason = _browser()
    if found is None:
        print(f"SKIPPED browser test: {reason}")
        pytest.skip(reason)
    chromium, driver_path, webdriver = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


def _run_folder(tmp_path):
    """A demo-like run: the hand-built tables of test_report plus real CAM overlays, ERF and gradient flow."""
    torch.manual_seed(0)
    net = build("conv_c8 conv_s2_c16 gap fc", num_classes=3, in_chans=1)
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    cam = explain_images(net, images, mean=[0.5], std=[0.25], out_dir=tmp_path, cfg=ExplainConfig(method="cam"),
                         labels=torch.tensor([0, 1, 2]), classes=("a", "b", "c"))  # fmt: skip
    erf, gradflow = dynamics_sections()
    doc = dict(arch="conv_s2_c8_hswish ir_m16_c8_se0.25_hsgate_relu gap fc", data="digits", params=762,
               macs=25_168, top1=0.8, top5=0.99, eager_ms=0.3, onnx_ms=0.1, blocks=BLOCKS, history=HISTORY,
               input_size=16, cam=cam, erf=erf, gradflow=gradflow,
               pareto={"points": [{"name": "baseline", "latency_ms": 0.3, "top1": 0.8},
                                  {"name": "NetAdapt result", "latency_ms": 0.2, "top1": 0.78}], "reference": []},
               stages=[{"name": "train", "title": "training", "status": "done", "seconds": 1.0, "note": ""},
                       {"name": "netadapt", "title": "NetAdapt", "status": "not built", "seconds": None,
                        "note": "not built yet"}])  # fmt: skip
    write_results(tmp_path, "demo", doc)
    return write_report(tmp_path)


def test_report_loads_in_chromium_with_every_image_decoded(chrome, tmp_path):
    page = _run_folder(tmp_path)
    chrome.get(page.resolve().as_uri())
    state = chrome.execute_script(
        "return {ready: document.readyState, title: document.title,"
        " images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])};"
    )
    assert state["ready"] == "complete" and state["title"] == "edgecnn demo report"
    # 7 figures (block costs, µs/MMAC, RF growth, training, ERF, gradient flow, Pareto) + 3 overlays,
    # every one decoded by the browser
    assert len(state["images"]) == 10
    assert all(done and w > 0 and h > 0 for done, w, h in state["images"]), state["images"]
    # the overlays are image | 4-pixel gap | overlay at zoom 4: (16·4)·2 + 4 = 132 by 64 pixels
    assert [[True, 132, 64]] * 3 == [i for i in state["images"] if i[1] == 132]
    errors = [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    shot = tmp_path / "report.png"
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    chrome.set_window_size(1200, min(int(height) + 100, 8000))
    assert chrome.save_screenshot(str(shot))
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width > 0 and im.height > 900
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # something was drawn, not a blank page
    print(f"screenshot: {shot}")


def _hostile_folder(tmp_path, how: str):
    """The demo-like run of :func:`_run_folder` with its document mutated by ``how`` (test_hostile_report)."""
    import json

    from test_hostile_report import mutate

    _run_folder(tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps(mutate(doc, how)))
    return write_report(tmp_path)


@pytest.mark.parametrize("how", ["html-in-every-string", "html-in-every-field"])
def test_a_hostile_document_runs_nothing_in_chromium(chrome, tmp_path, how):
    """Every field — strings and the numbers alike — holds ``<script>``, ``onerror``, ``onload`` and ``javascript:``
    payloads that would set ``window.__pwned``; the page loads and none of them ran."""
    page = _hostile_folder(tmp_path, how)
    chrome.get(page.resolve().as_uri())
    state = chrome.execute_script(
        "return {ready: document.readyState, title: document.title, pwned: window.__pwned === undefined ? null"
        " : window.__pwned, scripts: document.scripts.length, svgs: document.getElementsByTagName('svg').length,"
        " handlers: Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)"
        "   .filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name)),"
        " links: document.links.length, h2: Array.from(document.querySelectorAll('h2')).length,"
        " shown: document.body.innerText.includes('<script>window.__pwned=1</script>')};"
    )
    assert state["ready"] == "complete" and state["title"] == "edgecnn demo report"
    assert state["pwned"] is None and state["scripts"] == 0 and state["svgs"] == 0 and state["handlers"] == []
    assert state["links"] == 0
    if how == "html-in-every-string":  # every section drawn, the payloads shown as text
        assert state["h2"] >= 8 and state["shown"]
    errors = [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []  # no blocked script, no failed image load (an <img src=x> would log one)

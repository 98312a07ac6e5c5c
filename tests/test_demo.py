"""The web demo (`pandiff demo`): its JSON API on a tiny pipeline, and the page in headless Chromium."""

import base64
import http.client
import json
import threading
import zipfile
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from pandiff.cli import main
from pandiff.data.coco_format import rgb_to_id
from pandiff.demo import DemoApp, DemoLimits, make_server
from pandiff.errors import ConfigError
from pandiff.pipeline import PanopticDiffusionPipeline

PROMPT = "two red circles on the grass"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def demo(tiny_pipeline_dir):
    """The demo served from a thread on a free loopback port."""
    pipe = PanopticDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    app = DemoApp(pipe, DemoLimits(max_prompt_chars=60, max_images=3), model_name="tiny")
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=server.url, app=app, pipe=pipe)
    server.shutdown()
    server.server_close()


def _request(url, method="GET", body=None, headers=None):
    """(status, headers, body bytes) of one request; ``body`` is JSON-encoded when not bytes."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})} if method == "POST" else headers
    conn.request(method, parts.path, body=data, headers=headers or {})
    response = conn.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return result


def _post(demo, path, body):
    status, _, data = _request(demo.url + path.lstrip("/"), "POST", body)
    return status, json.loads(data)


def _png(data_url, size):
    assert data_url.startswith("data:image/png;base64,")
    image = Image.open(BytesIO(base64.b64decode(data_url.partition(",")[2])))
    assert image.size == (size, size)
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def generated(demo):
    """One generate answer with two samples, and its downloaded export zip."""
    status, answer = _post(demo, "/api/generate", {"prompt": PROMPT, "steps": 2, "num_images": 2, "seed": 3})
    assert status == 200, answer
    status, headers, data = _request(demo.url + answer["download"].lstrip("/"))
    assert status == 200 and headers["Content-Type"] == "application/zip"
    return answer, zipfile.ZipFile(BytesIO(data))


def test_page_config_and_offline_headers(demo):
    status, headers, page = _request(demo.url)
    assert status == 200 and b'id="generate"' in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for path in ("static/demo.js", "static/demo.css"):
        status, _, text = _request(demo.url + path)
        assert status == 200 and len(text) > 500
        # Nothing on the page may come from another host (the demo must work offline).
        assert b"http://" not in text and b"https://" not in text and b"//fonts" not in text
    assert b"http://" not in page and b"https://" not in page
    status, _, config = _request(demo.url + "api/config")
    config = json.loads(config)
    assert (config["max_images"], config["max_prompt_chars"], config["image_size"]) == (3, 60, 16)
    assert config["defaults"]["guidance"] == 2.0  # the tiny pipeline folder's own default


def test_generate_returns_image_map_overlay_per_sample(demo, generated):
    answer, _ = generated
    assert len(answer["samples"]) == 2
    assert answer["settings"] == {
        "prompt": PROMPT,
        "steps": 2,
        "seed": 3,
        "num_images": 2,
        "guidance_scale": 2.0,
        "map_guidance_scale": 1.0,
    }
    for sample in answer["samples"]:
        image, pmap, over = (_png(sample[k], 16) for k in ("image", "map", "overlay"))
        assert sample["prompt"] == PROMPT and sample["segments"]
        # The overlay blends the map over the image, so it differs from both.
        assert not np.array_equal(over, image) and not np.array_equal(over, pmap)
    first = [_png(s["image"], 16) for s in answer["samples"]]
    assert not np.array_equal(first[0], first[1])  # a batch draws different samples


def test_legend_lists_each_segment_in_the_map_colours(demo, generated):
    answer, _ = generated
    for sample in answer["samples"]:
        colours = {tuple(c) for c in _png(sample["map"], 16).reshape(-1, 3).tolist()}
        labels = [e["label"] for e in sample["legend"]]
        assert labels and len(set(labels)) == len(labels)
        for entry in sample["legend"]:
            rgb = np.array([int(entry["color"][i : i + 2], 16) for i in (1, 3, 5)])
            # The swatch is a colour the map shows: inside the segment, or darkened on its outline.
            assert any(
                np.abs(np.array(c) - rgb).max() == 0 or np.abs(np.array(c) - rgb * 0.35).max() <= 1
                for c in colours
            ), entry
            assert entry["label"].startswith(entry["category"])
        # Things are numbered per category ("circle 1, circle 2"), stuff named once.
        for name_count in sample["segments"].split(", "):
            name, _, count = name_count.partition(" x")
            if count:
                assert [lb for lb in labels if lb.startswith(name + " ")] == [
                    f"{name} {k}" for k in range(1, int(count) + 1)
                ]


def test_config_publishes_the_vocabulary_and_unknown_words_are_warned(demo):
    status, _, data = _request(demo.url + "api/config")
    vocabulary = json.loads(data)["vocabulary"]
    assert status == 200 and "two white circles, one above the other, on the floor" in vocabulary["examples"]
    assert any(line.startswith("colours: red") for line in vocabulary["lines"])
    status, answer = _post(demo, "/api/generate", {"prompt": "a cat sitting on the grass", "steps": 1})
    assert status == 200, answer
    assert len(answer["warnings"]) == 1 and "cat, sitting" in answer["warnings"][0]
    status, answer = _post(demo, "/api/generate", {"prompt": PROMPT, "steps": 1})
    assert status == 200 and answer["warnings"] == []


def test_segment_draws_the_map_of_an_uploaded_image(demo, generated):
    image = generated[0]["samples"][0]["image"]
    status, answer = _post(demo, "/api/segment", {"image": image, "steps": 2})  # no prompt needed
    assert status == 200, answer
    assert np.array_equal(_png(answer["given_image"], 16), _png(image, 16))
    assert answer["settings"]["prompt"] == ""
    (sample,) = answer["samples"]
    _png(sample["map"], 16)
    assert sample["legend"] and answer["download"].startswith("/download/")
    status, again = _post(demo, "/api/segment", {"image": image, "steps": 2, "prompt": PROMPT})
    assert status == 200 and again["settings"]["prompt"] == PROMPT
    status, answer = _post(demo, "/api/segment", {"steps": 2})
    assert status == 400 and "upload an image" in answer["error"]
    status, answer = _post(demo, "/api/segment", {"image": base64.b64encode(b"not a picture").decode()})
    assert status == 400 and "cannot read the uploaded image" in answer["error"]


def test_generate_is_reproducible_by_seed(demo, generated):
    answer, _ = generated
    status, again = _post(demo, "/api/generate", {"prompt": PROMPT, "steps": 2, "num_images": 2, "seed": 3})
    assert status == 200
    for before, now in zip(answer["samples"], again["samples"]):
        assert np.array_equal(_png(now["image"], 16), _png(before["image"], 16))
        assert np.array_equal(_png(now["map"], 16), _png(before["map"], 16))
    assert again["download"] != answer["download"]


def test_download_is_a_coco_panoptic_export(demo, generated):
    answer, archive = generated
    names = set(archive.namelist())
    assert {
        "panoptic.json",
        "captions.json",
        "panoptic/000.png",
        "panoptic/001.png",
        "001_image.png",
    } <= names
    panoptic = json.loads(archive.read("panoptic.json"))
    assert panoptic["categories"] == demo.pipe.table.to_coco()
    assert panoptic["info"]["steps"] == 2 and panoptic["info"]["seed"] == 3
    assert panoptic["info"]["mode"] == "prompt -> image + map"
    assert len(panoptic["annotations"]) == 2
    for ann in panoptic["annotations"]:
        ids = rgb_to_id(np.asarray(Image.open(BytesIO(archive.read("panoptic/" + ann["file_name"])))))
        listed = {s["id"]: s["area"] for s in ann["segments_info"]}
        assert set(np.unique(ids)) - {0} == set(listed)
        assert all(area == int((ids == i).sum()) for i, area in listed.items())
    # The zip holds the very pictures the page shows.
    shown = _png(answer["samples"][1]["image"], 16)
    assert np.array_equal(
        np.asarray(Image.open(BytesIO(archive.read("001_image.png"))).convert("RGB")), shown
    )
    captions = json.loads(archive.read("captions.json"))
    assert [c["caption"] for c in captions["annotations"]] == [PROMPT, PROMPT]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt": "   "}, "the prompt is empty"),
        ({"prompt": "x" * 61}, "the prompt is 61 characters long; the demo takes at most 60"),
        ({"num_images": 4}, "num_images must be a whole number in 1..3"),
        ({"num_images": 0}, "num_images must be a whole number in 1..3"),
        ({"steps": 0}, "steps must be a whole number in 1..100"),
        ({"steps": 101}, "steps must be a whole number in 1..100"),
        ({"steps": "2"}, "steps must be a whole number"),
        ({"guidance": -1}, "guidance must be a number >= 0, got -1"),
        ({"map_guidance": -0.5}, "map_guidance must be a number >= 0, got -0.5"),
        ({"seed": -1}, "seed must be a whole number"),
        ({"temperature": 1}, "unknown field(s) temperature"),
    ],
)
def test_generate_rejects_bad_settings_with_400(demo, change, message):
    status, answer = _post(demo, "/api/generate", {"prompt": PROMPT, "steps": 2, **change})
    assert status == 400 and message in answer["error"]


def test_malformed_requests(demo):
    status, _, data = _request(demo.url + "api/generate", "POST", b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    status, _, data = _request(demo.url + "api/generate", "POST", b"[1, 2]")
    assert status == 400 and "JSON object" in json.loads(data)["error"]
    huge = str(demo.app.limits.max_upload_bytes * 2 + 1)
    status, _, data = _request(demo.url + "api/generate", "POST", b"{}", {"Content-Length": huge})
    assert status == 413 and "at most" in json.loads(data)["error"]
    status, _, data = _request(demo.url + "download/" + "0" * 32 + ".zip")
    assert status == 404 and "expired" in json.loads(data)["error"]
    status, _, _ = _request(demo.url + "etc/passwd")
    assert status == 404
    # A page elsewhere that resolves its own name to 127.0.0.1 must not reach the demo.
    status, _, data = _request(demo.url + "api/config", headers={"Host": "evil.example:80"})
    assert status == 403 and "not allowed" in json.loads(data)["error"]
    assert _request(demo.url + "api/config", headers={"Host": "localhost:1"})[0] == 200


class _FailingPipe:
    """Stands in for the pipeline and fails the way it is told to."""

    def __init__(self, real, error):
        self.real, self.error = real, error
        self.call_settings, self.scheduler = real.call_settings, real.scheduler

    def __call__(self, *args, **kwargs):
        raise self.error


def test_pipeline_errors_become_400_and_crashes_a_bare_500(demo, monkeypatch):
    monkeypatch.setattr(
        demo.app, "pipe", _FailingPipe(demo.pipe, ConfigError("the prompt is 99 tokens long"))
    )
    status, answer = _post(demo, "/api/generate", {"prompt": PROMPT, "steps": 2})
    assert status == 400 and answer["error"] == "the prompt is 99 tokens long"
    monkeypatch.setattr(demo.app, "pipe", _FailingPipe(demo.pipe, RuntimeError("secret internals")))
    status, answer = _post(demo, "/api/generate", {"prompt": PROMPT, "steps": 2})
    assert status == 500 and "internal error" in answer["error"]
    assert "secret" not in answer["error"] and "Traceback" not in answer["error"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_map_to_image_from_zip_and_from_png_json(demo, generated):
    answer, archive = generated
    status, drawn = _post(
        demo,
        "/api/map2image",
        {
            "prompt": "a scene",
            "steps": 2,
            "zip": "data:application/zip;base64," + _b64(_zip_bytes(archive)),
            "index": 1,
        },
    )
    assert status == 200, drawn
    assert drawn["given_name"] == "001.png" and len(drawn["samples"]) == 1
    # The given map is kept as is: the answer's map is the uploaded one (sample 1 of the export).
    given = _png(drawn["given_map"], 16)
    assert np.array_equal(_png(drawn["samples"][0]["map"], 16), given)
    # Reading renumbers instances canonically, so shades may change but not the segments.
    assert _same_segments(given, _png(answer["samples"][1]["map"], 16))
    _png(drawn["samples"][0]["image"], 16)
    status, from_pair = _post(
        demo,
        "/api/map2image",
        {
            "prompt": "a scene",
            "steps": 2,
            "map_name": "001.png",
            "map_png": _b64(archive.read("panoptic/001.png")),
            "map_json": _b64(archive.read("panoptic.json")),
        },
    )
    assert status == 200, from_pair
    assert np.array_equal(_png(from_pair["samples"][0]["map"], 16), given)
    assert np.array_equal(_png(from_pair["samples"][0]["image"], 16), _png(drawn["samples"][0]["image"], 16))


def _same_segments(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two coloured maps split the picture into the same segments (colours aside)."""
    ids_a = np.unique(a.reshape(-1, 3), axis=0, return_inverse=True)[1].ravel()
    ids_b = np.unique(b.reshape(-1, 3), axis=0, return_inverse=True)[1].ravel()
    pairs = len(np.unique(ids_a * (ids_b.max() + 1) + ids_b))
    return pairs == ids_a.max() + 1 == ids_b.max() + 1


def _zip_bytes(archive: zipfile.ZipFile) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for name in archive.namelist():
            out.writestr(name, archive.read(name))
    return buffer.getvalue()


def test_map_to_image_rejects_bad_uploads(demo, generated):
    _, archive = generated
    png, panoptic = archive.read("panoptic/000.png"), archive.read("panoptic.json")
    base = {"prompt": "a scene", "steps": 2}
    cases = [
        ({}, "upload a map"),
        ({"zip": "%%%"}, "zip is not valid base64"),
        ({"zip": _b64(b"not a zip")}, "not a zip archive"),
        ({"zip": _b64(_zip_without_json())}, "has no panoptic.json"),
        ({"zip": _b64(_zip_bytes(archive)), "index": 5}, "sample 5 does not exist"),
        ({"map_png": _b64(b"GIF89a"), "map_json": _b64(panoptic)}, "not a PNG file"),
        ({"map_png": _b64(png), "map_json": _b64(b"{oops")}, "not valid JSON"),
        ({"map_png": _b64(png), "map_json": _b64(panoptic), "map_name": "x.png"}, "none is for 'x.png'"),
    ]
    for change, message in cases:
        status, answer = _post(demo, "/api/map2image", {**base, **change})
        assert status == 400 and message in answer["error"], (change, answer)
    # segments of another category table: the reader's own message comes through.
    foreign = json.loads(panoptic)
    for seg in foreign["annotations"][0]["segments_info"]:
        seg["category_id"] = 9999
    status, answer = _post(
        demo,
        "/api/map2image",
        {
            **base,
            "map_png": _b64(png),
            "map_json": _b64(json.dumps(foreign).encode()),
            "map_name": "000.png",
        },
    )
    assert status == 400 and "9999" in answer["error"]


def _zip_without_json() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("panoptic/000.png", b"")
    return buffer.getvalue()


def test_cli_checks_its_options_before_loading(capsys):
    assert main(["demo", "--max-images", "0"]) == 2
    assert "--max-images must be >= 1" in capsys.readouterr().err
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err


def test_page_in_headless_chromium(demo, generated, tmp_path, monkeypatch):
    """Type a prompt, click Generate: an image, a map and an overlay appear; then map -> image
    from an uploaded export zip."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "headless Chromium is absent: scripts/setup.sh installs Debian's chromium + chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(demo.url)
        wait.until(lambda d: d.find_element(By.ID, "model-info").text)  # settings loaded
        steps = driver.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("2")
        driver.find_element(By.ID, "prompt").send_keys(PROMPT)
        driver.find_element(By.ID, "generate").click()
        loaded = (
            "return [...document.querySelectorAll(arguments[0])].map(i => i.complete ? i.naturalWidth : 0)"
        )
        wait.until(lambda d: d.execute_script(loaded, "#results img.pic") == [16, 16, 16])
        for kind in ("image", "map"):
            src = driver.find_element(By.CSS_SELECTOR, f"#results img.{kind}").get_attribute("src")
            assert src.startswith("data:image/png;base64,")
        assert driver.find_element(By.ID, "download").get_attribute("href").startswith(demo.url + "download/")
        assert not driver.find_element(By.ID, "error").is_displayed()

        upload = tmp_path / "export.zip"
        upload.write_bytes(_zip_bytes(generated[1]))
        driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=map2image]").click()
        assert driver.find_element(By.ID, "generate").text == "Draw image"
        driver.find_element(By.ID, "zip-file").send_keys(str(upload))
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.execute_script(loaded, "#given-map") == [16])
        wait.until(lambda d: d.execute_script(loaded, "#results img.pic") == [16, 16, 16])
        assert driver.find_element(By.ID, "given-name").text == "(000.png)"
        legend = driver.find_element(By.CSS_SELECTOR, "#results .legend").get_attribute("data-text")
        names = [c.name for c in demo.pipe.table.categories]
        assert legend and all(label.split(" ")[0] in names for label in legend.split(", "))
        assert driver.find_element(By.CSS_SELECTOR, "#results .legend li").text in legend

        # Image -> map: switching mode clears the old results; a prompt is not needed.
        picture = tmp_path / "picture.png"
        picture.write_bytes(base64.b64decode(generated[0]["samples"][0]["image"].partition(",")[2]))
        driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=segment]").click()
        assert driver.find_elements(By.CSS_SELECTOR, "#results .sample") == []
        assert not driver.find_element(By.ID, "download-row").is_displayed()
        assert driver.find_element(By.ID, "generate").text == "Draw map"
        driver.find_element(By.ID, "prompt").clear()
        driver.find_element(By.ID, "image-file").send_keys(str(picture))
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.execute_script(loaded, "#results img.pic") == [16, 16, 16])
        assert driver.find_element(By.CSS_SELECTOR, "#results .legend").get_attribute("data-text")
        assert not driver.find_element(By.ID, "error").is_displayed()

        # An example prompt fills the prompt box; an unknown word is named in a warning.
        driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=generate]").click()
        assert driver.find_elements(By.CSS_SELECTOR, "#results .sample") == []
        driver.find_element(By.CSS_SELECTOR, "#examples button").click()
        assert driver.find_element(By.ID, "prompt").get_attribute("value") == "a red circle on the grass"
        driver.find_element(By.ID, "prompt").clear()
        driver.find_element(By.ID, "prompt").send_keys("a cat on the grass")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "warning").is_displayed())
        assert "cat" in driver.find_element(By.ID, "warning").text

        # At 400 px, image, map and overlay sit side by side, each under a third of the width.
        driver.set_window_size(400, 900)
        width = driver.execute_script("return document.documentElement.clientWidth")
        boxes = driver.execute_script(
            "return [...document.querySelectorAll('#results .sample')[0].querySelectorAll('img.pic')]"
            ".map(i => { const r = i.getBoundingClientRect(); return [r.left, r.top, r.width]; })"
        )
        assert width <= 400 and len({round(top) for _, top, _ in boxes}) == 1, boxes
        assert all(w < width / 3 for _, _, w in boxes) and boxes[2][0] + boxes[2][2] <= width, boxes
        # Every resource the page loaded came from the demo itself.
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched and all(url.startswith(demo.url) for url in fetched)
    finally:
        driver.quit()


def test_cross_site_and_malformed_posts_are_refused_before_any_work(demo, monkeypatch):
    """A page elsewhere cannot make the visitor's demo generate (issue 18): no text/plain or form
    POST, no foreign Origin or Sec-Fetch-Site; deep JSON answers 400, not a dropped connection."""
    calls = []
    monkeypatch.setattr(demo.app, "generate", lambda body: calls.append(body) or {})
    url, body = demo.url + "api/generate", {"prompt": PROMPT, "steps": 2}
    host = urlsplit(demo.url).netloc
    cases = [
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 415, "application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        ({"Origin": "http://evil.example"}, 403, "cross-site"),
        ({"Origin": "null"}, 403, "cross-site"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
        ({"Sec-Fetch-Site": "same-site"}, 403, "cross-site"),
    ]
    for headers, code, message in cases:
        status, _, data = _request(url, "POST", body, headers)
        assert status == code and message in json.loads(data)["error"], headers
    assert calls == []
    same = {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    assert _request(url, "POST", body, same)[0] == 200 and len(calls) == 1
    status, _, data = _request(url, "POST", b"[" * 200_000 + b"]" * 200_000)
    assert status == 400 and "nested too deeply" in json.loads(data)["error"]


def test_a_stalled_body_is_cut_off(demo, monkeypatch):
    import socket

    from pandiff.demo.server import DemoHandler

    monkeypatch.setattr(DemoHandler, "timeout", 0.5)
    parts = urlsplit(demo.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: " + parts.netloc.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt"'
        )
        answer = conn.recv(4096)
    assert answer.startswith((b"HTTP/1.0 408", b"HTTP/1.1 408"))


def test_a_bomb_png_upload_is_a_400(demo, generated):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
    bomb += chunk(b"IEND", b"")
    _, archive = generated
    body = {
        "prompt": "a scene",
        "steps": 2,
        "map_png": _b64(bomb),
        "map_json": _b64(archive.read("panoptic.json")),
    }
    body["map_name"] = "000.png"
    status, answer = _post(demo, "/api/map2image", body)
    assert status == 400 and "decompression bomb" in answer["error"]

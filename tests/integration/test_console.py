"""The console in a real browser: Debian's Chromium (/usr/bin/chromium), driven by
Playwright, against the real Serve app. Each screen does its job end to end, the code it
offers runs and makes the same images, and no script or request breaks the page's
Content-Security-Policy. Screenshots of every screen in both languages land in
build/screenshots/ (tiny random-weight models: the pictures are noise)."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_app.security.key_store import KeyStore
from serve_app.security.keys import KeyHasher
from tests.helpers import REPO, png_bytes
from tests.integration.conftest import integration_app_args

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# As root in a container, with no network: no sandbox, no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "build" / "screenshots"
LAPTOP = {"width": 1280, "height": 900}
TABLET = {"width": 820, "height": 1180}
WAIT_MS = 120_000
TAB_NAMES = {"en": "Generate", "zh": "生成"}
# Records what would break the page: a script error, a CSP violation, and each preview
# shown while an image forms.
WATCH_PAGE = """
window.__problems = [];
window.__previews = 0;
addEventListener("error", (e) => window.__problems.push("error: " + e.message));
addEventListener("unhandledrejection", (e) => window.__problems.push("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation",
  (e) => window.__problems.push("csp: " + e.violatedDirective + " " + e.blockedURI));
new MutationObserver((changes) => changes.forEach((change) => change.addedNodes.forEach(
  (node) => node.classList && node.classList.contains("preview") && window.__previews++)))
  .observe(document, {childList: true, subtree: true});
"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make services` installs it (Debian's chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=LAPTOP)
    context.add_init_script(WATCH_PAGE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    problems = page.evaluate("window.__problems")
    context.close()
    assert not errors and not problems, (errors, problems)


def open_console(page, url: str, tab: str = "generate", catalog: bool = True) -> None:
    page.goto(f"{url}/console#{tab}")
    page.wait_for_selector(f"#panel-{tab}:not([hidden])")
    if catalog and tab != "jobs":
        page.wait_for_selector(f"#panel-{tab} select[name=model] option", state="attached")


def screens(page, name: str) -> None:
    """The screen as it is, in Chinese and in English (the page is left in English)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for lang in ("zh", "en"):
        page.click(f"[data-lang={lang}]")
        assert page.inner_text("[data-tab=generate]") == TAB_NAMES[lang]
        assert page.evaluate("document.documentElement.lang") == ("zh-CN" if lang == "zh" else "en")
        page.screenshot(path=str(SCREENSHOTS / f"console-{name}-{lang}.png"), full_page=True)


def image_at(page, selector: str) -> bytes:
    src = page.get_attribute(selector, "src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1])


def download(page, selector: str) -> bytes:
    """A file the page offers for download, as a person would save it."""
    with page.expect_download() as saving:
        page.click(selector)
    return Path(saving.value.path()).read_bytes()


def pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def snippet(page, panel: str, kind: str) -> str:
    return page.inner_text(f"#panel-{panel} [data-snippet={kind}]")


def run_snippet(kind: str, code: str, cwd: Path) -> str:
    """Runs the code as a developer would paste it: curl in bash, Python in this venv."""
    command = ["bash", "-c", code] if kind == "curl" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_generate_with_a_template_streams_previews_and_offers_working_code(
    page, base_url, client, tmp_path
):
    open_console(page, base_url)
    page.select_option("#generate-form [name=model]", "sd-tiny")
    page.select_option("#generate-form [name=template]", "product-main-shot")
    # The form is built from the template's variables.
    assert page.get_attribute("[data-variable=product_name]", "required") is not None
    page.fill("[data-variable=product_name]", "a walnut desk lamp")
    page.fill("#generate-form [name=size]", "64x64")
    page.fill("#generate-form [name=n]", "2")
    page.fill("#generate-form [name=seed]", "7")
    page.fill("#generate-form [name=steps]", "6")
    page.click("#generate-form button[type=submit]")
    page.wait_for_selector("#panel-generate figure.result >> nth=1", timeout=WAIT_MS)

    seeds = page.eval_on_selector_all(
        "#panel-generate figure.result", "nodes => nodes.map(n => n.dataset.seed)"
    )
    assert seeds == ["7", "8"]
    assert page.evaluate("window.__previews") >= 2
    shown = [image_at(page, f"#panel-generate .slot[data-index='{i}'] img") for i in range(2)]
    assert [pixels(image).shape for image in shown] == [(64, 64, 3)] * 2
    revised = page.text_content("#panel-generate figure.result details p")
    assert "walnut desk lamp" in revised

    # The same request without a stream makes the same images, byte for byte.
    body = {
        "model": "sd-tiny",
        "prompt": "",
        "n": 2,
        "size": "64x64",
        "seed": 7,
        "steps": 6,
        "template": "product-main-shot",
        "variables": {"product_name": "a walnut desk lamp"},
    }
    answer = client.post("/v1/images/generations", json=body).json()
    assert [base64.b64decode(item["b64_json"]) for item in answer["data"]] == shown

    # The code it offers is that request, the copy button copies it, and it works as pasted.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#panel-generate [data-copy=python]")
    python = snippet(page, "generate", "python")
    assert page.evaluate("navigator.clipboard.readText()") == python
    assert "client.images.generate(" in python and "stream=True" in python
    run_snippet("python", python, tmp_path)
    assert [(tmp_path / f"image-{i}.png").read_bytes() for i in range(2)] == shown
    events = run_snippet("curl", snippet(page, "generate", "curl"), tmp_path)
    assert events.count("event: image_generation.completed") == 2
    assert events.count("event: image_generation.partial_image") >= 2
    screens(page, "generate")


def test_edit_with_a_painted_mask_keeps_every_pixel_outside_it(page, base_url, tmp_path):
    original = png_bytes(256, 256, seed=3)
    (tmp_path / "upload.png").write_bytes(original)
    open_console(page, base_url, "edit")
    page.select_option("#edit-form [name=model]", "qwen-edit-tiny")
    page.set_input_files("#edit-form [name=image]", str(tmp_path / "upload.png"))
    page.wait_for_selector("#edit-mask", state="visible")
    box = page.locator("#edit-mask").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5, steps=12)
    page.mouse.up()
    page.fill("#edit-form [name=prompt]", "make the stripe blue")
    page.fill("#edit-form [name=seed]", "5")
    page.fill("#edit-form [name=steps]", "2")
    page.click("#edit-form button[type=submit]")
    page.wait_for_selector("#panel-edit [data-after][src^='data:']", timeout=WAIT_MS)

    edited = pixels(image_at(page, "#panel-edit [data-after]"))
    before = pixels(original)
    mask = pixels(download(page, "#panel-edit [data-file='mask.png']"), "RGBA")[..., 3]
    kept, painted = mask == 255, mask == 0
    assert edited.shape == before.shape == (256, 256, 3)
    assert 0.5 < kept.mean() < 0.99 and painted.sum() > 500
    assert np.array_equal(edited[kept], before[kept])
    assert (edited[painted] != before[painted]).any(axis=-1).mean() > 0.5
    assert page.is_visible("#panel-edit [data-before]")

    # The curl it offers sends the same image and mask as a form, and gets the same edit.
    (tmp_path / "image.png").write_bytes(download(page, "#panel-edit [data-file='image.png']"))
    (tmp_path / "mask.png").write_bytes(download(page, "#panel-edit [data-file='mask.png']"))
    answer = json.loads(run_snippet("curl", snippet(page, "edit", "curl"), tmp_path))
    assert np.array_equal(pixels(base64.b64decode(answer["data"][0]["b64_json"])), edited)
    screens(page, "edit")


def flattened(value, path: str = "") -> list[tuple[str, str]]:
    """The rows the console shows for a JSON answer: dotted paths to leaf values."""
    if isinstance(value, (dict, list)) and value:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return [
            row for key, inner in items for row in flattened(inner, f"{path}.{key}".lstrip("."))
        ]
    return [(path or "(value)", json.dumps(value, separators=(",", ":"), ensure_ascii=False))]


def test_a_json_question_shows_the_parsed_fields(page, base_url, tmp_path):
    (tmp_path / "product.png").write_bytes(png_bytes(96, 64, seed=4))
    open_console(page, base_url, "understand")
    page.select_option("#understand-form [name=model]", "glm-4.6v-tiny")
    page.set_input_files("#understand-form [name=image]", str(tmp_path / "product.png"))
    page.fill("#understand-form [name=question]", "Audit this product photo.")
    page.check("#understand-form [name=json]")
    assert page.is_visible("#understand-form [name=schema]")
    page.click("#understand-form button[type=submit]")
    page.wait_for_selector("#panel-understand [data-fields]:not([hidden])", timeout=WAIT_MS)

    answer = json.loads(page.inner_text("#panel-understand [data-answer]"))
    assert set(answer) == {"verdict", "product_visible", "has_text_or_watermark", "issues"}
    assert answer["verdict"] in ("approve", "reject", "review")
    rows = page.eval_on_selector_all(
        "#panel-understand [data-fields] tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])",
    )
    assert [tuple(row) for row in rows] == flattened(answer)

    # The Python it offers asks the same (greedy decoding): the same answer.
    (tmp_path / "photo.png").write_bytes(
        download(page, "#panel-understand [data-file='photo.png']")
    )
    printed = run_snippet("python", snippet(page, "understand", "python"), tmp_path)
    assert json.loads(printed) == answer
    screens(page, "understand")


def job_row(page, job_id: str) -> dict:
    return page.evaluate(
        """(id) => {
            const row = document.querySelector(`tr[data-job="${id}"]`);
            if (!row) return null;
            return {status: row.dataset.status, progress: row.querySelector("progress").value};
        }""",
        job_id,
    )


def follow(page, job_id: str, until: set[str], deadline_s: float = 120) -> list[dict]:
    """The row's states, read every 50 ms, until its status is one of `until`."""
    seen: list[dict] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        state = job_row(page, job_id)
        if state is not None:
            seen.append(state)
            if state["status"] in until:
                return seen
        page.wait_for_timeout(50)
    raise AssertionError(f"job {job_id} did not reach {until}: last {seen[-1:]}")


def submit_job(page, steps: int) -> str:
    page.click("[data-tab=generate]")
    page.select_option("#generate-form [name=model]", "sd-slow-tiny")
    page.select_option("#generate-form [name=template]", "")
    page.fill("#generate-form [name=prompt]", "a red bicycle")
    page.fill("#generate-form [name=size]", "64x64")
    page.fill("#generate-form [name=n]", "1")
    page.fill("#generate-form [name=seed]", "")
    page.fill("#generate-form [name=steps]", str(steps))
    status = "#panel-generate [data-status]"
    page.eval_on_selector(status, "node => (node.textContent = '')")
    page.click("#generate-form [data-action=job]")
    page.wait_for_selector("#panel-jobs:not([hidden])")
    page.wait_for_function(f"() => document.querySelector('{status}').textContent.includes('job_')")
    text = page.text_content(status)
    return next(word for word in text.split() if word.startswith("job_"))


def test_jobs_show_live_progress_to_the_end_and_cancel_and_retry(page, base_url, client):
    open_console(page, base_url, "jobs")
    page.wait_for_selector("#panel-generate select[name=model] option", state="attached")
    finished = submit_job(page, steps=300)
    seen = follow(page, finished, {"succeeded", "failed", "canceled"})
    assert seen[-1] == {"status": "succeeded", "progress": 100}
    assert any(0 < state["progress"] < 100 for state in seen), seen
    page.click(f"tr[data-job='{finished}'] [data-open]")
    page.wait_for_selector("#panel-jobs [data-detail] figure.result img", timeout=WAIT_MS)
    seed = client.get(f"/v1/jobs/{finished}").json()["result"]["images"][0]["seed"]
    assert page.get_attribute("#panel-jobs [data-detail] figure.result", "data-seed") == str(seed)

    # Another, long enough to cancel while it runs: the row says so, and so does the API.
    canceled = submit_job(page, steps=5000)
    follow(page, canceled, {"running"})
    page.click(f"tr[data-job='{canceled}'] [data-cancel]")
    follow(page, canceled, {"canceled"}, deadline_s=30)
    assert client.get(f"/v1/jobs/{canceled}").json()["status"] == "canceled"
    screens(page, "jobs")

    # Retry queues the same request as a new job (canceled here too, not to run 5000 steps).
    page.click(f"tr[data-job='{canceled}'] [data-retry]")
    page.wait_for_function(
        "(id) => document.querySelector('#panel-jobs [data-status]').textContent.includes(id)",
        arg=canceled,
    )
    retry_text = page.inner_text("#panel-jobs [data-status]")
    retried = [w for w in retry_text.replace(".", " ").split() if w.startswith("job_")][-1]
    assert retried != canceled
    page.wait_for_selector(f"tr[data-job='{retried}']")
    client.delete(f"/v1/jobs/{retried}")

    # Refreshed, the list is newest first, as the API gives it.
    page.eval_on_selector("#panel-jobs [data-status]", "node => (node.textContent = '')")
    page.click("#panel-jobs [data-action=refresh]")
    page.wait_for_function(
        "() => document.querySelector('#panel-jobs [data-status]').textContent.includes('jobs')"
    )
    shown = page.eval_on_selector_all(
        "#panel-jobs tr[data-job]", "rows => rows.map(r => r.dataset.job)"
    )
    listed = [job["id"] for job in client.get("/v1/jobs", params={"limit": 50}).json()["data"]]
    assert shown == listed and shown[0] == retried


def test_a_job_stream_that_drops_is_picked_up_where_it_left_off(page, base_url):
    """The first event stream of each job fails as a dropped connection would (a proxy, a
    lost Gateway replica): the row still follows the job to its end."""
    opened: list[str] = []

    def drop_the_first(route):
        opened.append(route.request.url)
        if len(opened) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/v1/jobs/*/events*", drop_the_first)
    open_console(page, base_url, "jobs")
    page.wait_for_selector("#panel-generate select[name=model] option", state="attached")
    job_id = submit_job(page, steps=40)
    seen = follow(page, job_id, {"succeeded", "failed", "canceled"})
    assert seen[-1] == {"status": "succeeded", "progress": 100}
    assert len(opened) >= 2 and all(job_id in url for url in opened), opened
    # A drop it recovers from is not an error to show.
    assert page.is_hidden("#banner"), page.text_content("#banner")


def test_stop_ends_a_streamed_generation(page, base_url):
    open_console(page, base_url)
    page.select_option("#generate-form [name=model]", "sd-slow-tiny")
    page.fill("#generate-form [name=prompt]", "a very long exposure")
    page.fill("#generate-form [name=size]", "64x64")
    # Previews come at a third and two thirds of the steps; the rest takes seconds more.
    page.fill("#generate-form [name=steps]", "900")
    page.click("#generate-form button[type=submit]")
    # A preview has come: the stream is open and the model is working on it.
    page.wait_for_selector("#panel-generate img.preview", timeout=WAIT_MS)
    page.click("#generate-form [data-action=stop]")
    page.wait_for_function(
        "() => document.querySelector('#panel-generate [data-status]').textContent === 'Stopped.'"
    )
    assert page.is_hidden("#generate-form [data-action=stop]")
    assert page.locator("#panel-generate figure.result").count() == 0


def test_the_console_fits_a_tablet(browser, base_url):
    context = browser.new_context(viewport=TABLET)
    page = context.new_page()
    try:
        for tab in ("generate", "edit", "understand", "jobs"):
            open_console(page, base_url, tab)
            width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            assert width[0] <= width[1], (tab, width)
        open_console(page, base_url)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "console-generate-tablet.png"), full_page=True)
    finally:
        context.close()


def test_docs_render_offline_from_the_service(page, base_url):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".opblock", timeout=WAIT_MS)
    paths = page.eval_on_selector_all(
        ".opblock-summary-path", "nodes => nodes.map(n => n.innerText)"
    )
    assert "/v1/images/edits" in [path.replace("\u200b", "") for path in paths], paths
    assert all(url.startswith(base_url) or url.startswith("data:") for url in requested), requested
    page.screenshot(path=str(SCREENSHOTS / "docs.png"))


# --- with API keys ------------------------------------------------------------------------

PEPPER_ENV = "CONSOLE_TEST_KEY_PEPPER"
PEPPER = "console-pepper-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(base_url, tiny_cache, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(URL, a valid key) of an app with keys on, under /keyed: one tiny model."""
    from ray import serve

    from serve_app.config import AppConfig
    from serve_app.graph import compose

    root = tmp_path_factory.mktemp("keyed")
    args = integration_app_args(root, tiny_cache)
    args["models"] = [m for m in args["models"] if m["name"] == "sd-tiny"]
    database_url = f"sqlite:///{root}/keys.db"
    args["auth"] = {"database_url": database_url, "pepper_env": PEPPER_ENV, "cache_ttl_s": 0}
    args["rate_limits"] = {"enabled": False}
    store = KeyStore.open(database_url, KeyHasher(PEPPER.encode()))
    key = store.create_key("acme", "console", ["generate", "jobs"]).key
    options = {"ray_actor_options": {"runtime_env": {"env_vars": {PEPPER_ENV: PEPPER}}}}
    serve.run(compose(AppConfig.model_validate(args), options), name="keyed", route_prefix="/keyed")
    url = f"{base_url}/keyed"
    assert httpx.get(f"{url}/v1/health", timeout=60).status_code == 200
    yield url, key
    serve.delete("keyed")
    store.close()


def test_a_bad_key_shows_the_envelope_message_and_a_good_one_opens_the_catalog(page, keyed):
    url, key = keyed
    open_console(page, url, catalog=False)
    banner = page.locator("#banner")
    banner.wait_for(state="visible")
    assert "an API key is required" in banner.inner_text()

    page.fill("#api-key", "sk-not-a-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#banner').textContent.includes('invalid')"
    )
    text = banner.inner_text()
    assert "The API key is missing or not valid" in text
    assert "the API key is invalid, revoked or expired" in text
    assert "Request id: " in text
    screens(page, "key-error")

    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#generate-form [name=model] option", state="attached")
    assert banner.is_hidden()
    assert page.eval_on_selector_all(
        "#generate-form [name=model] option", "options => options.map(o => o.value)"
    ) == ["sd-tiny"]
    # The key lives in this tab's session: never in the address, never in the code shown.
    assert key not in page.url
    assert page.evaluate("sessionStorage.getItem('console.key')") == key
    page.fill("#generate-form [name=prompt]", "a lamp")
    page.fill("#generate-form [name=size]", "64x64")
    page.fill("#generate-form [name=steps]", "2")
    page.click("#generate-form button[type=submit]")
    page.wait_for_selector("#panel-generate figure.result", timeout=WAIT_MS)
    curl = snippet(page, "generate", "curl")
    assert "$IMAGE_SERVICE_KEY" in curl and key not in curl
    assert key not in snippet(page, "generate", "python")
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"

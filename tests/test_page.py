"""The shopper's page in a real browser (Debian's Chromium through Playwright) against the real gateway: embedded
pipeline over sample-catalog products in a temporary data dir, served by uvicorn on a free loopback port. Each test
saves a screenshot under test-artifacts/screenshots/ (CI keeps them)."""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fashion_search.core.catalog import CatalogRecord
from tests.conftest import ROOT, make_settings, model_pipeline

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "screenshots"
PER_CLASS = 2  # products per class: every kind present, quick to index
TIMEOUT_MS = 60_000  # one search on a busy 2-core machine, fine mode included

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="session")
def page_records(sample_records: list[CatalogRecord]) -> list[CatalogRecord]:
    """PER_CLASS sample products of every class."""
    seen: dict[str, int] = {}
    out = []
    for rec in sample_records:
        if seen.get(rec.category, 0) < PER_CLASS:
            seen[rec.category] = seen.get(rec.category, 0) + 1
            out.append(rec)
    return out


@pytest.fixture(scope="session")
def gateway_url(
    tmp_path_factory: pytest.TempPathFactory, shared_models: dict, page_records: list[CatalogRecord]
) -> Iterator[str]:
    """The real gateway app, served by uvicorn in a thread on a free 127.0.0.1 port for the whole session; it
    requires API keys, and the page sends its search-only key (FS_PAGE_API_KEY)."""
    import uvicorn

    from fashion_search.gateway.app import create_app
    from fashion_search.gateway.keys import ApiKeys
    from fashion_search.pipeline.ingest import Ingestor

    settings = make_settings(tmp_path_factory.mktemp("page"), auth_required=True, rate_limit_search="10000/minute")
    page_key, _ = ApiKeys(settings).create(["search"], "page")
    settings = settings.model_copy(update={"page_api_key": page_key})
    pipe = model_pipeline(settings, shared_models, image_embedder=True)
    assert Ingestor(pipe, settings).ingest_records(page_records).indexed == len(page_records)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, pipe), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
    pipe.index.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session."""
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: object, gateway_url: str) -> Iterator[object]:
    """A desktop-sized page of the gateway."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=gateway_url)  # type: ignore[attr-defined]
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.goto("/")
    yield pg
    context.close()


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory, page_records: list[CatalogRecord]) -> dict[str, Path]:
    """A product photo, a photo of three garments side by side, and a file that is no photo."""
    folder = tmp_path_factory.mktemp("photos")
    by_kind: dict[str, CatalogRecord] = {}
    for rec in page_records:
        by_kind.setdefault(rec.category, rec)  # the first of each kind: the detector names all three of these
    single = folder / "dress.jpg"
    shutil.copy(by_kind["dress"].image_path, single)
    parts = [Image.open(by_kind[k].image_path).convert("RGB").resize((300, 400)) for k in ("t-shirt", "pants", "shoes")]
    composite = Image.new("RGB", (900, 400), "white")
    for i, part in enumerate(parts):
        composite.paste(part, (300 * i, 0))
    three = folder / "three-garments.jpg"
    composite.save(three, quality=90)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"this is not a photo")
    return {"single": single, "three": three, "broken": broken}


def shot(page: object, name: str) -> None:
    """Save a full-page screenshot as a CI artefact."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def search(page: object, photo: Path | None, mode: str) -> None:
    """Upload (if given), pick the mode, search, and wait until the answer is on the page."""
    if photo is not None:
        page.set_input_files("#file", str(photo))  # type: ignore[attr-defined]
    page.check(f"input[name=mode][value={mode}]")  # type: ignore[attr-defined]
    with page.expect_response("**/v1/search"):  # type: ignore[attr-defined]
        page.click("#go")  # type: ignore[attr-defined]
    page.wait_for_selector("#out:not(.busy)")  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["simple", "fine", "tag"])
def test_upload_in_each_mode_shows_equal_cards_with_prices_and_match_bands(
    page: object, photos: dict[str, Path], mode: str
) -> None:
    search(page, photos["single"], mode)
    expect = playwright_api.expect
    cards = page.locator("#results .card")  # type: ignore[attr-defined]
    expect(cards.first).to_be_visible()
    sizes = {(round(b["width"]), round(b["height"])) for b in (c.bounding_box() for c in cards.all())}
    assert len(sizes) == 1, f"cards of unequal size: {sizes}"
    assert "€" in cards.first.locator(".price").inner_text()
    assert cards.first.locator(".badge").inner_text() in ("Good match", "Possible match")
    header = page.locator("header").inner_text()  # type: ignore[attr-defined]
    assert "index" not in header.lower()
    expect(page.locator("#error")).to_be_hidden()  # type: ignore[attr-defined]
    shot(page, f"search-{mode}")


def test_the_page_sends_its_key_where_the_gateway_requires_keys(page: object, photos: dict[str, Path]) -> None:
    search(page, photos["single"], "simple")
    # The catalog photos load too (fetched with the key: an <img> cannot send one).
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => { const img = document.querySelector('#results .card img');"
        " return img !== null && img.complete && img.naturalWidth > 0; }"
    )
    expect = playwright_api.expect
    expect(page.locator("#stats")).to_contain_text("products to match your photo against")  # type: ignore[attr-defined]
    key = page.locator('meta[name="fs-api-key"]').get_attribute("content")  # type: ignore[attr-defined]
    assert key and page.request.get("/v1/stats").status == 401  # type: ignore[attr-defined]
    assert page.request.get("/v1/stats", headers={"X-API-Key": key}).status == 200  # type: ignore[attr-defined]


def test_a_running_search_shows_a_loading_state_over_dimmed_results(page: object, photos: dict[str, Path]) -> None:
    search(page, photos["single"], "simple")
    # Hold the next search request in the browser until the page's state while it runs has been checked.
    held: list[object] = []
    page.route("**/v1/search", lambda route: held.append(route))  # type: ignore[attr-defined]
    page.check("input[name=mode][value=fine]")  # type: ignore[attr-defined]
    page.click("#go")  # type: ignore[attr-defined]
    for _ in range(500):  # at most 10 s
        if held:
            break
        page.wait_for_timeout(20)  # type: ignore[attr-defined]
    assert held, "the page sent no search"
    expect = playwright_api.expect
    expect(page.locator("#loading")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("#out")).to_have_class("busy")  # type: ignore[attr-defined]
    expect(page.locator("#results")).to_have_css("opacity", "0.35")  # type: ignore[attr-defined]
    assert page.locator("#go").is_disabled()  # type: ignore[attr-defined]
    shot(page, "loading")
    with page.expect_response("**/v1/search"):  # type: ignore[attr-defined]
        held[0].continue_()  # type: ignore[attr-defined]
    page.unroute("**/v1/search")  # type: ignore[attr-defined]
    page.wait_for_selector("#out:not(.busy)")  # type: ignore[attr-defined]
    expect(page.locator("#loading")).to_be_hidden()  # type: ignore[attr-defined]
    expect(page.locator("#results")).to_have_css("opacity", "1")  # type: ignore[attr-defined]


def test_clicking_a_garment_box_shows_that_garments_results(page: object, photos: dict[str, Path]) -> None:
    search(page, photos["three"], "fine")
    boxes = page.locator("#stage .box")  # type: ignore[attr-defined]
    assert boxes.count() >= 2, "three garments side by side: several boxes"
    groups = page.locator("#results section.group")  # type: ignore[attr-defined]
    assert groups.count() == boxes.count()
    shot(page, "garments-fine")
    boxes.nth(1).click()
    assert groups.count() == 1
    assert groups.first.get_attribute("data-garment") == "1"
    shot(page, "garment-selected")


def test_several_garments_mix_kinds_and_suggest_fine_mode(page: object, photos: dict[str, Path]) -> None:
    search(page, photos["three"], "tag")
    kinds = set(page.locator("#results .card .sub span:first-child").all_inner_texts())  # type: ignore[attr-defined]
    suggest = page.locator("#suggest")  # type: ignore[attr-defined]
    playwright_api.expect(suggest).to_be_visible()
    assert len(kinds) >= 2, kinds
    shot(page, "several-garments-tag")
    with page.expect_response("**/v1/search"):  # type: ignore[attr-defined]
        suggest.locator("button").click()
    page.wait_for_selector("#out:not(.busy)")  # type: ignore[attr-defined]
    assert page.locator("input[name=mode][value=fine]").is_checked()  # type: ignore[attr-defined]
    assert page.locator("#results section.group").count() >= 2  # type: ignore[attr-defined]


def test_an_error_replaces_the_previous_results(page: object, photos: dict[str, Path]) -> None:
    search(page, photos["single"], "simple")
    assert page.locator("#results .card").count() > 0  # type: ignore[attr-defined]
    # Sent as image/jpeg (by its name), so the server, not the page, refuses it.
    search(page, photos["broken"], "simple")
    expect = playwright_api.expect
    expect(page.locator("#error")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("#error")).to_contain_text("400")  # type: ignore[attr-defined]
    assert page.locator("#results .card").count() == 0  # type: ignore[attr-defined]
    expect(page.locator("#meta")).to_be_hidden()  # type: ignore[attr-defined]
    shot(page, "error")


def test_more_like_this_searches_with_the_product(page: object, photos: dict[str, Path]) -> None:
    search(page, photos["single"], "simple")
    first = page.locator("#results .card").first  # type: ignore[attr-defined]
    product = first.get_attribute("data-product")
    with (
        page.expect_request("**/v1/search") as sent,  # type: ignore[attr-defined]
        page.expect_request(f"**/v1/products/{product}/image"),  # type: ignore[attr-defined]
    ):
        first.locator("button.more").click()
    assert f'name="product_id"\r\n\r\n{product}'.encode() in sent.value.post_data_buffer
    page.wait_for_selector("#out:not(.busy)")  # type: ignore[attr-defined]
    assert page.locator("#results .card").count() > 0  # type: ignore[attr-defined]
    # The product's photo is the query shown (fetched with the page's key).
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => { const i = document.getElementById('preview'); return i.complete && i.naturalWidth > 0; }"
    )


@pytest.mark.parametrize("how", ["paste", "drop"])
def test_a_photo_pasted_or_dropped_is_the_query(page: object, photos: dict[str, Path], how: str) -> None:
    data = base64.b64encode(photos["single"].read_bytes()).decode()
    page.evaluate(  # type: ignore[attr-defined]
        """([data, how]) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], "dress.jpg", { type: "image/jpeg" }));
          const ev = how === "paste" ? new ClipboardEvent("paste", { clipboardData: dt, bubbles: true })
            : new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true });
          (how === "paste" ? document : document.getElementById("drop")).dispatchEvent(ev);
        }""",
        [data, how],
    )
    expect = playwright_api.expect
    expect(page.locator("#stage")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator("#go")).to_be_enabled()  # type: ignore[attr-defined]
    search(page, None, "simple")
    assert page.locator("#results .card").count() > 0  # type: ignore[attr-defined]


def test_on_a_phone_the_results_scroll_into_view(browser: object, gateway_url: str, photos: dict[str, Path]) -> None:
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True,
        base_url=gateway_url,
    )
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    try:
        pg.goto("/")
        assert pg.locator("#camera").get_attribute("capture") == "environment"
        search(pg, photos["single"], "simple")
        pg.wait_for_function("() => document.getElementById('out').getBoundingClientRect().top < innerHeight / 2")
        card = pg.locator("#results .card").first
        box = card.bounding_box()
        assert box is not None and 0 <= box["y"] < 844, "the first result is on screen"
        pg.screenshot(path=str(SHOTS / "phone.png"))
    finally:
        context.close()

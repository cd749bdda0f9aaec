"""The web pages in a real browser: spans over CRLF and emoji keep the stored text's offsets and
show highlighted, `u` works on the "nothing left" page, no page scrolls sideways on a 390 px
phone, and every button and link reads at ≥ 4.5:1."""
from __future__ import annotations

import contextlib

import httpx
from playwright.sync_api import expect

from gatehouse import Client


def utf16(text: str, index: int) -> int:
    """The UTF-16 offset of Python's code-point `index` (the API's span offsets are UTF-16)."""
    return len(text[:index].encode("utf-16-le")) // 2


def sign_in(page, server, path: str, name: str) -> None:
    page.goto(server.url + path)
    page.fill("#name", name)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + path)


def keys_ready(page) -> None:
    """Waits until annotate.js has bound the page on screen. It is a deferred script: after a
    plain form post the next item's text is visible before the script runs, and a key pressed
    in between does nothing (CI lost a "1" and two Enters to that)."""
    page.wait_for_selector("#queued", state="attached")


def select(page, needle: str) -> None:
    """Selects the first `needle` in the item's text as a person dragging over it would end up
    with: a DOM range over the text nodes."""
    found = page.evaluate("""needle => {
        const root = document.getElementById('item-text');
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const at = node.data.indexOf(needle);
            if (at >= 0) {
                const range = document.createRange();
                range.setStart(node, at);
                range.setEnd(node, at + needle.length);
                const selection = window.getSelection();
                selection.removeAllRanges();
                selection.addRange(range);
                return true;
            }
        }
        return false;
    }""", needle)
    assert found, needle


TEXT = "Line one\r\nBerlin is here \U0001F642 Ada Lovelace\r\n\r\nend"


def test_spans_over_crlf_and_emoji_keep_the_stored_offsets(server, page):
    with Client(server.url) as gh:
        gh.create_dataset("ner", task="spans", labels=["PLACE", "PERSON"])
        gh.add_items("ner", [{"id": "a", "data": {"text": TEXT}}])
    sign_in(page, server, "/annotate/ner", "alice")
    select(page, "Berlin")
    page.keyboard.press("1")
    select(page, "Ada Lovelace")
    page.keyboard.press("2")
    # Shown in the text, not only listed.
    marks = page.eval_on_selector_all("#item-text mark", "ms => ms.map(m => [m.textContent, m.dataset.label])")
    assert marks == [["Berlin", "PLACE"], ["Ada Lovelace", "PERSON"]]
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Nothing left for you here")

    exported = httpx.get(f"{server.url}/v1/datasets/ner/export", params={"format": "jsonl"}).text
    import json
    row = json.loads(exported.splitlines()[0])
    spans = row["labels"][0]["value"] if "labels" in row else row["label"]
    by_label = {s["label"]: s for s in spans}
    berlin, ada = TEXT.index("Berlin"), TEXT.index("Ada Lovelace")
    assert (by_label["PLACE"]["start"], by_label["PLACE"]["end"]) == (utf16(TEXT, berlin), utf16(TEXT, berlin + 6))
    assert (by_label["PERSON"]["start"], by_label["PERSON"]["end"]) == (utf16(TEXT, ada), utf16(TEXT, ada + 12))
    assert by_label["PLACE"]["text"] == "Berlin" and by_label["PERSON"]["text"] == "Ada Lovelace"


def test_u_takes_back_the_last_label_from_the_nothing_left_page(server, page):
    with Client(server.url) as gh:
        gh.create_dataset("topics", task="classification", labels=["bug", "feature"])
        gh.add_items("topics", [{"id": "only", "data": {"text": "crash on start"}}])
    sign_in(page, server, "/annotate/topics", "bob")
    page.keyboard.press("1")
    page.wait_for_selector("text=Nothing left for you here")
    page.keyboard.press("u")
    page.wait_for_selector("#item-text")
    assert "crash on start" in page.inner_text("#item-text")
    assert httpx.get(f"{server.url}/v1/datasets/topics/stats").json()["labeled"] == 0


CONTRAST = """() => {
    function rgb(c) { const m = c.match(/[\\d.]+/g).map(Number); return { r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1 }; }
    function lum(c) {
        const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
    }
    function background(el) {
        for (let e = el; e; e = e.parentElement) {
            const c = rgb(getComputedStyle(e).backgroundColor);
            if (c.a > 0) return c;
        }
        return { r: 255, g: 255, b: 255, a: 1 };
    }
    const worst = [];
    for (const el of document.querySelectorAll('button, a, button kbd')) {
        const fg = rgb(getComputedStyle(el).color), bg = background(el);
        const a = lum(fg), b = lum(bg);
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        if (ratio < 4.5) worst.push(el.outerHTML.slice(0, 80) + ' ' + ratio.toFixed(2));
    }
    return worst;
}"""

WIDE = "() => document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"


def test_pages_fit_a_phone_and_read_at_aa_contrast(server, browser):
    digest = "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    with Client(server.url) as gh:
        gate = gh.open_gate("Ship fraud-model v7?", pipeline="train", subject={"digest": digest, "uri": "s3://models/fraud/" + "x" * 80},
                            details="## Results\n**AUC** 0.91", approvers=["web:carol"])
        gh.create_dataset("spans", task="spans", labels=["ORG"])
        gh.add_items("spans", [{"id": "1", "data": {"text": "Acme Corp " * 40}}])
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = phone.new_page()
    try:
        page.goto(gate.url)
        assert page.evaluate(WIDE) <= 0, "the gate page scrolls sideways at 390 px"
        assert page.evaluate(CONTRAST) == []
        sizes = page.evaluate("() => ['h1', 'h2'].map(t => parseFloat(getComputedStyle(document.querySelector(t)).fontSize))")
        assert sizes[0] > sizes[1], sizes
        page.goto(server.url + "/annotate/spans")
        page.fill("#name", "carol")
        page.click("button[type=submit]")
        page.wait_for_selector("#item-text")
        assert page.evaluate(WIDE) <= 0, "the labelling page scrolls sideways at 390 px"
        assert page.evaluate(CONTRAST) == []
        with Client(server.url) as gh:
            gh.emit("run.failed", "a-pipeline-with-a-rather-long-name", run="run-" + "9" * 40, step="fit", summary="x " * 100)
            gh.emit("run.started", "quiet", run="ok-run")
        for path in ["/inbox", "/", "/events", "/gates", "/deliveries", "/silences", "/datasets", "/runs/ok-run?pipeline=quiet",
                     "/runs/" + "run-" + "9" * 40]:
            page.goto(server.url + path)
            assert page.evaluate(WIDE) <= 0, f"{path} scrolls sideways at 390 px"
            assert page.evaluate(CONTRAST) == [], path
            # An absent value is left out, never written as Swift's "nil".
            assert "nil" not in page.inner_text("main").split(), path
    finally:
        phone.close()


def test_the_console_signs_in_and_shows_a_failed_run_live(server, page):
    page.goto(server.url + "/")
    page.wait_for_url("**/login?next=/")
    page.fill("#name", "ops")
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Runs')")
    assert "No runs yet" in page.inner_text("#live")
    with Client(server.url) as gh:
        gh.emit("run.started", "train", run="r42")
        gh.emit("run.failed", "train", run="r42", step="fit", summary="CUDA out of memory")
    # No reload: the page follows the event stream.
    row = page.wait_for_selector("#live tr:has-text('r42'):has-text('failed')", timeout=10000)
    assert "fit" in row.inner_text()
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    # Times read as "… ago", the exact time on hover.
    when = page.locator("#live time").first
    assert "ago" in when.inner_text() or "just now" in when.inner_text()
    assert when.get_attribute("title")

    page.click("#live a:has-text('r42')")
    page.wait_for_selector("h1:has-text('train / r42')")
    assert "CUDA out of memory" in page.inner_text("main")
    page.click("nav >> text=Events")
    page.fill("#f-type", "run.failed")
    page.click("form.filters button")
    page.wait_for_url("**type=run.failed**")
    expect(page.locator("#live tbody tr")).to_have_count(1)

    # Gates: a waiting one links to its decision page, personal for someone who may decide.
    with Client(server.url) as gh:
        gate = gh.open_gate("Deploy v7?", pipeline="train", run="r42", approvers=["web:ops"])
    page.click("nav >> text=Gates")
    page.click(f"text=Deploy v7?")
    page.wait_for_selector("text=Deciding as")
    page.click("button.approve")
    page.wait_for_selector("text=Thank you")
    with Client(server.url) as gh:
        assert gh.get_gate(gate.id).state == "approved"
    page.goto(server.url + "/gates")
    page.wait_for_selector("h1:has-text('Gates')")
    assert "No gate is waiting" in page.inner_text("#live")
    # Decided right on /gates: a branch, by a button, recorded as the signed-in person.
    with Client(server.url) as gh:
        branch = gh.open_gate("Roll out how?", pipeline="train", run="r42", approvers=["web:ops"], choices=["canary", "full"])
        other = gh.open_gate("Not yours", pipeline="train", approvers=["web:someone"])
    page.reload()
    assert page.locator(f"#live li:has-text('Not yours') button").count() == 0
    with Client(server.url) as gh:
        gh.open_gate("Timed", pipeline="train", timeout="2h")
    page.reload()
    assert "deadline in 2 h" in page.inner_text("#live li:has-text('Timed')")
    page.click("#live li:has-text('Roll out how?') button:has-text('Canary')")
    page.wait_for_selector("#live li:has-text('Roll out how?') .state.approved")
    with Client(server.url) as gh:
        decided = gh.get_gate(branch.id)
        assert decided.choice == "canary" and decided.decisions[0].by == "web:ops" and decided.decisions[0].via == "web"
        assert gh.get_gate(other.id).pending

    page.click("nav .signout button")
    page.wait_for_url("**/login")
    page.goto(server.url + "/events")
    page.wait_for_url("**/login?next=/events")


@contextlib.contextmanager
def audit_receiver(server, answers, before_answer=lambda: None, receiver_settings=""):
    """A local webhook receiver, `audit`, that every event goes to (one webhook each): it
    answers `answers` in turn, then 200; `before_answer` runs in each request first (to hold a
    send). The server is restarted with it configured; it stops with the block."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            before_answer()
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        with open(f"{server.workdir}/gatehouse.yml", "w") as f:
            f.write(f"""receivers:
  - name: audit
    webhook: {{ url: "http://127.0.0.1:{sink.server_address[1]}/hook" }}
{receiver_settings}route:
  receiver: audit
  group_by: ['...']
  group_wait: 0s
""")
        server.restart()
        yield sink
    finally:
        sink.shutdown()


def test_operators_retry_a_dead_delivery_silence_and_see_datasets(server, page):
    # The receiver refuses the first send for good, then takes the retry.
    with audit_receiver(server, [400]):
        with Client(server.url) as gh:
            gh.emit("run.failed", "train", run="r7", summary="diverged")
            gh.create_dataset("reviews", task="classification", labels=["pos", "neg"])
            gh.add_items("reviews", [{"id": "1", "data": {"text": "great"}}, {"id": "2", "data": {"text": "awful"}}])
            gh.label("reviews", "1", "pos", annotator="web:ann")

        sign_in(page, server, "/deliveries", "ops")
        page.wait_for_selector("#live tr:has-text('dead')", timeout=15000)
        page.click("#live button:has-text('Retry')")
        page.wait_for_selector("#live tr:has-text('delivered')", timeout=15000)
        assert httpx.get(f"{server.url}/v1/deliveries", params={"state": "delivered"}).json()["deliveries"][0]["receiver"] == "audit"
        assert "audit" in page.inner_text("#live ul") and "ok" in page.inner_text("#live ul")
        # The run's page lists what its events caused.
        page.goto(server.url + "/runs/r7?pipeline=train")
        assert "audit" in page.inner_text("#live table") and "delivered" in page.inner_text("#live table")

        # "Silence like this" from the event, then expire it.
        page.goto(server.url + "/events")
        page.click("#live tr:has-text('run.failed') a:has-text('silence like this')")
        assert page.input_value("#s-matchers") == 'pipeline="train", type="run.failed"'
        page.fill("#s-comment", "retraining")
        page.click("button:has-text('Silence')")
        page.wait_for_selector("#live tr:has-text('retraining')")
        silences = httpx.get(f"{server.url}/v1/silences").json()["silences"]
        assert [s["state"] for s in silences] == ["active"] and silences[0]["created_by"] == "web:ops"
        page.click("#live button:has-text('Expire')")
        page.wait_for_selector("#live tr:has-text('expired')")
        # A bad silence is refused with the API's words, and nothing is created.
        page.fill("#s-matchers", "not a matcher")
        page.click("button:has-text('Silence')")
        assert "matchers" in page.inner_text("p.error")
        assert len(httpx.get(f"{server.url}/v1/silences").json()["silences"]) == 1

        page.click("nav >> text=Datasets")
        assert "1 of 2 labelled" in page.inner_text("#live") and "ann: 1" in page.inner_text("#live")
        assert page.get_attribute("#live a:has-text('CSV')", "href") == "/v1/datasets/reviews/export?format=csv"


def test_the_deliveries_page_follows_a_delivery_that_changes_without_an_event(server, page):
    """A delivery's outcome commits no event, so the event stream alone never told the page (CI
    once loaded /deliveries before the dispatcher's first send and waited in vain for 'dead').
    The page is opened while the receiver holds the send; its answer must show up on the
    page without a reload, and nothing else is committed meanwhile."""
    import threading

    arrived, release = threading.Event(), threading.Event()

    def hold() -> None:
        arrived.set()
        release.wait(20)

    # The sink holds the send: a slow CI machine must not time it out into a retry.
    try:
        with audit_receiver(server, [400], before_answer=hold, receiver_settings="    timeout: 60s\n"):
            with Client(server.url) as gh:
                gh.emit("run.failed", "train", run="r9", summary="diverged")
            assert arrived.wait(15), "the receiver never got the send"
            sign_in(page, server, "/deliveries", "ops")
            assert "dead" not in page.inner_text("#live")
            page.evaluate("document.getElementById('live').dataset.marker = 'same page'")
            release.set()
            page.wait_for_selector("#live tr:has-text('dead')", timeout=10000)
            # Not a reload: the element marked before is still the one on screen.
            assert page.evaluate("document.getElementById('live').dataset.marker") == "same page"
            # A poll that brings the same HTML leaves the region alone (a focused button, a
            # selection, a scrolled table stay as they are).
            page.evaluate("document.querySelector('#live button').dataset.marker = 'kept'")
            page.wait_for_timeout(3500)
            assert page.evaluate("document.querySelector('#live button').dataset.marker") == "kept"
            events = httpx.get(f"{server.url}/v1/events").json()["events"]
            assert [e["type"] for e in events] == ["run.failed"]
    finally:
        release.set()


def test_twenty_items_labelled_by_keys_25_ms_apart_each_on_its_own_item(server, page):
    labels = ["spam", "ham", "unsure"]
    items = [{"id": f"m{i:02d}", "data": {"text": f"message number {i}"}} for i in range(20)]
    with Client(server.url) as gh:
        gh.create_dataset("mail", task="classification", labels=labels)
        gh.add_items("mail", items)
    sign_in(page, server, "/annotate/mail", "fast")
    assert "message number 0" in page.inner_text("#item-text")
    keys = [str(1 + (i * 7) % 3) for i in range(20)]  # not a simple alternation
    for key in keys:
        page.keyboard.press(key)
        page.wait_for_timeout(25)
    page.wait_for_selector("text=Nothing left for you here", timeout=20000)
    import json
    exported = [json.loads(line) for line in httpx.get(f"{server.url}/v1/datasets/mail/export", params={"format": "jsonl"}).text.splitlines()]
    got = {row["id"]: row["label"] for row in exported}
    assert got == {f"m{i:02d}": labels[int(k) - 1] for i, k in enumerate(keys)}
    # No page load after the first: items were swapped in place.
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    timings = sorted(page.evaluate("() => window.__annotateTimings"))
    print(f"\nlabelling: key → next item on screen, {len(timings)} keys: median {timings[len(timings) // 2]:.1f} ms, "
          f"max {timings[-1]:.1f} ms (queued keys count from their press)")


def test_a_failed_background_post_falls_back_to_the_plain_form_with_its_action(server, page):
    with Client(server.url) as gh:
        gh.create_dataset("tags", task="multilabel", labels=["a", "b"])
        gh.add_items("tags", [{"id": "t1", "data": {"text": "first"}}, {"id": "t2", "data": {"text": "second"}},
                              {"id": "t3", "data": {"text": "third"}}])
    sign_in(page, server, "/annotate/tags", "kim")
    # The script's post is lost (a network blip); the plain form post must still skip.
    page.route("**/annotate/tags", lambda route: route.abort() if route.request.resource_type == "fetch" else route.continue_())
    page.keyboard.press("s")
    page.wait_for_selector("#item-text:has-text('second')")
    keys_ready(page)  # a full page load, unlike the script's swaps
    assert httpx.get(f"{server.url}/v1/datasets/tags/stats").json()["skipped"] == 1
    page.unroute("**/annotate/tags")
    # Enter twice fast saves the item on screen once; the second press does not label an item
    # nobody has seen. The first save is held in flight until the second Enter is in (a starved
    # test could otherwise press it after the swap, on the next item, as a person may).
    held = []
    page.route("**/annotate/tags", lambda route: held.append(route) if route.request.resource_type == "fetch" else route.continue_())
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    for _ in range(500):
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "the save never left"
    page.keyboard.press("Enter")
    page.wait_for_timeout(100)
    for route in held:
        route.continue_()
    page.unroute("**/annotate/tags")
    page.wait_for_selector("#item-text:has-text('third')")
    page.wait_for_timeout(300)
    stats = httpx.get(f"{server.url}/v1/datasets/tags/stats").json()
    assert stats["labeled"] == 1 and stats["skipped"] == 1, stats
    assert "third" in page.inner_text("#item-text")


def test_a_new_gate_never_moves_the_buttons_under_the_reader(server, page):
    """A hostile tester's find: /gates followed every event at once, so a gate opened while
    someone was about to approve another pushed the rows down and their click approved the new
    gate. The region now holds still while the reader is in it (a pointer over it, even resting;
    the keyboard's focus; a selection), says so with a button in the corner, and catches up once
    they leave."""
    with Client(server.url) as gh:
        safe = gh.open_gate("Deploy SAFE model", pipeline="train", approvers=["web:ops"])
    sign_in(page, server, "/gates", "ops")
    approve = page.locator("#live li:has-text('Deploy SAFE model') button.approve")
    box = approve.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # The reader's pointer comes to rest on the button and stays there while they read.
    page.mouse.move(x - 40, y)
    page.mouse.move(x, y, steps=4)
    with Client(server.url) as gh:
        risky = gh.open_gate("Deploy RISKY model", pipeline="train", approvers=["web:ops"])
    # The page learnt of the new gate and held it back (the reload came: the button says so).
    held = page.locator("button.held")
    expect(held).to_be_visible(timeout=10000)
    page.wait_for_timeout(1500)
    assert "RISKY" not in page.inner_text("#live")
    # The approval is a form post answered with a redirect back to /gates: wait for that
    # navigation itself (the URL is /gates before it too, so waiting for the URL passes at once,
    # and a loaded machine could ask for the gate before the post was handled).
    with page.expect_navigation(url=server.url + "/gates**", timeout=15000):
        page.mouse.click(x, y)
    with Client(server.url) as gh:
        assert gh.get_gate(safe.id).state == "approved"
        assert gh.get_gate(risky.id).pending

    # The keyboard's focus holds it too; once the reader leaves, the page catches up unasked.
    page.wait_for_selector("#live li:has-text('Deploy RISKY model')")
    page.mouse.move(1, 1)
    page.focus("#live li:has-text('Deploy RISKY model') a")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.matches(':focus-visible') && document.getElementById('live').contains(document.activeElement)")
    page.evaluate("document.getElementById('live').dataset.marker = 'same page'")
    with Client(server.url) as gh:
        gh.open_gate("Deploy LATER model", pipeline="train")
    expect(held).to_be_visible(timeout=10000)
    assert "LATER" not in page.inner_text("#live")
    page.evaluate("document.activeElement.blur()")
    page.wait_for_selector("#live li:has-text('Deploy LATER model')", timeout=10000)
    expect(held).to_be_hidden()
    assert page.evaluate("document.getElementById('live').dataset.marker") == "same page"

    # "Show them" brings the updates in at once, the reader's pointer still on the list.
    page.hover("#live li:has-text('Deploy LATER model')")
    with Client(server.url) as gh:
        gh.open_gate("Deploy ASKED model", pipeline="train")
    expect(held).to_be_visible(timeout=10000)
    held.evaluate("button => button.click()")  # the pointer stays on the list
    page.wait_for_selector("#live li:has-text('Deploy ASKED model')", timeout=10000)

"""The HTML preview of a merge: a page and an .eml per row, and an index,
built from a real .xlsx and checked as files, then opened in headless Chromium
(skipped when it is not installed) to see that names show, values from the
list stay text, and the inline images really load."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import write_template, write_xlsx

from mailmerge.cli.htmlpreview import write_html_preview
from mailmerge.merge import Plan, plan_merge
from mailmerge.render.template import load_template
from mailmerge.sources.recipients import read_recipients

DATA = Path(__file__).parent / "data"
EVIL = "<script>alert(1)</script>"
CHROMIUM_MISSING = "chromium not installed: apt-get install chromium fonts-noto-cjk"

NEWSLETTER = """\
From: Club <club@example.com>
Subject: News for {{ name }}
To: {{ name }} <{{ email }}>
Bcc: archive@example.com
Attachment: invoice.pdf

<html><head><style>body { background: #fff7e6; } h1 { color: #123456; }</style></head><body>
<h1>안녕하세요 {{ name }}님</h1>
<p><img src="logo.png" alt="Club logo" width="48" height="48"> Read <a href="https://example.com/news">the news</a>.</p>
</body></html>
"""

ROWS = [
    ("김민수", "minsu@example.com"),
    (EVIL, "evil@example.com"),
    ("Nobody", "not-an-address"),
]

MINSU, EVIL_PAGE, INVALID = "0002-minsu@example.com", "0003-evil@example.com", "0004-not-an-address"


def make_plan(folder: Path, template_name: str, template_text: str) -> Plan:
    """A plan from a real Excel file and a template in ``folder``."""
    shutil.copy(DATA / "logo.png", folder / "logo.png")
    shutil.copy(DATA / "invoice.pdf", folder / "invoice.pdf")
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), ROWS)
    template = write_template(folder / template_name, template_text)
    return plan_merge(read_recipients(xlsx), load_template(template))


@pytest.fixture
def preview(tmp_path: Path) -> Path:
    """The preview folder of the HTML newsletter; returns its index.html."""
    plan = make_plan(tmp_path, "news.html", NEWSLETTER)
    return write_html_preview(plan, tmp_path / "preview")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        href = dict(attrs).get("href")
        if href:
            self.hrefs.append(href)


def parsed(page: Path) -> _Links:
    links = _Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


# --- the files -------------------------------------------------------------------


def test_a_page_and_an_eml_per_row_and_an_index(preview: Path) -> None:
    folder = preview.parent
    assert preview.name == "index.html"
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "index.html",
        f"{MINSU}.html", f"{MINSU}.eml",
        f"{EVIL_PAGE}.html", f"{EVIL_PAGE}.eml",
        f"{INVALID}.html",  # an invalid row: a page saying why, no message
    ])
    message = BytesParser(policy=policy.default).parsebytes((folder / f"{MINSU}.eml").read_bytes())
    assert message["Subject"] == "News for 김민수" and message["To"] == "김민수 <minsu@example.com>"
    assert message["Bcc"] is None  # the Bcc is in the envelope only
    html_part = message.get_body(("html",))
    assert html_part is not None
    assert 'src="cid:' in html_part.get_content()  # the .eml is the message as sent: cid:, not data:
    assert [p.get_filename() for p in message.iter_attachments()] == ["invoice.pdf"]


def test_every_link_of_the_index_leads_to_a_page(preview: Path) -> None:
    hrefs = [unquote(href) for href in parsed(preview).hrefs]
    assert sorted(set(hrefs)) == [f"{MINSU}.html", f"{EVIL_PAGE}.html", f"{INVALID}.html"]
    assert all((preview.parent / unquote(href)).is_file() for href in hrefs)
    page_links = parsed(preview.parent / f"{MINSU}.html").hrefs
    assert "index.html" in page_links and f"{MINSU}.eml" in [unquote(h) for h in page_links]


def test_the_index_lists_rows_subjects_and_status(preview: Path) -> None:
    index = preview.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in index
    assert "To: 김민수 &lt;minsu@example.com&gt;" in index and "News for 김민수" in index
    assert "Bcc: archive@example.com" in index
    assert index.count('<span class="ok">ok</span>') == 2
    assert "invalid: &#x27;not-an-address&#x27; is not a valid address" in index
    assert "2 to send, 1 invalid, of 3 rows" in index


def test_values_from_the_list_stay_text(preview: Path) -> None:
    folder = preview.parent
    index = preview.read_text(encoding="utf-8")
    page = (folder / f"{EVIL_PAGE}.html").read_text(encoding="utf-8")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"News for {escaped}" in index and f"News for {escaped}" in page  # subject: index, headers table
    assert f"&quot;{escaped}&quot; &lt;evil@example.com&gt;" in page  # the To header
    for html_file in folder.glob("*.html"):
        assert EVIL not in html_file.read_text(encoding="utf-8"), html_file.name
        assert "script" not in parsed(html_file).tags, html_file.name
    # In the frame the name is escaped twice: once by the template, once for srcdoc.
    assert "&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;" in page


def test_the_message_page_shows_headers_and_the_html_with_images(preview: Path) -> None:
    page = (preview.parent / f"{MINSU}.html").read_text(encoding="utf-8")
    assert "<tr><th>From</th><td>Club &lt;club@example.com&gt;</td></tr>" in page
    assert "<tr><th>To</th><td>김민수 &lt;minsu@example.com&gt;</td></tr>" in page
    assert "archive@example.com <span class=\"note\">(envelope only, not in the headers)</span>" in page
    assert "<tr><th>Subject</th><td>News for 김민수</td></tr>" in page
    assert "invoice.pdf  (application/pdf, 0.6 kB)" in page
    frame = re.search(r'<iframe [^>]*srcdoc="([^"]*)"', page)
    assert frame is not None
    assert "안녕하세요 김민수님" in frame.group(1)
    assert "src=&quot;data:image/png;base64," in frame.group(1) and "cid:" not in frame.group(1)
    assert 'sandbox="allow-same-origin' in page and "allow-scripts" not in page


def test_an_invalid_row_gets_a_page_saying_why(preview: Path) -> None:
    page = (preview.parent / f"{INVALID}.html").read_text(encoding="utf-8")
    assert "invalid, will not be sent: &#x27;not-an-address&#x27; is not a valid address" in page
    assert "To: not-an-address" in page and "News for Nobody" in page


def test_a_text_only_message_is_shown_in_pre(tmp_path: Path) -> None:
    template = "From: c@example.com\nTo: {{ name }} <{{ email }}>\nSubject: Hi {{ name }}\n\nDear {{ name }},\n  see you.\n"
    index = write_html_preview(make_plan(tmp_path, "t.txt", template), tmp_path / "out")
    page = (index.parent / f"{MINSU}.html").read_text(encoding="utf-8")
    assert "<iframe" not in page
    assert "<pre>Dear 김민수,\n  see you.\n</pre>" in page
    evil = (index.parent / f"{EVIL_PAGE}.html").read_text(encoding="utf-8")
    assert "<pre>Dear &lt;script&gt;alert(1)&lt;/script&gt;," in evil


def test_files_of_an_earlier_preview_are_replaced(preview: Path, tmp_path: Path) -> None:
    again = write_html_preview(make_plan(tmp_path, "news.html", NEWSLETTER.replace("News", "Notes")), preview.parent)
    assert again == preview
    assert "Notes for 김민수" in (preview.parent / f"{MINSU}.html").read_text(encoding="utf-8")


# --- in a real browser -----------------------------------------------------------


def chromium(page: Path, profile: Path, *extra: str) -> str:
    """Run headless Chromium on ``page`` (as root here, hence --no-sandbox); its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip(CHROMIUM_MISSING)
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", *extra, page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# Appended to a copy of a page: once everything has loaded, the title becomes
# the widths of every image (the page's and its frames') and the frames' text.
PROBE = """
<script>
window.addEventListener("load", () => {
  const documents = [document, ...Array.from(frames, frame => frame.document)];
  const widths = documents.flatMap(d => Array.from(d.images, image => image.naturalWidth));
  const text = Array.from(frames, frame => frame.document.body.innerText).join("\\n");
  document.title = JSON.stringify({widths, text});
});
</script>
"""


def test_chromium_shows_the_index_with_names_as_text(preview: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    dom = chromium(preview, tmp_path_factory.mktemp("profile"), "--dump-dom")

    assert "김민수" in dom and "News for 김민수" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # shown as text, not run
    assert "<script" not in dom


def test_chromium_loads_the_inline_images_of_a_message(preview: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    page = preview.parent / f"{MINSU}.html"
    probe = page.with_name(f"{MINSU}.probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = chromium(probe, tmp_path_factory.mktemp("profile"), "--dump-dom", "--virtual-time-budget=5000")

    title = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    assert title is not None and title.group(1).startswith("{"), dom[:2000]
    seen = json.loads(html.unescape(title.group(1)))
    assert seen["widths"] == [24]  # the logo, in the frame, loaded at its natural size
    assert "안녕하세요 김민수님" in seen["text"] and "the news" in seen["text"]
    assert "<td>News for 김민수</td>" in dom  # the headers table, in the page

    screenshot = tmp_path_factory.mktemp("screenshot") / f"{MINSU}.png"
    chromium(page, tmp_path_factory.mktemp("profile"), f"--screenshot={screenshot}", "--window-size=1024,768")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 5000
    print(f"screenshot: {screenshot}")


def test_the_preview_command_writes_the_pages(tmp_path: Path) -> None:
    from conftest import run_cli, write_template, write_xlsx

    xlsx = write_xlsx(tmp_path / "l.xlsx", ("name", "email"), [("김민수", "minsu@example.com")])
    template = write_template(tmp_path / "t.html", "From: c@example.com\nTo: {{ email }}\nSubject: Hi {{ name }}\n\n<p>Hi {{ name }}</p>\n")

    run = run_cli("preview", xlsx, "-t", template, "--html", tmp_path / "pages")

    assert run.exit_code == 0, run.output
    assert "index.html" in run.stdout
    assert "김민수" in (tmp_path / "pages" / "index.html").read_text(encoding="utf-8")
    assert (tmp_path / "pages" / "0002-minsu@example.com.eml").is_file()

"""The rendered book.

It builds offline with warnings as errors and every chapter executed fresh, and in a real
headless browser (Chromium) every page renders its math, loads its images, links only to pages
and anchors that exist, and logs no errors. The build goes to _build/html, once for this file,
and a screenshot of every page goes to _build/screenshots/.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pytest
import yaml

from llmcourse.course.chapters import CHAPTERS

pytestmark = [pytest.mark.course_infra, pytest.mark.slow]

BUILD_TIMEOUT_S = 900  # the whole book, every chapter executed, on 2 cores
PAGE_TIMEOUT_S = 60  # one page: load it and let MathJax typeset it
WINDOW = (1280, 900)  # CSS pixels; a laptop screen
# A screenshot shows the whole page down to this many CSS pixels (about 40 screens, 5 MB of
# PNG); a longer page is cut there.
MAX_SCREENSHOT_HEIGHT = 40_000

INSTALL_CHROMIUM = (
    "the browser test needs Chromium and its driver: `apt-get install chromium chromium-driver` "
    "(Debian, Ubuntu), or on macOS `brew install --cask chromium chromedriver` (Google Chrome "
    "works too); or point LLMCOURSE_CHROMIUM and LLMCOURSE_CHROMEDRIVER at them"
)


# --- building -------------------------------------------------------------------------------

def _forced_config(root: Path, folder: Path) -> Path:
    """A copy of _config.yml that executes every chapter, whatever the cache holds."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "force"
    # Jupyter Book resolves these folders against the config file's own folder.
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in extensions.items():
        extensions[name] = str((root / path).resolve())
    path = folder / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def book(root, tmp_path_factory) -> Path:
    """Build the book from scratch into _build/html (the execution cache is kept, unused)."""
    build = root / "_build"
    for stale in ("html", ".doctrees", "jupyter_execute", "screenshots"):
        shutil.rmtree(build / stale, ignore_errors=True)
    config = _forced_config(root, tmp_path_factory.mktemp("book-config"))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run([str(bin_dir / "jupyter-book"), "build", str(root), "--config", str(config),
                             "--warningiserror", "--nitpick", "--keep-going"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "Executing notebook" in result.stdout + result.stderr, "the chapters should have been executed"
    html = build / "html"
    assert (html / "index.html").exists()
    return html


def test_book_builds_with_figures_and_exercises(book):
    for chapter in CHAPTERS:
        page = book / "book" / f"{chapter.assignment}.html"
        assert page.exists(), f"{page.name} is missing: every chapter has a prose page book/{chapter.assignment}.md"
        text = page.read_text(encoding="utf-8")
        figures = re.findall(r'<img[^>]+src="([^"]+\.png)"', text)
        assert len(figures) >= 2, f"chapter {chapter.number} should show at least two executed figures"
        assert all((page.parent / src).resolve().exists() for src in figures)
        assert f"exercises/{chapter.assignment}/{chapter.notebook}.html" in text, "the chapter points to its exercises"
        exercise = (book / "exercises" / chapter.assignment / f"{chapter.notebook}.html").read_text(encoding="utf-8")
        assert "YOUR CODE HERE" in exercise and "Exercise 1" in exercise


def test_math_is_served_from_the_book(book):
    """MathJax is a file of the book, not a CDN script: the equations render offline."""
    page = (book / "book" / f"{CHAPTERS[0].assignment}.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*\bsrc="([^"?]*mathjax[^"?]*)', page, flags=re.IGNORECASE)
    assert scripts == ["../_static/mathjax/tex-chtml.js"], f"MathJax scripts on the page: {scripts}"
    assert (book / "_static" / "mathjax" / "tex-chtml.js").is_file()


# --- the browser ----------------------------------------------------------------------------

def _find_chromium() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when either is missing."""
    browsers = [os.environ.get("LLMCOURSE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                "/Applications/Chromium.app/Contents/MacOS/Chromium",
                "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"]
    drivers = [os.environ.get("LLMCOURSE_CHROMEDRIVER"), shutil.which("chromedriver")]
    browser = next((path for path in browsers if path and Path(path).is_file()), None)
    driver = next((path for path in drivers if path and Path(path).is_file()), None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through its own chromedriver; nothing is downloaded, nothing leaves the machine."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
    found = _find_chromium()
    if found is None:
        pytest.skip(INSTALL_CHROMIUM)
    browser_path, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 # Every host name fails to resolve: a page that needs the network shows it.
                 "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which downloads drivers) is never started.
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


# Runs in the page once it has loaded: waits for MathJax and the images, then reports what a
# reader would see. Text inside code, and MathJax's own output, is not prose.
INSPECT_PAGE = r"""
const done = arguments[arguments.length - 1];
async function inspect() {
  if (document.readyState !== "complete") {
    await new Promise((resolve) => window.addEventListener("load", resolve, {once: true}));
  }
  const startup = window.MathJax && window.MathJax.startup;
  if (startup && startup.promise) await startup.promise;
  await Promise.all([...document.images].map((img) => img.decode().catch(() => null)));
  const notProse = "pre, code, script, style, textarea, mjx-container, .highlight";
  const rawTex = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(notProse) || parent.getClientRects().length === 0) continue;
    const match = node.textContent.match(/.{0,30}(\\\(|\\\[|\$\$).{0,30}/s);
    if (match) rawTex.push(match[0].replace(/\s+/g, " "));
  }
  const math = [...document.querySelectorAll(".math")];
  const article = document.querySelector("article") || document.body;
  const loaded = document.querySelectorAll("script[src], link[href], img[src], iframe[src], source[src]");
  return {
    mathNodes: math.length,
    untypeset: math.filter((m) => !m.querySelector("mjx-container"))
      .map((m) => m.textContent.replace(/\s+/g, " ").trim().slice(0, 60)),
    typeset: document.querySelectorAll("mjx-container").length,
    texErrors: [...document.querySelectorAll("mjx-merror")]
      .map((e) => e.getAttribute("data-mjx-error") || e.textContent.replace(/\s+/g, " ").slice(0, 60)),
    rawTex: rawTex,
    brokenImages: [...document.images].filter((img) => !(img.complete && img.naturalWidth > 0))
      .map((img) => img.getAttribute("src")),
    links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
    articleLinks: [...article.querySelectorAll("a[href]")].map((a) => a.href),
    resources: [...loaded].filter((e) => e.tagName !== "LINK" || /stylesheet|icon|preload/.test(e.rel))
      .map((e) => e.src || e.href),
    height: Math.ceil(document.documentElement.scrollHeight),
  };
}
inspect().then(done, (error) => done({error: String(error)}));
"""

# A page that only sends the reader on: <meta http-equiv="refresh" content="0; url=...">.
REDIRECT = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.IGNORECASE)


class _Ids(HTMLParser):
    """Every id (and old-style <a name>) in an HTML file: the anchors a link may point to."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value and (key == "id" or (tag == "a" and key == "name")):
                self.ids.add(value)


class _Anchors:
    def __init__(self):
        self._ids: dict[Path, set[str]] = {}

    def __call__(self, page: Path) -> set[str]:
        if page not in self._ids:
            parser = _Ids()
            parser.feed(page.read_text(encoding="utf-8", errors="replace"))
            self._ids[page] = parser.ids
        return self._ids[page]


def _local_path(url: str) -> Path:
    return Path(url2pathname(unquote(urlsplit(url).path)))


def _link_problems(links: list[str], html: Path, anchors: _Anchors) -> list[str]:
    """Local links whose file or #anchor does not exist; links that leave the book."""
    problems = []
    for url in sorted(set(links)):
        parts = urlsplit(url)
        if parts.scheme != "file":
            continue  # the web (not checked offline), mailto:, javascript:
        target = _local_path(url)
        if not target.is_relative_to(html):
            problems.append(f"link outside the book: {target}")
        elif not target.is_file():
            problems.append(f"link to a missing page: {target.relative_to(html)}")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in anchors(target):
            problems.append(f"link to a missing anchor: {target.relative_to(html)}#{parts.fragment}")
    return problems


def _listed(what: str, items: list[str], shown: int = 3) -> list[str]:
    """One line per item, the first few of a long list and how many more."""
    lines = [f"{what}: {item}" for item in items[:shown]]
    if len(items) > shown:
        lines.append(f"{what}: ... and {len(items) - shown} more")
    return lines


def _page_problems(report: dict, console: list[dict], html: Path, anchors: _Anchors) -> list[str]:
    if "error" in report:
        return [f"could not inspect the page: {report['error']}"]
    problems = []
    if report["mathNodes"] and not report["typeset"]:
        problems.append(f"{report['mathNodes']} math elements and no MathJax output")
    problems += _listed("raw TeX in the text", report["rawTex"])
    problems += _listed("math not typeset", report["untypeset"])
    problems += _listed("TeX error", report["texErrors"])
    problems += _listed("image did not load", report["brokenImages"], shown=10)
    problems += _link_problems(report["links"], html, anchors)
    problems += [f"loads a file from outside the book: {url}" for url in report["resources"]
                 if urlsplit(url).scheme not in ("file", "data", "blob")]
    problems += [f"console error: {entry['message']}" for entry in console if entry["level"] == "SEVERE"]
    return problems


def _screenshot(driver, height: int, path: Path) -> None:
    """The whole page as PNG: the window is made as tall as the page for the shot."""
    height = min(max(height, WINDOW[1]), MAX_SCREENSHOT_HEIGHT)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WINDOW[0], "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def _pages(html: Path) -> list[Path]:
    """Every HTML page of the book (not the theme's and MathJax's own files)."""
    return sorted(page for page in html.rglob("*.html")
                  if not page.relative_to(html).parts[0].startswith("_"))


def _follow_redirect(driver, page: Path, target: str) -> list[str]:
    """A page that only redirects: the browser must land on an existing page of the book."""
    expected = (page.parent / target).resolve()
    if not expected.is_file():
        return [f"redirects to a missing page: {target}"]
    driver.get(page.as_uri())
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while (_local_path(driver.current_url) != expected
           or driver.execute_script("return document.readyState") != "complete"):
        if time.monotonic() > deadline:
            return [f"did not redirect to {target} (stayed at {driver.current_url})"]
        time.sleep(0.1)
    return []


def _has_chinese_font() -> bool:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return False
    found = subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True)
    return bool(found.stdout.strip())


def test_every_page_in_a_browser(browser, book):
    """Math typeset, images loaded, local links and anchors resolve, no console errors."""
    screenshots = book.parent / "screenshots"
    if not _has_chinese_font():
        warnings.warn("no font with Chinese glyphs (fc-list :lang=zh is empty): the glossary's screenshot shows "
                      "boxes for its 中文 column; install one, e.g. `apt-get install fonts-noto-cjk`", stacklevel=1)
    anchors = _Anchors()
    problems: dict[str, list[str]] = {}
    article_links: dict[str, set[Path]] = {}
    pages = _pages(book)
    for page in pages:
        name = page.relative_to(book).as_posix()
        browser.get_log("browser")  # forget what earlier pages logged late
        if redirect := REDIRECT.search(page.read_text(encoding="utf-8")):
            found = _follow_redirect(browser, page, redirect.group(1))
        else:
            browser.get(page.as_uri())
            report = browser.execute_async_script(INSPECT_PAGE)
            found = _page_problems(report, browser.get_log("browser"), book, anchors)
            article_links[name] = {_local_path(url).resolve() for url in report.get("articleLinks", [])
                                   if urlsplit(url).scheme == "file"}
            _screenshot(browser, report.get("height", 0), screenshots / name.replace(".html", ".png"))
        if found:
            problems[name] = found

    for chapter in CHAPTERS:
        name = f"book/{chapter.assignment}.html"
        assert name in article_links, f"no page {name} for chapter {chapter.number}"
        exercise = book / "exercises" / chapter.assignment / f"{chapter.notebook}.html"
        if exercise.resolve() not in article_links[name]:
            problems.setdefault(name, []).append(
                f"the chapter's text does not link its exercises ({exercise.relative_to(book)})")
    summary = "\n".join(f"{page}:\n  " + "\n  ".join(found) for page, found in problems.items())
    assert not problems, f"{len(problems)} of {len(pages)} pages have problems:\n{summary}"

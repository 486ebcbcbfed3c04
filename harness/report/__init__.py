"""Reports: the terminal table (table.py) and HTML pages (`harness report`).

command.py (arguments, body) -> inputs.py (which result files) -> view.py (what a page shows,
from raw samples; speedup.py for intervals, compare.py for comparisons, timeline.py for
history) -> plots.py (matplotlib PNGs) + html.py (jinja2, templates/) -> pages.py (writes
reports/<device>/<name>/). browser.py screenshots a page with headless Chromium.
"""

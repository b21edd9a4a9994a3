"""`l2bt view`: one self-contained HTML page to browse a maps folder or a benchmark.

`gallery.py` finds the sections and reads their maps into thumbnails, `page.py` renders the
page; its style sheet and script are package data (`assets/page.css`, `assets/page.js`).
"""

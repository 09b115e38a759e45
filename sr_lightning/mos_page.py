"""The rater's page of a blind MOS study (`python -m sr_lightning mos prepare`), as one self-contained file.

A Python module rather than an .html data file so that it ships with the package without package-data
configuration. `render(data)` puts the study (crops as base64 data URIs, opaque keys, no method names) into
the page; everything else is static HTML/CSS/JS with no network access: the page works from file://.

Behaviour of the page:
* every rater gets their own random order of items and of the crops inside an item (Math.random, kept in
  localStorage with the scores, so a reload keeps both);
* each crop is scored 1-5 (ITU-T P.800 absolute category rating: bad, poor, fair, good, excellent);
* "Download JSON" / "Download CSV" save the scores given so far (key, score, item, position on screen, rater
  name); `mos score` un-blinds them with the key file that stays next to the page, never inside it.
"""
from __future__ import annotations

import html
import json
import re

__all__ = ["render", "json_for_script"]

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
  :root { --zoom: 2; --crop: 128px; }
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 1em; background: #f4f4f4; color: #222; }
  header { position: sticky; top: 0; background: #f4f4f4; padding: .5em 0; border-bottom: 1px solid #ccc; z-index: 1; }
  header h1 { font-size: 1.3em; margin: 0 0 .3em 0; }
  .controls { display: flex; flex-wrap: wrap; gap: 1em; align-items: center; }
  .item { background: #fff; margin: 1em 0; padding: .8em; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
  .item h2 { font-size: 1em; margin: 0 0 .5em 0; }
  .item.done h2::after { content: " \2713"; color: #2a2; }
  .crops { display: flex; flex-wrap: wrap; gap: 1em; }
  .crop { text-align: center; }
  .crop img { width: calc(var(--crop) * var(--zoom)); height: auto; image-rendering: pixelated; display: block;
              border: 1px solid #999; }
  .crop .label { font-weight: bold; margin: .2em 0; }
  .scores { display: flex; justify-content: center; gap: .15em; margin-top: .3em; }
  .scores label { display: flex; flex-direction: column; align-items: center; font-size: .8em; cursor: pointer;
                  padding: .1em .3em; border-radius: 4px; }
  .scores label:has(input:checked) { background: #cde; }
  #notice { color: #a40; }
  .scale { font-size: .85em; color: #555; }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <p class="scale">Rate every image from 1 to 5 by how good it looks: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent.
  The images of one row show the same place cut from different versions of a picture, in a random order.
  Your scores are kept in this browser until you download them.</p>
  <div class="controls">
    <label>Your name <input id="rater" type="text" autocomplete="off" placeholder="rater name"></label>
    <label>Zoom <select id="zoom"><option>1</option><option selected>2</option><option>3</option><option>4</option></select></label>
    <span id="progress"></span>
    <button id="export-json" type="button">Download JSON</button>
    <button id="export-csv" type="button">Download CSV</button>
    <span id="notice"></span>
  </div>
</header>
<main id="items"></main>
<script id="study-data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("study-data").textContent);
  const STORE = "sr-lightning-mos:" + DATA.study;
  const WORDS = ["bad", "poor", "fair", "good", "excellent"];
  const TOTAL = DATA.items.reduce((n, it) => n + it.crops.length, 0);

  function shuffled(n) {
    const a = Array.from({length: n}, (_, i) => i);
    for (let i = n - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [a[i], a[j]] = [a[j], a[i]]; }
    return a;
  }
  function load() {
    try { return JSON.parse(localStorage.getItem(STORE) || "null"); } catch (e) { return null; }
  }
  let state = load();
  if (!state || !Array.isArray(state.order) || state.order.length !== DATA.items.length) {
    state = {rater: "", scores: {}, order: shuffled(DATA.items.length).map(
      i => ({item: i, crops: shuffled(DATA.items[i].crops.length)}))};
  }
  function save() {
    try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* private mode: keep in memory */ }
  }
  save();

  const main = document.getElementById("items");
  state.order.forEach((entry, row) => {
    const item = DATA.items[entry.item];
    const section = document.createElement("section");
    section.className = "item";
    section.dataset.item = item.id;
    const title = document.createElement("h2");
    title.textContent = "Image " + (row + 1) + " of " + DATA.items.length;
    section.appendChild(title);
    const crops = document.createElement("div");
    crops.className = "crops";
    entry.crops.forEach((c, position) => {
      const crop = item.crops[c];
      const box = document.createElement("div");
      box.className = "crop";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = String.fromCharCode(65 + position);
      const img = document.createElement("img");
      img.src = crop.src;
      img.alt = "version " + label.textContent;
      const scores = document.createElement("div");
      scores.className = "scores";
      for (let s = 1; s <= 5; s++) {
        const opt = document.createElement("label");
        opt.title = WORDS[s - 1];
        const input = document.createElement("input");
        input.type = "radio";
        input.name = crop.key;
        input.value = String(s);
        input.dataset.key = crop.key;
        if (state.scores[crop.key] && state.scores[crop.key].score === s) input.checked = true;
        input.addEventListener("change", () => {
          state.scores[crop.key] = {item: item.id, score: s, position: position, row: row, time: Date.now()};
          save();
          refresh();
        });
        opt.appendChild(input);
        opt.appendChild(document.createTextNode(String(s)));
        scores.appendChild(opt);
      }
      box.append(label, img, scores);
      crops.appendChild(box);
    });
    section.appendChild(crops);
    main.appendChild(section);
  });

  const rater = document.getElementById("rater");
  rater.value = state.rater || "";
  rater.addEventListener("input", () => { state.rater = rater.value.trim(); save(); });
  const zoom = document.getElementById("zoom");
  document.documentElement.style.setProperty("--crop", DATA.crop + "px");
  zoom.value = String(DATA.zoom);
  document.documentElement.style.setProperty("--zoom", zoom.value);
  zoom.addEventListener("change", () => document.documentElement.style.setProperty("--zoom", zoom.value));

  function scored() { return Object.keys(state.scores).length; }
  function refresh() {
    document.getElementById("progress").textContent = scored() + " / " + TOTAL + " rated";
    document.querySelectorAll("section.item").forEach(sec => {
      const keys = Array.from(sec.querySelectorAll("input[value='1']")).map(i => i.dataset.key);
      sec.classList.toggle("done", keys.every(k => state.scores[k]));
    });
  }
  refresh();

  function rows() {
    return Object.entries(state.scores).map(([key, v]) => ({key: key, item: v.item, score: v.score,
      position: v.position, row: v.row}));
  }
  function safeName() { return (state.rater || "anonymous").replace(/[^A-Za-z0-9_-]+/g, "_"); }
  function download(text, type, ext) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], {type: type}));
    a.download = "mos_" + DATA.study + "_" + safeName() + "." + ext;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    const missing = TOTAL - scored();
    document.getElementById("notice").textContent = missing ?
      "Saved " + scored() + " scores; " + missing + " images are not rated yet." : "Saved all " + TOTAL + " scores.";
  }
  function exportJson() {
    return JSON.stringify({study: DATA.study, page: DATA.page, rater: state.rater || "anonymous",
      exported: new Date().toISOString(), complete: scored() === TOTAL, total: TOTAL, scores: rows()}, null, 1);
  }
  function csvField(v) { const s = String(v); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
  function exportCsv() {
    const lines = ["study,rater,item,key,score,position"];
    rows().forEach(r => lines.push([DATA.study, state.rater || "anonymous", r.item, r.key, r.score, r.position]
      .map(csvField).join(",")));
    return lines.join("\n") + "\n";
  }
  document.getElementById("export-json").addEventListener("click", () => download(exportJson(), "application/json", "json"));
  document.getElementById("export-csv").addEventListener("click", () => download(exportCsv(), "text/csv", "csv"));
  window.mosStudy = {ready: true, total: TOTAL, exportJson: exportJson, exportCsv: exportCsv};
})();
</script>
</body>
</html>
"""


# JSON inside <script>: not only "</script" ends the element early, "<!--" (as in an image named
# "<!--<script>.png") switches the HTML parser into a mode where the real "</script>" no longer closes it, and
# the page stays empty. So no "<", ">" or "&" may appear raw: JSON's \u escapes spell the same characters to
# JSON.parse (the usual JSON-in-HTML encoding). U+2028/2029 are escaped too (line terminators to older JS).
_JSON_IN_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_PLACEHOLDER = re.compile(r"__(TITLE|DATA)__")


def json_for_script(data) -> str:
    """``data`` as JSON that is safe verbatim inside a <script> element (no raw <, >, &)."""
    text = json.dumps(data, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_IN_HTML[m.group(0)], text)


def render(data: dict) -> str:
    """The page for ``data`` = {study, page, title, crop, zoom, items: [{id, crops: [{key, src}]}]}.

    Names reach the page only as HTML-escaped text (the title) or inside the script-safe JSON; the page's
    script puts them into the document with textContent, never as HTML.
    """
    values = {"TITLE": html.escape(str(data.get("title", "Image quality study"))), "DATA": json_for_script(data)}
    # One pass over the template: a title containing "__DATA__" must stay text, not receive the payload.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _TEMPLATE)

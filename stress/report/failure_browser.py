"""The report's interactive failure browser: every confident failure as a thumbnail, filters, and a detail view.

Built from the run folder's files alone (eval/browser.npz from the browser stage, predictions.npz,
characteristics.npz, labels.npz): the thumbnails are one JPEG sprite sheet, the Grad-CAM maps
small uint8 arrays, both embedded in report.html with the data as JSON. Vanilla JavaScript draws
the detail view (the image large, each model's Grad-CAM for its predicted and for the true class
as an overlay, each model's top-3 probabilities, the image's characteristics). No network, no CDN.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np

from stress.artifacts import RunFolder
from stress.report.blocks import Paragraph, Section, Widget

SPRITE_COLUMNS = 64
SPRITE_QUALITY = 90
TOP_K = 3


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def sprite_sheet(images: np.ndarray, columns: int = SPRITE_COLUMNS) -> bytes:
    """(N, C, H, W) uint8 images -> one JPEG, image k at column k % columns, row k // columns."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = max(1, -(-n // columns))
    sheet = np.zeros((rows * h, min(n, columns) * w if n else w, 3), dtype=np.uint8)
    pixels = images.transpose(0, 2, 3, 1)
    if c == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    for k in range(n):
        r, col = divmod(k, columns)
        sheet[r * h:(r + 1) * h, col * w:(col + 1) * w] = pixels[k]
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="JPEG", quality=SPRITE_QUALITY, subsampling=0)
    return buffer.getvalue()


def browser_data(run: RunFolder, class_names: list[str], names: tuple[str, ...]) -> dict | None:
    """The JSON the page's script reads, or None when the run has no eval/browser.npz."""
    path = run.path("eval", "browser.npz")
    if not path.is_file():
        return None
    with np.load(path) as b:
        arrays = {k: b[k] for k in b.files}
    indices = arrays["indices"]
    position = {int(i): k for k, i in enumerate(indices)}
    with np.load(run.path("eval", "predictions.npz")) as p:
        probs = {v: _softmax(p[f"{v}_logits"][indices].astype(np.float64)) for v in names}
    characteristics = {}
    if run.path("eval", "characteristics.npz").is_file():
        with np.load(run.path("eval", "characteristics.npz")) as c:
            characteristics = {k: np.round(c[k][indices].astype(float), 3).tolist() for k in c.files}
    suspect = None
    if run.path("eval", "labels.npz").is_file():
        with np.load(run.path("eval", "labels.npz")) as lab:
            if "suspect" in lab.files:
                suspect = lab["suspect"][indices].astype(bool).astype(int).tolist()
    top = {}
    for v in names:
        order = np.argsort(-probs[v], axis=1, kind="stable")[:, :TOP_K]
        top[v] = [[[int(c), round(float(probs[v][k, c]), 4)] for c in order[k]] for k in range(len(indices))]
    maps = {f"{v}|{kind}": base64.b64encode(np.ascontiguousarray(arrays[f"maps_{v}_{kind}"]).tobytes()).decode("ascii")
            for v in names for kind in ("predicted", "true") if f"maps_{v}_{kind}" in arrays}
    some_map = next((arrays[f"maps_{v}_predicted"] for v in names if f"maps_{v}_predicted" in arrays), None)
    return {
        "classes": list(class_names), "models": list(names),
        "index": indices.astype(int).tolist(), "label": arrays["labels"].astype(int).tolist(),
        "top": top, "suspect": suspect, "characteristics": characteristics,
        # Each model's confident failures, most confident first, as positions in the sprite.
        "failures": {v: [position[int(i)] for i in arrays[f"{v}_failures"]] for v in names},
        "wrongInAll": [int(all(top[v][k][0][0] != arrays["labels"][k] for v in names)) for k in range(len(indices))],
        "maps": maps, "mapSize": list(some_map.shape[1:]) if some_map is not None else [0, 0],
        "image": list(arrays["images"].shape[2:]), "columns": SPRITE_COLUMNS,
    }


def failure_browser(run: RunFolder, summary: dict, config: dict) -> Section | None:
    """The "Browse the failures" section, or None when the run has no browser data."""
    from stress.report.statements import models_of

    names = models_of(summary)
    class_names = list(config.get("data", {}).get("class_names") or [str(c) for c in range(10)])
    data = browser_data(run, class_names, names)
    if data is None:
        return None
    total = sum(len(v) for v in data["failures"].values())
    if total == 0:
        return Section("browser", "Browse the failures", (Paragraph(
            "No model under test has a confident failure (a wrong prediction with confidence ≥ 0.9): nothing to browse."),))
    with np.load(run.path("eval", "browser.npz")) as b:
        sprite = base64.b64encode(sprite_sheet(b["images"])).decode("ascii")
    counts = ", ".join(f"{v} {len(data['failures'][v])}" for v in names)
    cap = config.get("stress", {}).get("browser_images")
    capped = f"; at most {cap} per model (--browser-images)" if cap else ""
    intro = Paragraph(
        f"Every confident failure (confidence ≥ 0.9) of every model, most confident first ({counts}{capped}). Filter them, "
        "then click a thumbnail: the image large, each model's Grad-CAM for the class it predicted and for the true "
        "class, each model's top-3 probabilities and the image's characteristics.")
    widget = Widget(html=_widget_html(data, sprite), markdown=f"The interactive failure browser ({total} thumbnails) is in report.html.")
    return Section("browser", "Browse the failures", (intro, widget))


BROWSER_CSS = """
#fb .fb-filters{display:flex;flex-wrap:wrap;gap:.4rem .8rem;align-items:center;margin:.5rem 0;font-size:.9rem}
#fb .fb-filters label{white-space:nowrap}
#fb .fb-filters input[type=number]{width:4.5rem}
#fb .fb-grid{display:flex;flex-wrap:wrap;gap:3px;max-height:420px;overflow-y:auto;border:1px solid #ddd;padding:3px}
#fb .fb-t{width:48px;height:48px;border:2px solid transparent;cursor:pointer;background-repeat:no-repeat;image-rendering:pixelated;padding:0}
#fb .fb-t:focus,#fb .fb-t.fb-on{border-color:#d33}
#fb .fb-t.fb-sus{outline:2px solid #e08000;outline-offset:-4px}
#fb .fb-detail{display:flex;flex-wrap:wrap;gap:1rem;margin-top:.8rem}
#fb canvas{image-rendering:pixelated;border:1px solid #ccc;display:block;max-width:100%}
#fb .fb-model{font-size:.85rem}
#fb .fb-cams{display:flex;gap:.4rem}
#fb .fb-cams figure{margin:0}
#fb table{font-size:.8rem}
@media print{#fb .fb-filters,#fb .fb-grid,#fb .fb-more{display:none}}
"""

BROWSER_JS = r"""
(function () {
  const root = document.getElementById('fb');
  const D = JSON.parse(document.getElementById('fb-data').textContent);
  const $ = (sel) => root.querySelector(sel);
  const CELL = 48, PAGE = 240;
  const [H, W] = D.image;
  const sprite = new Image();
  sprite.src = getComputedStyle($('.fb-probe')).backgroundImage.slice(5, -2);
  const maps = {};
  for (const key in D.maps) {
    const raw = atob(D.maps[key]); const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    maps[key] = bytes;
  }
  const entries = [];
  D.models.forEach((m, mi) => D.failures[m].forEach((k) => entries.push({k: k, m: m, conf: D.top[m][k][0][1]})));
  function options(select, items) {
    items.forEach(([value, text]) => { const o = document.createElement('option'); o.value = value; o.textContent = text; select.appendChild(o); });
  }
  const classItems = D.classes.map((c, i) => [String(i), c]);
  options($('#fb-true'), [['', 'any'], ...classItems]);
  options($('#fb-pred'), [['', 'any'], ...classItems]);
  options($('#fb-model'), [['', 'any'], ...D.models.map((m) => [m, m])]);
  if (!D.suspect) $('#fb-suspect-wrap').hidden = true;
  let shown = [], limit = PAGE;
  function matches(e) {
    const t = $('#fb-true').value, p = $('#fb-pred').value, m = $('#fb-model').value;
    const lo = parseFloat($('#fb-min').value), hi = parseFloat($('#fb-max').value);
    if (t !== '' && D.label[e.k] !== +t) return false;
    if (p !== '' && D.top[e.m][e.k][0][0] !== +p) return false;
    if (m !== '' && e.m !== m) return false;
    if (!isNaN(lo) && e.conf < lo) return false;
    if (!isNaN(hi) && e.conf > hi) return false;
    if ($('#fb-both').checked && !D.wrongInAll[e.k]) return false;
    if ($('#fb-suspect').checked && !(D.suspect && D.suspect[e.k])) return false;
    return true;
  }
  function thumb(e) {
    const b = document.createElement('button');
    const col = e.k % D.columns, row = Math.floor(e.k / D.columns);
    b.className = 'fb-t' + (D.suspect && D.suspect[e.k] ? ' fb-sus' : '');
    b.style.backgroundPosition = (-col * CELL) + 'px ' + (-row * CELL) + 'px';
    b.style.backgroundSize = (D.columns * CELL) + 'px auto';
    b.dataset.index = D.index[e.k]; b.dataset.model = e.m;
    b.title = `#${D.index[e.k]} ${e.m}: ${D.classes[D.label[e.k]]} → ${D.classes[D.top[e.m][e.k][0][0]]} (${e.conf.toFixed(3)})`;
    b.setAttribute('aria-label', b.title);
    b.addEventListener('click', () => { root.querySelectorAll('.fb-on').forEach((x) => x.classList.remove('fb-on')); b.classList.add('fb-on'); detail(e); });
    return b;
  }
  function render() {
    shown = entries.filter(matches);
    const grid = $('.fb-grid'); grid.textContent = '';
    shown.slice(0, limit).forEach((e) => grid.appendChild(thumb(e)));
    $('#fb-count').textContent = `${shown.length} of ${entries.length} failures` + (shown.length > limit ? `, first ${limit} shown` : '');
    $('.fb-more').hidden = shown.length <= limit;
  }
  function jet(v) {  // 0..1 -> [r, g, b], the classic jet colour map
    const f = (x) => Math.max(0, Math.min(1, 1.5 - Math.abs(4 * v - x)));
    return [f(3) * 255, f(2) * 255, f(1) * 255];
  }
  function drawImage(canvas, k) {
    const ctx = canvas.getContext('2d'); ctx.imageSmoothingEnabled = false;
    const col = k % D.columns, row = Math.floor(k / D.columns);
    ctx.drawImage(sprite, col * W, row * H, W, H, 0, 0, canvas.width, canvas.height);
  }
  function drawCam(canvas, k, key) {
    drawImage(canvas, k);
    const [h, w] = D.mapSize, bytes = maps[key];
    if (!bytes) return;
    const small = document.createElement('canvas'); small.width = w; small.height = h;
    const img = small.getContext('2d').createImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      const v = bytes[k * h * w + i] / 255, [r, g, b] = jet(v);
      img.data.set([r, g, b, 150], 4 * i);
    }
    small.getContext('2d').putImageData(img, 0, 0);
    const ctx = canvas.getContext('2d'); ctx.imageSmoothingEnabled = true;
    ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  }
  function text(tag, content) { const e = document.createElement(tag); e.textContent = content; return e; }
  function detail(e) {
    const k = e.k, out = $('.fb-detail'); out.textContent = '';
    const left = document.createElement('div');
    const big = document.createElement('canvas'); big.width = big.height = 192; big.className = 'fb-big';
    left.appendChild(big);
    const caption = text('p', `test image #${D.index[k]} · true: ${D.classes[D.label[k]]}` + (D.suspect && D.suspect[k] ? ' · label suspect' : ''));
    caption.className = 'fb-caption'; left.appendChild(caption);
    const rows = Object.entries(D.characteristics).map(([name, values]) => `<tr><td>${name}</td><td>${values[k]}</td></tr>`).join('');
    if (rows) { const t = document.createElement('table'); t.innerHTML = '<tr><th>characteristic</th><th>value</th></tr>' + rows; left.appendChild(t); }
    out.appendChild(left);
    D.models.forEach((m) => {
      const box = document.createElement('div'); box.className = 'fb-model'; box.dataset.model = m;
      const [pred, conf] = D.top[m][k][0];
      box.appendChild(text('strong', `${m}: predicts ${D.classes[pred]} (${conf.toFixed(3)})` + (pred === D.label[k] ? ' ✓' : ' ✗')));
      const cams = document.createElement('div'); cams.className = 'fb-cams';
      [['predicted', `Grad-CAM: ${D.classes[pred]} (predicted)`], ['true', `Grad-CAM: ${D.classes[D.label[k]]} (true)`]].forEach(([kind, label]) => {
        const f = document.createElement('figure'); const c = document.createElement('canvas'); c.width = c.height = 128;
        c.className = 'fb-cam-' + kind; f.appendChild(c); f.appendChild(text('figcaption', label)); cams.appendChild(f);
        drawCam(c, k, m + '|' + kind);
      });
      box.appendChild(cams);
      const t = document.createElement('table'); t.className = 'fb-top';
      t.innerHTML = '<tr><th>top-3 class</th><th>probability</th></tr>' +
        D.top[m][k].map(([c, p]) => `<tr><td>${D.classes[c]}</td><td>${p.toFixed(3)}</td></tr>`).join('');
      box.appendChild(t); out.appendChild(box);
    });
    drawImage(big, k);
    out.dataset.index = D.index[k];
  }
  root.querySelectorAll('.fb-filters select, .fb-filters input').forEach((el) => el.addEventListener('input', () => { limit = PAGE; render(); }));
  $('.fb-more').addEventListener('click', () => { limit += PAGE; render(); });
  const start = () => { render(); root.dataset.ready = '1'; };
  if (sprite.complete && sprite.naturalWidth) start(); else { sprite.onload = start; sprite.onerror = () => { root.dataset.ready = 'error'; console.error('failure browser: sprite did not decode'); }; }
})();
"""


def _widget_html(data: dict, sprite_base64: str) -> str:
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    sprite_rule = f"#fb .fb-t,#fb .fb-probe{{background-image:url(data:image/jpeg;base64,{sprite_base64})}}"
    return (f"<style>{BROWSER_CSS}{sprite_rule}</style>"
            '<div id="fb"><span class="fb-probe" hidden></span>'
            '<div class="fb-filters">'
            '<label>true <select id="fb-true"></select></label>'
            '<label>predicted <select id="fb-pred"></select></label>'
            '<label>model <select id="fb-model"></select></label>'
            '<label>confidence <input id="fb-min" type="number" min="0.9" max="1" step="0.01" placeholder="0.90"> to '
            '<input id="fb-max" type="number" min="0.9" max="1" step="0.01" placeholder="1.00"></label>'
            '<label><input id="fb-both" type="checkbox"> wrong in every model</label>'
            '<label id="fb-suspect-wrap"><input id="fb-suspect" type="checkbox"> label suspect</label>'
            '<span id="fb-count"></span></div>'
            '<div class="fb-grid" role="list"></div><button class="fb-more" type="button" hidden>show more</button>'
            '<div class="fb-detail" aria-live="polite"><p>Click a thumbnail.</p></div></div>'
            f'<script type="application/json" id="fb-data">{payload}</script>'
            f"<script>{BROWSER_JS}</script>")

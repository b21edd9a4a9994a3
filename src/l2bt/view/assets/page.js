// The script of the `l2bt view` page, inlined into every page (l2bt/view/page.py).
// It draws everything from the JSON block #l2bt-data: per section a grid of tiles
// (figure.tile, with data-key and data-score) in the order given, a line where the
// scores cross the image threshold, and for the selected tile a detail panel (the source
// image, the overlay with the regions' boxes, the colour bar, the score against the
// threshold, the regions table). Arrow keys move the selection; the filter box and the
// check box hide tiles; the address's #key selects that image. Nothing is fetched:
// pictures are data URIs or relative links.
"use strict";
const data = JSON.parse(document.getElementById("l2bt-data").textContent);
const SVG = "http://www.w3.org/2000/svg";
const tiles = [];
let selected = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}
function fmt(x) { return x === null ? "—" : Number(x).toPrecision(4); }
function badge(verdict) { return el("span", {class: "badge " + verdict}, verdict); }

function drawSection(section, s) {
  const box = el("section", {"data-title": section.title});
  const defective = section.entries.filter(e => e.verdict === "defective").length;
  const facts = el("p", {class: "facts"}, el("span", {}, section.entries.length + " images"));
  if (section.entries.some(e => e.verdict)) facts.append(el("span", {}, defective + " defective"));
  facts.append(el("span", {}, "image threshold " + fmt(section.image_threshold)));
  for (const [name, value] of section.facts) facts.append(el("span", {}, name + " " + value));
  const grid = el("div", {class: "grid"});
  let crossed = section.image_threshold === null;
  section.entries.forEach((entry, e) => {
    if (!crossed && !(entry.score > section.image_threshold)) {
      crossed = true;
      grid.append(el("div", {class: "cut"}, "image threshold " + fmt(section.image_threshold)));
    }
    const tile = el("figure", {class: "tile", tabindex: "0", "data-key": entry.key,
                               "data-score": String(entry.score), "data-section": String(s),
                               "data-entry": String(e)});
    if (entry.verdict) tile.setAttribute("data-verdict", entry.verdict);
    const caption = el("figcaption", {}, el("span", {class: "score"}, fmt(entry.score)));
    if (entry.verdict) caption.append(badge(entry.verdict));
    caption.append(el("span", {class: "key", title: entry.key}, entry.key));
    tile.append(el("img", {src: entry.thumb, alt: entry.key, loading: "lazy"}), caption);
    tile.addEventListener("click", () => select(tile));
    grid.append(tile);
    tiles.push(tile);
  });
  box.append(el("h2", {}, section.title), facts, grid);
  return box;
}

function framed(src, size, regions, small) {
  const frame = el("div", {class: small ? "frame small" : "frame"}, el("img", {src: src}));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + size[0] + " " + size[1]);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const [region, , x0, y0, x1, y1] of regions) {
    const rect = document.createElementNS(SVG, "rect");
    for (const [name, value] of [["x", x0], ["y", y0], ["width", x1 - x0], ["height", y1 - y0]])
      rect.setAttribute(name, value);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", x0);
    label.setAttribute("y", Math.max(y0 - 2, 10));
    label.textContent = region;
    svg.append(rect, label);
  }
  frame.append(svg);
  return frame;
}

function colourBar(section) {
  return el("div", {class: "colourbar", "data-low": String(section.low),
                    "data-high": String(section.high)},
            el("div", {class: "ramp", style: "background: linear-gradient(to right, " +
                       data.jet + ")"}),
            el("div", {class: "ends"}, el("span", {}, fmt(section.low)),
               el("span", {}, "map value"), el("span", {}, fmt(section.high))));
}

function showDetail(section, entry) {
  const panel = document.getElementById("detail");
  const line = el("p", {class: "facts"}, "score ",
                  el("b", {class: "score", "data-score": String(entry.score)}, fmt(entry.score)),
                  " · image threshold " + fmt(section.image_threshold) + " ");
  if (entry.verdict) line.append(badge(entry.verdict));
  const pictures = el("div", {class: "pictures"});
  if (entry.image)
    pictures.append(el("figure", {}, el("img", {src: entry.image}),
                       el("figcaption", {}, "image")));
  if (entry.overlay)
    pictures.append(el("figure", {}, framed(entry.overlay, entry.overlay_size, entry.regions),
                       el("figcaption", {}, "overlay (its colour bar drawn below it)")));
  else
    pictures.append(el("figure", {}, framed(entry.thumb, entry.size, entry.regions, true),
                       el("figcaption", {}, "map, thumbnail (no overlay file)")));
  panel.replaceChildren(el("h2", {}, entry.key), line, pictures);
  if (entry.drawn) panel.append(colourBar(section));
  if (section.pixel_threshold !== null)
    panel.append(el("p", {class: "facts"}, "pixel threshold " + fmt(section.pixel_threshold)));
  if (entry.regions.length) {
    const table = el("table", {}, el("tr", {}, ...["region", "area px", "x0", "y0", "x1", "y1",
                                                   "max", "mean"].map(h => el("th", {}, h))));
    for (const row of entry.regions)
      table.append(el("tr", {}, ...row.map((v, i) => el("td", {}, i < 6 ? String(v) : fmt(v)))));
    panel.append(table);
  } else if (entry.verdict) {
    panel.append(el("p", {class: "facts"}, "no predicted region"));
  }
  const links = el("p", {class: "links"});
  if (entry.overlay) links.append(el("a", {href: entry.overlay}, "overlay, full size"));
  if (entry.mask) links.append(el("a", {href: entry.mask}, "mask"));
  links.append(el("a", {href: entry.map}, "map (TIFF)"));
  panel.append(links);
}

function select(tile) {
  if (selected) selected.classList.remove("selected");
  selected = tile;
  tile.classList.add("selected");
  history.replaceState(null, "", "#" + encodeURIComponent(tile.dataset.key));
  const section = data.sections[Number(tile.dataset.section)];
  showDetail(section, section.entries[Number(tile.dataset.entry)]);
}

function move(step) {
  const shown = tiles.filter(t => !t.classList.contains("hidden"));
  if (!shown.length) return;
  const at = shown.indexOf(selected);
  const next = shown[Math.min(Math.max(at + step, 0), shown.length - 1)];
  select(next);
  next.scrollIntoView({block: "nearest"});
}

function applyFilter() {
  const text = document.getElementById("filter").value.toLowerCase();
  const defectiveOnly = document.getElementById("defective-only").checked;
  for (const tile of tiles) {
    const hide = !tile.dataset.key.toLowerCase().includes(text) ||
                 (defectiveOnly && tile.dataset.verdict !== "defective");
    tile.classList.toggle("hidden", hide);
  }
}

const sections = document.getElementById("sections");
data.sections.forEach((section, s) => sections.append(drawSection(section, s)));
document.getElementById("filter").addEventListener("input", applyFilter);
document.getElementById("defective-only").addEventListener("change", applyFilter);
document.addEventListener("keydown", event => {
  if (event.target.tagName === "INPUT") return;
  if (event.key === "ArrowRight" || event.key === "ArrowDown") { move(1); event.preventDefault(); }
  if (event.key === "ArrowLeft" || event.key === "ArrowUp") { move(-1); event.preventDefault(); }
});
const asked = decodeURIComponent(location.hash.slice(1));
const first = tiles.find(t => t.dataset.key === asked);
if (first) { select(first); first.scrollIntoView({block: "nearest"}); }
else if (tiles.length) select(tiles[0]);

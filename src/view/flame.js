// The flame graph's interactions: click a frame to zoom, Reset zoom, Search (also "/" or
// Ctrl-F; Esc clears), Icicle (root at the top), Callers (the reversed view). The state is
// kept in the address's fragment, so a view can be linked and scripts can open one:
//   profile.svg#search=REGEX&zoom=FUNCTION&icicle&callers
"use strict";
window.addEventListener("load", function () {
  var svg = document.documentElement;
  var num = function (name) { return Number(svg.getAttribute(name)); };
  var top = num("data-top"), frame = num("data-frame"), deepest = num("data-depth");
  var side = num("data-side"), width = num("width") - 2 * side;
  var charWidth = 7;
  var state = { view: "flame", icicle: false, zoom: null, search: "" };
  var views = { flame: load("flame"), callers: load("callers") };

  // Each view's frames, in document order: parents first, siblings left to right.
  function load(id) {
    var group = document.getElementById(id), nodes = [];
    for (var el = group.firstElementChild; el; el = el.nextElementSibling) {
      var lines = el.querySelector("title").textContent.split("\n");
      nodes.push({
        el: el, rect: el.querySelector("rect"), text: el.querySelector("text"),
        name: lines[0], note: lines[1] || "",
        x: Number(el.getAttribute("data-x")), w: Number(el.getAttribute("data-w")),
        d: Number(el.getAttribute("data-d"))
      });
    }
    nodes.forEach(function (node) {
      node.el.addEventListener("click", function () { zoom(node); });
      node.el.addEventListener("mouseover", function () { details(node.name + " (" + node.note + ")"); });
      node.el.addEventListener("mouseout", function () { details(" "); });
    });
    return { group: group, nodes: nodes };
  }

  function details(text) { document.getElementById("details").textContent = text; }

  function fit(name, px) {
    var room = Math.floor((px - 6) / charWidth);
    if (room < 3) return "";
    return name.length <= room ? name : name.slice(0, room - 2) + "..";
  }

  // Lays the current view out for the zoomed frame (or the root).
  function draw() {
    var view = views[state.view], nodes = view.nodes;
    var z = state.zoom || nodes[0];
    var scale = width / Math.max(z.w, 1);
    nodes.forEach(function (node) {
      var inside = node.d >= z.d && node.x >= z.x && node.x + node.w <= z.x + z.w;
      var above = node.d < z.d && node.x <= z.x && node.x + node.w >= z.x + z.w;
      var x = inside ? side + (node.x - z.x) * scale : side;
      var w = inside ? node.w * scale : width;
      var visible = (inside || above) && w >= 0.1;
      node.el.classList.toggle("hide", !visible);
      if (!visible) return;
      var y = state.icicle ? top + node.d * frame : top + (deepest - node.d) * frame;
      node.rect.setAttribute("x", x.toFixed(2));
      node.rect.setAttribute("width", w.toFixed(2));
      node.rect.setAttribute("y", y);
      node.text.setAttribute("x", (x + 3).toFixed(2));
      node.text.setAttribute("y", y + frame - 4.5);
      node.text.textContent = fit(node.name, w);
    });
    views.flame.group.style.display = state.view === "flame" ? "" : "none";
    views.callers.group.style.display = state.view === "callers" ? "" : "none";
    button("reset", state.zoom ? "" : "off");
    button("icicle", state.icicle ? "on" : "");
    button("invert", state.view === "callers" ? "on" : "");
    button("search", state.search ? "on" : "");
    highlight();
    remember();
  }

  function button(id, cls) {
    var el = document.getElementById(id);
    el.classList.remove("on", "off");
    if (cls) el.classList.add(cls);
  }

  // Marks the frames whose name matches the search and shows their share of all samples,
  // each sample counted once even where matching frames nest.
  function highlight() {
    var nodes = views[state.view].nodes, pattern = null, end = -1, matched = 0;
    if (state.search) {
      try { pattern = new RegExp(state.search); } catch (e) {
        pattern = new RegExp(state.search.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
      }
    }
    nodes.forEach(function (node, i) {
      var hit = pattern !== null && i > 0 && pattern.test(node.name);
      node.el.classList.toggle("match", hit);
      if (hit && node.x >= end) { matched += node.w; end = node.x + node.w; }
    });
    var share = nodes[0].w ? 100 * matched / nodes[0].w : 0;
    document.getElementById("matched").textContent =
      pattern ? "Matched: " + share.toFixed(2) + "%" : " ";
  }

  function zoom(node) {
    state.zoom = node && node !== views[state.view].nodes[0] ? node : null;
    draw();
  }

  function search(term) { state.search = term || ""; draw(); }

  function remember() {
    var parts = [];
    if (state.search) parts.push("search=" + encodeURIComponent(state.search));
    if (state.zoom) parts.push("zoom=" + encodeURIComponent(state.zoom.name));
    if (state.icicle) parts.push("icicle");
    if (state.view === "callers") parts.push("callers");
    try { history.replaceState(null, "", "#" + parts.join("&")); } catch (e) { /* file: */ }
  }

  // The widest frame called `name` in the current view.
  function widest(name) {
    var best = null;
    views[state.view].nodes.forEach(function (node) {
      if (node.name === name && (!best || node.w > best.w)) best = node;
    });
    return best;
  }

  function fromFragment() {
    var zoomTo = null;
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var eq = part.indexOf("="), key = eq < 0 ? part : part.slice(0, eq);
      var value = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1));
      if (key === "search") state.search = value;
      if (key === "zoom") zoomTo = value;
      if (key === "icicle") state.icicle = true;
      if (key === "callers") state.view = "callers";
    });
    state.zoom = zoomTo ? widest(zoomTo) : null;
  }

  document.getElementById("reset").addEventListener("click", function () { zoom(null); });
  document.getElementById("search").addEventListener("click", function () {
    search(state.search ? "" : window.prompt("Search (regular expression):", ""));
  });
  document.getElementById("icicle").addEventListener("click", function () {
    state.icicle = !state.icicle; draw();
  });
  document.getElementById("invert").addEventListener("click", function () {
    state.view = state.view === "flame" ? "callers" : "flame"; state.zoom = null; draw();
  });
  window.addEventListener("keydown", function (e) {
    if (e.key === "/" || (e.ctrlKey && e.key === "f")) {
      e.preventDefault(); search(window.prompt("Search (regular expression):", state.search));
    } else if (e.key === "Escape") {
      state.search = ""; zoom(null);
    }
  });
  fromFragment();
  draw();
});

// surgflow view: the page's whole logic, no dependencies (the page opens from disk, no network).
// Data: the JSON in <script id="surgflow-data"> (surgflow/evaluation/viewer/__init__.py, build_data).
// Every timeline is an SVG whose viewBox x unit is one frame, so all tracks share one time axis.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("surgflow-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var RUN_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];
  var COLOR_NAMES = ["red", "blue", "green", "purple", "brown", "pink"];
  var state = {video: null, frame: 0, sortKey: "name", sortDir: 1, errOrder: "time"};

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function sv(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmtTime(sec) {
    sec = Math.round(sec);
    var h = Math.floor(sec / 3600), m = Math.floor(sec / 60) % 60, s = sec % 60;
    return h + ":" + (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }
  function fmt(x, d) { return x === null || x === undefined ? "\u2013" : Number(x).toFixed(d); }
  function phaseName(id) { return id >= 0 ? D.phase_names[id] : "(no label)"; }
  function chip(id) {
    var c = el("span", {"class": "chip", text: phaseName(id)});
    if (id >= 0) c.style.background = D.phase_colors[id];
    return c;
  }
  function pad6(i) { var s = String(i); while (s.length < 6) s = "0" + s; return s; }

  // ------------------------------------------------------------------ overview
  function columns() {
    var cols = [{key: "name", label: "video", str: true}, {key: "n", label: "frames"},
                {key: "dur", label: "duration", fmtf: function (v) { return fmtTime(v); }}];
    D.runs.forEach(function (r, k) {
      var pre = D.runs.length > 1 ? String.fromCharCode(65 + k) + " " : "";
      r.summary.forEach(function (c, j) {  // every scored task's columns (TaskEvaluation.viewer_columns)
        cols.push({key: "m" + k + "_" + j, label: pre + c.label, d: c.digits, run: k});
      });
      cols.push({key: "weak" + k, label: pre + "weakest phase (F1 %)", weak: true, run: k});
    });
    return cols;
  }
  function rowValues(v) {
    var o = {name: v.name, n: v.n, dur: v.n / D.fps};
    v.runs.forEach(function (r, k) {
      r.metrics.forEach(function (x, j) { o["m" + k + "_" + j] = x; });
      o["weak" + k] = r.weakest ? r.weakest[1] : null;
      o["weakname" + k] = r.weakest ? r.weakest[0] : "";
    });
    return o;
  }
  function sortedVideos() {
    var rows = D.videos.map(function (v, i) { return {i: i, vals: rowValues(v)}; });
    var key = state.sortKey, dir = state.sortDir;
    rows.sort(function (a, b) {
      var x = a.vals[key], y = b.vals[key];
      if (x === null || x === undefined) return (y === null || y === undefined) ? a.i - b.i : 1;
      if (y === null || y === undefined) return -1;
      if (typeof x === "string") return dir * x.localeCompare(y) || a.i - b.i;
      return dir * (x - y) || a.i - b.i;
    });
    return rows;
  }
  function renderVideoTable(host) {
    var cols = columns();
    var table = el("table", {id: "videos", "class": "data"});
    var head = el("tr");
    cols.forEach(function (c) {
      var mark = state.sortKey === c.key ? (state.sortDir > 0 ? " \u25B2" : " \u25BC") : "";
      var th = el("th", {"data-key": c.key, "class": "sortable", title: "click to sort", text: c.label + mark});
      if (c.run !== undefined && D.runs.length > 1) th.style.borderTop = "3px solid " + RUN_COLORS[c.run % 6];
      th.addEventListener("click", function () {
        if (state.sortKey === c.key) state.sortDir = -state.sortDir;
        else { state.sortKey = c.key; state.sortDir = c.str ? 1 : -1; }
        renderVideoTable(host);
      });
      head.appendChild(th);
    });
    table.appendChild(el("thead", {}, [head]));
    var body = el("tbody");
    sortedVideos().forEach(function (row) {
      var v = D.videos[row.i];
      var tr = el("tr", {"class": "clickable", "data-video": v.name, title: "open " + v.name});
      cols.forEach(function (c) {
        var x = row.vals[c.key], txt;
        if (c.weak) txt = x === null ? "\u2013" : row.vals["weakname" + c.run] + " (" + fmt(x, 1) + ")";
        else if (c.fmtf) txt = c.fmtf(x);
        else if (c.d !== undefined) txt = fmt(x, c.d);
        else txt = String(x);
        tr.appendChild(el("td", {text: txt, "class": c.str || c.weak ? "" : "num"}));
      });
      tr.addEventListener("click", function () { openVideo(v.name, 0); });
      body.appendChild(tr);
    });
    table.appendChild(body);
    host.innerHTML = "";
    host.appendChild(table);
  }
  function confusionTable(run) {
    var cm = run.confusion, P = D.phase_names.length;
    var t = el("table", {"class": "confusion"});
    var hr = el("tr", {}, [el("th", {text: "truth \\ predicted"})]);
    D.phase_names.forEach(function (n, j) { hr.appendChild(el("th", {"class": "rot", title: n, text: n})); });
    t.appendChild(hr);
    for (var i = 0; i < P; i++) {
      var tot = cm[i].reduce(function (a, b) { return a + b; }, 0);
      var tr = el("tr", {}, [el("th", {text: D.phase_names[i]})]);
      for (var j = 0; j < P; j++) {
        var frac = tot ? cm[i][j] / tot : 0;
        var td = el("td", {"class": "num", text: String(cm[i][j]),
                           title: D.phase_names[i] + " \u2192 " + D.phase_names[j] + ": " + (100 * frac).toFixed(1) + "% of the row"});
        td.style.background = "rgba(31,119,180," + frac.toFixed(3) + ")";
        if (frac > 0.5) td.style.color = "white";
        tr.appendChild(td);
      }
      t.appendChild(tr);
    }
    return t;
  }
  function perPhaseTable() {
    var t = el("table", {"class": "data", id: "per-phase"});
    var h = el("tr", {}, [el("th", {text: "phase"})]);
    D.runs.forEach(function (r, k) {
      var pre = D.runs.length > 1 ? String.fromCharCode(65 + k) + " " : "";
      ["precision", "recall", "F1"].forEach(function (m) { h.appendChild(el("th", {text: pre + m + " (%)"})); });
    });
    t.appendChild(h);
    D.phase_names.forEach(function (n, i) {
      var tr = el("tr", {}, [el("td", {}, [chip(i)])]);
      D.runs.forEach(function (r) {
        var p = r.per_phase[n] || {};
        ["precision", "recall", "f1"].forEach(function (m) { tr.appendChild(el("td", {"class": "num", text: fmt(p[m], 1)})); });
      });
      t.appendChild(tr);
    });
    return t;
  }
  function renderOverview() {
    var o = document.getElementById("overview");
    o.innerHTML = "";
    var runs = el("table", {"class": "data", id: "runs"});
    var labels = [];  // every run's task columns, in order, once
    D.runs.forEach(function (r) { r.summary.forEach(function (c) { if (labels.indexOf(c.label) < 0) labels.push(c.label); }); });
    runs.appendChild(el("tr", {}, ["", "run", "evaluation folder"].concat(labels).map(function (s) { return el("th", {text: s}); })));
    D.runs.forEach(function (r, k) {
      var sw = el("span", {"class": "swatch"}); sw.style.background = RUN_COLORS[k % 6];
      var cells = labels.map(function (label) {
        var c = r.summary.filter(function (x) { return x.label === label; })[0];
        var text = !c ? "\u2013" : c.std === null ? fmt(c.mean, c.digits) : fmt(c.mean, c.digits) + " \u00B1 " + fmt(c.std, c.digits);
        return el("td", {"class": "num", text: text});
      });
      runs.appendChild(el("tr", {}, [el("td", {}, [sw, document.createTextNode(D.runs.length > 1 ? " " + String.fromCharCode(65 + k) : "")]),
        el("td", {text: r.name + (r.non_causal && !r.name.includes("NON-CAUSAL") ? " (NON-CAUSAL)" : "")}), el("td", {"class": "path", text: r.path})].concat(cells)));
    });
    o.appendChild(el("h2", {text: "Runs"}));
    o.appendChild(runs);
    o.appendChild(el("p", {"class": "note", text: "Means \u00B1 std over videos; a value without \u00B1 is pooled over all frames, as surgflow eval prints it. " + D.videos.length +
      " video(s) at " + D.fps + " fps; frames from the " + D.frames_from + ". Click a column header to sort, a row to open the video."}));
    o.appendChild(el("h2", {text: "Videos"}));
    var host = el("div", {id: "videos-host"});
    o.appendChild(host);
    renderVideoTable(host);
    o.appendChild(el("h2", {text: "Per phase (mean over the videos containing the phase)"}));
    o.appendChild(perPhaseTable());
    o.appendChild(el("h2", {text: "Confusion matrix (frames, all videos; shade = share of the truth row)"}));
    var cms = el("div", {"class": "cms"});
    D.runs.forEach(function (r, k) {
      cms.appendChild(el("div", {"class": "cm"}, [el("h3", {text: (D.runs.length > 1 ? String.fromCharCode(65 + k) + ": " : "") + r.name}), confusionTable(r)]));
    });
    o.appendChild(cms);
  }

  // ------------------------------------------------------------------ video page
  function track(id, n, height, vbh, cls) {
    var s = sv("svg", {id: id, "class": "track " + (cls || ""), viewBox: "0 0 " + n + " " + vbh,
                       preserveAspectRatio: "none", height: height});
    return s;
  }
  function addCursor(s, vbh) {
    s.appendChild(sv("line", {"class": "cursor", x1: 0.5, x2: 0.5, y1: 0, y2: vbh, "vector-effect": "non-scaling-stroke"}));
  }
  function ribbon(id, segs, n) {
    var s = track(id, n, 22, 1, "ribbon");
    s.setAttribute("shape-rendering", "crispEdges");  // no seams between adjacent segments
    s.appendChild(sv("rect", {"class": "bg", x: 0, y: 0, width: n, height: 1}));
    segs.forEach(function (g) {
      var r = sv("rect", {"class": "seg", x: g[0], y: 0, width: g[1] - g[0], height: 1, fill: D.phase_colors[g[2]],
                          "data-phase": g[2], "data-start": g[0], "data-stop": g[1]});
      var t = sv("title"); t.textContent = phaseName(g[2]) + ": " + fmtTime(g[0] / D.fps) + "\u2013" + fmtTime(g[1] / D.fps);
      r.appendChild(t);
      s.appendChild(r);
    });
    addCursor(s, 1);
    return s;
  }
  function disagreements(gt, pred) {
    // stretches of consecutive frames where both are labelled and differ, split where the pair changes
    var out = [], n = gt.length, i = 0;
    while (i < n) {
      if (gt[i] >= 0 && pred[i] >= 0 && gt[i] !== pred[i]) {
        var j = i;
        while (j + 1 < n && gt[j + 1] === gt[i] && pred[j + 1] === pred[i]) j++;
        out.push([i, j + 1, gt[i], pred[i]]);
        i = j + 1;
      } else i++;
    }
    return out;
  }
  function errorStrip(id, errs, n) {
    var s = track(id, n, 6, 1, "errstrip");
    errs.forEach(function (e) { s.appendChild(sv("rect", {"class": "err", x: e[0], y: 0, width: e[1] - e[0], height: 1})); });
    addCursor(s, 1);
    return s;
  }
  function polyline(values, n, vbh, scale, cls, color) {
    var pts = [];
    for (var i = 0; i < values.length; i++) {
      var y = vbh - Math.max(0, Math.min(1, values[i] / scale)) * vbh;
      pts.push((i + 0.5) + "," + y.toFixed(2));
    }
    var p = sv("polyline", {points: pts.join(" "), "class": cls, fill: "none", "vector-effect": "non-scaling-stroke"});
    if (color) p.setAttribute("stroke", color);
    return p;
  }
  function probTrack(id, prob, n) {
    var s = track(id, n, 70, 100, "prob");
    prob.forEach(function (row, c) { s.appendChild(polyline(row, n, 100, 100, "line", D.phase_colors[c])); });
    addCursor(s, 100);
    return s;
  }
  function antTrack(id, truth, preds, n) {
    // one instrument: the true curve and every run's prediction on one axis
    var s = track(id, n, 48, 100, "ant");
    if (truth) s.appendChild(polyline(truth, n, 100, D.horizon, "truth"));
    preds.forEach(function (p) { if (p[0]) s.appendChild(polyline(p[0], n, 100, D.horizon, "line", RUN_COLORS[p[1] % 6])); });
    addCursor(s, 100);
    return s;
  }
  function row(label, svg, extraClass) {
    return el("div", {"class": "row " + (extraClass || "")}, [el("div", {"class": "label", text: label}), el("div", {"class": "cell"}, [svg])]);
  }
  function timeAxis(n) {
    var ax = el("div", {"class": "axis"});
    var total = n / D.fps, steps = [1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600];
    var step = steps.filter(function (s) { return total / s <= 10; })[0] || 3600;
    for (var t = 0; t <= total; t += step) {
      var tick = el("span", {"class": "tick", text: fmtTime(t)});
      tick.style.left = (100 * t / total) + "%";
      if (t > 0.95 * total) tick.style.transform = "translateX(-100%)";
      ax.appendChild(tick);
    }
    return el("div", {"class": "row"}, [el("div", {"class": "label", text: "time"}), el("div", {"class": "cell"}, [ax])]);
  }
  function findVideo(name) { for (var i = 0; i < D.videos.length; i++) if (D.videos[i].name === name) return D.videos[i]; return null; }

  function renderVideo(v) {
    var host = document.getElementById("video");
    host.innerHTML = "";
    var sel = el("select", {id: "video-select"});
    D.videos.forEach(function (x) { var o = el("option", {value: x.name, text: x.name}); if (x.name === v.name) o.selected = true; sel.appendChild(o); });
    sel.addEventListener("change", function () { openVideo(sel.value, 0); });
    var back = el("a", {href: "#", id: "back", text: "\u2190 overview"});
    back.addEventListener("click", function (ev) { ev.preventDefault(); showOverview(); });
    var legend = el("div", {"class": "legend"});
    D.phase_names.forEach(function (n, i) { legend.appendChild(chip(i)); });
    host.appendChild(el("div", {"class": "bar"}, [back, el("span", {text: " video "}), sel,
      el("span", {"class": "note", text: " \u2190/\u2192 one frame, Shift+\u2190/\u2192 ten, Home/End; click or drag on any track"})]));
    host.appendChild(legend);

    var info = el("div", {id: "frame-info"}, [el("div", {id: "frame-time"}), el("div", {id: "frame-gt"})]);
    v.runs.forEach(function (r, k) { info.appendChild(el("div", {id: "frame-pred-" + k, "class": "pred"})); });
    var img = el("img", {id: "frame", alt: "frame"});
    if (v.frames) {  // small stores are shown at least 360 px wide (display scaling only)
      var k0 = Math.max(1, 360 / v.frames.size[1]);
      img.width = Math.round(v.frames.size[1] * k0); img.height = Math.round(v.frames.size[0] * k0);
    }
    var viewer = el("div", {"class": "viewer"}, [img, info]);

    var tracks = el("div", {"class": "tracks", id: "tracks"});
    tracks.appendChild(row("ground truth", ribbon("ribbon-gt", v.gt_segments, v.n)));
    v.runs.forEach(function (r, k) {
      var run = D.runs[k], tag = D.runs.length > 1 ? String.fromCharCode(65 + k) + " " : "";
      var errs = disagreements(v.gt, r.pred);
      r._errs = errs;
      var lab = row(tag + "predicted", ribbon("ribbon-pred-" + k, r.segments, v.n), "run");
      if (D.runs.length > 1) {  // the run's colour, as in its anticipation curves
        var sw = el("span", {"class": "swatch"}); sw.style.background = RUN_COLORS[k % 6];
        lab.firstChild.insertBefore(sw, lab.firstChild.firstChild);
        lab.firstChild.insertBefore(document.createTextNode(" "), sw.nextSibling);
      }
      tracks.appendChild(lab);
      tracks.appendChild(row(tag + "disagrees", errorStrip("errors-strip-" + k, errs, v.n)));
    });
    v.runs.forEach(function (r, k) {
      var tag = D.runs.length > 1 ? String.fromCharCode(65 + k) + " " : "";
      if (r.prob) tracks.appendChild(row(tag + "phase probability", probTrack("prob-" + k, r.prob, v.n)));
    });
    if (v.runs.some(function (r) { return r.ant; })) D.instruments.forEach(function (name, j) {
      var preds = v.runs.map(function (r, k) { return [r.ant ? r.ant[j] : null, k]; });
      tracks.appendChild(row(name + " (0\u2013" + D.horizon + " min)",
        antTrack("ant-" + j, v.ant_gt ? v.ant_gt[j] : null, preds, v.n)));
    });
    tracks.appendChild(timeAxis(v.n));
    if (v.runs.some(function (r) { return r.ant; }))
      tracks.appendChild(el("p", {"class": "note", text: "time to instrument: dashed black = true, coloured = predicted" + (D.runs.length > 1 ? " (" + D.runs.map(function (r, k) { return String.fromCharCode(65 + k) + " " + COLOR_NAMES[k % 6]; }).join(", ") + ")" : "") + "; minutes, clipped to the horizon"}));
    host.appendChild(el("div", {"class": "main"}, [viewer, tracks]));

    var order = el("select", {id: "errors-order"});
    [["time", "in time order"], ["length", "longest first"]].forEach(function (o) {
      var opt = el("option", {value: o[0], text: o[1]}); if (o[0] === state.errOrder) opt.selected = true; order.appendChild(opt);
    });
    order.addEventListener("change", function () { state.errOrder = order.value; fillErrorLists(v, lists); });
    host.appendChild(el("div", {"class": "bar"}, [el("span", {text: "disagreements, "}), order]));
    var lists = el("div", {"class": "lists"});
    fillErrorLists(v, lists);
    host.appendChild(lists);

    Array.prototype.forEach.call(host.querySelectorAll("svg.track"), function (s) {
      function at(ev) {
        var b = s.getBoundingClientRect();
        setFrame(Math.floor((ev.clientX - b.left) / b.width * v.n));
      }
      s.addEventListener("pointerdown", function (ev) { s.setPointerCapture(ev.pointerId); at(ev); });
      s.addEventListener("pointermove", function (ev) { if (ev.buttons & 1) at(ev); });
    });
  }
  function fillErrorLists(v, lists) {
    lists.innerHTML = "";
    v.runs.forEach(function (r, k) {
      var tag = D.runs.length > 1 ? String.fromCharCode(65 + k) + ": " : "";
      var ul = el("ul", {id: "errors-" + k, "class": "errors"});
      var errs = r._errs.slice();
      if (state.errOrder === "length") errs.sort(function (a, b) { return (b[1] - b[0]) - (a[1] - a[0]) || a[0] - b[0]; });
      errs.slice(0, 1000).forEach(function (e) {
        var li = el("li", {"data-start": e[0], title: "jump to " + fmtTime(e[0] / D.fps)}, [
          el("span", {"class": "when", text: fmtTime(e[0] / D.fps) + "\u2013" + fmtTime(e[1] / D.fps) + " (" + (e[1] - e[0]) + " fr)"}),
          chip(e[2]), el("span", {text: " \u2192 "}), chip(e[3])]);
        li.addEventListener("click", function () { setFrame(e[0]); });
        ul.appendChild(li);
      });
      lists.appendChild(el("div", {"class": "errlist"}, [
        el("h3", {text: tag + D.runs[k].name + ": " + r._errs.length + " stretch(es) where prediction and truth disagree (truth \u2192 predicted)" +
                        (r._errs.length > 1000 ? "; the first 1000 listed" : "")}), ul]));
    });
  }
  function setFrame(f) {
    var v = state.video;
    if (!v) return;
    f = Math.max(0, Math.min(v.n - 1, f | 0));
    state.frame = f;
    var img = document.getElementById("frame");
    if (v.frames && f < v.frames.count) img.src = v.frames.dir + "/" + pad6(f) + ".jpg";
    else img.removeAttribute("src");
    var t = document.getElementById("frame-time");
    t.textContent = "t = " + fmtTime(f / D.fps) + "  (frame " + f + " of " + v.n + ")";
    t.setAttribute("data-frame", f);
    var g = document.getElementById("frame-gt");
    g.innerHTML = ""; g.appendChild(el("span", {"class": "what", text: "truth "})); g.appendChild(chip(v.gt[f]));
    g.setAttribute("data-phase", phaseName(v.gt[f]));
    v.runs.forEach(function (r, k) {
      var p = document.getElementById("frame-pred-" + k), id = r.pred[f];
      p.innerHTML = "";
      p.appendChild(el("span", {"class": "what", text: (D.runs.length > 1 ? String.fromCharCode(65 + k) + " " : "") + "predicted "}));
      p.appendChild(chip(id));
      if (r.prob) p.appendChild(el("span", {"class": "prob", text: " " + (id >= 0 ? r.prob[id][f] : 0) + "%"}));
      var ok = id >= 0 && v.gt[f] >= 0 ? (id === v.gt[f] ? " \u2713" : " \u2717") : "";
      p.appendChild(el("span", {"class": ok === " \u2717" ? "bad" : "good", text: ok}));
      p.setAttribute("data-phase", phaseName(id));
    });
    Array.prototype.forEach.call(document.querySelectorAll("#tracks line.cursor"), function (c) {
      c.setAttribute("x1", f + 0.5); c.setAttribute("x2", f + 0.5);
    });
    history.replaceState(null, "", "#v=" + encodeURIComponent(v.name) + "&f=" + f);
  }
  function openVideo(name, f) {
    var v = findVideo(name);
    if (!v) return showOverview();
    state.video = v;
    document.getElementById("overview").hidden = true;
    document.getElementById("video").hidden = false;
    renderVideo(v);
    setFrame(f || 0);
    window.scrollTo(0, 0);
  }
  function showOverview() {
    state.video = null;
    document.getElementById("overview").hidden = false;
    document.getElementById("video").hidden = true;
    history.replaceState(null, "", "#");
  }
  document.addEventListener("keydown", function (ev) {
    if (!state.video || ev.target.tagName === "SELECT" || ev.target.tagName === "INPUT") return;
    var step = ev.shiftKey ? 10 : 1, f = state.frame;
    if (ev.key === "ArrowRight") setFrame(f + step);
    else if (ev.key === "ArrowLeft") setFrame(f - step);
    else if (ev.key === "Home") setFrame(0);
    else if (ev.key === "End") setFrame(state.video.n - 1);
    else if (ev.key === "Escape") showOverview();
    else return;
    ev.preventDefault();
  });

  var app = document.getElementById("app");
  app.innerHTML = "";
  app.appendChild(el("header", {}, [el("h1", {text: D.title})]));
  app.appendChild(el("section", {id: "overview"}));
  app.appendChild(el("section", {id: "video", hidden: "hidden"}));
  renderOverview();
  var m = /^#v=([^&]+)&f=(\d+)/.exec(location.hash);
  if (m) openVideo(decodeURIComponent(m[1]), parseInt(m[2], 10));
  window.surgflowView = {open: openVideo, setFrame: setFrame, overview: showOverview, data: D};
})();

// Ocular's HTML report: builds the page from the JSON in #ocular-data.
// Every piece of text from the profile (source lines, names, paths) goes in
// through textContent, never as markup. The data's layout is written by
// ocular/export/html.py (report_data).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("ocular-data").textContent);
  const meta = data.meta;
  const total = meta.total;
  const FN = { file: 0, name: 1, line: 2, calls: 3, self: 4, incl: 5, unc: 6, unattributed: 7 };

  // ---- formatting -----------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function ns(cycles) {
    return meta.tsc_hz ? (cycles * 1e9) / meta.tsc_hz : 0;
  }
  function noise(cycles, uncertainty) {
    return uncertainty > 0 && Math.abs(cycles) <= uncertainty;
  }
  // A figure no larger than its uncertainty is shown marked "~" (it may be 0).
  function noted(text, cycles, uncertainty) {
    return noise(cycles, uncertainty) ? "~" + text : text;
  }
  function time(cycles, uncertainty) {
    const v = ns(cycles);
    const a = Math.abs(v);
    let text;
    if (a < 1e3) text = v.toFixed(0) + " ns";
    else if (a < 1e6) text = (v / 1e3).toFixed(a < 1e4 ? 2 : 1) + " \u00b5s";
    else if (a < 1e9) text = (v / 1e6).toFixed(a < 1e7 ? 2 : 1) + " ms";
    else text = (v / 1e9).toFixed(2) + " s";
    return noted(text, cycles, uncertainty);
  }
  function share(cycles, uncertainty) {
    return noted(total ? ((100 * cycles) / total).toFixed(1) + "%" : "-", cycles, uncertainty);
  }
  function count(n) {
    return Number(n).toLocaleString("en-US");
  }
  function shortPath(path, width) {
    return path.length <= width ? path : "\u2026" + path.slice(path.length - width + 1);
  }
  function baseName(path) {
    const parts = path.split(/[\\/]/);
    return parts[parts.length - 1] || path;
  }
  function fileOf(row) {
    return data.files[row[FN.file]];
  }

  // ---- the tooltip: one element, its text from the hovered element's _tip() ----

  const tooltip = document.getElementById("tooltip");
  function placeTip(event) {
    let x = event.clientX + 14;
    let y = event.clientY + 14;
    if (x + tooltip.offsetWidth > window.innerWidth) x = Math.max(0, event.clientX - tooltip.offsetWidth - 14);
    if (y + tooltip.offsetHeight > window.innerHeight) y = Math.max(0, event.clientY - tooltip.offsetHeight - 14);
    tooltip.style.left = x + "px";
    tooltip.style.top = y + "px";
  }
  function hoverTips(container) {
    container.addEventListener("mousemove", function (event) {
      let node = event.target;
      while (node && node !== container && !node._tip) node = node.parentNode;
      if (!node || !node._tip) {
        tooltip.hidden = true;
        return;
      }
      tooltip.textContent = node._tip().join("\n");
      tooltip.hidden = false;
      placeTip(event);
    });
    container.addEventListener("mouseleave", function () {
      tooltip.hidden = true;
    });
  }

  // ---- header ---------------------------------------------------------------

  function renderHeader() {
    const threads = meta.threads + " thread" + (meta.threads === 1 ? "" : "s");
    document.getElementById("summary").textContent = [
      meta.mode + " mode, de-instrumentation threshold " + (meta.threshold || "off"),
      "traced " + (meta.duration_ns / 1e6).toFixed(1) + " ms on " + threads,
      "program time " + time(total),
      count(meta.events) + " events",
      "unattributed " + share(meta.unattributed) + ", untraced code " + share(meta.untraced),
      "report by Ocular " + meta.version,
    ].join(" \u00b7 ");
    const notes = document.getElementById("notes");
    data.notes.forEach(function (note) {
      notes.appendChild(el("li", "", note));
    });
    if (meta.mode === "precise") document.getElementById("drill-hint").hidden = false;
  }

  // ---- source heatmap ---------------------------------------------------------

  let maxHeat = 0;
  data.heat.forEach(function (file) {
    file.lines.forEach(function (line) {
      if (line[2] > maxHeat) maxHeat = line[2];
    });
  });
  // sqrt: a line at a hundredth of the hottest still shows. A line within its
  // uncertainty is coloured by its figure too (its text says "~"): a tight
  // loop's line can be both uncertain and the hottest.
  function heatOf(cycles) {
    if (maxHeat <= 0 || cycles <= 0) return 0;
    return Math.sqrt(cycles / maxHeat);
  }

  const fileList = document.getElementById("file-list");
  const sourceBox = document.getElementById("source");
  let shownFile = -1;

  function renderFileList() {
    if (!data.heat.length) {
      sourceBox.appendChild(el("p", "legend", "No line was measured."));
      return;
    }
    data.heat.forEach(function (file, index) {
      const item = el("li");
      item.appendChild(el("span", "share", share(file.cycles)));
      item.appendChild(document.createTextNode(baseName(data.files[file.file])));
      item.title = data.files[file.file];
      item.addEventListener("click", function () {
        showFile(index);
      });
      fileList.appendChild(item);
    });
    showFile(0);
  }

  function blockTip(block) {
    const lines = block[0] === block[1] ? "line " + block[0] : "lines " + block[0] + "\u2013" + block[1];
    return "  " + block[7] + " @" + block[2] + "\u2013" + block[3] + " (" + lines + "): " +
      count(block[4]) + " hits, " + time(block[5], block[6]);
  }

  function lineTip(lineno, stats, covering, instructions) {
    if (!stats) return ["line " + lineno + ": not measured"];
    const tip = ["line " + lineno + ": " + count(stats[1]) + " hits, " + time(stats[2], stats[4]) +
      " (" + count(stats[2]) + " cycles), " + share(stats[2], stats[4]) + " of the program"];
    if (stats[3]) tip.push("= a share of a block spanning several lines, not measured alone");
    if (covering && covering.length) {
      tip.push("basic blocks on this line:");
      covering.slice(0, 12).forEach(function (block) {
        tip.push(blockTip(block));
      });
      if (covering.length > 12) tip.push("  \u2026 and " + (covering.length - 12) + " more");
    }
    if (instructions) tip.push(instructions.length + " instructions: click to list them");
    return tip;
  }

  function instructionRow(instructions) {
    const row = el("tr", "insns");
    const cell = el("td");
    cell.colSpan = 5;
    const table = el("table", "insn");
    const head = el("tr");
    ["offset", "instruction", "hits", "cycles", "time", "share", "function"].forEach(function (name, i) {
      head.appendChild(el("th", i === 1 || i === 6 ? "name" : "", name));
    });
    table.appendChild(head);
    instructions.forEach(function (insn) {
      const tr = el("tr");
      [insn[0], insn[1], count(insn[2]), noted(count(insn[3]), insn[3], insn[4]),
        time(insn[3], insn[4]), share(insn[3], insn[4]), insn[5]].forEach(function (value, i) {
        tr.appendChild(el("td", i === 1 || i === 6 ? "name" : "", value));
      });
      table.appendChild(tr);
    });
    cell.appendChild(table);
    row.appendChild(cell);
    return row;
  }

  function gapRow(lines) {
    const row = el("tr", "gap");
    const cell = el("td", "", "\u22ef " + count(lines) + " line" + (lines === 1 ? "" : "s") + " not shown");
    cell.colSpan = 5;
    row.appendChild(cell);
    return row;
  }

  function showFile(index, target) {
    const file = data.heat[index];
    Array.prototype.forEach.call(fileList.children, function (item, i) {
      item.classList.toggle("selected", i === index);
    });
    shownFile = index;
    sourceBox.textContent = "";
    sourceBox.appendChild(el("h3", "file-title", data.files[file.file]));
    const stats = {};
    file.lines.forEach(function (line) {
      stats[line[0]] = line;
    });
    const starts = {};
    const covering = {};
    file.blocks.forEach(function (block) {
      (starts[block[0]] = starts[block[0]] || []).push(block);
      const last = Math.min(block[1], block[0] + 200); // a block's lines are few; never loop on a bad one
      for (let n = block[0]; n <= last; n++) (covering[n] = covering[n] || []).push(block);
    });
    const table = el("table", "src");
    const body = el("tbody");
    table.appendChild(body);
    let previous = 0;
    let targetRow = null;
    let hottestRow = null;
    let hottest = 0;
    file.source.forEach(function (source) {
      const lineno = source[0];
      if (lineno > previous + 1 && source[1] !== null) body.appendChild(gapRow(lineno - previous - 1));
      previous = lineno;
      const line = stats[lineno];
      const here = starts[lineno];
      const instructions = file.instructions[lineno];
      const row = el("tr", "line");
      let gutter = here ? "\u250c" + (here.length > 1 ? here.length : "") : covering[lineno] ? "\u2502" : "";
      if (line && line[3]) gutter += "=";
      row.appendChild(el("td", "gutter", gutter));
      row.appendChild(el("td", "num", lineno));
      row.appendChild(el("td", "hits", line ? count(line[1]) : ""));
      row.appendChild(el("td", "time", line ? time(line[2], line[4]) : ""));
      row.appendChild(el("td", "code", source[1] === null ? "(source not available)" : source[1]));
      if (line) {
        row.style.setProperty("--heat", heatOf(line[2]).toFixed(3));
        if (line[3]) row.classList.add("shared");
        if (line[2] > hottest) {
          hottest = line[2];
          hottestRow = row;
        }
      }
      if (here) row.classList.add("block-start");
      if (instructions) {
        row.classList.add("drillable");
        row._instructions = instructions;
      }
      row._tip = function () {
        return lineTip(lineno, line, covering[lineno], instructions);
      };
      body.appendChild(row);
      if (lineno === target) targetRow = row;
    });
    sourceBox.appendChild(table);
    if (targetRow) targetRow.classList.add("target");
    reveal(targetRow || hottestRow);
  }

  // Scroll the source pane (only it) so that `row` is in its upper third.
  function reveal(row) {
    if (!row) return;
    const pane = sourceBox.getBoundingClientRect();
    const box = row.getBoundingClientRect();
    if (box.top < pane.top + 24 || box.bottom > Math.min(pane.bottom, window.innerHeight)) {
      sourceBox.scrollTop += box.top - pane.top - Math.min(sourceBox.clientHeight, window.innerHeight) / 3;
    }
  }

  sourceBox.addEventListener("click", function (event) {
    let row = event.target;
    while (row && row !== sourceBox && !row._instructions) row = row.parentNode;
    if (!row || !row._instructions) return;
    const next = row.nextSibling;
    if (next && next.classList.contains("insns")) next.remove();
    else row.parentNode.insertBefore(instructionRow(row._instructions), next);
  });
  hoverTips(sourceBox);

  function jumpTo(row) {
    const index = data.heat.findIndex(function (file) {
      return file.file === row[FN.file];
    });
    if (index < 0) return;
    document.getElementById("heatmap").scrollIntoView();
    showFile(index, row[FN.line]);
  }

  // ---- function table ----------------------------------------------------------

  const columns = [
    { label: "function", text: true, value: (r) => r[FN.name], show: (r) => r[FN.name] },
    { label: "where", text: true, value: (r) => fileOf(r) + ":" + r[FN.line],
      show: (r) => shortPath(fileOf(r), 48) + ":" + r[FN.line] },
    { label: "calls", value: (r) => r[FN.calls], show: (r) => count(r[FN.calls]) },
    { label: "self", value: (r) => r[FN.self], show: (r) => time(r[FN.self], r[FN.unc]) },
    { label: "self %", value: (r) => r[FN.self], show: (r) => share(r[FN.self], r[FN.unc]) },
    { label: "inclusive", value: (r) => r[FN.incl], show: (r) => time(r[FN.incl]) },
    { label: "inclusive %", value: (r) => r[FN.incl], show: (r) => share(r[FN.incl]) },
  ];
  const sort = { column: 3, ascending: false };

  function renderFunctionTable() {
    const table = document.getElementById("function-table");
    const head = table.tHead.rows[0];
    head.textContent = "";
    columns.forEach(function (column, i) {
      const th = el("th", column.text ? "text" : "", column.label);
      if (i === sort.column) th.classList.add("sorted");
      if (i === sort.column && sort.ascending) th.classList.add("ascending");
      th.addEventListener("click", function () {
        sort.ascending = sort.column === i ? !sort.ascending : !!column.text;
        sort.column = i;
        renderFunctionTable();
      });
      head.appendChild(th);
    });
    const key = columns[sort.column].value;
    const rows = data.functions.slice().sort(function (a, b) {
      const x = key(a);
      const y = key(b);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return sort.ascending ? order : -order;
    });
    const body = table.tBodies[0];
    const fragment = document.createDocumentFragment();
    rows.forEach(function (row) {
      const tr = el("tr");
      columns.forEach(function (column) {
        tr.appendChild(el("td", column.text ? "text" : "", column.show(row)));
      });
      tr._tip = function () {
        return [row[FN.name], fileOf(row) + ":" + row[FN.line],
          count(row[FN.calls]) + " calls, self " + time(row[FN.self], row[FN.unc]) + ", inclusive " +
          time(row[FN.incl]) + (row[FN.unattributed] ? ", of the self time " +
          time(row[FN.unattributed]) + " not attributed to a block" : "")];
      };
      tr.addEventListener("click", function () {
        jumpTo(row);
      });
      fragment.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(fragment);
  }
  hoverTips(document.getElementById("function-table"));

  // ---- flame graph (icicle) ------------------------------------------------------

  const tree = data.tree; // [function row or -1, parent node, cycles]; parents come first
  const graph = document.getElementById("flame-graph");
  const ROW = 18;
  const children = tree.map(function () {
    return [];
  });
  for (let i = 1; i < tree.length; i++) children[tree[i][1]].push(i);
  const left = new Float64Array(tree.length);
  const depth = new Int32Array(tree.length);
  for (let i = 0; i < tree.length; i++) {
    children[i].sort(function (a, b) {
      return tree[b][2] - tree[a][2];
    });
    let offset = left[i];
    children[i].forEach(function (child) {
      left[child] = offset;
      depth[child] = depth[i] + 1;
      offset += tree[child][2];
    });
  }
  let focus = 0;
  let matched = null;

  function nodeName(i) {
    return tree[i][0] < 0 ? "all" : data.functions[tree[i][0]][FN.name];
  }
  function hue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h;
  }
  function frameTip(i) {
    const cycles = tree[i][2];
    const part = tree[0][2] ? ((100 * cycles) / tree[0][2]).toFixed(1) + "% of the graph" : "";
    if (tree[i][0] < 0) return ["all outermost calls: " + time(cycles) + ", " + share(cycles) + " of the program"];
    const row = data.functions[tree[i][0]];
    return [row[FN.name], fileOf(row) + ":" + row[FN.line],
      "on this path: " + time(cycles) + ", " + part + " (estimated from the call edges)",
      "the function overall: self " + time(row[FN.self], row[FN.unc]) + ", inclusive " + time(row[FN.incl]) +
      ", " + count(row[FN.calls]) + " calls",
      "click to zoom"];
  }

  function addFrame(i, x, width, fragment) {
    const frame = el("div", "frame", i === 0 ? "all (" + time(tree[0][2]) + ")" : nodeName(i));
    frame.style.left = x + "px";
    frame.style.width = width + "px";
    frame.style.top = depth[i] * ROW + "px";
    if (i === 0) frame.classList.add("root");
    else frame.style.background = "hsl(" + (8 + (hue(nodeName(i)) % 42)) + " 78% " + (62 + (hue(nodeName(i)) % 12)) + "%)";
    if (matched && matched[i]) frame.classList.add("match");
    else if (matched) frame.classList.add("dim");
    frame._node = i;
    frame._tip = function () {
      return frameTip(i);
    };
    fragment.appendChild(frame);
  }

  function renderFlame() {
    graph.textContent = "";
    if (tree.length < 2 || tree[0][2] <= 0) {
      graph.style.height = "auto";
      graph.appendChild(el("p", "legend", "No call was recorded."));
      return;
    }
    const width = graph.clientWidth || 1000;
    const fragment = document.createDocumentFragment();
    const base = left[focus];
    const span = Math.max(tree[focus][2], 1);
    let deepest = depth[focus];
    for (let a = tree[focus][1]; a >= 0; a = tree[a][1]) addFrame(a, 0, width, fragment);
    const pending = [focus];
    while (pending.length) {
      const i = pending.pop();
      const w = (tree[i][2] / span) * width;
      if (w < 1) continue; // too narrow to see; its callees are narrower still
      addFrame(i, ((left[i] - base) / span) * width, w, fragment);
      if (depth[i] > deepest) deepest = depth[i];
      for (const child of children[i]) pending.push(child);
    }
    graph.appendChild(fragment);
    graph.style.height = (deepest + 1) * ROW + "px";
  }

  graph.addEventListener("click", function (event) {
    const node = event.target._node;
    if (node === undefined) return;
    focus = node;
    renderFlame();
  });
  hoverTips(graph);

  document.getElementById("flame-search").addEventListener("input", function (event) {
    const query = event.target.value.trim().toLowerCase();
    const status = document.getElementById("flame-status");
    if (!query) {
      matched = null;
      status.textContent = "";
      renderFlame();
      return;
    }
    matched = new Uint8Array(tree.length);
    const under = new Uint8Array(tree.length); // a matched frame is on the path above
    let frames = 0;
    let cycles = 0;
    for (let i = 1; i < tree.length; i++) {
      const row = data.functions[tree[i][0]];
      const hit = row[FN.name].toLowerCase().includes(query) || fileOf(row).toLowerCase().includes(query);
      const parent = tree[i][1];
      if (hit) {
        matched[i] = 1;
        frames++;
        if (!under[parent]) cycles += tree[i][2]; // count nested matches once
      }
      under[i] = under[parent] || hit ? 1 : 0;
    }
    status.textContent = frames + " frame" + (frames === 1 ? "" : "s") + " match: " +
      (tree[0][2] ? ((100 * cycles) / tree[0][2]).toFixed(1) : "0") + "% of the graph";
    renderFlame();
  });

  let resizing = 0;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(renderFlame, 100);
  });

  renderHeader();
  renderFileList();
  renderFunctionTable();
  renderFlame();
  document.body.setAttribute("data-ocular", "ready");
})();

"""The inline CSS and JavaScript of the HTML export (kept apart so the page code stays short).

The script is plain ES5-compatible JavaScript with no dependency. It only reads
text from the DOM, sets ``hidden`` and ``aria-sort`` and moves existing rows, so
it cannot turn stored text into markup. When it has run it sets
``data-ready="1"`` and ``data-shown`` (rows visible) on ``<html>``: a hook for
tests that load the page in a browser.
"""

STYLE = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#fff;--alt:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:24px}
header{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h1{font-size:22px;margin:0}
h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
h2 small{font-weight:normal;color:var(--muted);font-size:13px;margin-left:6px}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.status{padding:2px 10px;border-radius:12px;font-weight:600;background:#ddd}
.status-completed{background:#dafbe1;color:#116329}
.status-partial,.status-running,.status-interrupted{background:#fff8c5;color:#7d4e00}
.status-failed{background:#ffebe9;color:#a40e26}
dl.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px;
margin:16px 0 8px}
dl.summary div{border:1px solid var(--line);border-radius:6px;padding:8px 12px}
dl.summary dt{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
dl.summary dd{margin:2px 0 0;font-weight:600;word-break:break-all}
ul.chips{list-style:none;display:flex;flex-wrap:wrap;gap:6px;padding:0;margin:8px 0}
ul.chips li{border:1px solid var(--line);border-radius:12px;padding:1px 10px;background:var(--alt)}
.controls{display:flex;gap:8px;margin:0 0 10px}
.controls input{flex:1;min-width:0;padding:6px 10px;border:1px solid var(--line);
border-radius:6px;font:inherit}
.controls select{padding:6px 10px;border:1px solid var(--line);border-radius:6px;font:inherit;
background:var(--bg)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:var(--alt);position:sticky;top:0}
tbody tr:nth-child(even){background:var(--alt)}
th button{all:unset;cursor:pointer;font-weight:600}
th button::after{content:" \\2195";color:var(--muted)}
th[aria-sort=ascending] button::after{content:" \\25B2";color:var(--accent)}
th[aria-sort=descending] button::after{content:" \\25BC";color:var(--accent)}
td.c-evidence,td.c-file,td.c-rule,td.c-artifact{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:12.5px;word-break:break-all}
td.c-line,td.c-column{text-align:right;font-variant-numeric:tabular-nums}
dl.envelope{margin:0;display:grid;grid-template-columns:auto 1fr;gap:0 8px;font-size:12.5px}
dl.envelope dt{color:var(--muted)}
dl.envelope dd{margin:0;word-break:break-all}
p.none{color:var(--muted)}
"""

SCRIPT = """
(function () {
  "use strict";
  var root = document.documentElement;
  var table = document.getElementById("findings-table");
  if (!table) {
    root.setAttribute("data-shown", "0");
    root.setAttribute("data-ready", "1");
    return;
  }
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var names = headers.map(function (th) { return th.textContent.trim(); });
  var filter = document.getElementById("filter");
  var select = document.getElementById("category");
  var shown = document.getElementById("shown");
  var sorted = {index: -1, descending: false};
  rows.forEach(function (row, i) { row.setAttribute("data-index", String(i)); });

  function value(row, index, numeric) {
    var text = row.cells[index].textContent;
    if (!numeric) { return text.toLowerCase(); }
    var number = parseFloat(text);
    return isNaN(number) ? Infinity : number;
  }

  function sortBy(index, descending) {
    var numeric = headers[index].getAttribute("data-type") === "number";
    var order = rows.slice().sort(function (a, b) {
      var x = value(a, index, numeric), y = value(b, index, numeric);
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (descending) { c = -c; }
      return c || Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
    });
    order.forEach(function (row) { tbody.appendChild(row); });
    headers.forEach(function (th, i) {
      th.setAttribute("aria-sort", i !== index ? "none" : descending ? "descending" : "ascending");
    });
    sorted = {index: index, descending: descending};
  }

  function apply() {
    var query = filter.value.trim().toLowerCase(), category = select.value, count = 0;
    rows.forEach(function (row) {
      var match = (!category || row.getAttribute("data-category") === category) &&
        (!query || row.textContent.toLowerCase().indexOf(query) !== -1);
      row.hidden = !match;
      if (match) { count += 1; }
    });
    shown.textContent = String(count);
    root.setAttribute("data-shown", String(count));
  }

  function remember() {
    var state = new URLSearchParams();
    if (filter.value) { state.set("q", filter.value); }
    if (select.value) { state.set("category", select.value); }
    if (sorted.index >= 0) {
      state.set("sort", names[sorted.index]);
      state.set("order", sorted.descending ? "desc" : "asc");
    }
    var hash = state.toString();
    try { history.replaceState(null, "", hash ? "#" + hash : location.pathname); } catch (e) {}
  }

  headers.forEach(function (th, index) {
    th.querySelector("button").addEventListener("click", function () {
      sortBy(index, sorted.index === index && !sorted.descending);
      remember();
    });
  });
  filter.addEventListener("input", function () { apply(); remember(); });
  select.addEventListener("change", function () { apply(); remember(); });

  var preset = new URLSearchParams(location.hash.slice(1));
  filter.value = preset.get("q") || "";
  var wanted = preset.get("category") || "";
  select.value = Array.prototype.some.call(select.options, function (option) {
    return option.value === wanted;
  }) ? wanted : "";
  var column = names.indexOf(preset.get("sort") || "");
  if (column >= 0) { sortBy(column, preset.get("order") === "desc"); }
  apply();
  root.setAttribute("data-ready", "1");
})();
"""

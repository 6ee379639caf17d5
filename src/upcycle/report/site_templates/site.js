// upcycle leaderboard site: sortable and filterable tables, copy buttons. Plain DOM, text only (no innerHTML):
// nothing from the data is ever parsed as HTML here.
(function () {
  "use strict";

  function each(list, action) { Array.prototype.forEach.call(list, action); }

  function key(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell ? (cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent) : "";
    raw = raw.trim();
    if (!numeric) { return raw.toLowerCase(); }
    var number = parseFloat(raw);
    return isNaN(number) ? null : number;  // empty cells sort last either way
  }

  function sortable(table) {
    var body = table.tBodies[table.tBodies.length - 1];
    var headers = table.tHead.rows[0].cells;
    each(headers, function (header, index) {
      if (header.classList.contains("nosort")) { return; }
      var numeric = header.getAttribute("data-type") === "number";
      header.classList.add("sort");
      header.tabIndex = 0;
      header.title = "Sort";
      function sort() {
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        each(headers, function (other) { other.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, index, numeric), y = key(b, index, numeric);
          if (x === y) { return 0; }
          if (x === null || x === "") { return 1; }
          if (y === null || y === "") { return -1; }
          var order = x < y ? -1 : 1;
          return ascending ? order : -order;
        });
        each(rows, function (row) { body.appendChild(row); });
      }
      header.addEventListener("click", sort);
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
      });
    });
    table.setAttribute("data-sortable", "ready");
  }

  function filterable(input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    if (!table) { return; }
    var body = table.tBodies[table.tBodies.length - 1];
    var count = document.getElementById(input.id + "-count");
    input.addEventListener("input", function () {
      var query = input.value.trim().toLowerCase();
      var shown = 0;
      each(body.rows, function (row) {
        var hit = row.textContent.toLowerCase().indexOf(query) !== -1;
        row.hidden = !hit;
        if (hit) { shown += 1; }
      });
      if (count) { count.textContent = query ? shown + " of " + body.rows.length : ""; }
    });
    input.hidden = false;
  }

  function copyButton(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    function say(message) {
      button.textContent = message;
      window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
    }
    function select() {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      say("Selected: press Ctrl+C");
    }
    button.addEventListener("click", function () {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.textContent).then(function () { say("Copied"); }, select);
      } else {
        select();
      }
    });
    button.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    each(document.querySelectorAll("table.sortable"), sortable);
    each(document.querySelectorAll("input.filter"), filterable);
    each(document.querySelectorAll("button[data-copy]"), copyButton);
    document.documentElement.setAttribute("data-js", "ready");
  });
}());

// surestep console: the CSRF header for htmx, keyboard shortcuts, select-all boxes.
// Loaded as a file (the CSP forbids inline scripts); every page works without it.
(function () {
  "use strict";
  var token = document.querySelector('meta[name="csrf-token"]');

  // htmx requests carry the session's CSRF token in a header.
  document.addEventListener("htmx:configRequest", function (event) {
    if (token) { event.detail.headers["X-CSRF-Token"] = token.content; }
  });

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#tasks tr.row")); }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var at = all.findIndex(function (r) { return r.classList.contains("current"); });
    var next = Math.max(0, Math.min(all.length - 1, at + step));
    if (at >= 0) { all[at].classList.remove("current"); }
    all[next].classList.add("current");
    var link = all[next].querySelector("a");
    if (link) { link.focus(); }
  }

  function press(key) {
    var button = document.querySelector('#decision button[data-key="' + key + '"]');
    if (button) { button.click(); return true; }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var key = event.key;
    if (key === "j") { move(1); }
    else if (key === "k") { move(-1); }
    else if (key === "x") {
      var current = document.querySelector("#tasks tr.row.current input[type=checkbox]");
      if (current) { current.checked = !current.checked; } else { return; }
    }
    else if (key === "a" || key === "r" || key === "e") { if (!press(key)) { return; } }
    else { return; }
    event.preventDefault();
  });

  // A "select all" box checks every box of its name.
  document.addEventListener("change", function (event) {
    var name = event.target.getAttribute && event.target.getAttribute("data-select-all");
    if (!name) { return; }
    document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (box) {
      box.checked = event.target.checked;
    });
  });
})();

// estate-crm's only script. It makes pages quicker and nothing more: every form and every page
// works without it. Loaded from this site only (the Content-Security-Policy allows nothing else).
(function () {
  "use strict";

  var LIVE_EVERY_MS = 2000;

  // An element with data-live="URL" (a table's body, a delivery's status) is refreshed from URL,
  // which answers that part alone, every two seconds while the page is visible: new deliveries and
  // status changes appear without a reload.
  function refresh(body) {
    if (document.hidden || body.getAttribute("aria-busy") === "true") return;
    body.setAttribute("aria-busy", "true");
    fetch(body.getAttribute("data-live"), {
      headers: { "X-Requested-With": "fetch" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        // A redirect means the session ended: leave the table as it is.
        if (!response.ok || response.redirected) throw new Error("status " + response.status);
        return response.text();
      })
      .then(function (rows) {
        if (body.lastRows !== rows) {
          body.lastRows = rows;
          body.innerHTML = rows;
        }
      })
      .catch(function () {})
      .then(function () {
        body.setAttribute("aria-busy", "false");
      });
  }

  function startLiveTables() {
    var bodies = document.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(bodies, function (body) {
      if (!body.getAttribute("data-live")) return;
      window.setInterval(function () {
        refresh(body);
      }, LIVE_EVERY_MS);
    });
  }

  // Test Webhook: posts the form to the button's formaction and puts the answer in #test-result,
  // without leaving the page. Without this script the form posts and the page comes back filled in.
  function testInPlace(event) {
    var button = event.target.closest ? event.target.closest("button[data-test]") : null;
    if (!button || !button.form) return;
    var out = document.getElementById("test-result");
    if (!out) return;
    event.preventDefault();
    button.disabled = true;
    out.setAttribute("aria-busy", "true");
    out.textContent = "Sending a test…";
    fetch(button.formAction, {
      method: "POST",
      body: new URLSearchParams(new FormData(button.form)),
      headers: { "X-Requested-With": "fetch" },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.text().then(function (text) {
          if (response.ok) {
            out.innerHTML = text;
          } else {
            out.textContent = "The test was refused (" + response.status + "). Reload the page and try again.";
          }
        });
      })
      .catch(function () {
        out.textContent = "The server did not answer. Check that it is running and try again.";
      })
      .then(function () {
        button.disabled = false;
        out.setAttribute("aria-busy", "false");
      });
  }

  // A table's "select every row" box (hidden without this script, which is what makes it work):
  // ticks or unticks every box named by its data-select-all in the same form.
  function startSelectAll() {
    var boxes = document.querySelectorAll("input[data-select-all]");
    Array.prototype.forEach.call(boxes, function (all) {
      var form = all.form;
      if (!form) return;
      var name = all.getAttribute("data-select-all");
      var rows = form.querySelectorAll('input[type="checkbox"][name="' + name + '"]');
      all.hidden = false;
      all.addEventListener("change", function () {
        Array.prototype.forEach.call(rows, function (row) {
          row.checked = all.checked;
        });
      });
    });
  }

  document.addEventListener("click", testInPlace);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startSelectAll);
  } else {
    startSelectAll();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startLiveTables);
  } else {
    startLiveTables();
  }
})();

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
        // A part that has reached its end (a finished import's summary) is not asked for again.
        if (body.querySelector("[data-live-end]")) window.clearInterval(body.liveTimer);
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
      body.liveTimer = window.setInterval(function () {
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

  // Tasks: ticking a task's box completes it in place (the form's Save button is for browsers
  // without this script). The server answers the task's new row.
  function completeInPlace(event) {
    var box = event.target;
    if (!box.matches || !box.matches("form.task-done input[name=done]")) return;
    var form = box.form;
    var row = form.closest("tr");
    box.disabled = true;
    var data = new URLSearchParams(new FormData(form));
    if (box.checked) data.set("done", "on");
    postForm(form.action, data)
      .then(function (html) {
        if (row) row.outerHTML = html;
      })
      .catch(function () {
        box.checked = !box.checked;
        box.disabled = false;
        window.alert("The task could not be saved. Reload the page and try again.");
      });
  }

  function postForm(url, data) {
    return fetch(url, {
      method: "POST",
      body: data,
      headers: { "X-Requested-With": "fetch" },
      credentials: "same-origin",
    }).then(function (response) {
      if (!response.ok || response.redirected) throw new Error("status " + response.status);
      return response.text();
    });
  }

  // The deals board: a card dropped on another column posts the card's own stage form with that
  // stage, as its Move button would; the menu and Won / Lost post the same form in place. The
  // server answers the board's columns, counts and totals as they are after the move.
  function moveDeal(card, stage, label) {
    var board = document.getElementById("board");
    var form = card && card.querySelector("form.move");
    if (!board || !form) return;
    var data = new URLSearchParams(new FormData(form));
    data.set("stage", stage);
    data.delete("close");
    board.setAttribute("aria-busy", "true");
    postForm(form.action, data)
      .then(function (html) {
        board.innerHTML = html;
        announce("Moved " + (label || "the deal") + ".");
      })
      .catch(function () {
        announce("The deal could not be moved. Reload the page and try again.");
      })
      .then(function () {
        board.setAttribute("aria-busy", "false");
      });
  }

  function announce(text) {
    var status = document.getElementById("board-status");
    if (status) status.textContent = text;
  }

  function stageOfSubmit(event) {
    var form = event.target;
    if (!form.matches || !form.matches("#board form.move")) return;
    event.preventDefault();
    var submitter = event.submitter;
    var stage = submitter && submitter.name === "close" ? submitter.value : form.elements.stage.value;
    var card = form.closest("[data-deal-id]");
    var title = card.querySelector(".deal-title");
    moveDeal(card, stage, title ? title.textContent : "");
  }

  var dragged = null;

  function dragStart(event) {
    var card = event.target.closest ? event.target.closest("#board [data-deal-id]") : null;
    if (!card) return;
    dragged = card;
    card.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.getAttribute("data-deal-id"));
  }

  function columnOf(event) {
    return event.target.closest ? event.target.closest("#board [data-stage].column") : null;
  }

  function dragOver(event) {
    var column = columnOf(event);
    if (!column || !dragged) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    column.classList.add("drop-target");
  }

  function dragLeave(event) {
    var column = columnOf(event);
    if (column && !column.contains(event.relatedTarget)) column.classList.remove("drop-target");
  }

  function drop(event) {
    var column = columnOf(event);
    if (!column) return;
    event.preventDefault();
    column.classList.remove("drop-target");
    var id = event.dataTransfer.getData("text/plain");
    var card = id ? document.querySelector('#board [data-deal-id="' + CSS.escape(id) + '"]') : dragged;
    dragged = null;
    if (!card) return;
    card.classList.remove("dragging");
    var stage = column.getAttribute("data-stage");
    if (card.getAttribute("data-stage") === stage) return;
    var title = card.querySelector(".deal-title");
    moveDeal(card, stage, title ? title.textContent : "");
  }

  function dragEnd() {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
  }

  document.documentElement.classList.add("js");
  document.addEventListener("change", completeInPlace);
  document.addEventListener("submit", stageOfSubmit);
  document.addEventListener("dragstart", dragStart);
  document.addEventListener("dragover", dragOver);
  document.addEventListener("dragleave", dragLeave);
  document.addEventListener("drop", drop);
  document.addEventListener("dragend", dragEnd);

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

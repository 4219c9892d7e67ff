// Polls the console's JSON route of a digest run and updates its counts live until
// nothing is queued or sending any more.
(function () {
  "use strict";
  var box = document.getElementById("digest-run");
  if (!box) { return; }
  var url = box.getAttribute("data-status-url");
  var bar = document.getElementById("run-progress");
  var text = document.getElementById("run-status");

  function show(run) {
    var c = run.counts;
    bar.max = c.total || 1;
    bar.value = c.sent + c.failed + c.skipped;
    text.textContent = run.status + ": " + c.queued + " queued, " + c.sending + " sending, " + c.sent + " sent, " +
      c.failed + " failed, " + c.skipped + " skipped of " + c.total;
    box.setAttribute("data-status", run.status);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (run) {
        show(run);
        if (run.status !== "done") { window.setTimeout(poll, 1000); }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  if (box.getAttribute("data-status") !== "done") { window.setTimeout(poll, 500); }
})();

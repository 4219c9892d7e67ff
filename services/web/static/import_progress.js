// Polls the console's JSON status route of an import job and moves the progress bar;
// reloads the page once the job has finished so the server renders the error table.
(function () {
  "use strict";
  var box = document.getElementById("import-job");
  if (!box || box.getAttribute("data-terminal") === "true") { return; }
  var url = box.getAttribute("data-status-url");
  var bar = document.getElementById("import-progress");
  var text = document.getElementById("import-status");

  function show(job) {
    var total = job.rows_total || 0;
    if (total > 0) { bar.max = total; bar.value = Math.min(job.rows_done, total); }
    text.textContent = job.status + ": " + job.rows_done + " of " + (total || "?") + " rows, " + job.error_count + " errors so far";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (job) {
        show(job);
        if (job.terminal) { window.location.reload(); } else { window.setTimeout(poll, 500); }
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 300);
})();

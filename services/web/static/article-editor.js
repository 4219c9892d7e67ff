// Live preview for the article editor: the server renders and sanitises the body
// exactly as it will be stored, so the preview shows what employees will see.
(function () {
  "use strict";
  var form = document.getElementById("article-form");
  var preview = document.getElementById("preview");
  var meta = document.getElementById("preview-meta");
  if (!form || !preview) { return; }
  var body = form.querySelector("[name=body]");
  var format = form.querySelector("[name=format]");
  var token = form.querySelector("[name=csrf_token]");
  var timer = null;
  var seq = 0;

  function refresh() {
    var mine = ++seq;
    var data = new FormData();
    data.append("csrf_token", token ? token.value : "");
    data.append("body", body.value);
    data.append("format", format.value);
    fetch(form.getAttribute("data-preview-url"), { method: "POST", body: data, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (json) {
        if (mine !== seq) { return; }
        preview.innerHTML = json.html; // sanitised by the server's allow-list
        meta.textContent = json.reading_minutes + " min read";
      })
      .catch(function () { meta.textContent = "Preview unavailable."; });
  }

  function schedule() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(refresh, 300);
  }

  body.addEventListener("input", schedule);
  format.addEventListener("change", schedule);
  refresh();
})();

// The console's only script: live refresh of the cluster page. Every 2 s it
// fetches the element's data-src (an HTML fragment the console renders) and
// puts it in place. Without it the page still works (and refreshes itself).
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.src) return;
  var state = document.getElementById("live-state");
  var busy = false;
  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(live.dataset.src, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        if (state) state.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function () {
        if (state) state.textContent = "The console does not answer; retrying.";
      })
      .then(function () { busy = false; });
  }
  setInterval(tick, 2000);
})();

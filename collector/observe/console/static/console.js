/* The collector console's only script (same origin, no inline code):
   asks before a purge, and refreshes the live panels ([data-live]) every
   data-refresh seconds while the tab is visible, keeping open <details>. */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  var seconds = Number(document.body.getAttribute("data-refresh")) || 0;
  if (!seconds || !window.fetch || !window.DOMParser) return;

  function openDetails(root) {
    return Array.prototype.map.call(root.querySelectorAll("details[id]"), function (d) { return [d.id, d.open]; });
  }

  function refresh() {
    if (document.hidden) return later();
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (answer) {
        if (answer.redirected || !answer.ok) throw new Error("HTTP " + answer.status);
        return answer.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (old) {
          var next = old.id && fresh.getElementById(old.id);
          if (!next) return;
          var states = openDetails(old);
          old.replaceWith(next);
          states.forEach(function (state) {
            var details = document.getElementById(state[0]);
            if (details) details.open = state[1];
          });
        });
        later();
      })
      .catch(function () {
        var stamp = document.getElementById("updated");
        if (stamp) stamp.textContent = "Not refreshed: reload the page (you may need to log in again).";
      });
  }

  function later() { window.setTimeout(refresh, seconds * 1000); }
  later();
})();

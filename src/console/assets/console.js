// livectx console: live tables without page reloads. Loaded from /console/assets (the CSP
// allows no inline script). Fragments come from the server already escaped; they are HTML
// text only, and the CSP would refuse any script or event handler inside them anyway.
"use strict";
(function () {
  var PERIOD_MS = 3000;

  function pollUrl(body) {
    var url = new URL(body.getAttribute("data-poll"), window.location.href);
    var search = document.getElementById("search");
    if (search && search.getAttribute("data-target") === body.id) {
      url.searchParams.set("q", search.value);
    }
    return url;
  }

  function refresh(body) {
    if (document.hidden) { return; }
    fetch(pollUrl(body), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) { body.innerHTML = html; } })
      .catch(function () { /* offline for a moment: the next tick tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var bodies = document.querySelectorAll("tbody[data-poll]");
    bodies.forEach(function (body) {
      window.setInterval(function () { refresh(body); }, PERIOD_MS);
    });
    var search = document.getElementById("search");
    if (search) {
      var timer = null;
      search.addEventListener("input", function () {
        window.clearTimeout(timer);
        timer = window.setTimeout(function () {
          var target = document.getElementById(search.getAttribute("data-target"));
          if (target) { refresh(target); }
          var url = new URL(window.location.href);
          url.searchParams.set("q", search.value);
          window.history.replaceState(null, "", url);
        }, 250);
      });
    }
  });
})();

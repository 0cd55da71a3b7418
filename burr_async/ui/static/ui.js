// burr_async web UI: draws the graph picture from the Mermaid source on the page.
// The pages work without this script; only the picture needs it.
"use strict";
(function () {
  function draw() {
    var container = document.getElementById("graph");
    var source = document.getElementById("graph-source");
    if (!container || !source) {
      return;
    }
    if (!window.mermaid) {
      container.textContent = "The graph picture needs mermaid.min.js, which did not load.";
      container.setAttribute("data-rendered", "error");
      return;
    }
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict", // labels are user data: text only, sanitized
      theme: dark ? "dark" : "default",
    });
    window.mermaid
      .render("graph-svg", source.textContent)
      .then(function (result) {
        container.innerHTML = result.svg;
        container.setAttribute("data-rendered", "true");
      })
      .catch(function (error) {
        container.textContent = "The graph could not be drawn: " + error;
        container.setAttribute("data-rendered", "error");
      });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();

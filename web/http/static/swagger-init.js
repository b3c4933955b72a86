// Starts Swagger UI on /docs (kept out of the page so the Content-Security-Policy needs no inline script).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || !window.SwaggerUIBundle) return;
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    validatorUrl: null,
    docExpansion: root.getAttribute("data-doc-expansion") || "none",
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIStandalonePreset.slice(1)],
    plugins: [window.SwaggerUIBundle.plugins.DownloadUrl]
  });
})();

// The evaluation report's threshold slider on the job page: each model's precision, recall and F1
// at the chosen score threshold, read from the report's thresholds table (the JSON data block the
// page carries; steps of 0.01, as report.json has them). No inline script: the CSP forbids it.
(function () {
  "use strict";
  const slider = document.getElementById("threshold-slider");
  const data = document.getElementById("threshold-data");
  if (!slider || !data) return;
  const tables = JSON.parse(data.textContent);
  const shown = document.getElementById("threshold-value");
  const format = (value) => (value === null || value === undefined ? "–" : value.toFixed(3));

  function show() {
    const step = Math.round(Number(slider.value) * 100);
    shown.textContent = (step / 100).toFixed(2);
    document.querySelectorAll("[data-threshold-model]").forEach((row) => {
      const table = tables[Number(row.dataset.thresholdModel)] || [];
      const at = table[Math.min(step, table.length - 1)];
      if (!at) return;
      row.querySelector('[data-value="precision"]').textContent = format(at.precision);
      row.querySelector('[data-value="recall"]').textContent = format(at.recall);
      row.querySelector('[data-value="f1"]').textContent = format(at.f1);
      row.querySelector('[data-value="counts"]').textContent = at.true_positives + " / " + at.false_positives;
    });
  }
  slider.addEventListener("input", show);
  show();
})();

// The job form: choosing "Evaluate" sets the score threshold to 0 (COCO's protocol scores every
// prediction) and opens the evaluation options; choosing "Predict" again puts the threshold back.
(function () {
  "use strict";
  var form = document.getElementById("job-form");
  if (!form) return;
  var score = form.querySelector("#min_score");
  var shown = form.querySelector("#min_score_value");
  var extra = form.querySelector("#evaluate-options");
  var predictScore = score ? score.value : null;

  function setScore(value) {
    if (!score) return;
    score.value = value;
    if (shown) shown.textContent = value;
  }

  form.querySelectorAll('input[name="kind"]').forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (!radio.checked) return;
      if (radio.value === "evaluate") {
        predictScore = score ? score.value : predictScore;
        setScore("0");
        if (extra) extra.open = true;
      } else if (predictScore !== null) {
        setScore(predictScore);
      }
    });
  });
})();

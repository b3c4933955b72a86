// The job form: choosing "Evaluate" sets the score threshold to 0 (COCO's protocol scores every
// prediction) and opens the evaluation options; choosing "Predict" again puts the threshold back.
// "Annotate a video" swaps the zip input for the video input (the other one is disabled, so only one
// file is sent) and opens the video options.
(function () {
  "use strict";
  var form = document.getElementById("job-form");
  if (!form) return;
  var score = form.querySelector("#min_score");
  var shown = form.querySelector("#min_score_value");
  var extra = form.querySelector("#evaluate-options");
  var predictScore = score ? score.value : null;
  var archive = form.querySelector("#archive");
  var video = form.querySelector("#video");
  var videoOptions = form.querySelector("#video-options");

  function showFileFor(kind) {
    var isVideo = kind === "video";
    if (archive) {
      archive.disabled = isVideo;
      archive.required = !isVideo;
      document.getElementById("archive-field").hidden = isVideo;
    }
    if (video) {
      video.disabled = !isVideo;
      video.required = isVideo;
      document.getElementById("video-field").hidden = !isVideo;
    }
    if (videoOptions) {
      videoOptions.hidden = !isVideo;
      videoOptions.querySelectorAll("input").forEach(function (input) {
        input.disabled = !isVideo; // a predict or evaluate job refuses the video options
      });
      if (isVideo) videoOptions.open = true;
    }
  }
  var checked = form.querySelector('input[name="kind"]:checked');
  showFileFor(checked ? checked.value : "predict");

  function setScore(value) {
    if (!score) return;
    score.value = value;
    if (shown) shown.textContent = value;
  }

  form.querySelectorAll('input[name="kind"]').forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (!radio.checked) return;
      showFileFor(radio.value);
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

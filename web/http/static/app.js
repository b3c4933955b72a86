// Small progressive enhancements for the upload form; the form works without JavaScript.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;

  // Show the threshold slider's value next to its label.
  var slider = document.getElementById("min_score");
  var output = document.getElementById("min_score_value");
  if (slider && output) {
    var show = function () { output.value = Number(slider.value).toFixed(2); };
    slider.addEventListener("input", show);
    show();
  }

  // Preview the chosen picture (read locally, nothing is uploaded until the form is sent).
  var fileInput = document.getElementById("image");
  var preview = document.getElementById("image-preview");
  var previewImg = document.getElementById("image-preview-img");
  var previewUrl = null;
  if (fileInput && preview && previewImg) {
    fileInput.addEventListener("change", function () {
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      var file = fileInput.files && fileInput.files[0];
      if (!file || file.type.indexOf("image/") !== 0) { preview.hidden = true; return; }
      previewUrl = URL.createObjectURL(file);
      previewImg.src = previewUrl;
      preview.hidden = false;
    });
  }

  // Tell people the model is running, and avoid double submissions.
  var button = document.getElementById("submit-button");
  var busy = document.getElementById("busy");
  form.addEventListener("submit", function () {
    if (button) button.disabled = true;
    if (busy) busy.hidden = false;
  });
  // Coming back with the browser's back button must not leave the button disabled.
  window.addEventListener("pageshow", function () {
    if (button) button.disabled = false;
    if (busy) busy.hidden = true;
  });
})();

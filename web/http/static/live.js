// The live camera page: getUserMedia, one frame in flight at a time to /live/predict (the page's
// endpoint, so the sign-in session works when API keys are on), boxes drawn on a canvas over the
// video, the current detections listed in #live-detections. No inline script: the CSP stays strict.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) return;
  var video = document.getElementById("live-video");
  var overlay = document.getElementById("live-overlay");
  var stage = document.getElementById("live-stage");
  var list = document.getElementById("live-detections");
  var errorBox = document.getElementById("live-error");
  var start = document.getElementById("live-start");
  var stop = document.getElementById("live-stop");
  var model = document.getElementById("live-model");
  var score = document.getElementById("live-min-score");
  var scoreShown = document.getElementById("live-min-score-value");
  var fpsShown = document.getElementById("live-fps");
  var latencyShown = document.getElementById("live-latency");
  var framesShown = document.getElementById("live-frames");
  var maxSide = Number(root.dataset.maxSide) || 640;
  var grab = document.createElement("canvas");
  var stream = null;
  var running = false;
  var answered = 0;
  var fps = null;
  var lastAnswer = null;
  var COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"];

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  score.addEventListener("input", function () { scoreShown.textContent = Number(score.value).toFixed(2); });

  function cameraProblem(error) {
    var name = error && error.name;
    if (!window.isSecureContext) {
      return "The browser opens a camera only on HTTPS or localhost: open this page over HTTPS.";
    }
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "The camera is not allowed: allow it for this site in the browser's settings, then try again.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No camera was found: connect one and try again.";
    }
    if (name === "NotReadableError") return "The camera is in use by another program.";
    return "The camera could not be opened" + (error && error.message ? ": " + error.message : ".");
  }

  function frameBlob() {
    var width = video.videoWidth, height = video.videoHeight;
    var scale = Math.min(1, maxSide / Math.max(width, height));
    grab.width = Math.round(width * scale);
    grab.height = Math.round(height * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    return new Promise(function (resolve) { grab.toBlob(resolve, "image/jpeg", 0.85); });
  }

  function draw(answer) {
    var width = video.clientWidth, height = video.clientHeight;
    overlay.width = width;
    overlay.height = height;
    var context = overlay.getContext("2d");
    context.clearRect(0, 0, width, height);
    var image = answer.image || {};
    var sx = width / (image.width || 1), sy = height / (image.height || 1);
    context.lineWidth = 3;
    context.font = "14px system-ui, sans-serif";
    (answer.detections || []).forEach(function (d) {
      var colour = COLOURS[Math.abs(d.class_id || 0) % COLOURS.length];
      var x = d.box.xmin * sx, y = d.box.ymin * sy;
      context.strokeStyle = colour;
      context.strokeRect(x, y, (d.box.xmax - d.box.xmin) * sx, (d.box.ymax - d.box.ymin) * sy);
      var text = d.label + " " + d.score.toFixed(2);
      var textWidth = context.measureText(text).width + 8;
      context.fillStyle = colour;
      context.fillRect(x, Math.max(0, y - 20), textWidth, 20);
      context.fillStyle = "#ffffff";
      context.fillText(text, x + 4, Math.max(14, y - 5));
    });
  }

  function listDetections(answer) {
    var items = (answer.detections || []).map(function (d) { return d.label + " " + d.score.toFixed(2); });
    if (answer.classes) items = answer.classes.slice(0, 5).map(function (c) { return c.label + " " + c.score.toFixed(2); });
    while (list.firstChild) list.removeChild(list.firstChild);
    items.forEach(function (text) {
      var item = document.createElement("li");
      item.textContent = text;
      list.appendChild(item);
    });
  }

  function next() {
    if (!running) return;
    if (!video.videoWidth) { window.setTimeout(next, 100); return; }
    frameBlob().then(function (blob) {
      var form = new FormData();
      form.append("model", model.value);
      form.append("min_score", score.value);
      form.append("csrf_token", root.dataset.csrf);
      form.append("image", blob, "frame.jpg");
      var sent = performance.now();
      return fetch(root.dataset.predict, { method: "POST", body: form, credentials: "same-origin" })
        .then(function (response) {
          return response.json().catch(function () { return { error: { message: response.status + " " + response.statusText } }; })
            .then(function (body) { return { ok: response.ok, body: body, latency: performance.now() - sent }; });
        });
    }).then(function (result) {
      if (!running) return;
      if (!result.ok) {
        showError("The gateway said: " + ((result.body.error || {}).message || "an error"));
        window.setTimeout(next, 1000);  // an error: try again, slower
        return;
      }
      showError("");
      var now = performance.now();
      if (lastAnswer !== null) {
        var rate = 1000 / Math.max(1, now - lastAnswer);
        fps = fps === null ? rate : 0.8 * fps + 0.2 * rate;
        fpsShown.textContent = fps.toFixed(1);
      }
      lastAnswer = now;
      answered += 1;
      framesShown.textContent = String(answered);
      latencyShown.textContent = String(Math.round(result.latency));
      draw(result.body);
      listDetections(result.body);
      next();
    }).catch(function (error) {
      if (!running) return;
      showError("The gateway could not be reached: " + error.message);
      window.setTimeout(next, 1000);
    });
  }

  start.addEventListener("click", function () {
    showError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError(cameraProblem(null));
      return;
    }
    navigator.mediaDevices.getUserMedia({ video: true, audio: false }).then(function (media) {
      stream = media;
      video.srcObject = media;
      stage.hidden = false;
      start.hidden = true;
      stop.hidden = false;
      running = true;
      lastAnswer = null;
      next();
    }).catch(function (error) { showError(cameraProblem(error)); });
  });

  stop.addEventListener("click", function () {
    running = false;
    if (stream) stream.getTracks().forEach(function (track) { track.stop(); });
    stream = null;
    video.srcObject = null;
    stage.hidden = true;
    start.hidden = false;
    stop.hidden = true;
  });
})();

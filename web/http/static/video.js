// A video job's page: links and timeline bars with data-seek jump the annotated video to that time; a
// cursor on the timeline follows the playback. Static file (the CSP allows no inline script).
(function () {
  "use strict";
  var video = document.getElementById("job-video");
  if (!video) return;
  document.querySelectorAll("[data-seek]").forEach(function (el) {
    el.addEventListener("click", function (event) {
      event.preventDefault();
      video.currentTime = parseFloat(el.getAttribute("data-seek")) || 0;
      video.scrollIntoView({ block: "nearest" });
    });
  });
  var timeline = document.getElementById("video-timeline");
  var cursor = document.getElementById("timeline-cursor");
  if (!timeline || !cursor) return;
  var left = parseFloat(timeline.getAttribute("data-left")) || 0;
  var width = parseFloat(timeline.getAttribute("data-width")) || 1;
  var duration = parseFloat(timeline.getAttribute("data-duration")) || 1;
  video.addEventListener("timeupdate", function () {
    var x = left + width * Math.min(1, video.currentTime / duration);
    cursor.setAttribute("x1", x);
    cursor.setAttribute("x2", x);
  });
})();

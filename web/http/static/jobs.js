// The jobs pages, kept live: while a job is queued or running, poll the jobs API once a second and
// update its status, progress bar, skipped list, result links and buttons in place (no reload).
// The pages work without JavaScript (reload to see progress); nothing here is inline (CSP).
(function () {
  "use strict";

  // The job form: the threshold slider's value, and no double submissions while the zip uploads.
  var form = document.getElementById("job-form");
  if (form) {
    var slider = document.getElementById("min_score");
    var output = document.getElementById("min_score_value");
    if (slider && output) {
      var show = function () { output.value = Number(slider.value).toFixed(2); };
      slider.addEventListener("input", show);
      show();
    }
    // A refused upload comes back as the page with its message: the choices made are put back (the
    // server cannot echo them, it refused the body before reading it as a form). The zip is chosen again.
    var KEPT = ["model", "min_score", "max_detections", "version", "version_label", "iou_threshold"];
    var storageKey = "job-form";
    try {
      var kept = JSON.parse(window.sessionStorage.getItem(storageKey) || "null");
      if (kept && document.getElementById("form-error")) {
        KEPT.forEach(function (name) {
          var field = form.elements[name];
          if (field && typeof kept[name] === "string") field.value = kept[name];
        });
        if (slider && output) output.value = Number(slider.value).toFixed(2);
      }
      window.sessionStorage.removeItem(storageKey);
    } catch (e) { /* storage off: the defaults stay */ }
    var button = document.getElementById("start-job");
    var busy = document.getElementById("busy");
    form.addEventListener("submit", function () {
      var values = {};
      KEPT.forEach(function (name) { if (form.elements[name]) values[name] = form.elements[name].value; });
      try { window.sessionStorage.setItem(storageKey, JSON.stringify(values)); } catch (e) { /* no storage */ }
      if (button) button.disabled = true;
      if (busy) busy.hidden = false;
    });
    window.addEventListener("pageshow", function () {
      if (button) button.disabled = false;
      if (busy) busy.hidden = true;
    });
  }

  var root = document.querySelector("[data-jobs-poll]");
  if (!root) return;
  var url = root.getAttribute("data-jobs-poll");
  var ACTIVE = { queued: true, running: true };
  var INTERVAL_MS = 1000;
  var MAX_POLLS = 6 * 3600; // bounded: six hours of polling at most, then reload to see more
  var MAX_FAILURES = 30; // consecutive failed polls (gateway restarting, network gone) before giving up
  var polls = 0;
  var failures = 0;

  function jobElements(id) {
    return Array.prototype.filter.call(document.querySelectorAll("[data-job]"), function (el) {
      return el.getAttribute("data-job") === id;
    });
  }

  function each(el, selector, fn) {
    Array.prototype.forEach.call(el.querySelectorAll(selector), fn);
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function fillResults(list, results) {
    var names = Object.keys(results || {});
    if (list.children.length === names.length) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    names.forEach(function (name) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.href = results[name];
      link.setAttribute("download", name);
      link.textContent = name;
      item.appendChild(link);
      list.appendChild(item);
    });
  }

  function fillSkipped(list, skipped) {
    if (list.children.length === skipped.length) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    skipped.forEach(function (entry) {
      var item = document.createElement("li");
      var file = document.createElement("span");
      file.className = "mono";
      file.textContent = entry.file;
      item.appendChild(file);
      item.appendChild(document.createTextNode(": " + entry.reason));
      list.appendChild(item);
    });
  }

  // The thumbnails of a job that has just succeeded: the job page's own markup, fetched again.
  function refreshThumbnails(el) {
    var gallery = el.querySelector("#job-thumbnails");
    if (!gallery || gallery.children.length) return;
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("job-thumbnails");
        if (!fresh) return;
        while (fresh.firstChild) gallery.appendChild(document.adoptNode(fresh.firstChild));
        gallery.setAttribute("data-job-thumbnails", String(gallery.querySelectorAll("img").length));
      })
      .catch(function () { /* the thumbnails show on the next visit */ });
  }

  function update(el, job) {
    var was = el.getAttribute("data-job-state");
    el.setAttribute("data-job-state", job.status);
    each(el, "[data-job-status]", function (node) {
      setText(node, job.status);
      node.className = "job-status status-" + job.status;
    });
    each(el, "[data-job-model]", function (node) {
      setText(node, job.model.name + (job.model.version ? " v" + job.model.version : ""));
    });
    var total = job.progress.total;
    each(el, "[data-job-progress]", function (bar) {
      bar.max = total || 1;
      bar.value = total ? job.progress.done : (job.status === "succeeded" ? 1 : 0);
      setText(bar, job.progress.done + " / " + total);
    });
    each(el, "[data-job-count]", function (node) { setText(node, job.progress.done + " / " + total); });
    each(el, "[data-job-error]", function (node) {
      setText(node, job.error || "");
      node.hidden = !job.error;
    });
    each(el, "[data-job-results]", function (list) { fillResults(list, job.results); });
    each(el, "[data-job-no-results]", function (node) { node.hidden = Object.keys(job.results || {}).length > 0; });
    each(el, "[data-job-skipped]", function (list) { fillSkipped(list, job.skipped || []); });
    each(el, "[data-job-skipped-count]", function (node) { setText(node, String((job.skipped || []).length)); });
    each(el, "[data-job-cancel]", function (cancel) { cancel.hidden = !ACTIVE[job.status]; });
    if (job.status === "succeeded" && was !== "succeeded") {
      // an evaluation's report (tables, plots, slider, pictures) is the page itself: load it whole
      if (el.querySelector("[data-eval-pending]")) window.location.reload();
      else refreshThumbnails(el);
    }
  }

  function gone(id) {
    jobElements(id).forEach(function (el) {
      el.setAttribute("data-job-state", "deleted");
      each(el, "[data-job-status]", function (node) { setText(node, "deleted"); node.className = "job-status"; });
      each(el, "[data-job-cancel]", function (cancel) { cancel.hidden = true; });
    });
  }

  function anyActive() {
    return Array.prototype.some.call(document.querySelectorAll("[data-job]"), function (el) {
      return ACTIVE[el.getAttribute("data-job-state")];
    });
  }

  function schedule() {
    if (anyActive() && polls < MAX_POLLS && failures < MAX_FAILURES) {
      window.setTimeout(poll, INTERVAL_MS);
    }
  }

  function poll() {
    polls += 1;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404 && root.hasAttribute("data-job")) {
          gone(root.getAttribute("data-job"));
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (body) {
        failures = 0;
        if (!body) return;
        var jobs = body.jobs || [body];
        var seen = {};
        jobs.forEach(function (job) {
          seen[job.id] = true;
          jobElements(job.id).forEach(function (el) { update(el, job); });
        });
        if (body.jobs) {
          Array.prototype.forEach.call(document.querySelectorAll("[data-job]"), function (el) {
            var id = el.getAttribute("data-job");
            if (!seen[id]) gone(id);
          });
        }
      })
      .catch(function () { failures += 1; })
      .then(schedule);
  }

  schedule();
})();

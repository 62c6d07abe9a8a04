// The prompt's voice note (issue 9): record with the browser's own MediaRecorder (no library),
// at most one minute, play it back, record again or delete it; the answer and the recording go
// to the server in ONE multipart POST, so the prompt's submission id keeps them together and a
// retry or double click stores one answer and one voice note. Without MediaRecorder, a
// microphone this frame may use, or JavaScript, the controls stay hidden and the form posts as
// it always did.
(function () {
  var box = document.querySelector("[data-voice]");
  var form = box && box.closest("form");
  var md = navigator.mediaDevices;
  if (!form || !window.MediaRecorder || !md || !md.getUserMedia || !window.FormData ||
      !window.fetch) return;
  // A frame the shop's page did not grant the microphone (allow="microphone") cannot record.
  var policy = document.permissionsPolicy || document.featurePolicy;
  if (policy && policy.allowsFeature && !policy.allowsFeature("microphone")) return;

  var MAX_MS = (+box.getAttribute("data-max") || 60) * 1000;
  // 32 kbit/s Opus keeps speech clear for the recogniser (24 kbit/s lost words in tests):
  // 60 s is 240 kB, far below the server's 2 MB.
  var BITS = 32000;
  var TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"];
  var mime = "";
  for (var i = 0; i < TYPES.length; i++) {
    if (MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported(TYPES[i])) {
      mime = TYPES[i];
      break;
    }
  }
  function el(sel) { return box.querySelector(sel); }
  function text(name) { return box.getAttribute("data-l-" + name) || ""; }
  var btn = {
    record: el("[data-act=record]"), stop: el("[data-act=stop]"),
    rerecord: el("[data-act=rerecord]"), del: el("[data-act=delete]")
  };
  var time = el("[data-time]"), elapsedEl = el("[data-elapsed]"), ofEl = el("[data-of]");
  var player = el("[data-player]"), status = el("[data-status]"), error = el("[data-error]");
  var submit = form.querySelector("button[type=submit]");

  var recorder = null, stream = null, chunks = [], started = 0, ticker = 0;
  var blob = null, blobUrl = "", elapsed = 0, sending = false, limitHit = false;

  function clock(ms) {
    var s = Math.min(Math.floor(ms / 1000), MAX_MS / 1000);
    return Math.floor(s / 60) + ":" + (s % 60 < 10 ? "0" : "") + (s % 60);
  }
  function say(msg) { status.textContent = msg; }
  function fail(msg) {
    error.textContent = msg;
    error.hidden = !msg;
  }
  // One of three states: idle (Record), recording (Stop + running timer), recorded (player,
  // Record again, Delete, the note's length). Focus follows the control that replaced the
  // focused one, so a keyboard or screen-reader user is never left on a hidden button.
  function show(state) {
    btn.record.hidden = state !== "idle";
    btn.stop.hidden = state !== "recording";
    btn.rerecord.hidden = btn.del.hidden = state !== "recorded";
    player.hidden = state !== "recorded";
    time.hidden = state === "idle";
    ofEl.hidden = state === "recorded";
    box.setAttribute("data-state", state);
  }
  function tick() {
    elapsed = Date.now() - started;
    elapsedEl.textContent = clock(elapsed);
    if (elapsed >= MAX_MS) {
      limitHit = true;
      stop();
    }
  }
  function release() {
    clearInterval(ticker);
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
    stream = null;
  }
  function clear() {
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blob = null;
    blobUrl = "";
    player.removeAttribute("src");
    player.load();
  }
  function start() {
    fail("");
    clear();
    btn.record.disabled = btn.rerecord.disabled = true;
    // The microphone as it is: the recogniser hears speech better without WebRTC's noise
    // suppression and gain control (which clipped a clear voice), and nothing plays back
    // while recording, so there is no echo to cancel.
    md.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
               autoGainControl: false }
    }).then(function (s) {
      stream = s;
      var opts = { audioBitsPerSecond: BITS };
      if (mime) opts.mimeType = mime;
      recorder = new MediaRecorder(s, opts);
      chunks = [];
      limitHit = false;
      recorder.ondataavailable = function (e) { if (e.data && e.data.size) chunks.push(e.data); };
      recorder.onstop = stopped;
      recorder.start(1000);
      started = Date.now();
      elapsed = 0;
      elapsedEl.textContent = clock(0);
      ticker = setInterval(tick, 200);
      show("recording");
      btn.stop.focus();
      say(text("recording"));
    }).catch(function () {
      release();
      show("idle");
      fail(text("denied"));
    }).then(function () {
      btn.record.disabled = btn.rerecord.disabled = false;
    });
  }
  function stop() {
    if (recorder && recorder.state !== "inactive") recorder.stop();
    release();
  }
  function stopped() {
    blob = new Blob(chunks, { type: (recorder && recorder.mimeType) || mime || "audio/webm" });
    chunks = [];
    recorder = null;
    if (!blob.size) {
      blob = null;
      show("idle");
      btn.record.focus();
      return;
    }
    blobUrl = URL.createObjectURL(blob);
    player.src = blobUrl;
    elapsedEl.textContent = clock(elapsed);
    show("recorded");
    player.focus();
    say((limitHit ? text("limit") + " " : "") + text("recorded"));
  }

  btn.record.addEventListener("click", start);
  btn.rerecord.addEventListener("click", start);
  btn.stop.addEventListener("click", stop);
  btn.del.addEventListener("click", function () {
    clear();
    show("idle");
    fail("");
    btn.record.focus();
    say(text("deleted"));
  });

  function ratingError(msg) {
    var fs = form.querySelector("fieldset");
    var p = document.getElementById("rating-err");
    if (!p) {
      p = document.createElement("p");
      p.className = "err";
      p.id = "rating-err";
      p.setAttribute("role", "alert");
      fs.appendChild(p);
      fs.setAttribute("aria-describedby", "rating-err");
    }
    p.textContent = msg;
    var first = form.querySelector("input[name=rating]");
    if (first) first.focus();
  }
  // With a recording, the answer goes as multipart/form-data and JSON comes back (the next
  // page, or why not); without one the form posts natively, exactly as before.
  form.addEventListener("submit", function (e) {
    if (recorder) stop();
    if (!blob) return;
    e.preventDefault();
    if (sending) return;  // a double click: the first request is on its way
    sending = true;
    if (submit) submit.disabled = true;
    fail("");
    say(text("sending"));
    var data = new FormData(form);
    var ext = blob.type.indexOf("ogg") >= 0 ? "ogg" : blob.type.indexOf("mp4") >= 0 ? "m4a" : "webm";
    data.append("voice", blob, "voice." + ext);
    fetch(form.action, {
      method: "POST", body: data, credentials: "omit",
      headers: { Accept: "application/json" }
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, body: j }; });
    }).then(function (res) {
      if (res.ok && res.body.next) {
        location.assign(res.body.next);
        return;
      }
      var j = res.body || {};
      var fields = j.fields || {};
      var names = Object.keys(fields);
      if (fields.rating) ratingError(fields.rating[0]);
      else fail(names.length ? fields[names[0]][0] : j.message || text("offline"));
      say("");
      sending = false;
      if (submit) submit.disabled = false;
    }).catch(function () {
      // Nothing came back: sending again is safe, the server keeps one answer per prompt.
      fail(text("offline"));
      say("");
      sending = false;
      if (submit) submit.disabled = false;
    });
  });

  show("idle");
  box.hidden = false;
})();

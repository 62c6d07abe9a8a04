// Runs inside the prompt iframe: reports its height to the embedding page (whose origin the
// server vouched for) and auto-sends a one-tap rating where there is no comment box.
// On the pages behind email links (a one-click rating, "is it resolved?") it sends the
// link's choice by itself: opening a link (GET) stores nothing, because mail scanners open
// every link; this POST does, so a person still needs one click. It waits until the page is
// really shown: no prerendered or hidden (preview) page sends anything.
(function () {
  var parent = document.body.getAttribute("data-parent");
  function post(msg) {
    if (parent && window.parent !== window) {
      try { window.parent.postMessage(msg, parent); } catch (e) { /* ignore */ }
    }
  }
  function size() {
    // The body's own height: the document's scrollHeight never shrinks below the frame.
    post({ closeloop: "size", height: Math.ceil(document.body.getBoundingClientRect().height) });
  }
  size();
  if (window.ResizeObserver) new ResizeObserver(size).observe(document.body);
  var h = document.querySelector("h1[tabindex]");
  if (h) { post({ closeloop: "done" }); h.focus({ preventScroll: true }); }
  var auto = document.querySelector("form[data-autosubmit]");
  if (auto) {
    var sent = false;
    var send = function () {
      if (sent || document.prerendering || document.visibilityState !== "visible") return;
      sent = true;
      var confirm = auto.querySelector("[data-confirm]");
      var saving = auto.querySelector("[data-saving]");
      if (confirm) confirm.hidden = true;
      if (saving) saving.hidden = false;
      if (auto.requestSubmit) auto.requestSubmit(); else auto.submit();
    };
    document.addEventListener("visibilitychange", send);
    document.addEventListener("prerenderingchange", send);
    send();
    return;
  }
  var form = document.querySelector("form");
  if (form && !form.querySelector("textarea")) {
    form.addEventListener("change", function (e) {
      // Not while a voice note may still be recorded (voice.js shows its controls).
      if (form.querySelector("[data-voice]:not([hidden])")) return;
      if (e.target.name === "rating") form.requestSubmit ? form.requestSubmit() : form.submit();
    });
  }
})();

// A kiosk tablet: a tap is an answer. It goes into a queue in localStorage with an id made
// here, and is sent from there (again after a network outage, with the same id: the server
// stores each id once), so no tap is lost and none is counted twice. The page thanks the
// customer and is ready for the next one after a few seconds.
(function () {
  var form = document.querySelector("form[data-kiosk]");
  if (!form || !window.fetch || !window.JSON) return;
  document.documentElement.className += " js";
  var key = "closeloop.kiosk." + form.getAttribute("data-kiosk");
  var ask = document.getElementById("ask"), done = document.getElementById("done");
  var pending = document.getElementById("pending"), sending = false, timer = null;
  function load() { try { return JSON.parse(localStorage.getItem(key) || "[]"); } catch (e) { return []; } }
  function save(q) { try { localStorage.setItem(key, JSON.stringify(q)); } catch (e) { /* full */ } }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var a = new Uint8Array(16); crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function show() {
    var n = load().length;
    pending.hidden = n === 0;
    pending.textContent = n ? n + " \u2191" : "";
  }
  function flush() {
    var q = load();
    show();
    if (sending || !q.length) return;
    sending = true;
    var item = q[0];
    fetch(form.action, { method: "POST", headers: { "Content-Type": "application/json" },
                         body: JSON.stringify(item), credentials: "omit" })
      .then(function (r) {
        sending = false;
        // Stored (or refused for good: a revoked kiosk, a bad answer): off the queue.
        if (r.ok || (r.status >= 400 && r.status < 500 && r.status !== 429 && r.status !== 408)) {
          save(load().filter(function (x) { return x.submission_id !== item.submission_id; }));
          flush();
        }
      }, function () { sending = false; show(); });
  }
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  form.addEventListener("change", function (e) {
    if (e.target.name !== "rating") return;
    var q = load();
    q.push({ submission_id: newId(), rating: e.target.value });
    save(q);
    e.target.checked = false;
    ask.hidden = true; done.hidden = false;
    clearTimeout(timer);
    timer = setTimeout(function () { done.hidden = true; ask.hidden = false; }, 3000);
    flush();
  });
  window.addEventListener("online", flush);
  setInterval(flush, 5000);
  flush();
})();

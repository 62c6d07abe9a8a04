/* Closeloop loader: <script src=".../widget.js" async data-site data-moment data-sku
 * data-channel [data-order] [data-lang]> or data-token; window.Closeloop.show({...}) for SPAs.
 * No cookies; never throws into the host page; every message origin is checked. */
(function (w, d) {
  try {
    if (w.Closeloop) return;
    var s = d.currentScript, ds = (s && s.dataset) || {}, base, box, frame, ls;
    base = new URL(s.src).origin;
    try { ls = w.localStorage; } catch (e) { /* storage blocked */ }
    function get(k) { try { return ls.getItem("closeloop." + k); } catch (e) { return null; } }
    function put(k, v) { try { ls.setItem("closeloop." + k, v); } catch (e) { /* ignore */ } }
    function vid() {
      var v = get("vid");
      if (!v) { v = (w.crypto && crypto.randomUUID) ? crypto.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36); put("vid", v); }
      return v;
    }
    function close() {
      if (!box) return;
      box.remove(); box = frame = null;
      w.removeEventListener("message", onmsg);
    }
    function onmsg(e) {
      var m = e.data;
      if (!frame || e.origin !== base || e.source !== frame.contentWindow || !m) return;
      if (m.closeloop === "size") frame.style.height = Math.min(+m.height || 0, 560) + "px";
      if (m.closeloop === "close") close();
    }
    function open(url, l) {
      var b = d.createElement("button"), st = "position:fixed;z-index:2147483647;";
      l = l || {};
      box = d.createElement("div");
      box.setAttribute("role", "complementary");
      box.setAttribute("aria-label", l.title || "Feedback");
      box.style.cssText = st + "right:8px;bottom:8px;width:380px;max-width:calc(100vw - 16px);background:#fff;border-radius:12px;box-shadow:0 6px 28px rgba(0,0,0,.25);overflow:hidden";
      frame = d.createElement("iframe");
      frame.title = l.title || "Feedback";
      frame.allow = "microphone";  // the prompt's voice note (only when the shop's page may)
      frame.src = url + (url.indexOf("?") < 0 ? "?" : "&") + "o=" + encodeURIComponent(location.origin);
      frame.style.cssText = "display:block;border:0;width:100%;height:200px";
      b.type = "button";
      b.textContent = "\u00d7";
      b.setAttribute("aria-label", l.close || "Close feedback");
      b.style.cssText = "position:absolute;top:4px;right:6px;border:0;background:none;font:22px/1 sans-serif;cursor:pointer;padding:6px;color:#555";
      b.onclick = close;
      box.append(frame, b);
      d.body.append(box);
      w.addEventListener("message", onmsg);
    }
    function show(o) {
      try {
        o = o || {};
        if (box || +get("until") > Date.now()) return;
        var sku = o.skus || ds.sku;
        fetch(base + "/e/prompt", {
          method: "POST", credentials: "omit", keepalive: true,
          headers: { "Content-Type": "text/plain" },
          body: JSON.stringify({
            token: o.token || ds.token, site: o.site || ds.site, moment: o.moment || ds.moment,
            channel: o.channel || ds.channel || "web", skus: typeof sku == "string" ? sku.split(",") : sku,
            order: o.order || ds.order, lang: o.lang || ds.lang || d.documentElement.lang || navigator.language,
            url: location.href, vid: vid()
          })
        }).then(function (r) { return r.json(); }).then(function (j) {
          if (j.cooldown && (j.show || j.reason == "cooldown")) put("until", Date.now() + j.cooldown * 1e3);
          if (j.show && j.url && !box) open(j.url, j.labels);
        }).catch(function () { /* the host page never sees our failures */ });
      } catch (e) { /* idem */ }
    }
    w.Closeloop = { show: show, close: close };
    if (ds.moment || ds.token) {
      if (d.readyState == "loading") d.addEventListener("DOMContentLoaded", function () { show(); });
      else show();
    }
  } catch (e) { /* never throw into the host page */ }
})(window, document);

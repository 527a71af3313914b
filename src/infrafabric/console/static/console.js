// The console's only script (CSP: script-src 'self'). Live updates arrive as server-sent events fed from
// the audit log; a view whose data an event concerns fetches its own server-rendered body again. Every
// value from an event is put in the page as text, never as HTML.
(function () {
  "use strict";
  var view = document.body.getAttribute("data-view");
  var feed = document.getElementById("live-feed");
  var status = document.getElementById("live-status");
  var body = document.getElementById("view-body");
  var pending = null;
  var MAX_FEED = 50;

  function refresh() {
    pending = null;
    if (!body) { return; }
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (html) {
        var active = document.activeElement && document.activeElement.id;
        body.innerHTML = html; // our own server's escaped rendering of this view
        if (active) { var el = document.getElementById(active); if (el) { el.focus(); } }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next event tries again */ });
  }

  function onEvent(e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { return; }
    if (feed) {
      var li = document.createElement("li");
      li.className = "sev-" + String(data.severity || "").toLowerCase();
      var op = document.createElement("strong");
      op.textContent = data.operation;
      var meta = document.createElement("span");
      meta.textContent = " #" + data.seq + " " + data.component + " ";
      var params = document.createElement("code");
      params.textContent = data.params;
      li.appendChild(op); li.appendChild(meta); li.appendChild(params);
      feed.insertBefore(li, feed.firstChild);
      while (feed.childNodes.length > MAX_FEED) { feed.removeChild(feed.lastChild); }
    }
    if (Array.isArray(data.views) && data.views.indexOf(view) >= 0 && pending === null) {
      pending = window.setTimeout(refresh, 150); // events in a burst: one refresh
    }
  }

  if (window.EventSource && feed) {
    var source = new EventSource("/events");
    source.addEventListener("audit", onEvent);
    source.onopen = function () { if (status) { status.textContent = "live"; status.className = "live on"; } };
    source.onerror = function () { if (status) { status.textContent = "reconnecting…"; status.className = "live off"; } };
  }

  document.addEventListener("click", function (e) {
    var target = e.target;
    if (!(target instanceof HTMLElement)) { return; }
    var id = target.getAttribute("data-copy");
    if (!id) { return; }
    var source = document.getElementById(id);
    if (!source) { return; }
    source.select();
    if (navigator.clipboard) { navigator.clipboard.writeText(source.value).catch(function () {}); }
    target.textContent = "Copied";
  });
})();

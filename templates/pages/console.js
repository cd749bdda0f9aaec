// The console's pages stay live and read well in the reader's zone. Without this file every
// page still works (reload to see what is new); with it:
// - times show as "3 min ago", the exact local time on hover;
// - the page follows the event stream and, when events are committed, reloads its #live region
//   from the server (the same HTML a reload would give), at most twice a second;
// - a page whose region also changes without an event (a delivery answered, retried or dead; a
//   label saved; a silence ending) says so with data-poll="<seconds>" and is reloaded that often
//   while it is visible;
// - no reload, for an event or a poll, replaces the region under the reader: not while focus
//   or a selection is in it, a pointer is pressed in it or has moved over it in the last
//   1.5 s (a new gate would push the row the reader is about to click down, and the click
//   would land on another gate's button). The page is brought up to date once the reader
//   leaves it; and not at all when the HTML is what is already shown.
(function () {
  // "3 min ago", or "in 2 h" for a deadline still ahead.
  function ago(t) {
    const d = Math.round((Date.now() - t) / 1000);
    const s = Math.abs(d);
    if (s < 45) return d >= 0 ? 'just now' : 'in a moment';
    const m = Math.round(s / 60);
    const h = Math.round(m / 60);
    const span = m < 60 ? m + ' min' : h < 36 ? h + ' h' : Math.round(h / 24) + ' days';
    return d >= 0 ? span + ' ago' : 'in ' + span;
  }
  function times(root) {
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      const t = Date.parse(el.getAttribute('datetime'));
      if (isNaN(t)) return;
      el.title = new Date(t).toLocaleString();
      el.textContent = ago(t);
    });
  }
  // The region as the server wrote it, before `times` rewrites it: a reload that brings the
  // same HTML leaves the page alone (focus, selection and scroll stay where they are).
  const live = document.getElementById('live');
  let shown = live ? live.innerHTML : null;
  times(document);
  setInterval(function () { times(document); }, 30000);

  if (!live || !window.fetch || !window.TextDecoder) return;
  let after = live.dataset.after || '0';
  let timer = null;
  let issued = 0;     // reloads started; only the latest one's answer is shown
  let inflight = 0;   // reloads not yet answered: a poll waits for them
  let polling = null;
  let pointerAt = 0;      // when a pointer last moved or was pressed over the region
  let pressed = false;
  let stale = false;      // a reload was held back for the reader: done once they leave
  let pointerX = -1, pointerY = -1;
  // Only a pointer that really moved counts: browsers also send moves when the page's layout
  // changes under a resting pointer, which would otherwise hold the region still for good.
  live.addEventListener('pointermove', function (e) {
    if (e.clientX === pointerX && e.clientY === pointerY) return;
    pointerX = e.clientX;
    pointerY = e.clientY;
    pointerAt = Date.now();
  });
  live.addEventListener('pointerdown', function () { pointerAt = Date.now(); pressed = true; });
  document.addEventListener('pointerup', function () { pressed = false; });
  live.addEventListener('pointerleave', function () { pointerAt = 0; pressed = false; catchUp(); });
  live.addEventListener('focusout', function () { setTimeout(catchUp, 0); });
  document.addEventListener('selectionchange', function () { if (stale) catchUp(); });
  // The reader is in the region: focus on one of its buttons or links, text selected in it, or
  // a pointer pressed or lately moving over it.
  function busy() {
    if (pressed || Date.now() - pointerAt < 1500) return true;
    const focused = document.activeElement;
    if (focused && focused !== document.body && live.contains(focused)) return true;
    const selection = window.getSelection && window.getSelection();
    return !!(selection && !selection.isCollapsed && selection.rangeCount && live.contains(selection.getRangeAt(0).commonAncestorContainer));
  }
  // A reload held back for the reader is done (anew: what it brought may be old by now) as
  // soon as they are out of the region.
  function catchUp() {
    if (stale && !busy() && !timer && !inflight) { stale = false; refresh(); }
  }
  setInterval(catchUp, 1000);
  function refresh() {
    timer = null;
    const n = ++issued;
    inflight++;
    fetch(location.href, { credentials: 'same-origin' }).then(function (r) {
      // Signed out (sent to /login) or no longer allowed: stop polling; the page is not live.
      if (r.redirected || r.status === 401 || r.status === 403) { stopPolling(); return null; }
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (!html || n !== issued) return;
      const fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('live');
      if (!fresh) { stopPolling(); return; }
      if (fresh.innerHTML === shown) { stale = false; return; }
      if (busy()) { stale = true; return; }
      stale = false;
      const scrolled = Array.prototype.map.call(live.querySelectorAll('.scroll'), function (el) { return el.scrollLeft; });
      shown = fresh.innerHTML;
      live.innerHTML = shown;
      live.querySelectorAll('.scroll').forEach(function (el, i) { if (scrolled[i]) el.scrollLeft = scrolled[i]; });
      times(live);
    }).catch(function () {}).then(function () { inflight--; });
  }
  function stopPolling() {
    if (polling) clearInterval(polling);
    polling = null;
  }
  // The API's SSE stream, read with fetch so that every event type counts (EventSource only
  // delivers the types it was told to listen for); reconnects from the last id it saw.
  function follow() {
    fetch('/v1/events/stream?after=' + after, { credentials: 'same-origin' }).then(function (response) {
      // Not allowed to read events (or signed out): this page is simply not live.
      if (response.status === 401 || response.status === 403) return;
      if (!response.ok || !response.body) throw new Error('stream ' + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let partial = '';
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) throw new Error('stream ended');
          // Whole lines only: an id cut at the end of a read would move `after` backwards.
          const lines = (partial + decoder.decode(chunk.value, { stream: true })).split('\n');
          partial = lines.pop();
          let seen = false;
          lines.forEach(function (line) {
            const m = line.match(/^id: (\d+)$/);
            if (m) { after = m[1]; seen = true; }
          });
          if (seen && !timer) timer = setTimeout(refresh, 500);
          return pump();
        });
      }
      return pump();
    }).catch(function () { setTimeout(follow, 3000); });
  }
  follow();

  const poll = Number(live.dataset.poll);
  if (poll > 0) {
    polling = setInterval(function () {
      if (timer || inflight || document.hidden) return;
      refresh();
    }, poll * 1000);
  }
})();

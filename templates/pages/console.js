// The console's pages stay live and read well in the reader's zone. Without this file every
// page still works (reload to see what is new); with it:
// - times show as "3 min ago", the exact local time on hover;
// - the page follows the event stream and, when events are committed, reloads its #live region
//   from the server (the same HTML a reload would give), at most twice a second;
// - a page whose region also changes without an event (a delivery answered, retried or dead; a
//   label saved) says so with data-poll="<seconds>", and is reloaded that often while it is
//   visible, unless the reader is typing in it.
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
  times(document);
  setInterval(function () { times(document); }, 30000);

  const live = document.getElementById('live');
  if (!live || !window.fetch || !window.TextDecoder) return;
  let after = live.dataset.after || '0';
  let timer = null;
  let loading = false;  // a poll waits for the reload in flight (answers must not land out of order)
  function refresh() {
    timer = null;
    loading = true;
    fetch(location.href, { credentials: 'same-origin' }).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
      if (!html) return;
      const fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('live');
      if (!fresh) return;
      live.innerHTML = fresh.innerHTML;
      times(live);
    }).catch(function () {}).then(function () { loading = false; });
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
    setInterval(function () {
      if (timer || loading || document.hidden) return;
      const focused = document.activeElement;
      if (focused && live.contains(focused) && /^(INPUT|SELECT|TEXTAREA)$/.test(focused.tagName)) return;
      refresh();
    }, poll * 1000);
  }
})();

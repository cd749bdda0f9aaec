// Keyboard and span selection for /annotate. The page works without it: every action is a
// plain form button; this only adds shortcuts (1–9 labels, Enter save, s skip, u undo) and
// turns a text selection plus a number into a span.
(function () {
  const form = document.getElementById('label-form');
  if (!form) return;
  const task = form.dataset.task;
  const text = document.getElementById('item-text');
  const spans = document.getElementById('spans');
  const list = document.getElementById('span-list');
  const labels = spans ? spans.dataset.labels.split('|').filter(Boolean) : [];

  function click(selector) { const b = form.querySelector(selector); if (b) b.click(); }

  function parse() {
    if (!spans || !spans.value.trim()) return [];
    return spans.value.split(',').map(function (p) {
      const m = p.trim().match(/^(\d+)-(\d+):(.+)$/);
      return m ? { start: +m[1], end: +m[2], label: m[3] } : null;
    }).filter(Boolean);
  }

  function render() {
    if (!list) return;
    list.textContent = '';
    const source = text.textContent;
    parse().forEach(function (s) {
      const li = document.createElement('li');
      li.textContent = s.label + ': “' + source.slice(s.start, s.end) + '” (' + s.start + '–' + s.end + ')';
      list.appendChild(li);
    });
  }

  function addSpan(index) {
    const selection = window.getSelection();
    if (!selection.rangeCount || selection.isCollapsed || !labels[index]) return;
    const range = selection.getRangeAt(0);
    if (!text.contains(range.startContainer) || !text.contains(range.endContainer)) return;
    const before = range.cloneRange();
    before.selectNodeContents(text);
    before.setEnd(range.startContainer, range.startOffset);
    const start = before.toString().length; // UTF-16 offsets, as the server expects
    const end = start + range.toString().length;
    const all = parse().concat([{ start: start, end: end, label: labels[index] }]);
    spans.value = all.map(function (s) { return s.start + '-' + s.end + ':' + s.label; }).join(', ');
    selection.removeAllRanges();
    render();
  }

  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.matches && e.target.matches('input[type=text], textarea');
    if (e.key === 'Enter' && task !== 'classification') { e.preventDefault(); click('button[value=label]'); return; }
    if (typing) return;
    if (e.key >= '1' && e.key <= '9') {
      const i = +e.key - 1;
      if (task === 'classification') click('button[name=label]:nth-of-type(' + (i + 1) + ')');
      else if (task === 'multilabel') { const c = form.querySelectorAll('input[name=labels]')[i]; if (c) c.checked = !c.checked; }
      else if (task === 'spans') addSpan(i);
      e.preventDefault();
    } else if (e.key === 's') { e.preventDefault(); click('button[value=skip]'); }
    else if (e.key === 'u') { e.preventDefault(); click('button[value=undo]'); }
  });
  if (spans) { spans.addEventListener('input', render); render(); }
})();

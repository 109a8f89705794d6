/** The admin listener's status page: one HTML file, no dependencies; it polls /api/status every second. */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>socksgate status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #fafbfc; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  .muted { color: #667085; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #e4e7ec; white-space: nowrap; }
  th { background: #f2f4f7; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .cards { display: flex; gap: 1em; flex-wrap: wrap; }
  .card { background: #fff; border: 1px solid #e4e7ec; border-radius: 6px; padding: .6em 1em; min-width: 9em; }
  .card b { display: block; font-size: 1.4em; }
  .charts { display: flex; gap: 1em; flex-wrap: wrap; }
  svg { background: #fff; border: 1px solid #e4e7ec; border-radius: 6px; }
</style>
</head>
<body>
<h1>socksgate</h1>
<div class="muted" id="updated">loading…</div>
<div class="muted" id="io"></div>
<div class="muted" id="limit-store"></div>
<h2>Totals</h2>
<div class="cards" id="totals"></div>
<h2>Rates, last 5 minutes</h2>
<div class="charts">
  <figure><figcaption>UDP datagrams/s (to clients and to destinations)</figcaption><svg id="chart-datagrams" width="460" height="140"></svg></figure>
  <figure><figcaption>UDP bytes/s</figcaption><svg id="chart-bytes" width="460" height="140"></svg></figure>
</div>
<h2>Sessions <span class="muted" id="session-count"></span></h2>
<table id="sessions">
  <thead><tr><th>client</th><th>user</th><th>command</th><th>target / destinations</th><th>datagrams ↑</th><th>datagrams ↓</th><th>bytes ↑</th><th>bytes ↓</th><th>age</th></tr></thead>
  <tbody></tbody>
</table>
<section id="upstreams-section" hidden>
<h2>Upstreams</h2>
<table id="upstreams">
  <thead><tr><th>upstream</th><th>state</th><th>sessions now</th><th>sessions</th><th>failed health checks</th><th>failed dials</th><th>last health check</th></tr></thead>
  <tbody></tbody>
</table>
</section>
<section id="workers-section" hidden>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>worker</th><th>process</th><th>sessions</th></tr></thead><tbody></tbody></table>
</section>
<section id="quotas-section" hidden>
<h2>Traffic quotas <span class="muted" id="quota-period"></span></h2>
<table id="quotas">
  <thead><tr><th>user</th><th>bytes ↑</th><th>bytes ↓</th><th>total</th><th>quota</th><th>remaining</th></tr></thead>
  <tbody></tbody>
</table>
</section>
<h2>Drops by reason</h2>
<table id="drops"><thead><tr><th>reason</th><th>datagrams</th></tr></thead><tbody></tbody></table>
<script>
const fmt = (n) => n >= 1e9 ? (n / 1e9).toFixed(1) + ' G' : n >= 1e6 ? (n / 1e6).toFixed(1) + ' M' : n >= 1e3 ? (n / 1e3).toFixed(1) + ' k' : String(Math.round(n));
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
function chart(id, series) {
  const svg = document.getElementById(id);
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value, max = Math.max(1, ...series.flatMap((s) => s.values));
  svg.innerHTML = series.map((s) => {
    const points = s.values.map((v, i) => (i * (w - 10) / Math.max(1, s.values.length - 1) + 5).toFixed(1) + ',' + (h - 15 - v / max * (h - 30)).toFixed(1)).join(' ');
    return '<polyline fill="none" stroke="' + s.color + '" stroke-width="1.5" points="' + points + '"/>';
  }).join('') + '<text x="6" y="12" font-size="11" fill="#667085">max ' + fmt(max) + '/s</text>';
}
function rates(history, key) {
  const out = [];
  for (let i = 1; i < history.length; i++) out.push(Math.max(0, (history[i][key] - history[i - 1][key]) / Math.max(0.001, history[i].t - history[i - 1].t)));
  return out;
}
async function refresh() {
  try {
    const status = await (await fetch('api/status', { cache: 'no-store' })).json();
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString() + (status.ready ? '' : ' — draining');
    const t = status.totals;
    document.getElementById('totals').innerHTML = [
      ['sessions', t.sessions], ['UDP associations', t.associations], ['datagrams from clients', fmt(t.clientDatagrams)],
      ['datagrams to clients', fmt(t.deliveredDatagrams)], ['bytes from clients', fmt(t.clientBytes)], ['bytes to clients', fmt(t.deliveredBytes)],
      ['dropped', fmt(t.dropped)], ['auth failures', t.authFailures], ['denied', t.denied],
    ].map(([k, v]) => '<div class="card"><span class="muted">' + k + '</span><b>' + v + '</b></div>').join('');
    chart('chart-datagrams', [{ color: '#2e90fa', values: rates(status.history, 'delivered') }, { color: '#f79009', values: rates(status.history, 'forwarded') }]);
    chart('chart-bytes', [{ color: '#2e90fa', values: rates(status.history, 'deliveredBytes') }, { color: '#f79009', values: rates(status.history, 'forwardedBytes') }]);
    document.getElementById('session-count').textContent = '(' + status.sessions.length + ')';
    document.querySelector('#sessions tbody').innerHTML = status.sessions.map((s) =>
      '<tr data-client="' + esc(s.client) + '" data-command="' + esc(s.command) + '"><td>' + esc(s.client) + '</td><td>' + esc(s.user ?? '') + '</td><td>' + esc(s.command) +
      '</td><td>' + esc(s.destinations ? s.destinations.join(', ') || '(none yet)' : s.target) + '</td><td class="num">' + fmt(s.datagramsUp ?? 0) + '</td><td class="num">' + fmt(s.datagramsDown ?? 0) +
      '</td><td class="num">' + fmt(s.up) + '</td><td class="num">' + fmt(s.down) + '</td><td class="num">' + s.ageSeconds + ' s</td></tr>').join('');
    document.getElementById('io').textContent = status.udpIo ? 'UDP I/O: ' + status.udpIo : '';
    const store = status.limitStore;
    document.getElementById('limit-store').textContent = store ? 'Limit store: ' + store.kind + (store.up ? ', shared' : ', unreachable: each process enforces its own limits') +
      (store.fallbacks + store.refusals > 0 ? ' (' + store.fallbacks + ' sessions admitted, ' + store.refusals + ' refused while it was away)' : '') : '';
    // Gateway mode: each upstream, in selection (up) or out of it until its health checks pass again.
    const upstreams = status.upstreams ?? [];
    document.getElementById('upstreams-section').hidden = upstreams.length === 0;
    document.querySelector('#upstreams tbody').innerHTML = upstreams.map((u) =>
      '<tr data-upstream="' + esc(u.upstream) + '"><td>' + esc(u.upstream) + '</td><td>' + (u.up ? 'up' : 'out') + '</td><td class="num">' + u.sessionsActive +
      '</td><td class="num">' + fmt(u.sessionsTotal) + '</td><td class="num">' + u.failures['health-check'] + '</td><td class="num">' + u.failures.dial +
      '</td><td class="num">' + (u.healthCheckSeconds === null ? '—' : (u.healthCheckSeconds * 1000).toFixed(1) + ' ms') + '</td></tr>').join('');
    const workers = status.workers ?? [];
    document.getElementById('workers-section').hidden = workers.length === 0;
    document.querySelector('#workers tbody').innerHTML = workers.map((w) =>
      '<tr><td class="num">' + w.worker + '</td><td class="num">' + w.pid + '</td><td class="num">' + w.sessions + '</td></tr>').join('');
    document.querySelector('#drops tbody').innerHTML = Object.entries(status.drops).filter(([, n]) => n > 0)
      .map(([reason, n]) => '<tr><td>' + esc(reason) + '</td><td class="num">' + fmt(n) + '</td></tr>').join('') || '<tr><td class="muted" colspan="2">none</td></tr>';
  } catch (error) {
    document.getElementById('updated').textContent = 'cannot reach the server: ' + error;
  }
}
// Quota usage comes from the limit store (GET users/usage): asked every 5 s, not every second.
async function refreshQuotas() {
  try {
    const response = await fetch('users/usage', { cache: 'no-store' });
    if (!response.ok) return;
    const report = await response.json();
    document.getElementById('quotas-section').hidden = report.users.length === 0;
    const p = report.period;
    document.getElementById('quota-period').textContent = '(' + p.kind + ' from ' + p.start + ' to ' + p.end + ', ' + p.timeZone + '; on exhaustion: ' + report.onExhausted + ')';
    const limits = (q) => q ? ['total', 'upload', 'download'].filter((k) => q[k] > 0).map((k) => k + ' ' + fmt(q[k])).join(', ') : '—';
    const left = (r) => ['total', 'upload', 'download'].filter((k) => r[k] !== null).map((k) => k + ' ' + fmt(r[k])).join(', ') || '—';
    document.querySelector('#quotas tbody').innerHTML = report.users.map((u) =>
      '<tr data-user="' + esc(u.user) + '"><td>' + esc(u.user) + '</td><td class="num">' + fmt(u.up) + '</td><td class="num">' + fmt(u.down) + '</td><td class="num">' + fmt(u.total) +
      '</td><td>' + limits(u.quota) + '</td><td>' + left(u.remaining) + (u.exhausted ? ' (exhausted)' : '') + '</td></tr>').join('');
  } catch {}
}
refresh();
refreshQuotas();
setInterval(refresh, 1000);
setInterval(refreshQuotas, 5000);
</script>
</body>
</html>
`;

/**
 * `GET /status` and `GET /status.json`: a page a person reads in a browser,
 * docs/operations.md "Status page".
 *
 * The page is one self-contained HTML document (inline CSS and script, no
 * framework, nothing fetched from elsewhere). The server renders a first
 * snapshot into it, so it reads without JavaScript; the script then polls
 * /status.json and redraws. Everything here is built only when someone asks:
 * nothing runs per message.
 */
import { native } from '../native';
import { EVENTS, type LogRecord, type LogFields } from '../log';
import { COMMIT_BUCKETS, type MetricSources } from './metrics';

/** Level-0 log events the page shows, newest last. */
export const WARNINGS_KEPT = 50;

export interface StatusWarning {
  /** Milliseconds since the epoch. */
  time: number;
  event: string;
  severity: string;
  fields: LogFields;
}

/**
 * The last WARNINGS_KEPT level-0 events (those that need someone's
 * attention, lib/log.ts), fed by Logger.tap. A fixed ring: a flood of
 * warnings costs no more memory than a few.
 */
export class WarningRing {
  private readonly ring: StatusWarning[] = [];
  private next = 0;

  add(r: LogRecord): void {
    if (EVENTS[r.event].level !== 0) return;
    const w: StatusWarning = { time: Date.now(), event: r.event, severity: r.severity, fields: { ...r.fields } };
    if (this.ring.length < WARNINGS_KEPT) this.ring.push(w);
    else this.ring[this.next] = w;
    this.next = (this.next + 1) % WARNINGS_KEPT;
  }

  /** Oldest first. */
  list(): StatusWarning[] {
    return this.ring.length < WARNINGS_KEPT ? [...this.ring] : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
  }
}

/**
 * The q-quantile (0..1) of a histogram given as per-bucket counts (not
 * cumulative, the last past every bound), interpolated linearly inside the
 * bucket as Prometheus' histogram_quantile does. The bucket past the last
 * bound ends at `max` (the longest call seen), and no estimate exceeds it.
 * Null when nothing was counted.
 */
export function quantile(q: number, bounds: number[], buckets: number[], max: number): number | null {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let acc = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i] ?? 0;
    if (n > 0 && acc + n >= rank) {
      const lo = i === 0 ? 0 : bounds[i - 1];
      const hi = i < bounds.length ? bounds[i] : Math.max(max, lo);
      return Math.min(lo + (hi - lo) * ((rank - acc) / n), max > 0 ? max : hi);
    }
    acc += n;
  }
  return max;
}

export interface StatusHook {
  hook: string;
  calls: number;
  /** Seconds, estimated from the core's buckets; null before the first call. */
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number;
}

export interface StatusModule {
  name: string;
  position: number;
  kind: 'native' | 'script';
  verdicts: { pass: number; consumed: number; deferred: number } | null;
  timeouts: number;
  errors: number;
  /** Null without a budget; otherwise whether it is bypassed now, and its counters. */
  budget: { budgetMs: number; bypassed: boolean; overBudget: number; bypassedMessages: number; trips: number } | null;
  hooks: StatusHook[];
}

/** What /status.json answers (and what the page renders). */
export interface StatusSnapshot {
  version: string;
  /** Server time, milliseconds since the epoch: the page computes rates between two snapshots with it. */
  now: number;
  uptimeSeconds: number;
  connections: { authenticated: number; unauthenticated: number; cap: number };
  messages: { received: number; consumed: number; failed: number; delivered: number };
  /** Since start; the page shows the rate between its last two polls instead. */
  averagePerSecond: { received: number; delivered: number };
  deferredWaiting: number;
  modules: StatusModule[];
  store: { kind: string; down: string | null; durable: boolean; waiting: number | null; copiesWritten: number; commits: number; commitP50: number | null; commitP99: number | null; backlogPages: number };
  limits: { rateLimited: number; slowClosed: number; inboxFull: number };
  warnings: StatusWarning[];
}

export interface StatusSources extends MetricSources {
  startedAt: number;
  durable: boolean;
  warnings: WarningRing;
}

export function statusSnapshot(src: StatusSources): StatusSnapshot {
  const { counts: m, stats } = src;
  const now = Date.now();
  const uptime = (now - src.startedAt) / 1000;
  const received = m.receivedPass + m.receivedConsumed + m.receivedFailed;
  const bounds = native.hookBucketBounds;
  const commitMax = m.commits ? COMMIT_BUCKETS[COMMIT_BUCKETS.length - 1] * 2 : 0;
  return {
    version: src.version,
    now,
    uptimeSeconds: uptime,
    connections: { authenticated: stats.connections, unauthenticated: stats.unauthenticated, cap: stats.connectionCap },
    messages: { received, consumed: m.receivedConsumed, failed: m.receivedFailed, delivered: m.delivered },
    averagePerSecond: { received: uptime > 0 ? received / uptime : 0, delivered: uptime > 0 ? m.delivered / uptime : 0 },
    deferredWaiting: src.deferredWaiting,
    modules: src.modules.map((inst) => ({
      name: inst.name,
      position: inst.position,
      kind: inst.script ? 'script' : 'native',
      verdicts: inst.hooks.includes('on_message') ? { ...inst.verdicts } : null,
      timeouts: inst.timeouts,
      errors: inst.errors,
      budget: inst.budget.budgetNs > 0 ? { budgetMs: inst.budget.budgetNs / 1e6, bypassed: inst.budget.active, overBudget: inst.budget.overBudget, bypassedMessages: inst.budget.bypassed, trips: inst.budget.trips } : null,
      hooks: inst.hooks
        .filter((h) => inst.stats[h])
        .map((h) => {
          const st = inst.stats[h];
          const max = st.maxNs / 1e9;
          return { hook: h, calls: st.calls, p50: quantile(0.5, bounds, st.buckets, max), p90: quantile(0.9, bounds, st.buckets, max), p99: quantile(0.99, bounds, st.buckets, max), max };
        }),
    })),
    store: {
      kind: src.storeKind,
      down: src.storeDown,
      durable: src.durable,
      waiting: Number.isNaN(src.storeWaiting) ? null : src.storeWaiting,
      copiesWritten: m.copiesStored,
      commits: m.commits,
      // The commit histogram keeps no maximum; past its last bound the estimate says "more than 2.5 s".
      commitP50: quantile(0.5, COMMIT_BUCKETS, m.commitBuckets, commitMax),
      commitP99: quantile(0.99, COMMIT_BUCKETS, m.commitBuckets, commitMax),
      backlogPages: m.backlogPages,
    },
    limits: { rateLimited: stats.rateLimited + stats.statusesRateLimited, slowClosed: m.slowClosed, inboxFull: stats.inboxFull },
    warnings: src.warnings.list(),
  };
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** Module names and warning texts come from config and modules: never markup. */
function esc(s: string | number): string {
  return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
}

// The formatting below exists twice: here for the server-rendered snapshot
// and in PAGE_SCRIPT for the redraws. They are small and the test reads the
// page after a redraw, so a difference shows there.
function dur(s: number | null): string {
  if (s === null) return '–';
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

function uptimeText(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m ${sec}s` : m ? `${m}m ${sec}s` : `${sec}s`;
}

function fieldsText(f: LogFields): string {
  return Object.entries(f)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'string' && /[\s"=]/.test(v) ? JSON.stringify(v) : String(v)}`)
    .join(' ');
}

function rows(s: StatusSnapshot): { chain: string; warnings: string } {
  const chain = s.modules.length
    ? s.modules
        .map((m) => {
          const v = m.verdicts ? `${m.verdicts.pass} / ${m.verdicts.consumed} / ${m.verdicts.deferred}` : '–';
          const hooks = m.hooks.length ? m.hooks : [{ hook: '–', calls: 0, p50: null, p90: null, p99: null, max: 0 }];
          return hooks
            .map(
              (h, i) =>
                `<tr${i === 0 ? ' class="first"' : ''}>${i === 0 ? `<td rowspan="${hooks.length}" class="mod"><b>${esc(m.name)}</b><br><small>#${m.position} ${m.kind}</small>${m.budget?.bypassed ? '<br><b class="bypassed">BYPASSED (over budget)</b>' : ''}</td><td rowspan="${hooks.length}" class="n">${v}</td><td rowspan="${hooks.length}" class="n">${m.timeouts} / ${m.errors}</td>` : ''}<td>${esc(h.hook)}</td><td class="n calls">${h.calls}</td><td class="n">${dur(h.p50)}</td><td class="n">${dur(h.p90)}</td><td class="n">${dur(h.p99)}</td><td class="n">${h.calls ? dur(h.max) : '–'}</td></tr>`,
            )
            .join('');
        })
        .join('')
    : '<tr><td colspan="9" class="empty">no modules: every message passes</td></tr>';
  const warnings = s.warnings.length
    ? [...s.warnings]
        .reverse()
        .map((w) => `<tr class="${esc(w.severity)}"><td class="t">${esc(new Date(w.time).toISOString().replace('T', ' ').slice(0, 19))}</td><td>${esc(w.severity)}</td><td><b>${esc(w.event)}</b> ${esc(fieldsText(w.fields))}</td></tr>`)
        .join('')
    : '<tr><td colspan="3" class="empty">none since start</td></tr>';
  return { chain, warnings };
}

const PAGE_STYLE = `
:root{--fg:#1d2329;--mut:#5f6b76;--bg:#f5f7f9;--card:#fff;--line:#dde3e8;--acc:#0b6bcb;--warn:#a35b00;--err:#b3261e}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;align-items:baseline;gap:16px;padding:14px 24px;background:#16202a;color:#fff}
header h1{font-size:18px;margin:0}header span{color:#a9b7c4}#live{margin-left:auto;font-size:12px}
main{padding:16px 24px;max-width:1200px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px;margin-bottom:16px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 14px}
.tile .k{color:var(--mut);font-size:12px;text-transform:uppercase;letter-spacing:.04em}.tile .v{font-size:24px;font-weight:600}.tile .s{color:var(--mut);font-size:12px}
section{background:var(--card);border:1px solid var(--line);border-radius:6px;margin-bottom:16px;overflow:auto}
section h2{font-size:14px;margin:0;padding:10px 14px;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;width:100%}th,td{padding:6px 14px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--mut);font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.first td{border-top:2px solid var(--line)}td.mod small{color:var(--mut)}td.empty{color:var(--mut);font-style:italic}
tr.warn td:nth-child(2){color:var(--warn);font-weight:600}tr.error td:nth-child(2){color:var(--err);font-weight:600}td.t{white-space:nowrap;color:var(--mut);font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0;padding:10px 14px}dt{color:var(--mut)}dd{margin:0;font-variant-numeric:tabular-nums}
`;

/**
 * Polls /status.json with the token the page was opened with (?token=),
 * sent as an Authorization header so it never appears in a polled URL.
 */
const PAGE_SCRIPT = `
(function(){
var token=new URLSearchParams(location.search).get('token');
var prev=null;
function $(id){return document.getElementById(id)}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]})}
function dur(s){if(s===null)return '\\u2013';if(s<1e-3)return (s*1e6).toFixed(0)+' \\u00b5s';if(s<1)return (s*1e3).toFixed(s<0.01?2:1)+' ms';return s.toFixed(2)+' s'}
function up(s){var d=Math.floor(s/86400),h=Math.floor(s%86400/3600),m=Math.floor(s%3600/60),x=Math.floor(s%60);return d?d+'d '+h+'h '+m+'m':h?h+'h '+m+'m '+x+'s':m?m+'m '+x+'s':x+'s'}
function fields(f){return Object.keys(f).filter(function(k){return f[k]!==undefined&&f[k]!==null}).map(function(k){var v=f[k];return k+'='+(typeof v==='string'&&/[\\s"=]/.test(v)?JSON.stringify(v):String(v))}).join(' ')}
function render(s){
  $('uptime').textContent=up(s.uptimeSeconds);
  $('conns').textContent=s.connections.authenticated;
  $('conns-s').textContent=s.connections.unauthenticated+' not logged in, cap '+s.connections.cap;
  var rin=s.averagePerSecond.received,rout=s.averagePerSecond.delivered,how='average since start';
  if(prev&&s.now>prev.now){var dt=(s.now-prev.now)/1000;rin=(s.messages.received-prev.messages.received)/dt;rout=(s.messages.delivered-prev.messages.delivered)/dt;how='over the last '+dt.toFixed(0)+' s'}
  $('rate-in').textContent=rin.toFixed(1);$('rate-in-s').textContent=s.messages.received+' received, '+how;
  $('rate-out').textContent=rout.toFixed(1);$('rate-out-s').textContent=s.messages.delivered+' delivered, '+how;
  $('deferred').textContent=s.deferredWaiting;
  $('chain').innerHTML=s.modules.length?s.modules.map(function(m){
    var v=m.verdicts?m.verdicts.pass+' / '+m.verdicts.consumed+' / '+m.verdicts.deferred:'\\u2013';
    var hs=m.hooks.length?m.hooks:[{hook:'\\u2013',calls:0,p50:null,p90:null,p99:null,max:0}];
    return hs.map(function(h,i){var r=hs.length;return '<tr'+(i===0?' class="first"':'')+'>'+(i===0?'<td rowspan="'+r+'" class="mod"><b>'+esc(m.name)+'</b><br><small>#'+m.position+' '+m.kind+'</small>'+(m.budget&&m.budget.bypassed?'<br><b class="bypassed">BYPASSED (over budget)</b>':'')+'</td><td rowspan="'+r+'" class="n">'+v+'</td><td rowspan="'+r+'" class="n">'+m.timeouts+' / '+m.errors+'</td>':'')+'<td>'+esc(h.hook)+'</td><td class="n calls">'+h.calls+'</td><td class="n">'+dur(h.p50)+'</td><td class="n">'+dur(h.p90)+'</td><td class="n">'+dur(h.p99)+'</td><td class="n">'+(h.calls?dur(h.max):'\\u2013')+'</td></tr>'}).join('');
  }).join(''):'<tr><td colspan="9" class="empty">no modules: every message passes</td></tr>';
  var st=s.store;
  $('store').innerHTML='<dt>kind</dt><dd>'+esc(st.kind)+(st.durable?' (durable)':' (not durable)')+(st.down?' DOWN ('+esc(st.down)+')':'')+'</dd><dt>waiting for recipients</dt><dd>'+st.waiting+'</dd><dt>copies written</dt><dd>'+st.copiesWritten+'</dd><dt>group commits</dt><dd>'+st.commits+' (p50 '+dur(st.commitP50)+', p99 '+dur(st.commitP99)+')</dd><dt>backlog pages sent</dt><dd>'+st.backlogPages+'</dd><dt>rate-limited frames</dt><dd>'+s.limits.rateLimited+'</dd><dt>slow consumers closed</dt><dd>'+s.limits.slowClosed+'</dd><dt>inbox full</dt><dd>'+s.limits.inboxFull+'</dd>';
  $('warnings').innerHTML=s.warnings.length?s.warnings.slice().reverse().map(function(w){return '<tr class="'+esc(w.severity)+'"><td class="t">'+esc(new Date(w.time).toISOString().replace('T',' ').slice(0,19))+'</td><td>'+esc(w.severity)+'</td><td><b>'+esc(w.event)+'</b> '+esc(fields(w.fields))+'</td></tr>'}).join(''):'<tr><td colspan="3" class="empty">none since start</td></tr>';
  $('live').textContent='updated '+new Date(s.now).toLocaleTimeString();
  document.body.dataset.polls=String(Number(document.body.dataset.polls||0)+1);
  prev=s;
}
function poll(){
  var h={};if(token)h.Authorization='Bearer '+token;
  fetch('status.json',{headers:h,cache:'no-store'}).then(function(r){if(!r.ok)throw new Error('HTTP '+r.status);return r.json()}).then(render).catch(function(e){$('live').textContent='not updating: '+e.message});
}
poll();setInterval(poll,2000);
})();
`;

/** The whole page, with `s` rendered in. */
export function renderStatusPage(s: StatusSnapshot): string {
  const { chain, warnings } = rows(s);
  const st = s.store;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>Switchboard status</title><style>${PAGE_STYLE}</style></head>
<body><header><h1>Switchboard</h1><span>version ${esc(s.version)}</span><span>up <b id="uptime">${uptimeText(s.uptimeSeconds)}</b></span><span id="live">snapshot ${esc(new Date(s.now).toISOString().slice(11, 19))} UTC</span></header>
<main>
<div class="tiles">
<div class="tile"><div class="k">Connections</div><div class="v" id="conns">${s.connections.authenticated}</div><div class="s" id="conns-s">${s.connections.unauthenticated} not logged in, cap ${s.connections.cap}</div></div>
<div class="tile"><div class="k">Received / s</div><div class="v" id="rate-in">${s.averagePerSecond.received.toFixed(1)}</div><div class="s" id="rate-in-s">${s.messages.received} received, average since start</div></div>
<div class="tile"><div class="k">Delivered / s</div><div class="v" id="rate-out">${s.averagePerSecond.delivered.toFixed(1)}</div><div class="s" id="rate-out-s">${s.messages.delivered} delivered, average since start</div></div>
<div class="tile"><div class="k">Deferred waiting</div><div class="v" id="deferred">${s.deferredWaiting}</div><div class="s">messages waiting for a module's decision</div></div>
</div>
<section><h2>Module chain (in order)</h2><table><thead><tr><th>module</th><th class="n">pass / consumed / deferred</th><th class="n">timeouts / errors</th><th>hook</th><th class="n">calls</th><th class="n">p50</th><th class="n">p90</th><th class="n">p99</th><th class="n">max</th></tr></thead><tbody id="chain">${chain}</tbody></table></section>
<section><h2>Store</h2><dl id="store"><dt>kind</dt><dd>${esc(st.kind)}${st.durable ? ' (durable)' : ' (not durable)'}${st.down ? ` DOWN (${esc(st.down)})` : ''}</dd><dt>waiting for recipients</dt><dd>${st.waiting}</dd><dt>copies written</dt><dd>${st.copiesWritten}</dd><dt>group commits</dt><dd>${st.commits} (p50 ${dur(st.commitP50)}, p99 ${dur(st.commitP99)})</dd><dt>backlog pages sent</dt><dd>${st.backlogPages}</dd><dt>rate-limited frames</dt><dd>${s.limits.rateLimited}</dd><dt>slow consumers closed</dt><dd>${s.limits.slowClosed}</dd><dt>inbox full</dt><dd>${s.limits.inboxFull}</dd></dl></section>
<section><h2>Last warnings (newest first, up to ${WARNINGS_KEPT})</h2><table><thead><tr><th>time (UTC)</th><th>severity</th><th>event</th></tr></thead><tbody id="warnings">${warnings}</tbody></table></section>
</main>
<script>${PAGE_SCRIPT}</script>
</body></html>
`;
}

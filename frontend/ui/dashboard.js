/* FinOps gateway spend dashboard.
 *
 * Served by the gateway at /ui (frontend/ui_static.py); plain JavaScript, no build step, no
 * inline script (the page's Content-Security-Policy forbids it). Data comes from the admin API,
 * GET /admin/dashboard?days=N with `Authorization: Bearer <governance.admin_token>`.
 *
 * The token is asked for once and kept in sessionStorage (this tab only). A link may carry it
 * as `#token=...`; it is then taken and removed from the address bar at once.
 *
 * For tests and automation: after a render, <body data-ready="1" data-charts="N"> (N Chart.js
 * instances); on a failure, <body data-error="message"> and the message is shown.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "finops.adminToken";
  var DAYS_KEY = "finops.dashboardDays";
  var PERIODS = ["7", "30", "90"];
  var MAX_SERIES = 9;          // per chart; beyond, the smallest are summed into "(other)" (the API sends 8 + "(other)")
  var MAX_TOP_MODELS = 10;
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#a0cbe8"];
  var NEUTRAL = "#a5a9ad";     // "(none)", "(anonymous)"
  var OTHER = "(other)";
  var OTHER_COLOUR = "#d3d7dc";
  var INK = "#475467";
  var GRID = "#edf0f4";
  var LIMIT = "#c0392b";
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  var charts = [];
  var colours = { env: new Map(), key: new Map(), model: new Map() };  // stable for this page's life
  var loading = null;

  function $(id) { return document.getElementById(id); }

  // --- formatting ------------------------------------------------------------------------
  var usd2 = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var usdSmall = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumSignificantDigits: 1, maximumSignificantDigits: 2 });
  var usdCompact = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", notation: "compact", maximumFractionDigits: 1 });
  var usdTickFmt = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 0, maximumFractionDigits: 4 });
  var intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var compactFmt = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  var pctFmt = new Intl.NumberFormat("en-US", { style: "percent", minimumFractionDigits: 0, maximumFractionDigits: 2 });
  var pct1 = new Intl.NumberFormat("en-US", { style: "percent", minimumFractionDigits: 0, maximumFractionDigits: 1 });
  var pctTickFmt = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });
  var timeFmt = new Intl.DateTimeFormat("en-US", { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  var whenFmt = new Intl.DateTimeFormat("en-US", { year: "numeric", month: "short", day: "numeric", hour: "2-digit",
                                                   minute: "2-digit", hourCycle: "h23", timeZoneName: "short" });

  function num(v) { v = Number(v); return isFinite(v) ? v : 0; }
  function usd(v) { v = num(v); return v !== 0 && Math.abs(v) < 0.01 ? usdSmall.format(v) : usd2.format(v); }
  function usdTick(v) { v = num(v); return Math.abs(v) >= 1000 ? usdCompact.format(v) : usdTickFmt.format(v); }
  function int(v) { return intFmt.format(num(v)); }
  function count(v) { v = num(v); return Math.abs(v) >= 1e6 ? compactFmt.format(v) : intFmt.format(v); }
  function big(v) { v = num(v); return Math.abs(v) >= 1e9 ? compactFmt.format(v) : intFmt.format(v); }
  function pct(v) { return pctFmt.format(num(v)); }

  function parseDay(s) {                       // "2026-11-01" -> [2026, 11, 1], no time zone involved
    var p = String(s).split("-").map(Number);
    return p.length === 3 && p.every(isFinite) ? p : null;
  }
  function dayLabel(s) { var p = parseDay(s); return p ? MONTHS[p[1] - 1] + " " + p[2] : String(s); }
  function dayLong(s) { var p = parseDay(s); return p ? MONTHS[p[1] - 1] + " " + p[2] + ", " + p[0] : String(s); }
  function truncate(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }
  function shortModel(id) {                    // "us.anthropic.claude-3-haiku-20240307-v1:0" -> "claude-3-haiku-20240307"
    var s = String(id).replace(/^(us|eu|apac|global|us-gov)\./, "");
    if (/^[a-z0-9-]+\.[^.]/.test(s)) s = s.slice(s.indexOf(".") + 1);
    s = s.replace(/-v\d+(:\d+)?$/, "");
    return truncate(s || String(id), 34);
  }
  function alpha(hex, a) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + ((n >> 16) & 255) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }

  // --- colours: one per name and kind, kept for the page's life --------------------------
  function colourFor(kind, name) {
    if (name === OTHER) return OTHER_COLOUR;
    if (/^\((none|anonymous|unknown)\)$/.test(name)) return NEUTRAL;
    var m = colours[kind];
    if (!m.has(name)) {
      var used = new Set(m.values());
      var free = PALETTE.filter(function (c) { return !used.has(c); });
      m.set(name, free.length ? free[0] : PALETTE[m.size % PALETTE.length]);
    }
    return m.get(name);
  }

  // --- series: {name: [per day]} -> rows by spend, "(other)" last, the smallest summed into it
  function seriesRows(map, n) {
    var rows = Object.keys(map || {}).map(function (name) {
      var src = Array.isArray(map[name]) ? map[name] : [];
      var values = [];
      for (var i = 0; i < n; i++) values.push(num(src[i]));
      return { name: name, values: values, total: values.reduce(function (a, b) { return a + b; }, 0) };
    });
    rows.sort(function (a, b) {
      return (a.name === OTHER) - (b.name === OTHER) || b.total - a.total || a.name.localeCompare(b.name);
    });
    if (rows.length > MAX_SERIES) {
      var rest = rows.slice(MAX_SERIES - 1);     // includes an "(other)" the API sent, which sorts last
      var other = { name: OTHER, values: [], total: 0 };
      for (var i = 0; i < n; i++) {
        other.values.push(rest.reduce(function (a, r) { return a + r.values[i]; }, 0));
      }
      other.total = other.values.reduce(function (a, b) { return a + b; }, 0);
      rows = rows.slice(0, MAX_SERIES - 1).concat([other]);
    }
    return rows;
  }

  // --- Chart.js ------------------------------------------------------------------------------
  function setupChartDefaults() {
    var d = Chart.defaults;
    d.font.family = getComputedStyle(document.body).fontFamily;
    d.font.size = 12;
    d.color = INK;
    d.borderColor = GRID;
    d.maintainAspectRatio = false;
    d.plugins.legend.position = "bottom";
    d.plugins.legend.labels.boxWidth = 12;
    d.plugins.legend.labels.boxHeight = 12;
    d.plugins.legend.labels.padding = 14;
    d.plugins.tooltip.backgroundColor = "rgba(29,38,51,.94)";
    d.plugins.tooltip.padding = 10;
    d.plugins.tooltip.boxPadding = 4;
    if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) d.animation = false;
    else d.animation.duration = 450;
  }

  function makeChart(canvas, config) {
    var old = Chart.getChart(canvas);
    if (old) old.destroy();
    var c = new Chart(canvas, config);
    charts.push(c);
    return c;
  }

  function destroyCharts() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
  }

  function dayAxis(stacked) {
    return { stacked: !!stacked, grid: { display: false },
             ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 14 } };
  }
  function usdAxis(stacked, extra) {
    var a = { stacked: !!stacked, beginAtZero: true, grid: { color: GRID },
              ticks: { callback: function (v) { return usdTick(v); }, maxTicksLimit: 7 } };
    return Object.assign(a, extra || {});
  }
  function usdLabel(ctx) { return " " + ctx.dataset.fullName + ": " + usd(ctx.parsed.y); }
  function totalFooter(items) {
    if (items.length < 2) return "";
    return "Total: " + usd(items.reduce(function (a, it) { return a + num(it.parsed.y); }, 0));
  }

  function spendChart(id, kind, map, days, labels, type) {
    var rows = seriesRows(map, days.length);
    var line = type === "line";
    var datasets = rows.map(function (r) {
      var colour = colourFor(kind, r.name);
      var label = kind === "model" ? shortModel(r.name) : truncate(r.name, 30);
      return line
        ? { label: label, fullName: r.name, data: r.values, borderColor: colour, backgroundColor: colour,
            borderWidth: 2, pointRadius: days.length > 31 ? 0 : 2, pointHoverRadius: 4, tension: 0.3 }
        : { label: label, fullName: r.name, data: r.values, backgroundColor: colour, borderColor: "#fff",
            borderWidth: { top: 1 }, borderSkipped: "bottom", maxBarThickness: 38 };
    });
    return makeChart($(id), {
      type: line ? "line" : "bar",
      data: { labels: labels, datasets: datasets },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { x: dayAxis(!line), y: usdAxis(!line) },
        plugins: { tooltip: { itemSort: function (a, b) { return b.parsed.y - a.parsed.y; },
                              callbacks: { label: usdLabel, footer: line ? undefined : totalFooter } } }
      }
    });
  }

  function topModelsChart(top) {
    var rows = (Array.isArray(top) ? top : []).slice()
      .sort(function (a, b) { return num(b.cost_usd) - num(a.cost_usd); }).slice(0, MAX_TOP_MODELS);
    return makeChart($("chart-top-models"), {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return shortModel(r.model); }),
        datasets: [{ label: "Spend", data: rows.map(function (r) { return num(r.cost_usd); }),
                     backgroundColor: rows.map(function (r) { return colourFor("model", String(r.model)); }),
                     borderRadius: 4, maxBarThickness: 26 }]
      },
      options: {
        indexAxis: "y",
        scales: { x: usdAxis(false), y: { grid: { display: false }, ticks: { callback: function (v, i) {
          return truncate(this.getLabelForValue(v), this.chart.width < 520 ? 16 : 34);   // narrow screens: shorter names
        } } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: {
            title: function (items) { return String(rows[items[0].dataIndex].model); },
            label: function (ctx) {
              var r = rows[ctx.dataIndex];
              return [" Spend: " + usd(r.cost_usd), " Requests: " + int(r.requests),
                      " Tokens: " + int(r.input_tokens) + " in / " + int(r.output_tokens) + " out"];
            } } }
        }
      }
    });
  }

  function errorsChart(data, labels, n) {
    var reqs = [], rates = [], errs = [];
    for (var i = 0; i < n; i++) {
      var r = num((data.requests_by_day || [])[i]), e = num((data.errors_by_day || [])[i]);
      reqs.push(r); errs.push(e);
      rates.push(r > 0 ? e / r : null);     // no requests: no rate, not 0%
    }
    return makeChart($("chart-errors"), {
      type: "line",
      data: { labels: labels, datasets: [
        { label: "Requests", data: reqs, yAxisID: "y", borderColor: "#4e79a7", backgroundColor: alpha("#4e79a7", 0.12),
          fill: true, borderWidth: 2, tension: 0.3, pointRadius: n > 31 ? 0 : 2 },
        { label: "Error rate", data: rates, yAxisID: "y1", borderColor: "#e15759", backgroundColor: "#e15759",
          borderWidth: 2, tension: 0.3, pointRadius: n > 31 ? 0 : 2, spanGaps: false }
      ] },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: dayAxis(false),
          y: { beginAtZero: true, grid: { color: GRID }, title: { display: true, text: "requests" },
               ticks: { precision: 0, maxTicksLimit: 7, callback: function (v) { return count(v); } } },
          y1: { position: "right", beginAtZero: true, suggestedMax: 0.05, grid: { drawOnChartArea: false },
                title: { display: true, text: "error rate" },
                ticks: { maxTicksLimit: 7, callback: function (v) { return pctTickFmt.format(v); } } }
        },
        plugins: { tooltip: { callbacks: { label: function (ctx) {
          if (ctx.datasetIndex === 0) return " Requests: " + int(ctx.parsed.y);
          if (ctx.parsed.y === null) return " Error rate: n/a";
          return " Error rate: " + pct(ctx.parsed.y) + " (" + int(errs[ctx.dataIndex]) + " of " + int(reqs[ctx.dataIndex]) + ")";
        } } } }
      }
    });
  }

  function cacheChart(data, labels, n) {
    var hits = [], saved = [];
    for (var i = 0; i < n; i++) {
      hits.push(num((data.cache_hits_by_day || [])[i]));
      saved.push(num((data.saved_usd_by_day || [])[i]));
    }
    return makeChart($("chart-cache"), {
      type: "bar",
      data: { labels: labels, datasets: [
        { type: "line", label: "Saved (USD)", data: saved, yAxisID: "y1", borderColor: "#2f855a",
          backgroundColor: "#2f855a", borderWidth: 2, tension: 0.3, pointRadius: n > 31 ? 0 : 2, order: 0 },
        { type: "bar", label: "Cache hits", data: hits, yAxisID: "y", backgroundColor: alpha("#59a14f", 0.45),
          borderRadius: 3, maxBarThickness: 38, order: 1 }
      ] },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: dayAxis(false),
          y: { beginAtZero: true, grid: { color: GRID }, title: { display: true, text: "cache hits" },
               ticks: { precision: 0, maxTicksLimit: 7, callback: function (v) { return count(v); } } },
          y1: usdAxis(false, { position: "right", grid: { drawOnChartArea: false },
                               title: { display: true, text: "saved" } })
        },
        plugins: { tooltip: { callbacks: { label: function (ctx) {
          return ctx.dataset.yAxisID === "y1" ? " Saved: " + usd(ctx.parsed.y) : " Cache hits: " + int(ctx.parsed.y);
        } } } }
      }
    });
  }

  // --- budgets ---------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function relative(ms) {
    var h = ms / 3600000;
    if (h < 1) return "in " + Math.max(1, Math.round(ms / 60000)) + " min";
    if (h < 48) return "in " + Math.round(h) + " h";
    return "in " + Math.round(h / 24) + " days";
  }

  /* labels: the burn's days, then the rest of the period (the forecast's days, for day..year
   * budgets) so the chart shows where the current pace ends; spent: cumulative (null in the
   * future); projected: the server's forecast (workers/observe/forecast.py) at the end of each day
   * to come, joined to the last spent point. The page computes no projection of its own. */
  function burnSeries(b) {
    var burn = b.burn || {};
    var fc = b.forecast || {};
    var days = Array.isArray(burn.days) ? burn.days.map(String) : [];
    var cum = days.map(function (_, i) { return num((burn.cumulative_usd || [])[i]); });
    var ahead = Array.isArray(fc.days) ? fc.days.map(String) : [];
    var labels = days.concat(ahead);
    var spent = labels.map(function (_, i) { return i < cum.length ? cum[i] : null; });
    var projected = null;
    if (ahead.length && cum.length && cum[cum.length - 1] > 0) {
      var lastI = cum.length - 1, future = fc.cumulative_usd || [];
      projected = labels.map(function (_, i) {
        return i < lastI ? null : i === lastI ? cum[lastI] : num(future[i - lastI - 1]);
      });
    }
    var projectedEnd = fc.projected_usd === undefined || fc.projected_usd === null || !(num(b.spent_usd) > 0)
      ? null : num(fc.projected_usd);
    return { days: days, labels: labels, spent: spent, projected: projected, projectedEnd: projectedEnd,
             crossesAt: fc.crosses_at || null };
  }

  function budgetCard(b, i) {
    var limit = num(b.limit_usd), spent = num(b.spent_usd);
    var ratio = limit > 0 ? spent / limit : 0;
    var s = burnSeries(b);
    var projectedEnd = s.projectedEnd;
    var card = el("article", "card budget");
    if (ratio >= 1) card.classList.add("over");
    else if (ratio >= 0.8 || (projectedEnd !== null && projectedEnd > limit)) card.classList.add("warn");

    var head = el("div", "budget-head");
    head.appendChild(el("h3", "", String(b.label || (b.level + " " + b.owner))));
    var chips = el("div", "chips");
    if (b.level) chips.appendChild(el("span", "chip", b.level + (b.owner ? " " + b.owner : "")));
    if (b.period) chips.appendChild(el("span", "chip", b.period));
    if (b.env) chips.appendChild(el("span", "chip", "env " + b.env));
    head.appendChild(chips);
    card.appendChild(head);

    var figs = el("div", "budget-figures");
    figs.appendChild(el("span", "spent", usd(spent) + " of " + usd(limit) + " spent (" + pct1.format(ratio) + ")"));
    var reset = b.resets_at ? new Date(b.resets_at) : null;
    var resetText = reset && !isNaN(reset) ? "resets " + whenFmt.format(reset) + " (" + relative(Math.max(0, reset - Date.now())) + ")"
                                           : "no reset";
    figs.appendChild(el("span", "muted reset", resetText));
    card.appendChild(figs);

    var bar = el("div", "bar");
    var fill = el("div");
    fill.style.width = Math.min(100, ratio * 100).toFixed(1) + "%";
    bar.appendChild(fill);
    card.appendChild(bar);

    var meta = el("div", "budget-figures muted");
    meta.appendChild(el("span", "", usd(num(b.remaining_usd)) + " remaining"));
    if (projectedEnd !== null) {
      var crossing = s.crossesAt && ratio < 1 && !isNaN(new Date(s.crossesAt))
        ? ", reaching the limit " + whenFmt.format(new Date(s.crossesAt)) : "";
      meta.appendChild(el("span", "projection", "forecast: " + usd(projectedEnd) + " by the reset" + crossing));
    }
    card.appendChild(meta);

    if (!s.days.length) {
      card.appendChild(el("div", "no-burn", "No spend recorded in this period yet."));
      return { card: card, chart: null };
    }
    var box = el("div", "canvas-box");
    var canvas = el("canvas", "budget-chart");
    canvas.id = "chart-budget-" + i;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Burn-down of " + (b.label || "budget"));
    box.appendChild(canvas);
    card.appendChild(box);

    var tone = ratio >= 1 ? "#c0392b" : "#4e79a7";
    var datasets = [
      { label: "Spent (cumulative)", data: s.spent, borderColor: tone, backgroundColor: alpha(tone, 0.14), fill: true,
        borderWidth: 2, tension: 0.2, pointRadius: s.labels.length > 31 ? 0 : 2, spanGaps: false, pointStyle: "rectRounded" },
      { label: "Limit " + usd(limit), data: s.labels.map(function () { return limit; }), borderColor: LIMIT,
        backgroundColor: LIMIT, borderDash: [6, 4], borderWidth: 2, pointRadius: 0, fill: false, pointStyle: "line" }
    ];
    if (s.projected) {
      datasets.push({ label: "Projected", data: s.projected, borderColor: "#98a2b3", backgroundColor: "#98a2b3",
                      borderDash: [2, 3], borderWidth: 2, pointRadius: 0, fill: false, pointStyle: "line" });
    }
    return { card: card, canvas: canvas, config: {
      type: "line",
      data: { labels: s.labels.map(dayLabel), datasets: datasets },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { x: dayAxis(false), y: usdAxis(false, { suggestedMax: limit * 1.1 }) },
        plugins: { legend: { labels: { usePointStyle: true, pointStyleWidth: 18 } },
                   tooltip: { filter: function (it) { return it.parsed.y !== null; },
                              callbacks: { label: function (ctx) { return " " + ctx.dataset.label.replace(/ \$.*/, "") + ": " + usd(ctx.parsed.y); } } } }
      } } };
  }

  function renderBudgets(budgets) {
    var box = $("budgets");
    box.textContent = "";
    budgets = Array.isArray(budgets) ? budgets : [];
    if (!budgets.length) {
      var none = el("div", "card no-budgets");
      none.appendChild(el("span", "", "No budgets are configured. Add "));
      none.appendChild(el("code", "", "budgets"));
      none.appendChild(el("span", "", " to a key, team or customer in the gateway's governance config to see burn-down here."));
      box.appendChild(none);
      return;
    }
    var built = budgets.map(budgetCard);
    built.forEach(function (x) { box.appendChild(x.card); });     // in the page first, so charts get a size
    built.forEach(function (x) { if (x.canvas) makeChart(x.canvas, x.config); });
  }

  // --- recent alerts (the outbox's latest, from /admin/dashboard's "alerts") ---------------
  function renderAlerts(alerts) {
    var box = $("alerts");
    box.textContent = "";
    alerts = Array.isArray(alerts) ? alerts : [];
    $("alerts-section").hidden = !alerts.length;
    alerts.forEach(function (a) {
      var li = el("li", "alert alert-" + String(a.kind));
      li.appendChild(el("span", "muted alert-time", timeFmt.format(new Date(num(a.created_at) * 1000))));
      li.appendChild(el("span", "chip", String(a.kind)));
      li.appendChild(el("span", "alert-message", String(a.message)));
      li.appendChild(el("span", "chip " + (a.delivered ? "delivered" : "pending"), a.delivered ? "delivered" : "pending"));
      box.appendChild(li);
    });
  }

  // --- tiles ------------------------------------------------------------------------------
  function tile(id, value, sub) {
    var t = $(id);
    t.querySelector(".tile-value").textContent = value;
    t.querySelector(".tile-sub").textContent = sub || "";
  }

  function renderTiles(t, n) {
    var requests = num(t.requests), errors = num(t.errors);
    var rate = t.error_rate !== undefined ? num(t.error_rate) : (requests ? errors / requests : 0);
    var hits = num(t.cache_hits), inTok = num(t.input_tokens), outTok = num(t.output_tokens);
    tile("tile-spend", usd(t.cost_usd), n ? "avg " + usd(num(t.cost_usd) / n) + " per day" : "");
    tile("tile-requests", int(requests), n ? "avg " + int(requests / n) + " per day" : "");
    tile("tile-errors", pct(rate), int(errors) + " failed of " + int(requests));
    tile("tile-cache", usd(t.saved_usd), int(hits) + " cache hits" + (requests ? " \u00b7 " + pct(hits / requests) + " hit rate" : ""));
    tile("tile-tokens", big(inTok + outTok), big(inTok) + " in \u00b7 " + big(outTok) + " out");
  }

  // --- the whole page ---------------------------------------------------------------------
  function render(data) {
    destroyCharts();
    var days = Array.isArray(data.days) ? data.days.map(String) : [];
    var n = days.length;
    var labels = days.map(dayLabel);
    var totals = data.totals || {};

    $("range").textContent = (data.since ? dayLong(data.since) : "?") + " \u2013 " + (data.until ? dayLong(data.until) : "?") +
                             " \u00b7 " + n + (n === 1 ? " day" : " days");
    $("updated").textContent = "updated " + timeFmt.format(new Date());
    renderTiles(totals, n);

    var empty = !n || num(totals.requests) === 0;
    $("empty").hidden = !empty;
    $("charts").hidden = empty;
    $("dashboard").hidden = false;
    if (!empty) {
      spendChart("chart-spend-env", "env", data.spend_by_env, days, labels, "bar");
      spendChart("chart-spend-key", "key", data.spend_by_key, days, labels, "bar");
      spendChart("chart-spend-model", "model", data.spend_by_model, days, labels, "line");
      topModelsChart(data.top_models);
      errorsChart(data, labels, n);
      cacheChart(data, labels, n);
    }
    renderBudgets(data.budgets);
    renderAlerts(data.alerts);
  }

  // --- state, token, fetch ------------------------------------------------------------------
  function storage(kind) { try { return window[kind]; } catch (e) { return null; } }
  function getToken() { var s = storage("sessionStorage"); return s ? s.getItem(TOKEN_KEY) : null; }
  function setToken(t) { var s = storage("sessionStorage"); if (s) s.setItem(TOKEN_KEY, t); }
  function clearToken() { var s = storage("sessionStorage"); if (s) s.removeItem(TOKEN_KEY); }

  function takeFragmentToken() {
    var hash = location.hash.replace(/^#/, "");
    if (!hash) return;
    var rest = [], token = null;
    hash.split("&").forEach(function (part) {
      if (part.indexOf("token=") === 0) {
        try { token = decodeURIComponent(part.slice(6)); } catch (e) { token = part.slice(6); }
      } else if (part) rest.push(part);
    });
    if (token === null) return;
    if (token) setToken(token);
    history.replaceState(null, "", location.pathname + location.search + (rest.length ? "#" + rest.join("&") : ""));
  }

  function initialDays() {
    var q = new URLSearchParams(location.search).get("days");
    if (PERIODS.indexOf(q) >= 0) return q;
    var s = storage("localStorage");
    var saved = s ? s.getItem(DAYS_KEY) : null;
    return PERIODS.indexOf(saved) >= 0 ? saved : "30";
  }

  function showMessage(text) {
    var m = $("message");
    m.textContent = text || "";
    m.hidden = !text;
  }

  function showLogin() {
    destroyCharts();
    $("dashboard").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    $("token").value = "";
    $("token").focus();
  }

  function fail(text) {
    delete document.body.dataset.ready;
    document.body.dataset.error = text;
    showMessage(text);
  }

  function setBusy(busy) {
    var b = $("refresh");
    b.disabled = busy;
    b.textContent = busy ? "Loading\u2026" : "Refresh";
    document.body.setAttribute("aria-busy", busy ? "true" : "false");
  }

  async function errorMessage(resp) {
    var text = "";
    try { text = await resp.text(); } catch (e) { /* no body */ }
    try {
      var j = JSON.parse(text);
      var m = j && (j.message || j.Message);
      if (m) return String(m);
    } catch (e) { /* not JSON */ }
    return "The gateway answered HTTP " + resp.status + (resp.statusText ? " " + resp.statusText : "") + ".";
  }

  async function load() {
    var token = getToken();
    if (!token) { showLogin(); return; }
    var days = $("period").value;
    var mine = {};
    loading = mine;
    delete document.body.dataset.ready;
    delete document.body.dataset.error;
    $("login").hidden = true;
    $("controls").hidden = false;
    setBusy(true);
    try {
      var resp;
      try {
        resp = await fetch("/admin/dashboard?days=" + encodeURIComponent(days), {
          headers: { "Authorization": "Bearer " + token, "Accept": "application/json" },
          cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
      } catch (e) {
        if (loading === mine) fail("Could not reach the gateway: " + (e && e.message ? e.message : e));
        return;
      }
      if (loading !== mine) return;            // a newer load started meanwhile
      if (!resp.ok) {
        var msg = await errorMessage(resp);
        if (loading !== mine) return;
        if (resp.status === 401 || resp.status === 403 || resp.status === 404) {
          clearToken();
          showLogin();
        }
        fail(msg);
        return;
      }
      var data;
      try { data = await resp.json(); } catch (e) {
        if (loading === mine) fail("The gateway's dashboard data is not valid JSON.");
        return;
      }
      if (loading !== mine) return;
      try {
        render(data || {});
      } catch (e) {
        fail("Could not draw the dashboard: " + (e && e.message ? e.message : e));
        return;
      }
      showMessage("");
      document.body.dataset.charts = String(charts.length);
      document.body.dataset.ready = "1";
    } finally {
      if (loading === mine) setBusy(false);
    }
  }

  function start() {
    if (typeof window.Chart !== "function") {
      fail("The charting library (chart.umd.min.js) did not load.");
      return;
    }
    setupChartDefaults();
    takeFragmentToken();
    $("period").value = initialDays();
    $("period").addEventListener("change", function () {
      var s = storage("localStorage");
      if (s) s.setItem(DAYS_KEY, $("period").value);
      load();
    });
    $("refresh").addEventListener("click", function () { load(); });
    $("signout").addEventListener("click", function () {
      clearToken();
      showMessage("");
      delete document.body.dataset.error;
      delete document.body.dataset.ready;
      showLogin();
    });
    $("login-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var t = $("token").value.trim();
      if (!t) return;
      setToken(t);
      showMessage("");
      load();
    });
    window.addEventListener("hashchange", function () {
      if (/(^#|&)token=/.test(location.hash)) { takeFragmentToken(); load(); }
    });
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// The operator's console: polls the admin API with the pasted token and draws what it
// answers. Every value from the API is put in the page as text (textContent, DOM
// properties), never parsed as HTML: exit messages and skipped ids can carry text from
// a peer's answer. The token lives in this tab's sessionStorage only. Dates and times
// are the service's (APP_TIMEZONE, in the page's app-timezone meta element), never the
// browser's: the schedules and the job parameters are in that zone.

const TOKEN_KEY = "couponpop-batch.adminToken";
const API = "/api/v1/jobs";
const REFRESH_MS = 2000;
const REQUEST_TIMEOUT_MS = 10000;
const LIST_LIMIT = 50;
const RUNNING = new Set(["STARTING", "STARTED", "STOPPING"]);
// The commands, as the API names them in an execution's `actions`: those the rules allow
// on it now (restart and abandon on its instance's newest execution only).
const ACTIONS = [
  ["stop", "Stop"],
  ["restart", "Restart"],
  ["abandon", "Abandon"],
];
const MINT = "python -m app token";
// Java types of job parameters, as the jobs declare them (GET /api/v1/jobs).
const LOCAL_DATE = "java.time.LocalDate";
const INTEGER = "java.lang.Integer";
const BOOLEAN = "java.lang.Boolean";

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat("en-US");
const ZONE = document.querySelector('meta[name="app-timezone"]')?.content || "UTC";
const COMPLETED_WITH_SKIPS = "COMPLETED WITH SKIPS";

class ApiError extends Error {
  constructor(message, status, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- DOM helpers: text only ------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child)); // a string becomes a text node
  }
  return node;
}

// What the badge says: the status, or the exit code where it tells more (a COMPLETED
// execution that skipped items is COMPLETED WITH SKIPS, not a plain green COMPLETED).
function badgeLabel(status, exitCode) {
  return status === "COMPLETED" && exitCode === COMPLETED_WITH_SKIPS ? exitCode : status;
}

function badgeClass(label) {
  const name = label.replace(/ /g, "_");
  return `badge s-${/^[A-Z_]+$/.test(name) ? name : "UNKNOWN"}`;
}

function statusBadge(status, exitCode) {
  const label = badgeLabel(status, exitCode);
  return el("span", { class: badgeClass(label) }, label);
}

function count(value) {
  return typeof value === "number" ? numbers.format(value) : "";
}

// ---- times, in the service's zone ------------------------------------------------------

const zoneFormat = new Intl.DateTimeFormat("en-CA", {
  timeZone: ZONE,
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

// {date: "YYYY-MM-DD", hour: 0..23, time: "HH:MM:SS"} of the instant `ms` in ZONE.
function inZone(ms) {
  const p = Object.fromEntries(zoneFormat.formatToParts(new Date(ms)).map((part) => [part.type, part.value]));
  return { date: `${p.year}-${p.month}-${p.day}`, hour: Number(p.hour), time: `${p.hour}:${p.minute}:${p.second}` };
}

// The zone's offset now, as the API writes it: +09:00.
function zoneOffset() {
  const name = new Intl.DateTimeFormat("en-US", { timeZone: ZONE, timeZoneName: "longOffset" })
    .formatToParts(new Date())
    .find((part) => part.type === "timeZoneName").value;
  return name === "GMT" ? "+00:00" : name.replace("GMT", "");
}

// The API's times are ISO 8601 with their offset (APP_TIMEZONE's), with microseconds.
function parseTime(text) {
  if (!text) return null;
  const ms = Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(ms) ? null : ms;
}

function showTime(text) {
  const ms = parseTime(text);
  if (ms === null) return text ? text.slice(0, 19).replace("T", " ") : "";
  const { date, time } = inZone(ms);
  return `${date} ${time}`;
}

function clock() {
  return inZone(Date.now()).time;
}

function duration(execution) {
  const start = parseTime(execution.startTime);
  if (start === null) return "";
  const end = RUNNING.has(execution.status) ? Date.now() : parseTime(execution.endTime);
  if (end === null) return "";
  const seconds = Math.max(0, Math.round((end - start) / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function isDryRun(execution) {
  if (typeof execution.dryRun === "boolean") return execution.dryRun;
  return execution.parameters?.dryRun === "true";
}

// dryRun shows as a tag; run.id only makes each dry run an instance of its own.
const HIDDEN_PARAMETERS = new Set(["dryRun", "run.id"]);

function parameterText(parameters) {
  return Object.entries(parameters || {})
    .filter(([name]) => !HIDDEN_PARAMETERS.has(name))
    .map(([name, value]) => `${name}=${value}`)
    .join(" ");
}

// Live counts while the execution runs in the replica that answered; committed otherwise.
function counts(execution) {
  const p = execution.progress;
  if (p) return [p.read, p.written, p.filtered, p.skipped];
  return [execution.readCount, execution.writeCount, execution.filterCount, execution.skipCount];
}

// ---- the token -------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function claimsOf(jwt) {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(payload), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

// Why the token is no use any more: "expired" (its exp has passed, or the API said
// EXPIRED_TOKEN), "refused" (the API said INVALID_TOKEN), or "" while it is good.
let refusal = "";

function tokenProblem() {
  const jwt = token();
  if (!jwt) return "";
  const exp = claimsOf(jwt).exp;
  return refusal || (typeof exp === "number" && exp * 1000 <= Date.now() ? "expired" : "");
}

function showTokenState() {
  const jwt = token();
  const state = $("token-state");
  $("forget").disabled = !jwt;
  state.className = "muted";
  if (!jwt) {
    state.textContent = "no token";
    return;
  }
  const claims = claimsOf(jwt);
  const who = claims.username || claims.sub || "unknown";
  const at = typeof claims.exp === "number" ? showTime(new Date(claims.exp * 1000).toISOString()) : "";
  const problem = tokenProblem();
  if (problem) {
    const what = problem === "expired" ? `token expired${at ? ` at ${at}` : ""}` : "token refused by the API";
    state.textContent = `${what} (${who}): get a new one with \`${MINT}\` and paste it`;
    state.className = "expired";
    return;
  }
  state.textContent = `token set (${who}${at ? `, expires ${at}` : ""})`;
}

// The refresh stops while the token is no use, and says so where the time of the last
// refresh shows.
function pauseRefresh() {
  clearTimeout(timer);
  showTokenState();
  const refreshed = $("refreshed");
  refreshed.textContent = `refresh paused: ${tokenProblem() === "expired" ? "the token expired" : "the token was refused"}`;
  refreshed.className = "paused";
}

function useToken(event) {
  event.preventDefault();
  const input = $("token");
  const value = input.value.trim().replace(/^Bearer\s+/i, "");
  input.value = "";
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(value)) {
    say("that is not a JWT (three base64url parts separated by dots)", true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  refusal = "";
  showTokenState();
  say(tokenProblem() ? "that token has expired already" : "token set for this tab", Boolean(tokenProblem()));
  refreshNow();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  refusal = "";
  showTokenState();
  clearTimeout(timer);
  rows.clear();
  $("rows").replaceChildren();
  closeDetails();
  $("refreshed").textContent = "";
  $("refreshed").className = "muted";
  say("token forgotten");
}

// ---- the API -----------------------------------------------------------------------------

async function api(method, path) {
  const jwt = token();
  if (!jwt) throw new ApiError("paste an admin token first", 0);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${jwt}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (error) {
    const why = error.name === "TimeoutError" ? `no answer in ${REQUEST_TIMEOUT_MS / 1000} s` : "network error";
    throw new ApiError(`${method} ${path}: ${why}`, 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: reported below by status
  }
  if (!response.ok) {
    const error = body && typeof body.error === "object" ? body.error : null;
    const message = error ? `${error.status}: ${error.code}: ${error.message}` : `HTTP ${response.status}`;
    throw new ApiError(`${method} ${path.split("?")[0]}: ${message}`, response.status, error?.code || "");
  }
  return body;
}

// ---- the status line ------------------------------------------------------------------------

function say(message, isError = false) {
  const line = $("status");
  line.textContent = `${clock()} ${message}`;
  line.className = isError ? "error" : "ok";
}

// ---- the executions table -------------------------------------------------------------------

const rows = new Map(); // executionId -> {row, cells, status, values}
let selected = null; // the execution id whose details are shown

function allowedActions(execution) {
  const allowed = new Set(Array.isArray(execution.actions) ? execution.actions : []);
  return ACTIONS.filter(([action]) => allowed.has(action));
}

function actionButtons(execution) {
  const buttons = allowedActions(execution).map(
    ([action, label]) =>
      el("button", { type: "button", class: `action ${action}`, dataset: { action, id: String(execution.executionId) } }, label),
  );
  return el("span", { class: "actions" }, ...buttons);
}

// A row's cells are made once and updated in place, each only when its value changed:
// a refresh never replaces a button under the pointer, nor restarts a progress bar.
const COLUMNS = ["id", "job", "status", "params", "start", "duration", "read", "written", "filtered", "skipped", "message", "actions"];
const COLUMN_CLASSES = { id: "num id", start: "time", duration: "num duration", read: "num read", written: "num written", filtered: "num filtered", skipped: "num skipped" };

function newRow(id) {
  const row = el("tr", { tabIndex: 0, dataset: { id: String(id) } });
  const cells = {};
  for (const name of COLUMNS) row.append((cells[name] = el("td", { class: COLUMN_CLASSES[name] || name })));
  const status = {
    badge: el("span"),
    live: el("div", { class: "live", hidden: true }),
    bar: el("progress", { max: 1 }),
    rate: el("small", { class: "rate" }),
    retry: el("div", { class: "retry", hidden: true }),
    remote: el("div", { class: "remote", hidden: true, title: REMOTE_NOTE }, "no live progress here"),
  };
  status.live.append(status.bar, status.rate);
  cells.status.append(status.badge, status.live, status.retry, status.remote);
  return { row, cells, status, values: {} };
}

function update(entry, name, value, fill) {
  if (entry.values[name] === value) return;
  entry.values[name] = value;
  fill(entry.cells[name], value);
}

function setText(cell, text) {
  cell.textContent = text;
}

// A running execution without live progress is run by another replica (or by a process
// that ended without recording it): the API has only what the job repository holds.
const REMOTE_NOTE =
  "This replica does not run this execution: the counts are the job repository's, as of" +
  " its last commit, without live progress or retries (another replica runs it, or the" +
  " process that ran it ended; it is marked FAILED once its heartbeat is stale).";

function retryText(retry) {
  return (
    `retrying ${retry.what} (${retry.error}) · since ${showTime(retry.since).slice(11)}` +
    ` · attempt ${retry.attempts} failed · ${numbers.format(Math.round(retry.budgetLeftSeconds))} s of retry budget left`
  );
}

function retriesText(p) {
  const retries = p && Array.isArray(p.retrying) ? p.retrying : [];
  if (retries.length === 0) return "";
  const more = retries.length > 1 ? ` (and ${retries.length - 1} more retrying)` : "";
  return retryText(retries[0]) + more;
}

function updateStatus(entry, execution) {
  const { badge, live, bar, rate, retry, remote } = entry.status;
  const label = badgeLabel(execution.status, execution.exitCode);
  badge.className = badgeClass(label);
  badge.textContent = label;
  const running = RUNNING.has(execution.status);
  const p = execution.progress;
  live.hidden = !running || !p;
  remote.hidden = !running || Boolean(p);
  const retrying = running ? retriesText(p) : "";
  retry.hidden = !retrying;
  retry.textContent = retrying;
  const fraction = p?.fraction;
  if (running && typeof fraction === "number") {
    bar.value = fraction;
    bar.title = `${Math.round(fraction * 100)}%`;
  } else {
    bar.removeAttribute("value"); // indeterminate: how much is left is not known
    bar.title = "";
  }
  rate.textContent = running && p ? `${numbers.format(p.itemsPerSecond)}/s` : "";
}

function renderRow(entry, execution) {
  const [read, written, filtered, skipped] = counts(execution);
  const message = execution.exitMessage || "";
  const dry = isDryRun(execution);
  const actions = allowedActions(execution).map(([a]) => a);
  update(entry, "id", String(execution.executionId), setText);
  update(entry, "job", execution.jobName, (cell, name) => {
    cell.textContent = jobLabels[name] || name;
    cell.title = name;
  });
  update(entry, "params", `${parameterText(execution.parameters)}|${dry}`, (cell) => {
    cell.replaceChildren(parameterText(execution.parameters));
    if (dry) cell.append(" ", el("span", { class: "tag dry" }, "dry run"));
  });
  update(entry, "start", showTime(execution.startTime), setText);
  update(entry, "duration", duration(execution), setText);
  update(entry, "read", count(read), setText);
  update(entry, "written", count(written), setText);
  update(entry, "filtered", count(filtered), setText);
  update(entry, "skipped", count(skipped), setText);
  update(entry, "message", message, (cell) => {
    cell.textContent = message;
    cell.title = message;
  });
  update(entry, "actions", actions.join(","), (cell) => cell.replaceChildren(actionButtons(execution)));
  updateStatus(entry, execution);
}

function renderTable(executions) {
  const body = $("rows");
  const seen = new Set();
  let previous = null;
  for (const execution of executions) {
    const id = execution.executionId;
    seen.add(id);
    let entry = rows.get(id);
    if (!entry) rows.set(id, (entry = newRow(id)));
    renderRow(entry, execution);
    entry.row.dataset.status = execution.status;
    entry.row.classList.toggle("selected", id === selected);
    // Move only what is out of place.
    const expected = previous ? previous.nextSibling : body.firstChild;
    if (expected !== entry.row) body.insertBefore(entry.row, expected);
    previous = entry.row;
  }
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.row.remove();
      rows.delete(id);
    }
  }
  $("empty").hidden = executions.length > 0;
}

// ---- details ------------------------------------------------------------------------------

let detailsKey = "";

function field(name, ...value) {
  return [el("dt", {}, name), el("dd", {}, ...value)];
}

function renderDetails(execution) {
  const key = JSON.stringify(execution);
  if (key === detailsKey && !RUNNING.has(execution.status)) return;
  detailsKey = key;
  $("details-title").textContent =
    `Execution ${execution.executionId} · ${execution.jobName}${isDryRun(execution) ? " · dry run" : ""}`;
  const actions = $("details-actions");
  const actionKey = `${execution.executionId}:${allowedActions(execution).map(([a]) => a)}`;
  if (actions.dataset.key !== actionKey) {
    actions.dataset.key = actionKey; // replaced only when they change, as in the table
    actions.replaceChildren(actionButtons(execution));
  }
  const p = execution.progress;
  const times = [
    ["created", execution.createTime],
    ["started", execution.startTime],
    ["ended", execution.endTime],
    ["updated", execution.lastUpdated],
  ];
  const fields = [
    ...field(
      "Status",
      statusBadge(execution.status, execution.exitCode),
      execution.exitCode ? ` exit code ${execution.exitCode}` : "",
    ),
    ...field("Exit message", el("pre", { class: "exit-message" }, execution.exitMessage || "")),
    ...field("Parameters", parameterText(execution.parameters) || "none"),
    ...field("Times", times.map(([label, time]) => `${label} ${showTime(time) || "–"}`).join(" · ")),
    ...field(
      "Committed",
      `read ${count(execution.readCount)} · written ${count(execution.writeCount)}` +
        ` · filtered ${count(execution.filterCount)} · skipped ${count(execution.skipCount)}` +
        ` · commits ${count(execution.commitCount)}`,
    ),
  ];
  if (p) {
    const fraction = typeof p.fraction === "number" ? ` · ${Math.round(p.fraction * 100)}%` : "";
    fields.push(
      ...field(
        "Live",
        `read ${count(p.read)} · written ${count(p.written)} · filtered ${count(p.filtered)}` +
          ` · skipped ${count(p.skipped)} · ${numbers.format(p.itemsPerSecond)} items/s${fraction}`,
      ),
    );
    const retries = Array.isArray(p.retrying) ? p.retrying : [];
    if (retries.length) {
      fields.push(...field("Retrying", el("ul", { class: "retries" }, ...retries.map((r) => el("li", {}, retryText(r))))));
    }
  } else if (RUNNING.has(execution.status)) {
    fields.push(...field("Live", el("span", { class: "remote" }, REMOTE_NOTE)));
  }
  if (execution.messages) {
    fields.push(
      ...field("Messages", `published ${count(execution.messages.published)} · confirmed ${count(execution.messages.confirmed)}`),
    );
  }
  const skipped = execution.skippedItems;
  if (skipped && skipped.count > 0) {
    const ids = Array.isArray(skipped.ids) ? skipped.ids : [];
    const causes = Array.isArray(skipped.causes) ? skipped.causes : [];
    const shown = ids.length < skipped.count ? ` (first ${ids.length} shown)` : "";
    // Each group of the first skipped items with the fault that skipped them; the ids
    // alone where the run recorded no cause (an older run's).
    const why = causes.length
      ? el("ul", { class: "skip-causes" }, ...causes.map((c) => el("li", {}, `${(c.keys || []).join(", ")}: ${c.cause}`)))
      : el("pre", { class: "skipped-ids" }, ids.join(", "));
    fields.push(...field("Skipped items", `${count(skipped.count)}${shown}`, why));
  }
  if (execution.dryRunOutput) {
    fields.push(...field("Dry-run output", el("code", { class: "dry-run-output" }, execution.dryRunOutput)));
  }
  $("details-fields").replaceChildren(...fields);
  $("steps").replaceChildren(
    ...(execution.steps || []).map((step) =>
      el(
        "tr",
        {},
        el("td", {}, step.stepName),
        el("td", {}, statusBadge(step.status, "")),
        el("td", { class: "num" }, count(step.readCount)),
        el("td", { class: "num" }, count(step.writeCount)),
        el("td", { class: "num" }, count(step.filterCount)),
        el("td", { class: "num" }, count(step.skipCount)),
        el("td", { class: "num" }, count(step.commitCount)),
        step.contextError
          ? el("td", { class: "checkpoint", title: step.contextError }, "undecodable context")
          : el("td", { class: "checkpoint" }, step.checkpoint === null || step.checkpoint === undefined ? "" : JSON.stringify(step.checkpoint)),
        el("td", { class: "time" }, showTime(step.startTime)),
        el("td", { class: "time" }, showTime(step.endTime)),
        el("td", { class: "step-message" }, step.exitMessage || ""),
      ),
    ),
  );
  $("details").hidden = false;
}

function select(id) {
  selected = id;
  detailsKey = "";
  for (const [rowId, entry] of rows) entry.row.classList.toggle("selected", rowId === id);
  refreshNow();
}

function closeDetails() {
  selected = null;
  detailsKey = "";
  $("details-actions").dataset.key = "";
  $("details").hidden = true;
  for (const entry of rows.values()) entry.row.classList.remove("selected");
}

// ---- polling ---------------------------------------------------------------------------------

let timer = 0;
let inflight = false;
let again = false;
let lastError = "";
// The `before` of each page from the newest to the one shown ([null]: the newest page).
const pages = [null];
let nextBefore = null;

function listQuery() {
  const data = new FormData($("filters"));
  const query = new URLSearchParams({ limit: String(LIST_LIMIT) });
  for (const name of ["job", "status", "runDate"]) {
    const value = data.get(name);
    if (value) query.set(name, value);
  }
  const before = pages[pages.length - 1];
  if (before !== null) query.set("before", String(before));
  return query.toString();
}

function showPager() {
  $("page").textContent = `page ${pages.length}`;
  $("newer").disabled = pages.length === 1;
  $("older").disabled = nextBefore === null;
}

function page(step) {
  if (step > 0 && nextBefore !== null) pages.push(nextBefore);
  if (step < 0 && pages.length > 1) pages.pop();
  nextBefore = null;
  showPager();
  refreshNow();
}

function filtersChanged() {
  pages.splice(1);
  nextBefore = null;
  showPager();
  refreshNow();
}

async function refresh() {
  if (!token()) return;
  const query = listQuery();
  const wanted = selected;
  const [list, details] = await Promise.all([
    api("GET", `${API}/executions?${query}`),
    wanted === null ? null : api("GET", `${API}/executions/${wanted}`),
  ]);
  if (!token()) return; // forgotten meanwhile
  if (query === listQuery()) {
    // not if the filters or the page changed meanwhile: the next answer is drawn
    nextBefore = list.nextBefore ?? null;
    renderTable(list.executions);
    showPager();
  }
  if (details && selected === wanted) renderDetails(details);
  $("refreshed").textContent = `updated ${clock()}`;
  $("refreshed").className = "muted";
}

async function tick() {
  clearTimeout(timer);
  if (inflight) {
    again = true;
    return;
  }
  if (tokenProblem()) {
    pauseRefresh(); // nothing asked with a token known to be no use
    return;
  }
  inflight = true;
  try {
    await loadJobs();
    await refresh();
    if (lastError) say("connected again");
    lastError = "";
  } catch (error) {
    if (error.message !== lastError) say(error.message, true);
    lastError = error.message;
    if (error.status === 401) refusal = error.code === "EXPIRED_TOKEN" ? "expired" : "refused";
  } finally {
    inflight = false;
  }
  if (again) {
    again = false;
    tick();
  } else if (tokenProblem()) {
    pauseRefresh(); // until a new token is pasted
  } else if (token() && !document.hidden) {
    timer = setTimeout(tick, REFRESH_MS);
  }
}

function refreshNow() {
  tick();
}

// ---- actions -------------------------------------------------------------------------------

// ---- the jobs: a launch form each, as they declare themselves ----------------------

let jobs = null; // GET /api/v1/jobs, once a token is set
let jobLabels = {}; // Spring name -> what the list calls it

async function loadJobs() {
  if (jobs) return;
  const answer = await api("GET", API);
  jobs = answer.jobs;
  jobLabels = Object.fromEntries(jobs.map((job) => [job.name, job.title.toLowerCase()]));
  $("launch").replaceChildren(...jobs.map(launchForm));
  $("filters").elements.job.append(...jobs.map((job) => el("option", { value: job.path }, job.title.toLowerCase())));
}

// runDate -> "Run date"
function fieldLabel(name) {
  const words = name.replace(/([A-Z])/g, " $1").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function launchForm(job) {
  const form = el("form", { id: `launch-${job.path}`, class: "card" }, el("h2", {}, job.title));
  for (const parameter of job.parameters) form.append(parameterField(job, parameter));
  form.append(el("button", { type: "submit" }, "Launch"));
  form.addEventListener("submit", (event) => launch(event, job));
  return form;
}

// A field starting from what the job's schedule would launch now (`suggested`).
function parameterField(job, parameter) {
  const name = parameter.name;
  const label = fieldLabel(name);
  const suggested = job.suggested?.[name] ?? "";
  if (parameter.type === BOOLEAN) {
    // a dry run is the default of a job that publishes: a real one is chosen, then confirmed
    const checked = (name === "dryRun" && job.publishes) || suggested === "true";
    return el("label", { class: "check" }, el("input", { type: "checkbox", name, checked }), ` ${label}`);
  }
  if (parameter.choices.length) {
    const width = Math.max(...parameter.choices.map((choice) => choice.length));
    const options = parameter.choices.map((choice) =>
      el("option", { value: choice, selected: choice === suggested }, /^\d+$/.test(choice) ? choice.padStart(width, "0") : choice),
    );
    return el("label", {}, `${label} `, el("select", { name }, ...options));
  }
  const type = { [LOCAL_DATE]: "date", [INTEGER]: "number" }[parameter.type] || "text";
  return el("label", {}, `${label} `, el("input", { type, name, value: suggested, required: parameter.default === null }));
}

function launchQuery(form, job) {
  const query = new URLSearchParams();
  for (const { name } of job.parameters) {
    const input = form.elements[name];
    if (input.type === "checkbox") {
      if (input.checked) query.set(name, "true");
    } else if (input.value !== "") {
      query.set(name, input.value);
    }
  }
  return query;
}

// A real run of a job that publishes (the fan-out pushes to members' phones): the
// operator confirms it first, with the job's own question naming its parameters and
// about how much it reads (the job's estimate).
async function confirmRealRun(job, form, query) {
  let estimate = "";
  if (job.estimates) {
    const asked = new URLSearchParams(query);
    asked.delete("dryRun");
    try {
      const answer = await api("GET", `${API}/${job.path}/estimate?${asked}`);
      estimate = `about ${numbers.format(answer.count)} ${answer.unit}`;
    } catch (error) {
      estimate = `an unknown number (no estimate: ${error.message})`;
    }
  }
  const values = { zone: ZONE, estimate };
  for (const { name } of job.parameters) {
    const input = form.elements[name];
    values[name] = input.tagName === "SELECT" ? input.selectedOptions[0]?.text ?? input.value : input.value;
  }
  return confirm(job.confirm.replace(/\{(\w+)\}/g, (whole, name) => values[name] ?? whole));
}

async function launch(event, job) {
  event.preventDefault();
  const form = event.currentTarget;
  const query = launchQuery(form, job);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    if (job.publishes && job.confirm && !query.get("dryRun") && !(await confirmRealRun(job, form, query))) {
      say("launch cancelled");
      return;
    }
    const launched = await api("POST", `${API}/${job.path}?${query}`);
    const dry = query.get("dryRun") ? " (dry run)" : "";
    say(`launched execution ${launched.executionId}: ${launched.jobName} ${parameterText(launched.parameters)}${dry}`);
    select(launched.executionId);
  } catch (error) {
    say(error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function act(action, id) {
  if (action === "abandon" && !confirm(`Abandon execution ${id}? It can never be restarted.`)) return;
  try {
    const answer = await api("POST", `${API}/executions/${id}/${action}`);
    if (action === "restart" && answer && answer.executionId) {
      say(`execution ${id} restarted as execution ${answer.executionId}`);
      select(answer.executionId);
      return;
    }
    say(action === "stop" ? `stop requested for execution ${id}` : `execution ${id} abandoned`);
  } catch (error) {
    say(error.message, true);
  }
  refreshNow();
}

function onTableClick(event) {
  const button = event.target.closest("button[data-action]");
  if (button) {
    event.stopPropagation();
    act(button.dataset.action, Number(button.dataset.id));
    return;
  }
  const row = event.target.closest("tr[data-id]");
  if (row) select(Number(row.dataset.id));
}

// ---- start -------------------------------------------------------------------------------

function start() {
  $("zone").textContent = `times in ${ZONE} (UTC${zoneOffset()})`;
  showPager();

  $("token-form").addEventListener("submit", useToken);
  $("forget").addEventListener("click", forgetToken);
  $("filters").addEventListener("change", filtersChanged);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("filters").addEventListener("reset", () => setTimeout(filtersChanged)); // after the reset
  $("newer").addEventListener("click", () => page(-1));
  $("older").addEventListener("click", () => page(1));
  $("rows").addEventListener("click", onTableClick);
  $("rows").addEventListener("keydown", (e) => {
    const row = e.target.closest("tr[data-id]");
    if (e.key === "Enter" && row && e.target === row) select(Number(row.dataset.id));
  });
  $("details-actions").addEventListener("click", onTableClick);
  $("details-close").addEventListener("click", closeDetails);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshNow();
  });

  showTokenState();
  if (token()) refreshNow();
  else say("paste an admin token to start");
}

start();

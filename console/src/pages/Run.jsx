import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, can, follow } from "../api.js";
import Graph from "../Graph.jsx";
import { Link } from "../router.jsx";
import { ErrorBox, Json, Status, useData, useDebounced, when } from "../ui.jsx";

const LIFECYCLE = [
  ["pause", "Pause", ["pending", "running", "waiting"]],
  ["resume", "Resume", ["paused"]],
  ["cancel", "Cancel", ["pending", "running", "waiting", "paused"]],
  ["retry", "Retry", ["failed", "cancelled", "timed_out"]],
];

function Lifecycle({ run, onDone }) {
  const [error, setError] = useState(null);
  if (!can("operator")) return null;
  const act = async (op) => {
    setError(null);
    try {
      await api.post(`/runs/${run.id}/${op}`);
      onDone();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div className="actions">
      {LIFECYCLE.filter(([, , from]) => from.includes(run.status)).map(([op, label]) => (
        <button key={op} className={op === "cancel" ? "danger" : "secondary"} onClick={() => act(op)} data-action={op}>
          {label}
        </button>
      ))}
      <ErrorBox error={error} />
    </div>
  );
}

function SendSignal({ run, onDone }) {
  const [name, setName] = useState("");
  const [payload, setPayload] = useState("{}");
  const [error, setError] = useState(null);
  if (!can("operator") || !["pending", "running", "waiting", "paused"].includes(run.status)) return null;
  const send = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      await api.post(`/runs/${run.id}/signals/${encodeURIComponent(name)}`, JSON.parse(payload));
      setName("");
      onDone();
    } catch (err) {
      setError(err instanceof SyntaxError ? { message: `The payload is not JSON: ${err.message}` } : err);
    }
  };
  return (
    <form className="panel" onSubmit={send}>
      <h2>Send a signal</h2>
      <div className="row">
        <input aria-label="Signal name" placeholder="reply_received" value={name} required maxLength={100} pattern="[A-Za-z0-9_.:\-]+" onChange={(e) => setName(e.target.value)} />
        <button type="submit">Send</button>
      </div>
      <textarea aria-label="Signal payload" rows={3} value={payload} maxLength={1_000_000} onChange={(e) => setPayload(e.target.value)} />
      <ErrorBox error={error} />
    </form>
  );
}

/** A state-machine run: its state, the actions it takes now (buttons), and its history. */
function Machine({ run, actions, onDone }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (!actions) return null;
  const take = async (id) => {
    setError(null);
    setBusy(true);
    try {
      await api.post(`/runs/${run.id}/actions/${encodeURIComponent(id)}`);
      await onDone();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const operator = can("operator");
  return (
    <div className="panel" data-testid="machine">
      <h2>
        State: <span data-testid="state">{actions.state ?? "—"}</span>
      </h2>
      {operator ? (
        <div className="actions" data-testid="machine-actions">
          {actions.actions.map((a) => (
            <button key={a.id} onClick={() => take(a.id)} disabled={busy} data-machine-action={a.id}>
              {a.name || a.id}
            </button>
          ))}
          {actions.unavailable.map((a) => (
            <span key={a.id}>
              <button disabled title={a.reason} data-machine-action={a.id}>
                {a.name || a.id}
              </button>
              <span className="reason">{a.reason}</span>
            </span>
          ))}
        </div>
      ) : (
        <p className="muted small">
          Actions now: {actions.actions.map((a) => a.name || a.id).join(", ") || "none"}
        </p>
      )}
      <ErrorBox error={error} />
      <h2>History</h2>
      <ol className="small" data-testid="machine-history">
        {actions.history.map((h, i) => (
          <li key={i}>
            {h.from ?? "—"} → <strong>{h.to}</strong> by {h.action} ({h.by || "—"}, {when(h.at)})
          </li>
        ))}
      </ol>
    </div>
  );
}

/**
 * The run's events, read from `GET /runs/{id}/events` after the last one read (the stream
 * only says that something happened): `{events, reload}`. Secrets never reach them (the
 * server redacts errors and outputs before it stores them).
 */
function useEvents(runId) {
  const [events, setEvents] = useState([]);
  const state = useRef({ runId, last: 0, busy: null });
  const reload = useCallback(() => {
    const mine = state.current;
    if (mine.busy) return mine.busy.then(() => mine.runId === runId && reload());
    mine.busy = (async () => {
      try {
        for (;;) {
          const page = await api.get(`/runs/${encodeURIComponent(runId)}/events?limit=1000${mine.last ? `&cursor=${mine.last}` : ""}`);
          if (state.current !== mine) return;
          const fresh = page.items.filter((e) => e.id > mine.last);
          if (fresh.length) {
            mine.last = fresh[fresh.length - 1].id;
            setEvents((old) => [...old, ...fresh]);
          }
          if (!page.next_cursor) return;
        }
      } finally {
        mine.busy = null;
      }
    })();
    return mine.busy;
  }, [runId]);
  useEffect(() => {
    state.current = { runId, last: 0, busy: null };
    setEvents([]);
    reload().catch(() => {});
  }, [runId, reload]);
  return { events, reload };
}

/** What a step event says, for the attempts list (step events only; others are skipped). */
const STEP_EVENTS = {
  "step.started": "started",
  "step.succeeded": "succeeded",
  "step.failed": "failed",
  "step.retrying": "failed, will retry",
  "step.waiting": "waiting",
  "step.caught": "caught",
  "step.rescheduled": "rescheduled",
  "step.deferred": "deferred (quota)",
  "step.released": "released",
  "step.recovered": "recovered (lease lapsed)",
  "step.cancelled": "cancelled",
};

function Attempts({ events }) {
  if (events.length === 0) return <p className="muted small">No events of this step yet.</p>;
  return (
    <ol className="attempts small" data-testid="attempts">
      {events.map((e) => {
        const d = e.data || {};
        return (
          <li key={e.id} data-event={e.type} data-attempt={d.attempt ?? undefined}>
            <span className="muted">{when(e.created_at)}</span> {d.attempt !== undefined && <strong>attempt {d.attempt}</strong>}{" "}
            {STEP_EVENTS[e.type]}
            {d.error && (
              <>
                : <code data-error-type={d.error.type}>{d.error.type}</code> {d.error.message}
              </>
            )}
            {d.retry_at && <span className="muted"> · next attempt at {when(d.retry_at)}</span>}
            {d.next && e.type !== "step.succeeded" && <span className="muted"> → {d.next}</span>}
          </li>
        );
      })}
    </ol>
  );
}

function Timeline({ steps, events, input }) {
  const [open, setOpen] = useState(null);
  const byStep = useMemo(() => {
    const out = {};
    for (const e of events) if (e.step_id !== null && STEP_EVENTS[e.type]) (out[e.step_id] ||= []).push(e);
    return out;
  }, [events]);
  return (
    <table className="list timeline" data-testid="steps">
      <thead>
        <tr>
          <th>#</th>
          <th>Node</th>
          <th>Status</th>
          <th>Attempts</th>
          <th>Started</th>
          <th>Finished</th>
        </tr>
      </thead>
      <tbody>
        {steps.map((s) => (
          <FragmentRow
            key={s.id}
            step={s}
            events={byStep[s.id] || []}
            input={input}
            open={open === s.id}
            onToggle={() => setOpen(open === s.id ? null : s.id)}
          />
        ))}
      </tbody>
    </table>
  );
}

function FragmentRow({ step: s, events, input, open, onToggle }) {
  const failures = events.filter((e) => e.type === "step.retrying" || e.type === "step.failed").length;
  return (
    <>
      <tr data-step={s.node_id} data-step-id={s.id} onClick={onToggle} className="clickable">
        <td>{s.id}</td>
        <td>
          {s.node_id} <span className="muted">{s.node_type}</span>
          {s.branch && <span className="tag">branch {s.branch}</span>}
          {s.iteration > 0 && <span className="tag">#{s.iteration}</span>}
        </td>
        <td>
          <Status value={s.status} />
        </td>
        <td data-testid="attempt-count">
          {s.attempt}
          {failures > 0 && <span className="tag">{failures} failed</span>}
        </td>
        <td>{when(s.started_at)}</td>
        <td>{when(s.finished_at)}</td>
      </tr>
      {open && (
        <tr data-step-detail={s.node_id}>
          <td colSpan={6}>
            <strong>Attempts</strong>
            <Attempts events={events} />
            <div className="split2">
              <div>
                <strong>Input</strong>{" "}
                <span className="muted small">(the run&apos;s: a step reads it and the earlier steps&apos; outputs; no input is kept per step)</span>
                <Json value={input} />
              </div>
              <div>
                <strong>Output</strong>
                <Json value={s.output} />
                <strong>Error</strong>
                <Json value={s.error} />
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}

export default function Run({ runId }) {
  const detail = useData(() => api.get(`/runs/${encodeURIComponent(runId)}`), [runId]);
  const run = detail.data;
  const version = useData(
    () => (run ? api.get(`/workflows/${run.workflow_id}/versions/${run.workflow_version}`) : Promise.resolve(null)),
    [run?.workflow_id, run?.workflow_version],
  );
  const graph = useData(
    () => (run ? api.get(`/workflows/${run.workflow_id}/graph?version=${run.workflow_version}`) : Promise.resolve(null)),
    [run?.workflow_id, run?.workflow_version],
  );
  const def = version.data?.definition;
  const machine = !!def?.states;
  const actions = useData(() => (machine ? api.get(`/runs/${runId}/actions`) : Promise.resolve(null)), [runId, machine]);
  const timeline = useEvents(runId);
  const reloadAll = () => Promise.all([detail.reload(), machine ? actions.reload() : null, timeline.reload().catch(() => {})]);
  const refresh = useDebounced(reloadAll, 200);
  // The stream ends with the run; a retried (or resumed) run is followed again.
  const ended = ["succeeded", "failed", "cancelled", "timed_out"].includes(run?.status);
  useEffect(() => (ended ? undefined : follow(`/runs/${encodeURIComponent(runId)}/stream`, refresh)), [runId, refresh, ended]);
  const status = useMemo(() => {
    const byNode = {};
    for (const s of run?.steps || []) byNode[s.node_id] = s.status;
    return byNode;
  }, [run]);
  const [selected, setSelected] = useState(null);
  if (detail.error && !run) return <ErrorBox error={detail.error} />;
  if (!run) return <p className="muted">Loading…</p>;
  const steps = run.steps || [];
  const shown = selected ? steps.filter((s) => s.node_id === selected) : steps;
  return (
    <section>
      <div className="bar">
        <h1>
          Run <code>{run.id}</code> <Status value={run.status} />
        </h1>
        <Lifecycle run={run} onDone={reloadAll} />
      </div>
      <p className="muted">
        <Link to={`/workflows/${run.workflow_id}`}>{def?.name || run.workflow_id}</Link> v{run.workflow_version} · created{" "}
        {when(run.created_at)} · finished {when(run.finished_at)}
        {run.correlation_key && <> · key {run.correlation_key}</>}
        {run.error_type && <> · error {run.error_type}</>}
      </p>
      <div className="split">
        <Graph graph={graph.data} positions={version.data?.layout?.nodes} status={status} selected={selected} onSelect={setSelected} />
        <aside>
          {machine && <Machine run={run} actions={actions.data} onDone={reloadAll} />}
          <SendSignal run={run} onDone={reloadAll} />
          <div className="panel">
            <h2>Input</h2>
            <Json value={run.input} />
            <h2>{run.error ? "Error" : "Output"}</h2>
            <Json value={run.error || run.output} />
          </div>
        </aside>
      </div>
      <h2 className="gap">
        Steps {selected && <button className="link" onClick={() => setSelected(null)}>(only {selected}: show all)</button>}
      </h2>
      <Timeline steps={shown} events={timeline.events} input={run.input} />
    </section>
  );
}

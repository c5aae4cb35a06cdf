import { useEffect, useState } from "react";
import { all, api, follow } from "../api.js";
import { Link, navigate, useLocation } from "../router.jsx";
import { ErrorBox, Status, useData, useDebounced, when } from "../ui.jsx";

const STATUSES = ["pending", "running", "waiting", "paused", "succeeded", "failed", "cancelled", "timed_out"];
const FILTERS = ["workflow", "status", "error_type", "correlation_key", "campaign"];

/** Runs filtered by the query string; the list is re-read when the stream says a run changed. */
export default function Runs() {
  const { query } = useLocation();
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || ""]));
  const key = JSON.stringify(filters);
  const workflows = useData(() => all("/workflows"), []);
  const { data, error, reload } = useData(() => {
    const params = new URLSearchParams({ limit: "100" });
    for (const f of FILTERS) if (filters[f]) params.set(f, filters[f]);
    return api.get(`/runs?${params}`);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  const refresh = useDebounced(reload, 300);
  const [live, setLive] = useState(0);
  const byName = Object.fromEntries((workflows.data || []).map((w) => [w.name, w.id]));
  const names = Object.fromEntries((workflows.data || []).map((w) => [w.id, w.name]));
  const workflowId = filters.workflow ? byName[filters.workflow] || filters.workflow : "";
  useEffect(() => {
    if (filters.workflow && !workflowId.startsWith("wf_")) return undefined;
    const path = workflowId ? `/stream?workflow_id=${encodeURIComponent(workflowId)}` : "/stream";
    return follow(path, () => {
      setLive((n) => n + 1);
      refresh();
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [workflowId]);
  const set = (name, value) => {
    const next = new URLSearchParams(query);
    if (value) next.set(name, value);
    else next.delete(name);
    navigate(`/runs${next.toString() ? `?${next}` : ""}`, { replace: true });
  };
  return (
    <section>
      <div className="bar">
        <h1>Runs</h1>
        <span className="muted small" data-testid="live" data-events={live}>
          live · {live} events
        </span>
      </div>
      <div className="row filters">
        <select
          aria-label="Workflow"
          value={filters.workflow}
          onChange={(e) => set("workflow", e.target.value)}
        >
          <option value="">every workflow</option>
          {(workflows.data || []).map((w) => (
            <option key={w.id} value={w.name}>
              {w.name}
            </option>
          ))}
        </select>
        <select aria-label="Status" value={filters.status} onChange={(e) => set("status", e.target.value)}>
          <option value="">every status</option>
          {STATUSES.map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <TextFilter
          label="Error type"
          value={filters.error_type}
          onSet={(v) => set("error_type", v)}
          placeholder="http.* or exact"
        />
        <TextFilter label="Correlation key" value={filters.correlation_key} onSet={(v) => set("correlation_key", v)} />
        <TextFilter label="Campaign" value={filters.campaign} onSet={(v) => set("campaign", v)} placeholder="campaign id" />
      </div>
      <ErrorBox error={error} />
      <table className="list" data-testid="runs">
        <thead>
          <tr>
            <th>Run</th>
            <th>Workflow</th>
            <th>Status</th>
            <th>Error</th>
            <th>Correlation key</th>
            <th>Created</th>
            <th>Finished</th>
          </tr>
        </thead>
        <tbody>
          {(data?.items || []).map((r) => (
            <tr key={r.id} data-run={r.id}>
              <td>
                <Link to={`/runs/${r.id}`}>
                  <code className="small">{r.id}</code>
                </Link>
              </td>
              <td>
                {names[r.workflow_id] || r.workflow_id} <span className="muted">v{r.workflow_version}</span>
              </td>
              <td>
                <Status value={r.status} />
              </td>
              <td className="small">{r.error_type || ""}</td>
              <td className="small">{r.correlation_key || ""}</td>
              <td className="small">{when(r.created_at)}</td>
              <td className="small">{when(r.finished_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.items.length === 0 && <p className="muted">No runs match.</p>}
    </section>
  );
}

function TextFilter({ label, value, onSet, placeholder }) {
  const [text, setText] = useState(value);
  useEffect(() => setText(value), [value]);
  return (
    <input
      aria-label={label}
      placeholder={placeholder || label}
      value={text}
      maxLength={200}
      onChange={(e) => setText(e.target.value)}
      onKeyDown={(e) => e.key === "Enter" && onSet(text.trim())}
      onBlur={() => text.trim() !== value && onSet(text.trim())}
    />
  );
}

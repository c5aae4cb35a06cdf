import { useState } from "react";
import { api, can } from "../api.js";
import Graph from "../Graph.jsx";
import { Link, navigate } from "../router.jsx";
import { ErrorBox, Json, Status, useData, when } from "../ui.jsx";

function StartRun({ workflow }) {
  const [open, setOpen] = useState(false);
  const [text, setText] = useState("{}");
  const [error, setError] = useState(null);
  if (!can("operator")) return null;
  const start = async () => {
    setError(null);
    let input;
    try {
      input = JSON.parse(text);
    } catch (e) {
      setError({ message: `The input is not JSON: ${e.message}` });
      return;
    }
    try {
      const run = await api.post(`/workflows/${workflow.id}/runs`, { input });
      navigate(`/runs/${run.id}`);
    } catch (e) {
      setError(e);
    }
  };
  if (!open)
    return (
      <button onClick={() => setOpen(true)} data-action="start-run">
        Start a run
      </button>
    );
  return (
    <div className="panel">
      <label>
        Input (JSON)
        <textarea rows={6} value={text} maxLength={1_000_000} onChange={(e) => setText(e.target.value)} name="input" />
      </label>
      <button onClick={start} data-action="start">
        Start
      </button>
      <button className="link" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={error} />
    </div>
  );
}

function Versions({ workflow, shown, onShow }) {
  const { data } = useData(() => api.get(`/workflows/${workflow.id}/versions?limit=100`), [workflow.id, workflow.latest_version]);
  const [diff, setDiff] = useState(null);
  const [pair, setPair] = useState({ a: "", b: "" });
  const compare = async () => {
    try {
      setDiff(await api.get(`/workflows/${workflow.id}/versions/${pair.a}/diff/${pair.b}`));
    } catch (e) {
      setDiff({ error: e.message });
    }
  };
  const versions = data?.items || [];
  return (
    <div className="panel">
      <h2>Versions</h2>
      <ul className="versions" data-testid="versions">
        {versions.map((v) => (
          <li key={v.version} data-version={v.version}>
            <button className={`link ${v.version === shown ? "active" : ""}`} onClick={() => onShow(v.version)}>
              v{v.version}
            </button>{" "}
            <span className="muted small">
              {when(v.created_at)} · {v.created_by || "—"}
            </span>
          </li>
        ))}
      </ul>
      {versions.length > 1 && (
        <div className="row">
          <select aria-label="from version" value={pair.a} onChange={(e) => setPair({ ...pair, a: e.target.value })}>
            <option value="">from…</option>
            {versions.map((v) => (
              <option key={v.version}>{v.version}</option>
            ))}
          </select>
          <select aria-label="to version" value={pair.b} onChange={(e) => setPair({ ...pair, b: e.target.value })}>
            <option value="">to…</option>
            {versions.map((v) => (
              <option key={v.version}>{v.version}</option>
            ))}
          </select>
          <button disabled={!pair.a || !pair.b} onClick={compare}>
            Diff
          </button>
        </div>
      )}
      {diff && <Json value={diff} />}
    </div>
  );
}

function WorkflowRuns({ workflow }) {
  const { data } = useData(() => api.get(`/runs?workflow=${workflow.id}&limit=20`), [workflow.id]);
  return (
    <div className="panel">
      <h2>
        Runs <Link to={`/runs?workflow=${encodeURIComponent(workflow.name)}`} className="small">all…</Link>
      </h2>
      <ul className="plain" data-testid="workflow-runs">
        {(data?.items || []).map((r) => (
          <li key={r.id}>
            <Link to={`/runs/${r.id}`}>
              <Status value={r.status} /> <span className="small">{when(r.created_at)}</span>
            </Link>
          </li>
        ))}
        {data && data.items.length === 0 && <li className="muted">No runs yet.</li>}
      </ul>
    </div>
  );
}

export default function Workflow({ workflowRef }) {
  const [version, setVersion] = useState(null);
  const { data, error } = useData(async () => {
    const current = await api.get(`/workflows/${encodeURIComponent(workflowRef)}`);
    if (version && version !== current.version.version) {
      current.version = await api.get(`/workflows/${current.workflow.id}/versions/${version}`);
    }
    return current;
  }, [workflowRef, version]);
  const [selected, setSelected] = useState(null);
  if (error) return <ErrorBox error={error} />;
  if (!data) return <p className="muted">Loading…</p>;
  const { workflow, version: v } = data;
  const def = v.definition;
  const node = selected && (def.nodes || def.states || []).find((n) => n.id === selected);
  return (
    <section className="workflow-page">
      <div className="bar">
        <h1>
          {workflow.name} <span className="muted">v{v.version}</span>
          {workflow.archived && <span className="tag">archived</span>}
        </h1>
        <div className="actions">
          <StartRun workflow={workflow} />
          {can("editor") && !workflow.archived && (
            <button onClick={() => navigate(`/workflows/${encodeURIComponent(workflow.name)}/edit`)} data-action="edit">
              {workflow.draft ? "Continue editing" : "Edit"}
            </button>
          )}
        </div>
      </div>
      {workflow.description && <p className="muted">{workflow.description}</p>}
      <div className="split">
        <Graph definition={def} positions={v.layout?.nodes} selected={selected} onSelect={setSelected} />
        <aside>
          {node && (
            <div className="panel" data-testid="node-detail">
              <h2>{node.id}</h2>
              <Json value={node} />
            </div>
          )}
          <Versions workflow={workflow} shown={v.version} onShow={setVersion} />
          <WorkflowRuns workflow={workflow} />
        </aside>
      </div>
    </section>
  );
}

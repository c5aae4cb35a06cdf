import { useState } from "react";
import { api, can } from "../api.js";
import Graph from "../Graph.jsx";
import { diffGraph } from "../graph.js";
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

function DiffList({ diff }) {
  const nodes = diff.nodes || diff.states || { added: [], removed: [], changed: {} };
  const changed = Object.entries(nodes.changed);
  const edge = (e) => `${e.source} → ${e.target}${e.label ? ` (${e.label})` : ""}`;
  const edges = diff.edges || { added: [], removed: [] };
  const fields = Object.entries(diff.fields);
  if (diff.identical) return <p className="muted" data-testid="diff">The two versions are the same.</p>;
  return (
    <div className="diff" data-testid="diff">
      <h3>
        v{diff.from_version} → v{diff.to_version}
      </h3>
      <ul className="plain">
        {nodes.added.map((id) => (
          <li key={`a${id}`} className="diff-added" data-diff-node={id} data-diff="added">
            + node <code>{id}</code>
          </li>
        ))}
        {nodes.removed.map((id) => (
          <li key={`r${id}`} className="diff-removed" data-diff-node={id} data-diff="removed">
            − node <code>{id}</code>
          </li>
        ))}
        {changed.map(([id, change]) => (
          <li key={`c${id}`} className="diff-changed" data-diff-node={id} data-diff="changed">
            ~ node <code>{id}</code>:{" "}
            {Object.entries(change).map(([field, c]) => (
              <span key={field} className="diff-field" data-field={field}>
                {field}
                {c.pointers?.length > 0 && <span className="muted"> ({c.pointers.join(", ")})</span>}{" "}
              </span>
            ))}
          </li>
        ))}
        {edges.added.map((e, i) => (
          <li key={`ea${i}`} className="diff-added" data-diff-edge={`${e.source}->${e.target}`} data-diff="added">
            + edge {edge(e)}
          </li>
        ))}
        {edges.removed.map((e, i) => (
          <li key={`er${i}`} className="diff-removed" data-diff-edge={`${e.source}->${e.target}`} data-diff="removed">
            − edge {edge(e)}
          </li>
        ))}
        {fields.map(([field]) => (
          <li key={`f${field}`} className="diff-changed" data-diff-field={field}>
            ~ {field}
          </li>
        ))}
      </ul>
    </div>
  );
}

function Versions({ workflow, shown, onShow, onDiff }) {
  const { data } = useData(() => api.get(`/workflows/${workflow.id}/versions?limit=100`), [workflow.id, workflow.latest_version]);
  const [diff, setDiff] = useState(null);
  const [error, setError] = useState(null);
  const [pair, setPair] = useState({ a: "", b: "" });
  const compare = async () => {
    setError(null);
    try {
      const base = `/workflows/${workflow.id}`;
      const [d, from, to] = await Promise.all([
        api.get(`${base}/versions/${pair.a}/diff/${pair.b}`),
        api.get(`${base}/graph?version=${pair.a}`),
        api.get(`${base}/graph?version=${pair.b}`),
      ]);
      setDiff(d);
      onDiff(diffGraph(from, to, d));
    } catch (e) {
      setError(e);
    }
  };
  const close = () => {
    setDiff(null);
    onDiff(null);
  };
  const versions = data?.items || [];
  return (
    <div className="panel">
      <h2>Versions</h2>
      <ul className="versions" data-testid="versions">
        {versions.map((v) => (
          <li key={v.version} data-version={v.version}>
            <button className={`link ${v.version === shown ? "active" : ""}`} onClick={() => (close(), onShow(v.version))}>
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
          <button disabled={!pair.a || !pair.b} onClick={compare} data-action="diff">
            Diff
          </button>
          {diff && (
            <button className="link" onClick={close} data-action="close-diff">
              close
            </button>
          )}
        </div>
      )}
      <ErrorBox error={error} />
      {diff && <DiffList diff={diff} />}
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
          <li key={r.id} data-run={r.id}>
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

/** The workflow with a version (the latest, or `version`) and that version's graph. */
async function loadWorkflow(ref, version) {
  const path = `/workflows/${encodeURIComponent(ref)}`;
  // In parallel: the graph of a 1,000-node version takes as long as its definition.
  const [current, graph] = await Promise.all([
    api.get(path),
    api.get(`${path}/graph${version ? `?version=${version}` : ""}`).catch((e) => e),
  ]);
  if (!current.version) return { ...current, graph: null }; // only a draft so far
  if (graph instanceof Error) throw graph;
  if (version && version !== current.version.version) {
    current.version = await api.get(`/workflows/${current.workflow.id}/versions/${version}`);
  }
  // A version published between the two reads: draw the one shown.
  if (graph.version !== current.version.version) {
    return { ...current, graph: await api.get(`${path}/graph?version=${current.version.version}`) };
  }
  return { ...current, graph };
}

export default function Workflow({ workflowRef }) {
  const [version, setVersion] = useState(null);
  const { data, error } = useData(() => loadWorkflow(workflowRef, version), [workflowRef, version]);
  const [selected, setSelected] = useState(null);
  const [diff, setDiff] = useState(null);
  if (error) return <ErrorBox error={error} />;
  if (!data) return <p className="muted">Loading…</p>;
  const { workflow, version: v } = data;
  if (!v) {
    return (
      <section>
        <h1>{workflow.name}</h1>
        <p className="muted">
          No version yet: <Link to={`/workflows/${encodeURIComponent(workflow.name)}/edit`}>its draft</Link>.
        </p>
      </section>
    );
  }
  const def = v.definition;
  const node = selected && (def.nodes || def.states || []).find((n) => n.id === selected);
  return (
    <section className="workflow-page">
      <div className="bar">
        <h1>
          {workflow.name} <span className="muted">v{v.version}</span>
          {workflow.archived && <span className="tag">archived</span>}
          {diff && <span className="tag">diff</span>}
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
        {diff ? (
          <Graph key="diff" graph={diff.graph} marks={diff.marks} selected={selected} onSelect={setSelected} />
        ) : (
          <Graph key="version" graph={data.graph} positions={v.layout?.nodes} selected={selected} onSelect={setSelected} />
        )}
        <aside>
          {node && (
            <div className="panel" data-testid="node-detail">
              <h2>{node.id}</h2>
              <Json value={node} />
            </div>
          )}
          <Versions workflow={workflow} shown={v.version} onShow={setVersion} onDiff={setDiff} />
          <WorkflowRuns workflow={workflow} />
        </aside>
      </div>
    </section>
  );
}

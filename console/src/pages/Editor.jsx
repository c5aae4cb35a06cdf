// Editing on the draft API: every change is one request with the draft's ETag in If-Match;
// undo and redo are the server's (buttons, Ctrl+Z, Ctrl+Shift+Z); problems are shown on the
// node they point at; publish makes the next version.
import { useCallback, useEffect, useMemo, useState } from "react";
import { ApiError, all, api, can, request } from "../api.js";
import Graph from "../Graph.jsx";
import SchemaForm from "../SchemaForm.jsx";
import { navigate } from "../router.jsx";
import { ErrorBox, useData } from "../ui.jsx";

const NODE_ID = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** Node id -> problem messages, from pointers like /definition/nodes/3/config/x. */
function problemsByNode(draft) {
  const nodes = draft?.document?.definition?.nodes || draft?.document?.definition?.states || [];
  const out = {};
  for (const p of draft?.problems || []) {
    const m = p.pointer?.match(/^\/definition\/(?:nodes|states)\/(\d+)(\/.*)?$/);
    const node = m && nodes[Number(m[1])];
    if (node) (out[node.id] ||= []).push(`${m[2] || ""} ${p.message}`.trim());
  }
  return out;
}

function AddNode({ types, after, onAdd }) {
  const [type, setType] = useState("");
  const [id, setId] = useState("");
  const [config, setConfig] = useState({});
  const schema = types.find((t) => t.type === type)?.config_schema;
  const valid = type && NODE_ID.test(id);
  return (
    <form
      className="panel"
      data-testid="add-node"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await onAdd({ id, type, config }, after)) {
          setId("");
          setConfig({});
        }
      }}
    >
      <h2>Add a node{after && <span className="muted"> after {after}</span>}</h2>
      <label>
        Type
        <select name="type" value={type} onChange={(e) => (setType(e.target.value), setConfig({}))}>
          <option value="">choose…</option>
          {types.map((t) => (
            <option key={t.type} value={t.type}>
              {t.type}
            </option>
          ))}
        </select>
      </label>
      <label>
        Id
        <input name="id" value={id} maxLength={64} pattern="[A-Za-z_][A-Za-z0-9_]*" placeholder="notify_ops" onChange={(e) => setId(e.target.value)} />
      </label>
      {type && <SchemaForm key={type} schema={schema} value={config} onChange={setConfig} />}
      <button type="submit" disabled={!valid} data-action="add-node">
        Add
      </button>
    </form>
  );
}

/**
 * The routes a connection from `node` may be (the draft API's edge kinds): `next` and a
 * catch route unless its type ends a path, and a case, the default or a branch when its
 * type's config has the field the API writes them to (`cases`, `default`, `branches`).
 */
function routeKinds(type) {
  const props = type?.config_schema?.properties || {};
  const kinds = [];
  if (type && !type.terminal) kinds.push("next");
  if (props.cases) kinds.push("case");
  if (props.default) kinds.push("default");
  if (props.branches) kinds.push("branch");
  if (type && !type.terminal) kinds.push("catch");
  return kinds;
}

const KIND_LABELS = {
  next: "next (then)",
  case: "a condition case",
  default: "the default (no case matched)",
  branch: "a parallel branch",
  catch: "on error (catch)",
};

/** Which route a dragged connection is: asked before anything is sent. */
function ConnectChooser({ connection, kinds, onConnect, onCancel }) {
  const [kind, setKind] = useState(kinds[0]);
  const [when, setWhen] = useState("");
  const [errors, setErrors] = useState("*");
  const [name, setName] = useState("");
  const submit = (e) => {
    e.preventDefault();
    const edge = { source: connection.source, target: connection.target, kind };
    if (kind === "case") edge.when = when;
    if (kind === "branch") edge.name = name;
    if (kind === "catch") edge.errors = errors.split(/[\s,]+/).filter(Boolean);
    onConnect(edge);
  };
  return (
    <form className="panel chooser" data-testid="connect-chooser" onSubmit={submit}>
      <h2>
        Connect {connection.source} → {connection.target} as
      </h2>
      {kinds.length === 0 && <p className="muted small">A {connection.type} node ends its path: it takes no routes.</p>}
      {kinds.map((k) => (
        <label key={k} className="check">
          <input type="radio" name="kind" value={k} checked={kind === k} onChange={() => setKind(k)} data-kind={k} />
          {KIND_LABELS[k] || k}
        </label>
      ))}
      {kind === "case" && (
        <label>
          When (a condition)
          <input name="when" className="expr" data-expression="condition" required maxLength={10_000} value={when} placeholder="input.region == 'East Coast'" onChange={(e) => setWhen(e.target.value)} />
        </label>
      )}
      {kind === "branch" && (
        <label>
          Branch name
          <input name="name" required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} />
        </label>
      )}
      {kind === "catch" && (
        <label>
          Error types (patterns, comma-separated)
          <input name="errors" required maxLength={2000} value={errors} onChange={(e) => setErrors(e.target.value)} />
        </label>
      )}
      <div className="row">
        {kinds.length > 0 && (
          <button type="submit" data-action="connect" autoFocus>
            Connect
          </button>
        )}
        <button type="button" className="link" onClick={onCancel} data-action="cancel-connect">
          Cancel
        </button>
      </div>
    </form>
  );
}

function NodePanel({ node, types, onSave, onDelete }) {
  const [config, setConfig] = useState(node.config || {});
  useEffect(() => setConfig(node.config || {}), [node]);
  const schema = types.find((t) => t.type === node.type)?.config_schema;
  return (
    <div className="panel" data-testid="node-panel">
      <h2>
        {node.id} <span className="muted">{node.type}</span>
      </h2>
      <SchemaForm key={node.id} schema={schema} value={config} onChange={setConfig} />
      <button onClick={() => onSave(node.id, config)} data-action="save-node">
        Save
      </button>
      <button className="danger" onClick={() => onDelete(node.id)} data-action="delete-node">
        Delete node
      </button>
    </div>
  );
}

export default function Editor({ workflowRef }) {
  const ref = encodeURIComponent(workflowRef);
  const [draft, setDraft] = useState(null);
  const [error, setError] = useState(null);
  const [selected, setSelected] = useState(null);
  const [busy, setBusy] = useState(false);
  const types = useData(() => all("/node-types"), []);

  // The workflow's one shared draft: read it, or open it when there is none yet (a 409 says
  // another editor just opened it: read theirs).
  const load = useCallback(async () => {
    const { workflow } = (await request("GET", `/workflows/${ref}`)).data;
    if (!workflow.draft && can("editor")) {
      try {
        setDraft((await request("POST", `/workflows/${ref}/draft`)).data);
        return;
      } catch (e) {
        if (!(e instanceof ApiError) || e.status !== 409) throw e;
      }
    }
    setDraft((await request("GET", `/workflows/${ref}/draft`)).data);
  }, [ref]);
  useEffect(() => {
    load().catch(setError);
  }, [load]);

  /** One edit: the draft's answer replaces ours; a stale ETag re-reads the draft. */
  const edit = useCallback(
    async (method, path, body) => {
      if (!draft) return false;
      setBusy(true);
      setError(null);
      try {
        const { data } = await request(method, `/workflows/${ref}/draft${path}`, {
          body,
          headers: { "If-Match": draft.etag },
        });
        setDraft(data);
        return true;
      } catch (e) {
        setError(e);
        if (e.status === 412) await load();
        return false;
      } finally {
        setBusy(false);
      }
    },
    [draft, ref, load],
  );
  const undo = useCallback(() => draft?.undo_depth > 0 && edit("POST", "/undo"), [draft, edit]);
  const redo = useCallback(() => draft?.redo_depth > 0 && edit("POST", "/redo"), [draft, edit]);

  useEffect(() => {
    const onKey = (e) => {
      if (!(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z") return;
      if (["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) return;
      e.preventDefault();
      if (e.shiftKey) redo();
      else undo();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [undo, redo]);

  // The draft's graph as the server draws it (plugin types' routes and groups included),
  // read again after each change; the old one stays on screen meanwhile.
  const [graph, setGraph] = useState(null);
  const revision = draft?.revision;
  useEffect(() => {
    if (revision === undefined) return undefined;
    let stopped = false;
    api.get(`/workflows/${ref}/graph?draft=true`).then(
      (g) => !stopped && setGraph(g),
      (e) => !stopped && setError(e),
    );
    return () => {
      stopped = true;
    };
  }, [ref, revision]);
  const problems = useMemo(() => problemsByNode(draft), [draft]);
  const def = draft?.document?.definition;
  const node = selected && def?.nodes?.find((n) => n.id === selected);
  const [connecting, setConnecting] = useState(null);
  const sourceNode = connecting && def?.nodes?.find((n) => n.id === connecting.source);
  const sourceType = sourceNode && (types.data || []).find((t) => t.type === sourceNode.type);

  const publish = async () => {
    setBusy(true);
    setError(null);
    try {
      const { data } = await request("POST", `/workflows/${ref}/draft/publish`, { headers: { "If-Match": draft.etag } });
      navigate(`/workflows/${encodeURIComponent(data.workflow.name)}`);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const discard = async () => {
    if (!window.confirm("Discard the draft and every change in it?")) return;
    try {
      await request("DELETE", `/workflows/${ref}/draft`, { headers: { "If-Match": draft.etag } });
      navigate(`/workflows/${ref}`);
    } catch (e) {
      setError(e);
    }
  };

  if (!draft) return error ? <ErrorBox error={error} /> : <p className="muted">Opening the draft…</p>;
  const editor = can("editor");
  return (
    <section>
      <div className="bar">
        <h1>
          Editing {draft.workflow_name} <span className="muted">draft of v{draft.base_version}</span>
        </h1>
        {editor && (
          <div className="editor-tools">
            <button className="secondary" onClick={undo} disabled={busy || !draft.undo_depth} data-action="undo" title="Ctrl+Z">
              Undo
            </button>
            <button className="secondary" onClick={redo} disabled={busy || !draft.redo_depth} data-action="redo" title="Ctrl+Shift+Z">
              Redo
            </button>
            <button onClick={publish} disabled={busy || !draft.valid} data-action="publish" title={draft.valid ? "" : "fix the problems first"}>
              Publish
            </button>
            <button className="link" onClick={discard} data-action="discard">
              Discard
            </button>
          </div>
        )}
      </div>
      <p className="muted small" data-testid="draft-state" data-revision={draft.revision} data-undo={draft.undo_depth} data-redo={draft.redo_depth}>
        revision {draft.revision} · {draft.last_step || "opened"} · <kbd>Ctrl</kbd>+<kbd>Z</kbd> undo, <kbd>Ctrl</kbd>+<kbd>Shift</kbd>+<kbd>Z</kbd> redo; drag from a node's
        lower handle to another node&apos;s upper one to connect them (you then choose the route)
      </p>
      <ErrorBox error={error} />
      <div className="split">
        <Graph
          graph={graph}
          positions={draft.document.layout?.nodes}
          problems={problems}
          selected={selected}
          onSelect={setSelected}
          onConnect={editor ? ({ source, target }) => setConnecting({ source, target }) : undefined}
          onMove={editor ? (id, position) => edit("PATCH", `/nodes/${id}`, { position }) : undefined}
        />
        <aside>
          {editor && connecting && (
            <ConnectChooser
              key={`${connecting.source}->${connecting.target}`}
              connection={{ ...connecting, type: sourceType?.type }}
              kinds={routeKinds(sourceType)}
              onConnect={async (edge) => (await edit("POST", "/edges", edge)) && setConnecting(null)}
              onCancel={() => setConnecting(null)}
            />
          )}
          {draft.problems.length > 0 && (
            <div className="panel">
              <h2>Problems ({draft.problems.length})</h2>
              <ul className="problems" data-testid="problems">
                {draft.problems.map((p, i) => (
                  <li key={i}>
                    <code>{p.pointer}</code> {p.message}
                  </li>
                ))}
              </ul>
            </div>
          )}
          {editor && node && (
            <NodePanel
              node={node}
              types={types.data || []}
              onSave={(id, config) => edit("PUT", `/nodes/${id}`, { ...node, config })}
              onDelete={async (id) => (await edit("DELETE", `/nodes/${id}`)) && setSelected(null)}
            />
          )}
          {editor && (
            <AddNode
              types={types.data || []}
              after={node ? node.id : null}
              onAdd={(n, after) => edit("POST", "/nodes", after ? { node: n, after } : { node: n })}
            />
          )}
        </aside>
      </div>
    </section>
  );
}

// Admin: users, API keys, credentials (write-only: secrets go in, never come back), quotas
// and the audit log. Only admins see the page; the API refuses everyone else anyway.
import { useState } from "react";
import { api, can, request } from "../api.js";
import { ErrorBox, useData, when } from "../ui.jsx";

const ROLES = ["viewer", "operator", "editor", "admin"];

function useAction(after) {
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setError(null);
    try {
      const result = await fn();
      await after();
      return result;
    } catch (e) {
      setError(e);
      return null;
    }
  };
  return [run, error];
}

function Users() {
  const { data, reload } = useData(() => api.get("/users?limit=500"), []);
  const [run, error] = useAction(reload);
  const create = (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const form = e.currentTarget;
    run(() => api.post("/users", { username: f.get("username"), password: f.get("password"), role: f.get("role") })).then(
      (r) => r && form.reset(),
    );
  };
  return (
    <div className="panel" data-testid="users">
      <h2>Users</h2>
      <table className="list">
        <tbody>
          {(data?.items || []).map((u) => (
            <tr key={u.id}>
              <td>{u.username}</td>
              <td>
                <select
                  aria-label={`role of ${u.username}`}
                  value={u.role}
                  onChange={(e) => run(() => request("PATCH", `/users/${u.id}`, { body: { role: e.target.value } }))}
                >
                  {ROLES.map((r) => (
                    <option key={r}>{r}</option>
                  ))}
                </select>
              </td>
              <td>{u.disabled ? "disabled" : ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="row" onSubmit={create}>
        <input name="username" placeholder="username" required maxLength={64} aria-label="New username" />
        <input name="password" type="password" placeholder="password" required minLength={8} maxLength={1024} autoComplete="new-password" aria-label="New password" />
        <select name="role" aria-label="New role" defaultValue="viewer">
          {ROLES.map((r) => (
            <option key={r}>{r}</option>
          ))}
        </select>
        <button type="submit">Add user</button>
      </form>
      <ErrorBox error={error} />
    </div>
  );
}

function ApiKeys() {
  const { data, reload } = useData(() => api.get("/api-keys?limit=500"), []);
  const [run, error] = useAction(reload);
  const [created, setCreated] = useState(null);
  const create = async (e) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    setCreated(await run(() => api.post("/api-keys", { name: f.get("name"), role: f.get("role") })));
  };
  return (
    <div className="panel" data-testid="api-keys">
      <h2>API keys</h2>
      {created && (
        <p className="error" style={{ color: "inherit" }}>
          Copy the key now, it is not shown again: <code data-testid="new-key">{created.key}</code>
        </p>
      )}
      <table className="list">
        <tbody>
          {(data?.items || []).map((k) => (
            <tr key={k.id}>
              <td>{k.name}</td>
              <td>
                <code>{k.prefix}…</code>
              </td>
              <td>{k.role}</td>
              <td className="small">{k.revoked_at ? `revoked ${when(k.revoked_at)}` : `last used ${when(k.last_used_at)}`}</td>
              <td>
                {!k.revoked_at && (
                  <button className="link" onClick={() => run(() => request("DELETE", `/api-keys/${k.id}`))}>
                    Revoke
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="row" onSubmit={create}>
        <input name="name" placeholder="key name" required maxLength={200} aria-label="Key name" />
        <select name="role" aria-label="Key role" defaultValue="viewer">
          {ROLES.map((r) => (
            <option key={r}>{r}</option>
          ))}
        </select>
        <button type="submit">Create key</button>
      </form>
      <ErrorBox error={error} />
    </div>
  );
}

/** Asks once more in place (no window.confirm: a dialog the page cannot style or test). */
function ConfirmButton({ label, onConfirm, action }) {
  const [asking, setAsking] = useState(false);
  if (!asking)
    return (
      <button type="button" className="link" onClick={() => setAsking(true)} data-action={action}>
        {label}
      </button>
    );
  return (
    <span className="confirm">
      <button type="button" className="danger" onClick={() => (setAsking(false), onConfirm())} data-action={`confirm-${action}`}>
        Yes, {label.toLowerCase()}
      </button>
      <button type="button" className="link" onClick={() => setAsking(false)}>
        No
      </button>
    </span>
  );
}

function parseSecret(text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`The secret data is not JSON: ${err.message}`);
  }
}

/** Replace a credential's data: a write-only textarea, empty every time (nothing is read back). */
function ReplaceData({ credential, run, onClose }) {
  const submit = (e) => {
    e.preventDefault();
    const text = new FormData(e.currentTarget).get("data");
    run(() => request("PUT", `/credentials/${encodeURIComponent(credential.name)}`, { body: { data: parseSecret(text) } })).then(
      (r) => r && onClose(),
    );
  };
  return (
    <form onSubmit={submit} data-testid="replace-data">
      <textarea
        name="data"
        rows={3}
        placeholder='the whole new data, e.g. {"token": "..."} (write-only: never shown again)'
        required
        maxLength={100_000}
        aria-label={`New secret data of ${credential.name}`}
        autoComplete="off"
        spellCheck={false}
      />
      <button type="submit" data-action="save-data">
        Replace data
      </button>
      <button type="button" className="link" onClick={onClose}>
        Cancel
      </button>
    </form>
  );
}

function Credentials() {
  const { data, reload } = useData(() => api.get("/credentials?limit=500"), []);
  const types = useData(() => api.get("/credential-types"), []);
  const [run, error] = useAction(reload);
  const [replacing, setReplacing] = useState(null);
  const create = (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const origins = String(f.get("origins") || "")
      .split(/[\s,]+/)
      .filter(Boolean);
    const body = { name: f.get("name"), type: f.get("type"), data: parseSecret(f.get("data")) };
    if (origins.length) body.allowed_origins = origins;
    run(() => api.post("/credentials", body)).then((r) => r && form.reset());
  };
  const typeNames = (types.data?.items || types.data || []).map((t) => t.type || t.name || t);
  const admin = can("admin");
  return (
    <div className="panel" data-testid="credentials">
      <h2>Credentials</h2>
      <table className="list">
        <tbody>
          {(data?.items || []).map((c) => (
            <tr key={c.name} data-credential={c.name}>
              <td>{c.name}</td>
              <td>{c.type}</td>
              <td className="small">
                v{c.version} · {when(c.updated_at)}
              </td>
              {admin && (
                <td>
                  {replacing === c.name ? (
                    <ReplaceData credential={c} run={run} onClose={() => setReplacing(null)} />
                  ) : (
                    <button type="button" className="link" onClick={() => setReplacing(c.name)} data-action="replace-data">
                      Replace data
                    </button>
                  )}{" "}
                  <ConfirmButton
                    label="Delete"
                    action="delete-credential"
                    onConfirm={() => run(() => request("DELETE", `/credentials/${encodeURIComponent(c.name)}`))}
                  />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {admin && (
        <form onSubmit={create}>
          <div className="row">
            <input name="name" placeholder="name" required maxLength={64} aria-label="Credential name" />
            <select name="type" aria-label="Credential type" required>
              {typeNames.map((t) => (
                <option key={t}>{t}</option>
              ))}
            </select>
          </div>
          <input
            name="origins"
            maxLength={4000}
            placeholder="allowed origins: https://api.example.com … (generic types need them)"
            aria-label="Allowed origins"
          />
          <textarea name="data" rows={3} placeholder='{"token": "..."} (write-only: never shown again)' required maxLength={100_000} aria-label="Secret data" autoComplete="off" />
          <button type="submit">Save credential</button>
        </form>
      )}
      <ErrorBox error={error} />
    </div>
  );
}

function Quotas() {
  const { data, reload } = useData(() => api.get("/quotas?limit=500"), []);
  const [run, error] = useAction(reload);
  const admin = can("admin");
  const put = (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const body = { enabled: f.get("enabled") === "on" };
    if (f.get("rate")) body.rate = f.get("rate");
    if (f.get("burst")) body.burst = Number(f.get("burst"));
    if (f.get("concurrency")) body.concurrency = Number(f.get("concurrency"));
    run(() => request("PUT", `/quotas/${encodeURIComponent(f.get("key"))}`, { body })).then((r) => r && form.reset());
  };
  const items = data?.items || [];
  return (
    <div className="panel" data-testid="quotas">
      <h2>Quotas</h2>
      {items.length === 0 ? (
        <p className="muted small">No quotas.</p>
      ) : (
        <table className="list">
          <thead>
            <tr>
              <th>Key</th>
              <th>Rate</th>
              <th>Burst</th>
              <th>Concurrency</th>
              <th>Now</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {items.map((q) => (
              <tr key={q.key} data-quota={q.key}>
                <td>
                  <code>{q.key}</code>
                  {!q.enabled && <span className="tag">disabled</span>}
                </td>
                <td>{q.rate || "—"}</td>
                <td>{q.burst}</td>
                <td>{q.concurrency ?? "—"}</td>
                <td className="small">
                  {q.available} tokens · {q.in_flight} in flight
                  {q.paused_until && <> · paused until {when(q.paused_until)}</>}
                </td>
                <td>
                  {admin && (
                    <ConfirmButton
                      label="Delete"
                      action="delete-quota"
                      onConfirm={() => run(() => request("DELETE", `/quotas/${encodeURIComponent(q.key)}`))}
                    />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {admin && (
        <form onSubmit={put} data-testid="quota-form">
          <div className="row">
            <input name="key" required maxLength={300} placeholder="credential:salesforce" aria-label="Quota key" />
            <input name="rate" maxLength={64} placeholder="100 per 20s" aria-label="Rate" />
          </div>
          <div className="row">
            <input name="burst" type="number" min={1} placeholder="burst" aria-label="Burst" />
            <input name="concurrency" type="number" min={1} placeholder="concurrency" aria-label="Concurrency" />
            <label className="check">
              <input name="enabled" type="checkbox" defaultChecked aria-label="Enabled" /> enabled
            </label>
            <button type="submit" data-action="put-quota">
              Set quota
            </button>
          </div>
          <p className="muted small">A key&apos;s quota is replaced whole; at least a rate or a concurrency.</p>
        </form>
      )}
      <ErrorBox error={error} />
    </div>
  );
}

function Audit() {
  const { data } = useData(() => api.get("/audit?limit=50"), []);
  return (
    <div className="panel" data-testid="audit">
      <h2>Audit log (newest 50)</h2>
      <table className="list">
        <tbody>
          {(data?.items || []).map((a) => (
            <tr key={a.id}>
              <td className="small">{when(a.at)}</td>
              <td>{a.actor}</td>
              <td>{a.action}</td>
              <td className="small">
                {a.target_type} {a.target_id}
              </td>
              <td>{a.outcome}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export default function Admin() {
  if (!can("admin")) return <p className="error">The admin pages are for admins.</p>;
  return (
    <section>
      <div className="bar">
        <h1>Admin</h1>
      </div>
      <div className="split2">
        <div>
          <Users />
          <ApiKeys />
        </div>
        <div>
          <Credentials />
          <Quotas />
          <Audit />
        </div>
      </div>
    </section>
  );
}

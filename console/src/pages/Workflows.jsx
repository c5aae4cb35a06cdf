import { useEffect, useMemo, useState } from "react";
import { all, api } from "../api.js";
import { Link } from "../router.jsx";
import { ErrorBox, Status, useData, when } from "../ui.jsx";

const SHOWN = 200;

/** The newest run of each workflow in `ids` (four requests at a time). */
function useLastRuns(ids) {
  const [last, setLast] = useState({});
  const key = ids.join(",");
  useEffect(() => {
    let stopped = false;
    const queue = ids.filter((id) => !(id in last));
    const worker = async () => {
      while (!stopped && queue.length) {
        const id = queue.shift();
        try {
          const page = await api.get(`/runs?workflow=${encodeURIComponent(id)}&limit=1`);
          if (!stopped) setLast((m) => ({ ...m, [id]: page.items[0] || null }));
        } catch {
          if (!stopped) setLast((m) => ({ ...m, [id]: null }));
        }
      }
    };
    Promise.all([worker(), worker(), worker(), worker()]);
    return () => {
      stopped = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return last;
}

export default function Workflows() {
  const { data, error, loading } = useData(() => all("/workflows"), []);
  const [search, setSearch] = useState("");
  const shown = useMemo(() => {
    const q = search.trim().toLowerCase();
    const rows = (data || []).filter(
      (w) => !q || w.name.toLowerCase().includes(q) || (w.description || "").toLowerCase().includes(q),
    );
    return rows.slice(0, SHOWN);
  }, [data, search]);
  const last = useLastRuns(shown.map((w) => w.id));
  return (
    <section>
      <div className="bar">
        <h1>Workflows</h1>
        <input
          type="search"
          placeholder="Search by name or description"
          value={search}
          maxLength={200}
          onChange={(e) => setSearch(e.target.value)}
          aria-label="Search workflows"
        />
      </div>
      <ErrorBox error={error} />
      {loading && <p className="muted">Loading…</p>}
      <table className="list" data-testid="workflows">
        <thead>
          <tr>
            <th>Name</th>
            <th>Latest version</th>
            <th>Last run</th>
            <th>Updated</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((w) => (
            <tr key={w.id} data-workflow={w.name}>
              <td>
                <Link to={`/workflows/${encodeURIComponent(w.name)}`}>{w.name}</Link>
                {w.draft && <span className="tag">draft</span>}
                <div className="muted small">{w.description}</div>
              </td>
              <td>v{w.latest_version}</td>
              <td>
                {w.id in last ? (
                  last[w.id] ? (
                    <Link to={`/runs/${last[w.id].id}`}>
                      <Status value={last[w.id].status} /> <span className="muted small">{when(last[w.id].created_at)}</span>
                    </Link>
                  ) : (
                    <Status value={null} />
                  )
                ) : (
                  <span className="muted">…</span>
                )}
              </td>
              <td className="small">{when(w.updated_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.length > shown.length && (
        <p className="muted">
          {shown.length} of {data.length} shown: narrow the search.
        </p>
      )}
      {data && data.length === 0 && <p className="muted">No workflows yet.</p>}
    </section>
  );
}

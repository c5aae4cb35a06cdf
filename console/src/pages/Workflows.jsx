import { useMemo, useState } from "react";
import { all } from "../api.js";
import { Link } from "../router.jsx";
import { ErrorBox, Status, useData, when } from "../ui.jsx";

const SHOWN = 200;

/** Runs per day (oldest first) as bars; each bar's title says its day and count. */
function RunsPerDay({ days }) {
  const max = Math.max(1, ...days.map((d) => d.runs));
  const total = days.reduce((n, d) => n + d.runs, 0);
  const bar = 8;
  return (
    <span className="runs-per-day" data-testid="runs-per-day" data-total={total}>
      <svg width={days.length * (bar + 2)} height="22" role="img" aria-label={`${total} runs in ${days.length} days`}>
        {days.map((d, i) => {
          const h = d.runs ? Math.max(2, Math.round((d.runs / max) * 20)) : 1;
          return (
            <rect key={d.day} x={i * (bar + 2)} y={22 - h} width={bar} height={h} className={d.runs ? "bar" : "bar none"} data-day={d.day} data-runs={d.runs}>
              <title>
                {d.day}: {d.runs} run{d.runs === 1 ? "" : "s"}
              </title>
            </rect>
          );
        })}
      </svg>{" "}
      <span className="small muted">{total}</span>
    </span>
  );
}

export default function Workflows() {
  // One request per 500 workflows: each page carries its rows' newest run and runs per day.
  const { data, error, loading } = useData(() => all("/workflows?include=stats"), []);
  const [search, setSearch] = useState("");
  const shown = useMemo(() => {
    const q = search.trim().toLowerCase();
    const rows = (data || []).filter(
      (w) => !q || w.name.toLowerCase().includes(q) || (w.description || "").toLowerCase().includes(q),
    );
    return rows.slice(0, SHOWN);
  }, [data, search]);
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
            <th title="Runs started per UTC day, the last 7 days">Runs / day (7 d)</th>
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
              <td data-testid="last-run">
                {w.stats?.last_run ? (
                  <Link to={`/runs/${w.stats.last_run.id}`}>
                    <Status value={w.stats.last_run.status} /> <span className="muted small">{when(w.stats.last_run.created_at)}</span>
                  </Link>
                ) : (
                  <Status value={null} />
                )}
              </td>
              <td>{w.stats && <RunsPerDay days={w.stats.runs_per_day} />}</td>
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

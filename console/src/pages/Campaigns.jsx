import { useEffect, useState } from "react";
import { api, can, follow } from "../api.js";
import { Link } from "../router.jsx";
import { ErrorBox, duration, useData, useDebounced, when } from "../ui.jsx";

const ORDER = ["succeeded", "failed", "timed_out", "cancelled", "running", "waiting", "paused", "pending"];
const OPS = [
  ["pause", "Pause", (c) => !["finished", "cancelled", "paused"].includes(c.status)],
  ["resume", "Resume", (c) => c.status === "paused" || (c.counts.paused || 0) > 0],
  ["cancel", "Cancel", (c) => !["finished", "cancelled"].includes(c.status)],
];

function Progress({ campaign }) {
  const total = Math.max(campaign.total, 1);
  return (
    <div className="progress" title={ORDER.map((s) => `${s}: ${campaign.counts[s] || 0}`).join(", ")}>
      {ORDER.filter((s) => campaign.counts[s]).map((s) => (
        <span key={s} className={`p-${s}`} style={{ width: `${(100 * campaign.counts[s]) / total}%` }} />
      ))}
    </div>
  );
}

/** Campaigns with their progress by status, rate and ETA, re-read while runs change. */
export default function Campaigns() {
  const { data, error, reload } = useData(() => api.get("/campaigns?limit=100"), []);
  const refresh = useDebounced(reload, 1000);
  const [opError, setOpError] = useState(null);
  useEffect(() => follow("/stream", refresh), [refresh]);
  const act = async (id, op) => {
    setOpError(null);
    try {
      await api.post(`/campaigns/${id}/${op}`);
      reload();
    } catch (e) {
      setOpError(e);
    }
  };
  return (
    <section>
      <div className="bar">
        <h1>Campaigns</h1>
      </div>
      <ErrorBox error={error || opError} />
      <table className="list" data-testid="campaigns">
        <thead>
          <tr>
            <th>Campaign</th>
            <th>Status</th>
            <th>Progress</th>
            <th>Rate</th>
            <th>ETA</th>
            <th>Created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(data?.items || []).map((c) => (
            <tr key={c.id} data-campaign={c.id}>
              <td>
                <strong>{c.name}</strong>
                <div className="small">
                  <Link to={`/runs?campaign=${c.id}`}>runs</Link> · <Link to={`/workflows/${c.workflow_id}`}>workflow</Link> v{c.workflow_version}
                </div>
              </td>
              <td>{c.status}</td>
              <td>
                <Progress campaign={c} />
                <span className="small muted">
                  {c.finished} / {c.total} ended
                </span>
              </td>
              <td>{c.rate_per_s} /s</td>
              <td>{duration(c.eta_s)}</td>
              <td className="small">{when(c.created_at)}</td>
              <td>
                {can("operator") &&
                  OPS.filter(([, , shown]) => shown(c)).map(([op, label]) => (
                    <button key={op} className="secondary" onClick={() => act(c.id, op)} data-action={op}>
                      {label}
                    </button>
                  ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.items.length === 0 && <p className="muted">No campaigns yet: start one with POST /api/v1/campaigns or `flowyard campaigns start`.</p>}
    </section>
  );
}

// Small shared pieces: loading data, statuses, errors, JSON.
import { useCallback, useEffect, useRef, useState } from "react";

/** Load with `fn` (again when `deps` change); `reload()` re-reads keeping the old data. */
export function useData(fn, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const seq = useRef(0);
  const reload = useCallback(() => {
    const mine = ++seq.current;
    return fn().then(
      (data) => mine === seq.current && setState({ data, error: null, loading: false }),
      (error) => mine === seq.current && setState((s) => ({ ...s, error, loading: false })),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => {
    setState({ data: null, error: null, loading: true });
    reload();
  }, [reload]);
  return { ...state, reload };
}

/** Call `fn` at most once per `ms` (trailing): live events come in bursts. */
export function useDebounced(fn, ms = 250) {
  const timer = useRef(null);
  const latest = useRef(fn);
  latest.current = fn;
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = null;
      latest.current();
    }, ms);
  }, [ms]);
}

export function Status({ value }) {
  if (!value) return <span className="status none">no runs</span>;
  return (
    <span className={`status s-${value}`} data-status={value}>
      {value}
    </span>
  );
}

export function ErrorBox({ error }) {
  if (!error) return null;
  const p = error.problem || {};
  const items = p.errors || p.problems || [];
  return (
    <div className="error" role="alert">
      <strong>{p.title || error.message}</strong>
      {p.detail && p.detail !== p.title && <div>{p.detail}</div>}
      {items.length > 0 && (
        <ul>
          {items.map((e, i) => (
            <li key={i}>
              <code>{e.pointer || e.loc}</code> {e.message || e.msg}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Json({ value }) {
  if (value === null || value === undefined) return <span className="muted">—</span>;
  return <pre className="json">{JSON.stringify(value, null, 2)}</pre>;
}

export function when(ts) {
  return ts ? new Date(ts).toLocaleString() : "—";
}

export function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// A small history router: the server answers index.html for every deep link.
import { useEffect, useState } from "react";

const listeners = new Set();

export function navigate(to, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  listeners.forEach((fn) => fn());
}

window.addEventListener("popstate", () => listeners.forEach((fn) => fn()));

/** The current location ({path, query}), re-rendering on navigation. */
export function useLocation() {
  const read = () => ({ path: location.pathname, query: new URLSearchParams(location.search) });
  const [loc, setLoc] = useState(read);
  useEffect(() => {
    const fn = () => setLoc(read());
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, []);
  return loc;
}

/** The first of `routes` ([pattern, render]) whose pattern matches `path`. */
export function match(routes, path) {
  for (const [pattern, render] of routes) {
    const m = path.match(pattern);
    if (m) return render(...m.slice(1).map(decodeURIComponent));
  }
  return null;
}

/** An <a> that navigates without a reload. */
export function Link({ to, children, ...rest }) {
  const onClick = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}

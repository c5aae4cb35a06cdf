import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { currentUser, logout, onSession } from "./api.js";
import { Link, match, useLocation } from "./router.jsx";
import Login from "./pages/Login.jsx";
import Workflows from "./pages/Workflows.jsx";
import Workflow from "./pages/Workflow.jsx";
import Runs from "./pages/Runs.jsx";
import Run from "./pages/Run.jsx";
import Editor from "./pages/Editor.jsx";
import Campaigns from "./pages/Campaigns.jsx";
import Admin from "./pages/Admin.jsx";

// The server answers index.html only under these sections (SECTIONS in
// src/flowyard/console/serve.py): a new section is added in both places.
const ROUTES = [
  [/^\/$/, () => <Workflows />],
  [/^\/workflows\/?$/, () => <Workflows />],
  [/^\/workflows\/([^/]+)\/edit\/?$/, (ref) => <Editor key={ref} workflowRef={ref} />],
  [/^\/workflows\/([^/]+)\/?$/, (ref) => <Workflow key={ref} workflowRef={ref} />],
  [/^\/runs\/?$/, () => <Runs />],
  [/^\/runs\/([^/]+)\/?$/, (id) => <Run key={id} runId={id} />],
  [/^\/campaigns\/?$/, () => <Campaigns />],
  [/^\/admin\/?$/, () => <Admin />],
];

function Shell() {
  const [user, setUser] = useState(currentUser());
  const { path } = useLocation();
  useEffect(() => onSession(() => setUser(currentUser())), []);
  if (!user) return <Login />;
  const tab = (to, label) => (
    <Link to={to} className={path.startsWith(to) || (to === "/workflows" && path === "/") ? "active" : ""}>
      {label}
    </Link>
  );
  return (
    <>
      <header className="top">
        <Link to="/workflows" className="brand">
          flowyard
        </Link>
        <nav>
          {tab("/workflows", "Workflows")}
          {tab("/runs", "Runs")}
          {tab("/campaigns", "Campaigns")}
          {user.role === "admin" && tab("/admin", "Admin")}
        </nav>
        <span className="who" data-role={user.role}>
          {user.name} · {user.role}
        </span>
        <button className="link" onClick={() => logout()}>
          Log out
        </button>
      </header>
      <main>{match(ROUTES, path) || <p className="error">No such page: {path}</p>}</main>
    </>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <Shell />
  </StrictMode>,
);

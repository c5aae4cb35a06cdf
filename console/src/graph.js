// A definition as a graph: one element per node (or per state), labelled edges, laid out
// by dagre (top to bottom). Routes inside a node's config are those of the built-in types
// (the same as their `routes()` on the server); a plugin type shows its `next` and `catch`.
import dagre from "@dagrejs/dagre";

const W = 190;
const H = 58;
/** Above this many nodes the layout takes dagre's fast options. */
const BIG = 300;

function clip(text, n = 28) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function configRoutes(node) {
  const c = node.config || {};
  switch (node.type) {
    case "condition":
      return [
        ...(c.cases || []).map((k) => ({ target: k.next, label: clip(k.when || "case"), kind: "case" })),
        ...(c.default ? [{ target: c.default, label: "default", kind: "default" }] : []),
      ];
    case "parallel":
      return (c.branches || []).map((b) => ({ target: b.start, label: `branch ${b.name}`, kind: "branch" }));
    case "map":
      return c.start ? [{ target: c.start, label: "each item", kind: "branch" }] : [];
    case "wait_for_signal":
      return c.on_timeout ? [{ target: c.on_timeout, label: "timeout", kind: "default" }] : [];
    case "state":
      return (c.actions || []).map((a) => ({ target: a.to, label: a.id, kind: "case" }));
    default:
      return [];
  }
}

/** Nodes of the branches that parallel and map nodes start (drawn inside a group tint). */
function branchMembers(def, ids) {
  const byId = new Map(def.nodes.map((n) => [n.id, n]));
  const member = new Map();
  for (const n of def.nodes) {
    if (n.type !== "parallel" && n.type !== "map") continue;
    for (const r of configRoutes(n)) {
      const stack = [r.target];
      while (stack.length) {
        const id = stack.pop();
        if (!ids.has(id) || member.has(id) || id === n.id) continue;
        member.set(id, n.id);
        const m = byId.get(id);
        if (m.next) stack.push(m.next);
        configRoutes(m).forEach((x) => stack.push(x.target));
      }
    }
  }
  return member;
}

function flowGraph(def) {
  const ids = new Set(def.nodes.map((n) => n.id));
  const member = branchMembers(def, ids);
  const nodes = def.nodes.map((n) => ({
    id: n.id,
    kind: n.type,
    title: n.name || n.id,
    start: n.id === def.start,
    group: member.get(n.id) || null,
  }));
  const edges = [];
  for (const n of def.nodes) {
    const add = (target, label, kind) => {
      if (ids.has(target)) edges.push({ id: `${n.id}->${target}#${edges.length}`, source: n.id, target, label, kind });
    };
    configRoutes(n).forEach((r) => add(r.target, r.label, r.kind));
    if (n.next) add(n.next, "", "next");
    (n.catch || []).forEach((c) => add(c.next, `catch ${clip((c.errors || ["*"]).join(", "), 24)}`, "catch"));
  }
  return { nodes, edges };
}

function machineGraph(def) {
  const ids = new Set(def.states.map((s) => s.id));
  const nodes = def.states.map((s) => ({
    id: s.id,
    kind: s.is_final ? "final state" : s.is_initial ? "initial state" : "state",
    title: s.name || s.id,
    start: !!s.is_initial,
    disabled: s.enabled === false,
    detail: (s.on_enter || []).map((n) => n.id).join(", "),
  }));
  const edges = [];
  for (const a of def.actions || []) {
    for (const from of a.from_states) {
      if (ids.has(from) && ids.has(a.to_state)) {
        edges.push({ id: `${from}-${a.id}-${a.to_state}`, source: from, target: a.to_state, label: a.name || a.id, kind: a.enabled === false ? "catch" : "case" });
      }
    }
  }
  return { nodes, edges };
}

/** The graph of a definition (graph form or state-machine form), not laid out. */
export function toGraph(def) {
  if (!def) return { nodes: [], edges: [] };
  return def.states ? machineGraph(def) : flowGraph(def);
}

/** Positions for `graph` (saved ones in `layout.nodes` win). */
export function layout(graph, saved = {}) {
  const started = performance.now();
  const g = new dagre.graphlib.Graph({ multigraph: true });
  // Big graphs trade some edge crossings for time: dagre's default ranking and ordering
  // took ~3 s for 1,000 nodes, its fast ranker without the order heuristic ~0.8 s.
  const big = graph.nodes.length > BIG;
  g.setGraph({ rankdir: "TB", nodesep: 40, ranksep: 60, edgesep: 10, ranker: big ? "longest-path" : "network-simplex" });
  g.setDefaultEdgeLabel(() => ({}));
  graph.nodes.forEach((n) => g.setNode(n.id, { width: W, height: H }));
  graph.edges.forEach((e) => g.setEdge(e.source, e.target, {}, e.id));
  dagre.layout(g, big ? { disableOptimalOrderHeuristic: true } : undefined);
  const positions = {};
  graph.nodes.forEach((n) => {
    const p = saved[n.id] || g.node(n.id);
    positions[n.id] = saved[n.id] ? { x: p.x, y: p.y } : { x: p.x - W / 2, y: p.y - H / 2 };
  });
  performance.measure("flowyard:layout", { start: started });
  return positions;
}

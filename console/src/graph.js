// The server's graph of a version or draft (GET /workflows/{ref}/graph: nodes, edges from
// the node types' declared routes, plugin types' included, and the groups parallel and map
// nodes fork) laid out by dagre, top to bottom. A group's members are laid out together
// (dagre's compound graph) and its box drawn around where they end up, saved positions
// included. Positions here are absolute; Graph.jsx makes group members relative.
import dagre from "@dagrejs/dagre";

export const W = 190;
export const H = 58;
/** Above this many nodes the layout is `layered` rather than dagre's. */
const BIG = 300;
/** Room around a group's members, and above them for its label. */
const PAD = 18;
const LABEL = 22;

export function clip(text, n = 28) {
  return text && text.length > n ? `${text.slice(0, n - 1)}…` : text || "";
}

const groupKey = (id) => `group:${id}`;

/** Absolute positions of the nodes (saved ones win) and the boxes of the groups. */
export function layout(graph, saved = {}) {
  const started = performance.now();
  const placed = graph.nodes.length > BIG ? layered(graph) : dagreLayout(graph);
  const nodes = {};
  graph.nodes.forEach((n) => {
    nodes[n.id] = saved[n.id] ? { x: saved[n.id].x, y: saved[n.id].y } : placed[n.id];
  });
  performance.measure("flowyard:layout", { start: started });
  return { nodes, groups: groupBoxes(graph, nodes) };
}

/** dagre: network-simplex ranks, crossings reduced, groups laid out as compound nodes. */
function dagreLayout(graph) {
  const grouped = graph.groups.length > 0;
  const g = new dagre.graphlib.Graph({ multigraph: true, compound: grouped });
  g.setGraph({ rankdir: "TB", nodesep: 40, ranksep: 60, edgesep: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  graph.nodes.forEach((n) => g.setNode(n.id, { width: W, height: H }));
  if (grouped) {
    const known = new Set(graph.groups.map((x) => x.id));
    graph.groups.forEach((x) => g.setNode(groupKey(x.id), {}));
    graph.groups.forEach((x) => x.parent && known.has(x.parent) && g.setParent(groupKey(x.id), groupKey(x.parent)));
    graph.nodes.forEach((n) => n.group && known.has(n.group) && g.setParent(n.id, groupKey(n.group)));
  }
  graph.edges.forEach((e, i) => g.setEdge(e.source, e.target, {}, `${i}`));
  dagre.layout(g);
  const out = {};
  graph.nodes.forEach((n) => {
    const p = g.node(n.id);
    out[n.id] = { x: p.x - W / 2, y: p.y - H / 2 };
  });
  return out;
}

/**
 * Big graphs: a layered layout in linear time. dagre took 1-2 s for 1,000 nodes on a loaded
 * machine even with its fast options, most of the page's time. Ranks are the longest path
 * from the sources once the edges that close cycles are set aside (depth-first); each rank
 * is ordered once by its predecessors' mean position (one barycentre sweep, no crossing
 * minimisation) and centred.
 */
function layered(graph) {
  const ids = graph.nodes.map((n) => n.id);
  const out = new Map(ids.map((id) => [id, []]));
  const inDeg = new Map(ids.map((id) => [id, 0]));
  graph.edges.forEach((e) => out.has(e.source) && out.has(e.target) && out.get(e.source).push(e.target));
  // Depth-first from the start (then any node left) for an order and the cycles' back edges.
  const state = new Map();
  const order = [];
  const forward = new Map(ids.map((id) => [id, []]));
  const roots = [...graph.nodes.filter((n) => n.start).map((n) => n.id), ...ids];
  for (const root of roots) {
    if (state.has(root)) continue;
    const stack = [[root, 0]];
    state.set(root, 1);
    order.push(root);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const next = out.get(top[0])[top[1]++];
      if (next === undefined) {
        state.set(top[0], 2);
        stack.pop();
      } else if (!state.has(next)) {
        forward.get(top[0]).push(next);
        state.set(next, 1);
        order.push(next);
        stack.push([next, 0]);
      } else if (state.get(next) === 2) {
        forward.get(top[0]).push(next); // a cross or forward edge; 1 would be a back edge
      }
    }
  }
  forward.forEach((targets) => targets.forEach((t) => inDeg.set(t, inDeg.get(t) + 1)));
  const rank = new Map(ids.map((id) => [id, 0]));
  const queue = ids.filter((id) => inDeg.get(id) === 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const t of forward.get(id)) {
      rank.set(t, Math.max(rank.get(t), rank.get(id) + 1));
      inDeg.set(t, inDeg.get(t) - 1);
      if (inDeg.get(t) === 0) queue.push(t);
    }
  }
  const first = new Map(order.map((id, i) => [id, i]));
  const ranks = [];
  order.forEach((id) => (ranks[rank.get(id)] ||= []).push(id));
  const preds = new Map(ids.map((id) => [id, []]));
  forward.forEach((targets, source) => targets.forEach((t) => preds.get(t).push(source)));
  const x = new Map();
  const placed = {};
  ranks.forEach((row, r) => {
    if (!row) return;
    const mean = (id) => {
      const ps = preds.get(id).filter((p) => x.has(p));
      return ps.length ? ps.reduce((sum, p) => sum + x.get(p), 0) / ps.length : 0;
    };
    const keyed = row.map((id) => [mean(id), first.get(id), id]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    keyed.forEach(([, , id], i) => {
      x.set(id, (i - (keyed.length - 1) / 2) * (W + 40));
      placed[id] = { x: x.get(id), y: r * (H + 60) };
    });
  });
  return placed;
}

/** Each group's box: around its members and its inner groups' boxes, innermost first. */
function groupBoxes(graph, nodes) {
  const boxes = {};
  const depth = (x) => {
    let d = 0;
    for (let p = x.parent, seen = 0; p && seen < 100; seen++, d++) p = graph.groups.find((y) => y.id === p)?.parent;
    return d;
  };
  const inner = [...graph.groups].sort((a, b) => depth(b) - depth(a));
  for (const x of inner) {
    const rects = graph.nodes.filter((n) => n.group === x.id).map((n) => ({ ...nodes[n.id], w: W, h: H }));
    graph.groups.filter((y) => y.parent === x.id && boxes[y.id]).forEach((y) => rects.push(boxes[y.id]));
    if (!rects.length) continue;
    const x0 = Math.min(...rects.map((r) => r.x)) - PAD;
    const y0 = Math.min(...rects.map((r) => r.y)) - PAD - LABEL;
    const x1 = Math.max(...rects.map((r) => r.x + r.w)) + PAD;
    const y1 = Math.max(...rects.map((r) => r.y + r.h)) + PAD;
    boxes[x.id] = { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }
  return boxes;
}

/**
 * The graph of a diff: `to`'s graph with what `from` had and `to` has not (marked removed),
 * and `diff` (GET .../diff) marking nodes added/changed and edges added/removed.
 * Answers {graph, marks: {node id -> added|removed|changed}}.
 */
export function diffGraph(from, to, diff) {
  const marks = {};
  const nodes = diff.nodes || diff.states || { added: [], removed: [], changed: {} };
  nodes.added.forEach((id) => (marks[id] = "added"));
  Object.keys(nodes.changed).forEach((id) => (marks[id] = "changed"));
  const present = new Set(to.nodes.map((n) => n.id));
  const removed = from.nodes.filter((n) => !present.has(n.id));
  removed.forEach((n) => (marks[n.id] = "removed"));
  const groupIds = new Set(to.groups.map((x) => x.id));
  const groups = [...to.groups, ...from.groups.filter((x) => !groupIds.has(x.id) && !present.has(x.id))];
  const allGroups = new Set(groups.map((x) => x.id));
  const key = (e) => `${e.source}|${e.target}|${e.kind}|${e.label}`;
  const added = new Set((diff.edges?.added || []).map(key));
  const edges = [
    ...to.edges.map((e) => (added.has(key(e)) ? { ...e, diff: "added" } : e)),
    ...(diff.edges?.removed || []).map((e) => ({ ...e, diff: "removed" })),
  ];
  return {
    graph: {
      nodes: [...to.nodes, ...removed.map((n) => ({ ...n, group: allGroups.has(n.group) ? n.group : null }))],
      edges,
      groups: groups.map((x) => ({ ...x, parent: allGroups.has(x.parent) ? x.parent : null })),
    },
    marks,
  };
}

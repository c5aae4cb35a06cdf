// A graph (the server's: GET /workflows/{ref}/graph) with React Flow: each node is a DOM
// element carrying data-node-id; edges carry their case, branch or catch label; the
// branches of a parallel node and the body of a map node sit inside a labelled group box
// (React Flow parent/child nodes, data-group-id). Colours come from `status` (node id ->
// step status), `problems` (node id -> messages) and `marks` (node id -> added, removed or
// changed, for a diff; edges carry their own `diff`).
import { useMemo } from "react";
import { Background, Controls, Handle, MarkerType, Position, ReactFlow } from "@xyflow/react";
import { H, W, clip, layout } from "./graph.js";

function NodeBox({ id, data }) {
  const cls = ["node", `k-${data.kind.replace(/[\s.]/g, "-")}`];
  if (data.status) cls.push(`s-${data.status}`);
  if (data.problems?.length) cls.push("has-problems");
  if (data.group) cls.push("in-group");
  if (data.disabled) cls.push("disabled");
  if (data.selected) cls.push("selected");
  if (data.mark) cls.push(`diff-${data.mark}`);
  return (
    <div
      className={cls.join(" ")}
      data-node-id={id}
      data-status={data.status || undefined}
      data-diff={data.mark || undefined}
      data-group={data.group || undefined}
      title={data.problems?.join("\n") || data.detail || undefined}
    >
      <Handle type="target" position={Position.Top} />
      <div className="node-title">{data.title}</div>
      <div className="node-type">
        {data.kind}
        {data.start && " · start"}
        {data.mark && <span className="node-mark"> · {data.mark}</span>}
        {data.status && <span className="node-status"> · {data.status}</span>}
      </div>
      {data.problems?.length > 0 && (
        <div className="node-problem" data-problem-for={id}>
          {data.problems[0]}
        </div>
      )}
      <Handle type="source" position={Position.Bottom} />
    </div>
  );
}

function GroupBox({ data }) {
  return (
    <div className={`group-box k-${data.kind}`} data-group-id={data.id}>
      <span className="group-label">{data.label}</span>
    </div>
  );
}

const nodeTypes = { box: NodeBox, groupBox: GroupBox };
const EDGE_STYLE = {
  next: {},
  route: { stroke: "#1f4e79" },
  action: { stroke: "#1f4e79" },
  branch: { stroke: "#6a3d9a" },
  catch: { stroke: "#b42318", strokeDasharray: "6 3" },
  disabled_action: { stroke: "#b42318", strokeDasharray: "6 3" },
};
const DIFF_STYLE = {
  added: { stroke: "#067647", strokeWidth: 2.5 },
  removed: { stroke: "#b42318", strokeWidth: 2, strokeDasharray: "2 4", opacity: 0.7 },
};
const groupKey = (id) => `group:${id}`;

/** React Flow nodes: group boxes first (a parent before its children), then the nodes. */
function flowNodes(graph, placed, { status, problems, marks, selected, draggable }) {
  const { nodes: at, groups: boxes } = placed;
  const origin = (group) => (group && boxes[group] ? boxes[group] : { x: 0, y: 0 });
  const depth = (x) => (x.parent && boxes[x.parent] ? 1 + depth(graph.groups.find((y) => y.id === x.parent) || {}) : 0);
  const groups = graph.groups
    .filter((x) => boxes[x.id])
    .sort((a, b) => depth(a) - depth(b))
    .map((x) => {
      const box = boxes[x.id];
      const parent = x.parent && boxes[x.parent] ? x.parent : null;
      const o = origin(parent);
      return {
        id: groupKey(x.id),
        type: "groupBox",
        position: { x: box.x - o.x, y: box.y - o.y },
        ...(parent ? { parentId: groupKey(parent) } : {}),
        style: { width: box.w, height: box.h },
        width: box.w,
        height: box.h,
        selectable: false,
        draggable: false,
        connectable: false,
        zIndex: -1,
        data: { id: x.id, kind: x.type, label: x.label },
      };
    });
  const nodes = graph.nodes.map((n) => {
    const parent = n.group && boxes[n.group] ? n.group : null;
    const o = origin(parent);
    return {
      id: n.id,
      type: "box",
      position: { x: at[n.id].x - o.x, y: at[n.id].y - o.y },
      ...(parent ? { parentId: groupKey(parent) } : {}),
      // Known sizes: React Flow can tell which nodes are visible before measuring them.
      initialWidth: W,
      initialHeight: H,
      draggable,
      data: {
        kind: n.type,
        title: n.name || n.id,
        start: n.start,
        group: parent,
        disabled: n.disabled,
        detail: n.detail,
        status: status?.[n.id],
        problems: problems?.[n.id],
        mark: marks?.[n.id],
        selected: n.id === selected,
      },
    };
  });
  return [...groups, ...nodes];
}

/**
 * `graph` (the server's) + saved `positions`, optional `status`/`problems`/`marks` maps,
 * `selected` node id; `onSelect(id)`, and for editing `onConnect({source, target})`,
 * `onMove(id, absolute position)`.
 */
export default function Graph({ graph, positions, status, problems, marks, selected, onSelect, onConnect, onMove }) {
  const shown = graph || { nodes: [], edges: [], groups: [] };
  const placed = useMemo(() => layout(shown, positions || {}), [shown, positions]);
  const large = shown.nodes.length > 200;
  // A big graph opens on its first rows, readable, rather than all of it at the smallest
  // zoom: React Flow then draws a dozen nodes instead of every one in view (most of the
  // 1,000-node page's time was that render). The controls' fit button shows it all.
  const fit = useMemo(() => {
    if (!large) return { maxZoom: 1, padding: 0.15 };
    const top = [...shown.nodes].sort((a, b) => placed.nodes[a.id].y - placed.nodes[b.id].y).slice(0, 12);
    return { maxZoom: 1, padding: 0.15, nodes: top.map((n) => ({ id: n.id })) };
  }, [large, shown, placed]);
  const nodes = useMemo(
    () => flowNodes(shown, placed, { status, problems, marks, selected, draggable: !!onMove }),
    [shown, placed, status, problems, marks, selected, onMove],
  );
  const edges = useMemo(
    () =>
      shown.edges.map((e, i) => ({
        id: `${e.source}->${e.target}#${i}`,
        source: e.source,
        target: e.target,
        label: clip(e.label, 30) || undefined,
        className: `edge-${e.kind}${e.diff ? ` diff-${e.diff}` : ""}`,
        style: { ...EDGE_STYLE[e.kind], ...(e.diff ? DIFF_STYLE[e.diff] : {}) },
        markerEnd: { type: MarkerType.ArrowClosed },
        labelBgPadding: [4, 2],
        zIndex: 1,
      })),
    [shown],
  );
  // A member's position is relative to its group's box: saved positions are absolute.
  const moved = (n) => {
    const box = n.parentId && placed.groups[n.parentId.slice("group:".length)];
    onMove(n.id, box ? { x: n.position.x + box.x, y: n.position.y + box.y } : n.position);
  };
  return (
    <div className="graph" data-nodes={shown.nodes.length} data-edges={shown.edges.length} data-groups={shown.groups.length}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        fitView
        fitViewOptions={fit}
        minZoom={0.05}
        onlyRenderVisibleElements={large}
        nodesConnectable={!!onConnect}
        nodesDraggable={!!onMove}
        onNodeClick={(_, n) => n.type === "box" && onSelect?.(n.id)}
        onPaneClick={() => onSelect?.(null)}
        onConnect={onConnect ? (c) => onConnect({ source: c.source, target: c.target }) : undefined}
        onNodeDragStop={onMove ? (_, n) => n.type === "box" && moved(n) : undefined}
      >
        <Background gap={24} />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}

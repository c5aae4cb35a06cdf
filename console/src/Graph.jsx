// The graph of a definition with React Flow: each node is a DOM element carrying
// data-node-id; edges carry their case, branch or catch label. Colours come from `status`
// (node id -> step status) and `problems` (node id -> messages).
import { useMemo } from "react";
import { Background, Controls, Handle, MarkerType, Position, ReactFlow } from "@xyflow/react";
import { layout, toGraph } from "./graph.js";

function NodeBox({ id, data }) {
  const cls = ["node", `k-${data.kind.replace(/\s/g, "-")}`];
  if (data.status) cls.push(`s-${data.status}`);
  if (data.problems?.length) cls.push("has-problems");
  if (data.group) cls.push("in-group");
  if (data.disabled) cls.push("disabled");
  if (data.selected) cls.push("selected");
  return (
    <div
      className={cls.join(" ")}
      data-node-id={id}
      data-status={data.status || undefined}
      title={data.problems?.join("\n") || data.detail || undefined}
    >
      <Handle type="target" position={Position.Top} />
      <div className="node-title">{data.title}</div>
      <div className="node-type">
        {data.kind}
        {data.start && " · start"}
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

const nodeTypes = { box: NodeBox };
const EDGE_STYLE = {
  next: {},
  case: { stroke: "#1f4e79" },
  default: { stroke: "#777", strokeDasharray: "4 3" },
  branch: { stroke: "#6a3d9a" },
  catch: { stroke: "#b42318", strokeDasharray: "6 3" },
};

/**
 * `definition` (+ saved `positions`), optional `status`/`problems` maps, `selected` node id;
 * `onSelect(id)`, and for editing `onConnect({source, target})`, `onMove(id, position)`.
 */
export default function Graph({ definition, positions, status, problems, selected, onSelect, onConnect, onMove }) {
  const graph = useMemo(() => toGraph(definition), [definition]);
  const placed = useMemo(() => layout(graph, positions || {}), [graph, positions]);
  const large = graph.nodes.length > 200;
  const nodes = useMemo(
    () =>
      graph.nodes.map((n) => ({
        id: n.id,
        type: "box",
        position: placed[n.id],
        // Known sizes: React Flow can tell which nodes are visible before measuring them.
        initialWidth: 190,
        initialHeight: 58,
        draggable: !!onMove,
        data: { ...n, status: status?.[n.id], problems: problems?.[n.id], selected: n.id === selected },
      })),
    [graph, placed, status, problems, selected, onMove],
  );
  const edges = useMemo(
    () =>
      graph.edges.map((e) => ({
        id: e.id,
        source: e.source,
        target: e.target,
        label: e.label || undefined,
        className: `edge-${e.kind}`,
        style: EDGE_STYLE[e.kind],
        markerEnd: { type: MarkerType.ArrowClosed },
        labelBgPadding: [4, 2],
      })),
    [graph],
  );
  return (
    <div className="graph" data-nodes={graph.nodes.length} data-edges={graph.edges.length}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        fitView
        fitViewOptions={{ maxZoom: 1, padding: 0.15 }}
        minZoom={0.05}
        onlyRenderVisibleElements={large}
        nodesConnectable={!!onConnect}
        nodesDraggable={!!onMove}
        onNodeClick={(_, n) => onSelect?.(n.id)}
        onPaneClick={() => onSelect?.(null)}
        onConnect={onConnect ? (c) => onConnect({ source: c.source, target: c.target }) : undefined}
        onNodeDragStop={onMove ? (_, n) => onMove(n.id, n.position) : undefined}
      >
        <Background gap={24} />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}

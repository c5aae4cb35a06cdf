// A form generated from a node type's config JSON Schema (GET /node-types): one field per
// property; lists of objects (a condition's cases) as one sub-form per item; the fields the
// node type declares as templates or conditions (the schema's `x-flowyard-expression`) are
// highlighted; anything else the simple fields cannot edit (objects, other lists) is JSON.
import { useState } from "react";

const EXPRESSION = "x-flowyard-expression";
const EXPRESSION_TITLE = {
  template: "a template: {{ expressions }} are rendered when the step runs",
  condition: "a condition: an expression, e.g. input.region == 'East Coast'",
};

function resolve(schema, root) {
  if (!schema) return {};
  if (schema.$ref) {
    // Keywords beside a $ref (the expression marker, a description) belong to the field.
    const { $ref, ...rest } = schema;
    return { ...resolve(root.$defs?.[$ref.split("/").pop()], root), ...rest };
  }
  const options = schema.anyOf || schema.oneOf;
  if (options) {
    const real = options.filter((o) => o.type !== "null");
    if (real.length === 1) return { ...schema, ...resolve(real[0], root), anyOf: undefined, oneOf: undefined };
  }
  return schema;
}

function kindOf(s, root) {
  if (s.enum) return "enum";
  if (s.type === "string") return "string";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "boolean") return "boolean";
  if (s.type === "array" && resolve(s.items, root).properties) return "list";
  return "json";
}

/** A list of objects: one sub-form per item, with add and remove. */
function ListField({ name, schema, root, label, value, onChange }) {
  const items = Array.isArray(value) ? value : [];
  const item = resolve(schema.items, root);
  const noun = item.title ? item.title.toLowerCase() : "item";
  return (
    <fieldset className="list-field" data-list={name}>
      <legend>{label}</legend>
      {items.map((v, i) => (
        <div className="list-item" key={i} data-item={i}>
          <SchemaForm schema={item} root={root} prefix={`${name}.${i}.`} value={v} onChange={(next) => onChange(items.map((old, j) => (j === i ? next : old)))} />
          <button type="button" className="link" onClick={() => onChange(items.filter((_, j) => j !== i))} data-action={`remove-${name}`}>
            Remove {noun} {i + 1}
          </button>
        </div>
      ))}
      <button type="button" className="secondary" onClick={() => onChange([...items, {}])} data-action={`add-${name}`}>
        Add {noun}
      </button>
    </fieldset>
  );
}

function Field({ name, schema, root, required, value, onChange }) {
  const kind = kindOf(schema, root);
  const expr = schema[EXPRESSION];
  const [text, setText] = useState(() => (value === undefined ? "" : JSON.stringify(value, null, 2)));
  const [bad, setBad] = useState(false);
  const label = (
    <>
      {schema.title || name}
      {required && " *"}
      {schema.description && <span className="reason">{schema.description}</span>}
    </>
  );
  if (kind === "boolean")
    return (
      <label className="check">
        <input type="checkbox" name={name} checked={!!(value ?? schema.default)} onChange={(e) => onChange(e.target.checked)} />
        {label}
      </label>
    );
  if (kind === "enum")
    return (
      <label>
        {label}
        <select name={name} value={value ?? ""} onChange={(e) => onChange(e.target.value || undefined)}>
          <option value="">{schema.default !== undefined ? `(default: ${schema.default})` : "—"}</option>
          {schema.enum.map((v) => (
            <option key={String(v)} value={v}>
              {String(v)}
            </option>
          ))}
        </select>
      </label>
    );
  if (kind === "list") return <ListField name={name} schema={schema} root={root} label={label} value={value} onChange={onChange} />;
  if (kind === "string" || kind === "number") {
    return (
      <label>
        {label}
        <input
          name={name}
          type={kind === "number" ? "number" : "text"}
          className={expr ? "expr" : ""}
          data-expression={expr || undefined}
          title={expr ? EXPRESSION_TITLE[expr] : undefined}
          value={value ?? ""}
          placeholder={schema.default !== undefined && schema.default !== null ? String(schema.default) : ""}
          maxLength={10_000}
          onChange={(e) => {
            const v = e.target.value;
            onChange(v === "" ? undefined : kind === "number" ? Number(v) : v);
          }}
        />
      </label>
    );
  }
  return (
    <label>
      {label} <span className="muted small">(JSON)</span>
      <textarea
        name={name}
        rows={4}
        className={[bad && "invalid", expr && "expr"].filter(Boolean).join(" ")}
        data-expression={expr || undefined}
        title={expr ? EXPRESSION_TITLE[expr] : undefined}
        value={text}
        maxLength={1_000_000}
        onChange={(e) => {
          setText(e.target.value);
          if (e.target.value.trim() === "") {
            setBad(false);
            onChange(undefined);
            return;
          }
          try {
            onChange(JSON.parse(e.target.value));
            setBad(false);
          } catch {
            setBad(true);
          }
        }}
      />
    </label>
  );
}

/** Fields for `schema`'s properties; `value` is the config object, `onChange(config)`.
 * `root` holds the `$defs` (the node type's whole schema); `prefix` names nested fields. */
export default function SchemaForm({ schema, root, prefix = "", value, onChange }) {
  if (!schema) return null;
  const top = root || schema;
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const names = Object.keys(props);
  if (names.length === 0) return <p className="muted small">This node type takes no config.</p>;
  return (
    <div className="schema-form">
      {names.map((name) => (
        <Field
          key={name}
          name={prefix + name}
          schema={resolve(props[name], top)}
          root={top}
          required={required.has(name)}
          value={value?.[name]}
          onChange={(v) => {
            const next = { ...(value || {}) };
            if (v === undefined) delete next[name];
            else next[name] = v;
            onChange(next);
          }}
        />
      ))}
    </div>
  );
}
